"""Outputs are readable by group and others as the user's umask allows (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralign.io import save_checkpoint
from neuralign.io.atomic import atomic_write_text, current_umask


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_new_files_follow_the_umask_and_rewrites_keep_their_mode(
    tmp_path: Path, umask: None
) -> None:
    assert current_umask() == 0o022
    text = atomic_write_text(tmp_path / "a.json", "{}")
    ckpt = save_checkpoint(tmp_path / "m.safetensors", torch.nn.Linear(2, 2))
    assert _mode(text) == 0o644 and _mode(ckpt) == 0o644
    os.chmod(text, 0o600)  # the user's choice survives a rewrite
    atomic_write_text(text, "[]")
    assert _mode(text) == 0o600
    os.umask(0o077)
    assert _mode(atomic_write_text(tmp_path / "b.json", "{}")) == 0o600


def test_downloads_and_image_caches_are_readable(tmp_path: Path, umask: None) -> None:
    from neuralign.data import download_file
    from neuralign.data.imagecache import write_cache

    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    import hashlib

    got = download_file(src.as_uri(), tmp_path / "d" / "x.bin", hashlib.sha256(b"abc").hexdigest())
    assert _mode(got) == 0o644
    cache = tmp_path / "c" / "cache.npz"
    assert write_cache(cache, np.zeros((1, 1, 2, 2), np.uint8), np.zeros(1, np.int64), "k")
    assert _mode(cache) == 0o644
