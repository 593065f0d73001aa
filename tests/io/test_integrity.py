"""Artefact records and their verification."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from neuralign.io.integrity import describe_problems, record_artefacts, verify_artefacts


def _files(tmp_path: Path) -> dict[str, dict]:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"abc" * 100)
    (tmp_path / "sub" / "b.json").write_text('{"x": 1}')
    return record_artefacts([tmp_path / "a.bin", tmp_path / "sub" / "b.json"], tmp_path)


def test_record_content(tmp_path: Path) -> None:
    rec = _files(tmp_path)
    assert set(rec) == {"a.bin", "sub/b.json"}
    assert rec["a.bin"]["size"] == 300
    assert rec["a.bin"]["sha256"] == hashlib.sha256(b"abc" * 100).hexdigest()
    assert verify_artefacts(rec, tmp_path) == []
    assert verify_artefacts(rec, tmp_path, verify=True) == []
    with pytest.raises(FileNotFoundError):
        record_artefacts([tmp_path / "nope"], tmp_path)
    with pytest.raises(ValueError):
        record_artefacts([tmp_path.parent / "x"], tmp_path)


def test_missing_truncated_flipped(tmp_path: Path) -> None:
    rec = _files(tmp_path)
    (tmp_path / "sub" / "b.json").unlink()
    with open(tmp_path / "a.bin", "r+b") as fh:
        fh.truncate(10)
    probs = verify_artefacts(rec, tmp_path)
    assert [p.path for p in probs] == ["a.bin", "sub/b.json"]
    assert "size 10 bytes, recorded 300" in probs[0].reason and probs[1].reason == "missing"
    assert "a.bin: size" in describe_problems(probs)


def test_same_size_flip_found_by_mtime_or_verify(tmp_path: Path) -> None:
    rec = _files(tmp_path)
    path = tmp_path / "a.bin"
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    # mtime changed -> hashed even without verify
    probs = verify_artefacts(rec, tmp_path)
    assert len(probs) == 1 and "content changed" in probs[0].reason
    # a flip that restores the mtime is only seen with verify=True
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verify_artefacts(rec, tmp_path) == []
    assert "content changed" in verify_artefacts(rec, tmp_path, verify=True)[0].reason


def test_touched_but_same_content_is_fine(tmp_path: Path) -> None:
    rec = _files(tmp_path)
    os.utime(tmp_path / "a.bin", ns=(1, 1))
    assert verify_artefacts(rec, tmp_path) == []


def test_malformed_records_are_problems(tmp_path: Path) -> None:
    _files(tmp_path)
    probs = verify_artefacts({"a.bin": {"size": "x"}, "sub/b.json": []}, tmp_path)  # type: ignore[dict-item]
    assert [p.reason for p in probs] == ["malformed artefact record"] * 2
    assert verify_artefacts([], tmp_path)[0].reason.startswith("artefact record")  # type: ignore[arg-type]


def test_checkpoint_checksum_catches_a_flipped_weight_byte(tmp_path: Path) -> None:
    """Before: safetensors has no checksum, so a flipped weight byte loaded silently."""
    import torch

    from neuralign.errors import CheckpointError
    from neuralign.io import load_checkpoint, save_checkpoint
    from neuralign.models import create_model

    torch.manual_seed(0)
    m = create_model("mlp", in_channels=1, image_size=8, hidden=[16], num_classes=10)
    f = tmp_path / "m.safetensors"
    save_checkpoint(f, m, {"seed": 3})
    state, meta = load_checkpoint(f)
    assert meta["seed"] == 3 and all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0x01  # inside the last tensor's data: still a valid safetensors file
    f.write_bytes(bytes(raw))
    from safetensors.torch import load_file

    load_file(str(f))  # safetensors itself accepts it
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(f)
