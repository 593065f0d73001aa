"""Checkpoint round trip, foreign files, refusal of unsafe or broken files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from neuralign.errors import CheckpointError
from neuralign.io import load_checkpoint, load_model, read_metadata, save_checkpoint
from neuralign.io.atomic import atomic_write_text
from neuralign.models import create_model


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("tinyten", num_classes=10, in_channels=1)


def test_round_trip_rebuilds_model_from_file_alone(tmp_path: Path) -> None:
    m = _model()
    path = save_checkpoint(tmp_path / "a.safetensors", m, {"dataset": "digits", "seed": 3})
    meta = read_metadata(path)
    assert meta["arch"]["name"] == "tinyten"
    assert meta["dataset"] == "digits" and meta["seed"] == 3
    assert "library_version" in meta
    m2 = load_model(path)
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.rand(4, 1, 28, 28)
    m.eval()
    assert torch.equal(m(x), m2(x))


def test_foreign_pt_state_dict_loads_with_arch(tmp_path: Path) -> None:
    m = _model()
    torch.save({"state_dict": m.state_dict()}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="arch"):
        load_model(tmp_path / "b.pt")
    m2 = load_model(tmp_path / "b.pt", arch="tinyten", num_classes=10, in_channels=1)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch /tmp/neuralign_pwned_ckpt",))


def test_pickled_objects_are_refused_not_executed(tmp_path: Path) -> None:
    marker = Path("/tmp/neuralign_pwned_ckpt")
    marker.unlink(missing_ok=True)
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"weight": _Evil()}, fh)
    torch.save({"w": torch.zeros(1), "obj": _Evil()}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a.safetensors", _model())
    data = path.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "t.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_nan_weights_and_wrong_architecture_refused(tmp_path: Path) -> None:
    m = _model()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state["fc.weight" if "fc.weight" in state else next(iter(state))].view(-1)[0] = float("nan")
    save_checkpoint(tmp_path / "nan.safetensors", state)
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(tmp_path / "nan.safetensors")
    save_checkpoint(
        tmp_path / "r.safetensors", create_model("resnet20", num_classes=10, width=0.25)
    )
    with pytest.raises(CheckpointError, match="missing entries"):
        load_model(tmp_path / "r.safetensors", arch="tinyten", num_classes=10)
    save_checkpoint(tmp_path / "c.safetensors", create_model("tinyten", num_classes=100))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(tmp_path / "c.safetensors", arch="tinyten", num_classes=10)


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    from neuralign.io.atomic import atomic_path

    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
