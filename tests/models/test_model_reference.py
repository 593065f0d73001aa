"""Models by reference: a factory in a file or module, rebuilt from a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from neuralign.errors import CheckpointError, ConfigError
from neuralign.io import load_model, save_checkpoint
from neuralign.models import create_model, is_reference, model_spec

HERE = Path(__file__).resolve()


def make_net(num_classes: int = 10, in_channels: int = 3, hidden: int = 8) -> nn.Module:
    """A user network: conv + BN + linear (a factory referenced by this file's path)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.BatchNorm2d(hidden),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(hidden, num_classes),
    )


def fixed_net() -> nn.Module:
    """A factory that takes no arguments at all."""
    return nn.Linear(4, 2)


def not_a_module(num_classes: int = 10) -> int:
    return num_classes


def test_is_reference() -> None:
    assert is_reference("pkg.mod:make") and is_reference("a/b.py:f") and is_reference("x.py:C.make")
    assert not is_reference("resnet20") and not is_reference("synthetic:size=8")
    assert not is_reference("pkg.mod:") and not is_reference("a b:c")


def test_file_reference_round_trips_through_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(HERE.parent)
    torch.manual_seed(0)
    model = create_model(
        f"{HERE.name}:make_net", num_classes=5, in_channels=1, hidden=6, mean=[0.5]
    )
    spec = model_spec(model)
    # Relative paths are recorded absolute; context arguments the factory does not take
    # (mean) are dropped, the others recorded.
    assert spec == {
        "name": f"{HERE}:make_net",
        "kwargs": {"num_classes": 5, "in_channels": 1, "hidden": 6},
    }
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    monkeypatch.chdir(tmp_path)
    again = load_model(path)
    assert model_spec(again) == spec
    x = torch.rand(3, 1, 8, 8)
    model.eval()
    assert torch.equal(again(x), model(x))
    assert create_model(f"{HERE}:fixed_net").in_features == 4  # defaults 10/3 are dropped


def test_module_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE.parent))
    m = create_model(f"{HERE.stem}:make_net", num_classes=3, hidden=4)
    assert model_spec(m)["name"] == f"{HERE.stem}:make_net"
    assert m[-1].out_features == 3 and m[0].in_channels == 3
    sys.modules.pop(HERE.stem, None)


def test_reference_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_model(f"{tmp_path}/none.py:f")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg_xyz.mod'"):
        create_model("no_such_pkg_xyz.mod:f")
    with pytest.raises(ConfigError, match="has no attribute 'missing'"):
        create_model(f"{HERE}:missing")
    with pytest.raises(ConfigError, match="returned int, not a torch.nn.Module"):
        create_model(f"{HERE}:not_a_module")
    with pytest.raises(ConfigError, match=r"does not accept \['depth'\]"):
        create_model(f"{HERE}:make_net", depth=3)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="importing .*broken.py failed .*boom"):
        create_model(f"{broken}:f")
    raises = tmp_path / "raises.py"
    raises.write_text("def f(num_classes=10):\n    raise ValueError('bad width')\n")
    with pytest.raises(ConfigError, match="the factory raised ValueError: bad width"):
        create_model(f"{raises}:f")


def test_checkpoint_of_a_vanished_file_says_so(tmp_path: Path) -> None:
    src = tmp_path / "net.py"
    src.write_text(
        "import torch.nn as nn\ndef f(num_classes=10):\n    return nn.Linear(3, num_classes)\n"
    )
    path = save_checkpoint(tmp_path / "m.safetensors", create_model(f"{src}:f", num_classes=2))
    src.unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(path)


def test_a_checkpoint_naming_code_is_not_run_unless_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    from neuralign.models import reference
    from neuralign.models.reference import UntrustedCodeError

    monkeypatch.setattr(reference, "_TRUSTED", set())
    monkeypatch.delenv("NEURALIGN_TRUST_CODE", raising=False)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.safetensors"
    spec = {"name": "subprocess:getoutput", "kwargs": {"cmd": f"touch {marker}"}}
    import json

    save_file({"w": torch.zeros(1)}, str(evil), metadata={"neuralign": json.dumps({"arch": spec})})
    with pytest.raises(UntrustedCodeError, match="names the model factory 'subprocess:getoutput'"):
        load_model(evil)
    assert not marker.exists()
    # A reference built in this process is trusted; so is one allowed explicitly.
    src = tmp_path / "net.py"
    src.write_text(
        "import torch.nn as nn\ndef f(num_classes=10):\n    return nn.Linear(3, num_classes)\n"
    )
    path = save_checkpoint(tmp_path / "m.safetensors", create_model(f"{src}:f", num_classes=2))
    assert load_model(path).out_features == 2
    monkeypatch.setattr(reference, "_TRUSTED", set())
    with pytest.raises(UntrustedCodeError, match="--trust-code"):
        load_model(path)
    assert load_model(path, trust_code=True).out_features == 2
    monkeypatch.setenv("NEURALIGN_TRUST_CODE", "1")
    assert load_model(path).out_features == 2
