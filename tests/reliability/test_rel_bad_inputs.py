"""Bad input: one clear line and exit code 2 from the CLI (a typed NeuralignError from the
library), no traceback, and nothing written or corrupted.

One test per kind of bad input; each goes through the CLI (``main(argv)``, plus real
subprocesses for the untrusted-pickle cases) wherever a CLI path exists. The table in
docs/reliability.md lists the answers.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rel_testlib import SYNTH, tiny_mlp
from safetensors.torch import save_file
from torch import nn

from neuralign.cli import main
from neuralign.data import Dataset, balanced_subset, load_dataset
from neuralign.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NeuralignError,
    UnsupportedOpError,
)
from neuralign.io import load_checkpoint, save_checkpoint

# ----------------------------------------------------------------------------- helpers


def cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str]:
    """Run the CLI in-process; return (exit code, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip()


def refused(result: tuple[int, str], *phrases: str) -> str:
    """Assert exit code 2 and a one-line ``error:`` message containing ``phrases``."""
    rc, err = result
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for p in phrases:
        assert p.lower() in err.lower(), (p, err)
    return err


def _idx(arr: np.ndarray, path: Path) -> None:
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))


def _fashion(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A Fashion-MNIST folder with these images and labels in both splits."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        _idx(images, folder / f"{split}-images-idx3-ubyte.gz")
        _idx(labels, folder / f"{split}-labels-idx1-ubyte.gz")
    return folder


def _with_state(path: Path, state: dict[str, torch.Tensor], like: Path) -> Path:
    """Write ``state`` under the neuralign metadata (architecture) of checkpoint ``like``.

    The content checksum is left out (as a tool that edits the tensors and writes an
    architecture header of its own would): with ``like``'s checksum kept, every such file is
    refused as corrupt before its entries are looked at (tests/io/test_integrity.py).
    """
    import json

    from safetensors import safe_open

    from neuralign.io.checkpoint import DIGEST_KEY, METADATA_KEY

    with safe_open(str(like), framework="pt") as fh:
        header = dict(fh.metadata())
    meta = json.loads(header[METADATA_KEY])
    meta.pop(DIGEST_KEY, None)
    header[METADATA_KEY] = json.dumps(meta)
    save_file(state, str(path), metadata=header)
    return path


TRAIN = ["--epochs", "1", "--no-progress", "--device", "cpu", "--no-augment"]

# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("other", ["wide", "resnet"])
@pytest.mark.parametrize("command", ["align", "interpolate", "curve", "pam", "eval-path"])
def test_checkpoints_of_different_architectures(
    capsys: pytest.CaptureFixture[str],
    ckpts: dict[str, Path],
    tmp_path: Path,
    command: str,
    other: str,
) -> None:
    out = tmp_path / "out"
    args: list[Any] = [command, ckpts["a"], ckpts[other], "--dataset", SYNTH, "--no-progress"]
    if command == "align":
        out = tmp_path / "aligned.safetensors"
    if command != "interpolate":
        args += ["--out", out]
    phrase = "shape mismatch" if other == "wide" else "missing entries"
    refused(cli(capsys, *args), phrase, "another architecture")
    assert not out.exists()


@pytest.mark.parametrize(
    ("edit", "phrase"),
    [
        ("missing", "missing entries ['fc.bias']"),
        ("extra", "unexpected entries ['extra.weight']"),
        ("shape", "shape mismatch ['fc.bias: (11,) vs model (10,)']"),
    ],
)
def test_missing_extra_or_misshaped_state_dict_entries(
    capsys: pytest.CaptureFixture[str],
    ckpts: dict[str, Path],
    tmp_path: Path,
    edit: str,
    phrase: str,
) -> None:
    state, _ = load_checkpoint(ckpts["a"])
    if edit == "missing":
        del state["fc.bias"]
    elif edit == "extra":
        state["extra.weight"] = torch.zeros(3)
    else:
        state["fc.bias"] = torch.zeros(11)
    bad = _with_state(tmp_path / "bad.safetensors", state, ckpts["a"])
    refused(cli(capsys, "eval", bad, "--dataset", SYNTH), phrase)
    # the same file as model B of an alignment: refused before anything is written
    out = tmp_path / "aligned.safetensors"
    args = ["align", ckpts["a"], bad, "--dataset", SYNTH, "--out", out, "--no-progress"]
    refused(cli(capsys, *args), phrase)
    assert not out.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights(
    capsys: pytest.CaptureFixture[str], ckpts: dict[str, Path], tmp_path: Path, value: float
) -> None:
    state, _ = load_checkpoint(ckpts["a"])
    state["layers.0.weight"][3, 5] = value
    bad = _with_state(tmp_path / "diverged.safetensors", state, ckpts["a"])
    refused(cli(capsys, "eval", bad, "--dataset", SYNTH), "non-finite (NaN/Inf)", "diverged")
    out = tmp_path / "line.json"
    args = ["interpolate", ckpts["a"], bad, "--dataset", SYNTH, "--out", out, "--no-progress"]
    refused(cli(capsys, *args), "non-finite")
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("damage", ["truncated", "corrupted", "empty"])
def test_truncated_or_corrupted_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str, damage: str
) -> None:
    path = tmp_path / f"model{suffix}"
    model = tiny_mlp()
    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    else:
        save_checkpoint(path, model)
    raw = path.read_bytes()
    if damage == "truncated":
        raw = raw[: len(raw) * 2 // 3]
    elif damage == "corrupted":
        raw = raw[:8] + bytes(b ^ 0x5A for b in raw[8:80]) + raw[80:]
    else:
        raw = b""
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match="corrupt|truncated|not a readable"):
        load_checkpoint(path)
    err = refused(cli(capsys, "eval", path, "--arch", "mlp", "--dataset", SYNTH), str(path))
    assert any(w in err for w in ("corrupt", "truncated", "not a readable"))


def test_nonexistent_paths(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    refused(cli(capsys, "eval", missing, "--dataset", SYNTH), "checkpoint not found")
    refused(cli(capsys, "run", tmp_path / "nope.toml", "--out", tmp_path / "r"), "not found")
    assert not (tmp_path / "r").exists()
    refused(
        cli(capsys, "eval", missing, "--dataset", "fashion-mnist", "--data-dir", tmp_path / "x"),
        "fashion-mnist not found",
    )
    refused(cli(capsys, "eval-path", tmp_path / "no-curve", "--out", tmp_path / "o.json"))
    assert not (tmp_path / "o.json").exists()


# ----------------------------------------------------------------------------- untrusted pickles

MARKER_PAYLOAD = "import pathlib; pathlib.Path({marker!r}).write_text('pwned')"


class _Payload:
    """Pickles to ``exec(code)``: loading it with a plain unpickler runs the code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (self.code,))


def _subprocess_cli(*argv: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    cmd = [sys.executable, "-m", "neuralign", *map(str, argv)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_pt_file_with_arbitrary_pickled_objects_is_refused_never_executed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "executed.txt"
    payload = _Payload(MARKER_PAYLOAD.format(marker=str(marker)))
    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(10, 16), "x": payload}, evil)
    raw_pickle = tmp_path / "evil-raw.pt"
    raw_pickle.write_bytes(pickle.dumps(payload, protocol=2))
    # a real process, as a user would run it
    proc = _subprocess_cli("eval", evil, "--arch", "mlp", "--dataset", SYNTH)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "refused to load" in err, err
    assert not marker.exists(), "the pickled payload was executed"
    # a bare pickle (no zip container): refused as well
    refused(cli(capsys, "eval", raw_pickle, "--arch", "mlp", "--dataset", SYNTH), "weights-only")
    with pytest.raises(CheckpointError):
        load_checkpoint(raw_pickle)
    assert not marker.exists(), "the pickled payload was executed"
    # The payload is live: a plain unpickler would have run it (proves the test's premise).
    torch.load(evil, weights_only=False)
    assert marker.read_text() == "pwned"


def test_cifar_batch_with_malicious_pickle_is_refused(
    tmp_path: Path, fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    shutil.copytree(fixtures / "cifar-10-batches-py", root / "cifar-10-batches-py")
    marker = tmp_path / "executed.txt"
    payload = _Payload(MARKER_PAYLOAD.format(marker=str(marker)))
    batch = root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_dataset("cifar10", "test", data_dir=root)
    args = ["eval", tmp_path / "any.safetensors", "--dataset", "cifar10", "--data-dir", root]
    refused(cli(capsys, *args), "refusing to unpickle", "possibly malicious")
    # protocol 4 names the global itself (protocol 2 reaches it through _codecs.encode)
    batch.write_bytes(pickle.dumps({b"data": payload}, protocol=4))
    refused(cli(capsys, *args), "refusing to unpickle builtins.exec")
    assert not marker.exists()
    pickle.loads(batch.read_bytes())  # the payload is live (proves the test's premise)
    assert marker.exists()


# ----------------------------------------------------------------------------- datasets


def test_cifar_pickle_with_a_huge_length_field_is_refused_quickly(
    tmp_path: Path, fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 4-byte length field set to 2 GB: refused at once, without allocating it."""
    import pickletools
    import time

    root = tmp_path / "data"
    shutil.copytree(fixtures / "cifar-10-batches-py", root / "cifar-10-batches-py")
    batch = root / "cifar-10-batches-py" / "test_batch"
    raw = bytearray(batch.read_bytes())
    pos = next(p for op, _, p in pickletools.genops(bytes(raw)) if op.name == "BINSTRING")
    raw[pos + 1 : pos + 5] = struct.pack("<i", 2**31 - 1)
    batch.write_bytes(bytes(raw))
    t0 = time.perf_counter()
    args = ["eval", tmp_path / "m.safetensors", "--dataset", "cifar10", "--data-dir", root]
    refused(cli(capsys, *args), "malformed pickle stream", "2147483647")
    assert time.perf_counter() - t0 < 5


def test_truncated_idx_dataset(
    tmp_path: Path, fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "fm"
    shutil.copytree(fixtures / "fashion-mnist", d)
    f = d / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[: len(raw) - 100]))
    args = ["eval", tmp_path / "m.safetensors", "--dataset", "fashion-mnist", "--data-dir", d]
    refused(cli(capsys, *args), "is truncated", "download it again")
    f.write_bytes(f.read_bytes()[:-20])  # now the gzip stream itself is cut
    refused(cli(capsys, *args), "truncated or corrupt gzip")


def test_corrupted_cifar_pickle_and_binary(
    tmp_path: Path, fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    py = tmp_path / "py"
    shutil.copytree(fixtures / "cifar-10-batches-py", py / "cifar-10-batches-py")
    batch = py / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:5000])
    args = ["eval", tmp_path / "m.safetensors", "--dataset", "cifar10", "--data-dir", py]
    refused(cli(capsys, *args), "malformed pickle stream", "truncated or corrupt")
    binary = tmp_path / "bin"
    shutil.copytree(fixtures / "cifar-100-binary", binary / "cifar-100-binary")
    f = binary / "cifar-100-binary" / "test.bin"
    f.write_bytes(f.read_bytes()[:-7])
    args = ["eval", tmp_path / "m.safetensors", "--dataset", "cifar100", "--data-dir", binary]
    refused(cli(capsys, *args), "not a positive multiple of the 3074-byte CIFAR record")


def test_corrupted_tinyimagenet_annotations_and_cache(
    tmp_path: Path, fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "tiny-imagenet-200"
    shutil.copytree(fixtures / "tiny-imagenet-200", root)
    good = load_dataset("tinyimagenet", "test", data_dir=tmp_path)
    cache = root / "neuralign-cache-test.npz"
    assert cache.exists()
    # A corrupt cache is a derived file: it is ignored and rebuilt, never trusted.
    cache.write_bytes(cache.read_bytes()[:300])
    again = load_dataset("tinyimagenet", "test", data_dir=tmp_path)
    assert torch.equal(again.images, good.images)
    # Corrupt annotations are an error, and a listed name may not leave val/images.
    ann = root / "val" / "val_annotations.txt"
    wnid = ann.read_text().split("\t")[1]
    ann.write_text(f"../../../../etc/passwd\t{wnid}\t0\t0\t1\t1\n")
    args = ["eval", tmp_path / "m.safetensors", "--dataset", "tinyimagenet", "--data-dir", tmp_path]
    cache.unlink()
    refused(cli(capsys, *args), "is not a plain image file name")
    ann.write_bytes(b"\xff\xfe garbage \x00\n")
    refused(cli(capsys, *args), "val_annotations.txt")


def test_empty_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _fashion(tmp_path / "empty", np.zeros((0, 28, 28)), np.zeros((0,)))
    out = tmp_path / "train"
    args = ["train", "--arch", "mlp", "--dataset", "fashion-mnist", "--data-dir", d, "--out", out]
    refused(cli(capsys, *args, *TRAIN), "training set 'fashion-mnist' is empty")
    assert not out.exists()
    data = load_dataset("fashion-mnist", "train", data_dir=d)
    with pytest.raises(DataError, match="is empty"):
        balanced_subset(data, n=10)
    from neuralign.alignment import align

    with pytest.raises(DataError, match="is empty"):
        align(tiny_mlp(), tiny_mlp(seed=1), data, progress=False)


def test_single_class_dataset(
    tmp_path: Path, ckpts: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    d = _fashion(tmp_path / "single", rng.integers(0, 255, (40, 28, 28)), np.full((40,), 3))
    out = tmp_path / "train"
    args = ["train", "--arch", "mlp", "--dataset", "fashion-mnist", "--data-dir", d, "--out", out]
    refused(cli(capsys, *args, *TRAIN), "single class (3)")
    refused(cli(capsys, *args, *TRAIN, "--train-subset", "20"), "only 1 of its 10 classes")
    assert not out.exists()
    data = load_dataset("fashion-mnist", "train", data_dir=d)
    with pytest.raises(DataError, match="only 1 of its 10 classes"):
        balanced_subset(data, fraction=0.5)
    # alignment (default: a class-balanced 20% subset) -> the same clear error
    from neuralign.alignment import align

    with pytest.raises(DataError, match="only 1 of its 10 classes"):
        align(tiny_mlp(), tiny_mlp(seed=1), data, progress=False)
    # and an alignment on fewer than two images is refused too
    with pytest.raises(DataError, match="correlations need at least 2"):
        align(tiny_mlp(), tiny_mlp(seed=1), torch.rand(1, 1, 8, 8), progress=False)


def test_wrong_num_classes(
    tmp_path: Path, ckpts: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # checkpoint (5 outputs) vs dataset (4 classes), and (10 outputs) vs the same dataset
    refused(cli(capsys, "eval", ckpts["five"], "--dataset", SYNTH), "5 outputs", "4 classes")
    out = tmp_path / "curve"
    args = ["curve", ckpts["a"], ckpts["b"], "--dataset", SYNTH, "--out", out, "--no-progress"]
    refused(cli(capsys, *args), "10 outputs", "4 classes")
    assert not out.exists()
    # labels out of range of the model's outputs, through the training API
    from neuralign.training import TrainConfig, train_model

    data = load_dataset(SYNTH)
    with pytest.raises(DataError, match="has 10 outputs but .* has 4 classes"):
        train_model(tiny_mlp(), data, config=TrainConfig(epochs=1), progress=False)
    # labels out of range of the dataset's own class count (corrupt label file)
    with pytest.raises(DataError, match=r"labels outside \[0, 4\)"):
        Dataset(data.images, data.labels + 1, 4, "x", data.mean, data.std)
    bad = _fashion(tmp_path / "fm", np.zeros((4, 28, 28)), np.array([0, 1, 2, 12]))
    refused(cli(capsys, "eval", ckpts["a"], "--dataset", "fashion-mnist", "--data-dir", bad),
            "labels outside [0, 10)")  # fmt: skip


def test_images_of_the_wrong_shape(
    tmp_path: Path, fixtures: Path, ckpts: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1-channel 8×8 checkpoint on 3-channel 32×32 CIFAR: refused, not broadcast."""
    root = tmp_path / "data"
    shutil.copytree(fixtures / "cifar-10-batches-py", root / "cifar-10-batches-py")
    args = ["eval", ckpts["a"], "--dataset", "cifar10", "--data-dir", root]
    refused(cli(capsys, *args), "takes 1-channel images", "3 channel(s)")


# ----------------------------------------------------------------------------- configs

BASE: dict[str, dict[str, str]] = {
    "": {},
    "data": {"dataset": f'"{SYNTH}"'},
    "model": {"arch": '"mlp"'},
    "endpoints": {"epochs": "1"},
}


def _toml(over: dict[str, dict[str, str]] | None = None) -> str:
    """The tiny config as TOML text, with ``over[section][key] = raw TOML value`` applied."""
    sections = {k: dict(v) for k, v in BASE.items()}
    for sec, kv in (over or {}).items():
        sections.setdefault(sec, {}).update(kv)
    lines = [f"{k} = {v}" for k, v in sections.pop("").items()]
    for sec, kv in sections.items():
        lines += [f"[{sec}]", *(f"{k} = {v}" for k, v in kv.items())]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("section", "key", "value", "phrase"),
    [
        ("eval", "points", "1", "eval.points: must be in [2, 1001], got 1"),
        ("endpoints", "lr", '"fast"', "endpoints.lr: expected a number"),
        ("curves", "lr", "inf", "curves.lr: expected a finite number"),
        ("curves", "bendz", "3", "curves.bendz: unknown field"),
        ("align", "subset_fraction", "1.5", "align.subset_fraction: must be in (0, 1]"),
        ("", "device", '"tpu"', "device: must be cpu"),
        ("model", "kwargs", '{hidden = "abc"}', "model.kwargs: cannot build 'mlp'"),
        ("model", "arch", '"resnet9000"', "model.arch: unknown architecture"),
        ("data", "dataset", '"imagenet22k"', "data.dataset: unknown dataset"),
    ],
)
def test_out_of_range_or_mistyped_config_values(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    section: str,
    key: str,
    value: str,
    phrase: str,
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(_toml({section: {key: value}}))
    out = tmp_path / "run"
    refused(cli(capsys, "run", cfg, "--out", out, "--no-progress"), phrase)
    assert not out.exists()


def test_config_that_is_not_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(b"[data\ndataset = \xff\n")
    refused(cli(capsys, "run", cfg, "--out", tmp_path / "run"), "invalid TOML")
    assert not (tmp_path / "run").exists()


def test_run_folder_of_another_config_is_refused_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text(_toml({"model": {"kwargs": "{hidden = [8]}"}}))
    other = tmp_path / "b.toml"
    other.write_text(_toml({"model": {"kwargs": "{hidden = [8]}"}, "endpoints": {"epochs": "2"}}))
    run = tmp_path / "run"
    assert cli(capsys, "run", cfg, "--out", run, "--stage", "endpoints", "--no-progress")[0] == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    refused(cli(capsys, "run", other, "--out", run, "--no-progress"), "different config", "--force")
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # nothing written or touched
    args = ["run", other, "--out", run, "--stage", "endpoints", "--no-progress", "--force"]
    assert cli(capsys, *args)[0] == 0
    assert "epochs = 2" in (run / "config.toml").read_text()


# ----------------------------------------------------------------------------- discovery


class _Cumsum(nn.Module):
    """A network whose hidden units go through an op discovery has no rule for."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 16)
        self.b = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.cumsum(torch.relu(self.a(x.flatten(1))), dim=1))


def test_model_with_an_op_discovery_cannot_handle() -> None:
    from neuralign.alignment import align
    from neuralign.perm import discover_spec

    with pytest.raises(UnsupportedOpError, match="cumsum.*not in the table.*freeze="):
        discover_spec(_Cumsum(), torch.rand(2, 1, 8, 8))
    with pytest.raises(UnsupportedOpError):
        align(_Cumsum(), _Cumsum(), torch.rand(8, 1, 8, 8), progress=False)


def test_corrupt_spec_file(tmp_path: Path) -> None:
    from neuralign.perm import PermutationSpec, SpecError

    with pytest.raises(SpecError, match="not found"):
        PermutationSpec.load(tmp_path / "spec.json")
    (tmp_path / "spec.json").write_text('{"format": "neuralign.perm')
    with pytest.raises(SpecError, match="not valid JSON"):
        PermutationSpec.load(tmp_path / "spec.json")
    assert issubclass(SpecError, NeuralignError) and issubclass(ConfigError, ValueError)
