"""CLI refusals of issue 19: divergence, mismatched pairs, resumes with other arguments,
output paths. Each reproduces a case tried from outside; "before" is in the docstring."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from rel_testlib import SYNTH, tiny_mlp
from test_rel_bad_inputs import cli, refused

from neuralign.errors import DivergedError, ModelMismatchError
from neuralign.io import save_checkpoint

SYN4 = SYNTH  # 4 classes, 1x8x8
FAST = ["--epochs", "1", "--no-progress", "--device", "cpu", "--no-augment", "--dataset", SYN4]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = save_checkpoint(tmp_path / "a.safetensors", tiny_mlp(seed=0, num_classes=4))
    b = save_checkpoint(tmp_path / "b.safetensors", tiny_mlp(seed=1, num_classes=4))
    return a, b


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_curve_divergence_stops_and_saves_nothing(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `curve --lr 1e8` exited 0 with NaN control points; eval-path then printed
    "loss barrier 0.0000"."""
    out = tmp_path / "curve"
    err = refused(
        cli(capsys, "curve", *pair, *FAST, "--epochs", "3", "--lr", "1e8", "--out", out), "diverged"
    )
    assert "lower the learning rate" in err
    assert not (out / "curve.safetensors").exists()


def test_pam_divergence_stops(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pam"
    args = ["pam", *pair, *FAST, "--epochs", "3", "--lr", "1e8", "--p-epochs", "1"]
    args += ["--init", "identity"]
    refused(cli(capsys, *args, "--out", out), "diverged")
    assert not (out / "curve.safetensors").exists()


def test_nan_curve_file_is_refused_by_eval_path(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NaN curve written by an older version: refused, not evaluated to "barrier 0"."""
    from neuralign.curves import Bezier

    a, b = (tiny_mlp(seed=s, num_classes=4) for s in (0, 1))
    curve = Bezier(a, b)
    with torch.no_grad():
        for p in curve.control_parameters():
            p.fill_(float("nan"))
    f = tmp_path / "c" / "curve.safetensors"
    f.parent.mkdir()
    curve.save(f)  # as an older version's diverged training did
    out = tmp_path / "p.json"
    args = ["eval-path", f.parent, "--dataset", SYN4, "--points", "3", "--no-progress"]
    refused(cli(capsys, *args, "--out", out), "non-finite")
    assert not out.exists()


def test_align_api_refuses_a_deeper_b() -> None:
    """Before: B one hidden layer deeper aligned "successfully" (a different function)."""
    import neuralign as na
    from neuralign.models import create_model

    a = tiny_mlp()
    deeper = create_model("mlp", in_channels=1, image_size=8, hidden=[16, 16], num_classes=10)
    x = [(torch.rand(20, 1, 8, 8), torch.arange(20) % 10)]
    with pytest.raises(ModelMismatchError, match="model B has entries model A lacks"):
        na.align(a, deeper, x)
    assert issubclass(DivergedError, ValueError) and issubclass(ModelMismatchError, ValueError)


@pytest.mark.parametrize(
    ("change", "shown"), [(["--seed", "1"], "seed 0 -> 1"), (["--lr", "0.2"], "lr 0.1 -> 0.2")]
)
def test_train_resume_with_other_arguments_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: list[str], shown: str
) -> None:
    """Before: resumed silently; the checkpoint then claimed the new seed for the run."""
    out = tmp_path / "t"
    base = ["train", "--arch", "mlp", *FAST, "--out", out]
    assert cli(capsys, *base)[0] == 0
    before = {p.name: _sha(p) for p in out.iterdir()}
    err = refused(cli(capsys, *base, *change, "--epochs", "2"), "started with other arguments")
    assert shown in err and "another --out" in err
    assert {p.name: _sha(p) for p in out.iterdir()} == before  # nothing touched
    assert cli(capsys, *base, "--epochs", "2")[0] == 0  # same arguments, more epochs: resumes


def test_curve_resume_with_other_endpoints_is_refused(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = pair
    c = save_checkpoint(tmp_path / "c.safetensors", tiny_mlp(seed=2, num_classes=4))
    out = tmp_path / "curve"
    assert cli(capsys, "curve", a, b, *FAST, "--out", out)[0] == 0
    refused(cli(capsys, "curve", a, c, *FAST, "--out", out), "inputs", "another --out")


def test_align_out_equal_to_an_input_is_refused(
    pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `align A B --out B` overwrote B."""
    a, b = pair
    before = _sha(b)
    refused(cli(capsys, "align", a, b, "--dataset", SYN4, "--out", b), "is also an input")
    assert _sha(b) == before


def test_align_out_suffixes(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `--out x.pt` wrote safetensors bytes that neuralign then rejected as corrupt."""
    a, b = pair
    args: list[Any] = ["align", a, b, "--dataset", SYN4, "--no-progress"]
    refused(cli(capsys, *args, "--out", tmp_path / "x.pt"), "x.safetensors")
    assert not (tmp_path / "x.pt").exists()
    assert cli(capsys, *args, "--out", tmp_path / "bare")[0] == 0
    assert (tmp_path / "bare.safetensors").exists() and (tmp_path / "bare.perm.json").exists()
    assert cli(capsys, "eval", tmp_path / "bare.safetensors", "--dataset", SYN4)[0] == 0


def test_train_curve_pam_refuse_a_folder_another_process_holds(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another live process holds the --out folder: every command refuses at once."""
    import os
    import subprocess
    import sys

    import neuralign

    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from neuralign.io.runlock import RunLock; "
            "l = RunLock(sys.argv[1], 'holder').acquire(); print('locked', flush=True); "
            "sys.stdin.read()",
            str(out),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(neuralign.__file__).parents[1])},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for argv in (
            ["train", "--arch", "mlp", *FAST, "--out", out],
            ["curve", *pair, *FAST, "--out", out],
            ["pam", *pair, *FAST, "--p-epochs", "1", "--out", out],
        ):
            refused(cli(capsys, *argv), f"in use by `holder` (pid {holder.pid}")
        assert sorted(p.name for p in out.iterdir()) == [".neuralign.lock"]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
