"""Shared fixtures of the reliability tests: tiny checkpoints and isolated roots."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rel_testlib import FIXTURES, tiny_mlp


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never read or write the user's real cache/download directories from the tests."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("NEURALIGN_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))


@pytest.fixture
def fixtures() -> Path:
    """The directory of committed dataset fixtures."""
    return FIXTURES


@pytest.fixture
def ckpts(tmp_path: Path) -> dict[str, Path]:
    """Checkpoints: ``a``/``b`` (same MLP), ``wide`` (other width), ``resnet``, ``five``
    (5 classes), all for 1×8×8 inputs."""
    from neuralign.io import save_checkpoint
    from neuralign.models import create_model

    out = {
        "a": save_checkpoint(tmp_path / "a.safetensors", tiny_mlp(seed=0)),
        "b": save_checkpoint(tmp_path / "b.safetensors", tiny_mlp(seed=1)),
        "wide": save_checkpoint(tmp_path / "wide.safetensors", tiny_mlp(hidden=32)),
        "five": save_checkpoint(tmp_path / "five.safetensors", tiny_mlp(num_classes=5)),
    }
    torch.manual_seed(0)
    res = create_model("resnet20", in_channels=1, width=0.25, num_classes=10)
    out["resnet"] = save_checkpoint(tmp_path / "resnet.safetensors", res)
    return out
