"""Faults: ``neuralign run`` killed (SIGKILL) or interrupted (SIGINT) at many points, then
re-run, ends with exactly the results of an uninterrupted run (CPU); a full disk fails with
a clear error and leaves the last good checkpoint intact.

Deterministic kill points: the child process wraps :func:`os.replace` (the commit step of
every atomic write) and SIGKILLs itself just before the N-th commit of a chosen file, i.e.
with that file's new content complete in a temporary file but not yet renamed: the worst
moment. One more point is a plain external SIGKILL sent when the first endpoint checkpoint
appears on disk.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from rel_testlib import SYNTH, run_config, tiny_mlp

from neuralign.cli import main
from neuralign.io import DiskFullError, load_checkpoint, save_checkpoint

CONFIG = run_config("faults")

# (file whose commit is interrupted, which commit of it): one per stage of the run.
KILL_ENDPOINTS = ("endpoints/seed0/model.safetensors", 2)  # seed 0, epoch 1 (of 0..2)
KILL_ENDPOINTS_STATE = ("endpoints/seed1/trainer.pt", 2)  # seed 1, resume state of epoch 1
KILL_ALIGN = ("align/pair0/correlation.json", 1)  # aligned weights written, summary not
KILL_CURVES = ("curves/pair0/unaligned-bezier/curve_train_state.pt", 2)
KILL_PATHS = ("paths/pair0/unaligned-bezier.json", 1)  # unaligned-line.json already exists
KILL_REPORT = ("results.json", 1)  # figures written, tables not

# Runs the CLI in a child that SIGKILLs itself before the N-th commit of one file.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    target, nth = sys.argv[1], int(sys.argv[2])
    real_replace, seen = os.replace, [0]
    def replace(src, dst, *args, **kwargs):
        if os.fspath(dst).replace(os.sep, "/").endswith(target):
            seen[0] += 1
            if seen[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
    from neuralign.cli import main
    sys.exit(main(sys.argv[3:]))
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_args(cfg: Path, run: Path) -> list[str]:
    return ["run", str(cfg), "--out", str(run), "--no-progress"]


def _kill_at(cfg: Path, run: Path, target: str, nth: int) -> None:
    """Run until just before the ``nth`` commit of ``target``; assert it was killed there."""
    cmd = [sys.executable, "-c", KILLER, target, str(nth), *_run_args(cfg, run)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (target, proc.returncode, proc.stderr[-2000:])
    leftovers = list(run.rglob(f".{Path(target).name}.*.tmp"))
    assert leftovers, f"no half-written temporary file of {target}: killed at the wrong time?"


def _kill_when_exists(cfg: Path, run: Path, marker: str) -> None:
    """External SIGKILL as soon as ``marker`` appears."""
    cmd = [sys.executable, "-m", "neuralign", *_run_args(cfg, run)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / marker).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def _results(run: Path) -> dict[str, Any]:
    """Everything a run computes: weights, permutations, curves, path metrics, the table."""
    out: dict[str, Any] = {}
    for f in sorted(run.rglob("*.safetensors")):
        state, _ = load_checkpoint(f)
        out[str(f.relative_to(run))] = {k: v.tolist() for k, v in sorted(state.items())}
    for f in sorted((run / "paths").rglob("*.json")):
        out[str(f.relative_to(run))] = json.loads(f.read_text())
    for f in sorted((run / "align").rglob("*.json")):
        out[str(f.relative_to(run))] = json.loads(f.read_text())["permutation"]
    for f in sorted((run / "endpoints").rglob("done.json")):
        out[str(f.relative_to(run))] = json.loads(f.read_text())["test_acc"]
    out["table"] = json.loads((run / "results.json").read_text())["table"]
    assert not list(run.rglob("*.tmp")), "temporary files left behind"
    return out


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "faults.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The results of an uninterrupted run."""
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(_run_args(config_file, run)) == 0
    return _results(run)


def _chain(config_file: Path, run: Path, points: list[tuple[str, int]]) -> None:
    for target, nth in points:
        _kill_at(config_file, run, target, nth)


def _default_sigint() -> None:
    # A job started in the background by a non-interactive shell (as CI harnesses start
    # test runs) inherits SIGINT *ignored*, and Python then never installs its Ctrl-C
    # handler: the interrupted run would finish normally (rc 0). Ctrl-C at a terminal
    # reaches a process with the default disposition, which is what this test is about.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when_exists(cfg: Path, run: Path, marker: str) -> None:
    """Ctrl-C (SIGINT) as soon as ``marker`` appears: exit 130 with one clean line."""
    cmd = [sys.executable, "-m", "neuralign", *_run_args(cfg, run)]
    proc = subprocess.Popen(
        cmd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.time() + 300
    while not (run / marker).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("interrupted:") and "resume" in lines[-1], err
    assert "Traceback" not in err
    assert not list(run.rglob("*.tmp")), "an interrupted write left a temporary file"


def test_sigint_then_sigkill_in_every_stage_resumes_to_identical_results(
    config_file: Path, tmp_path: Path, reference: dict[str, Any]
) -> None:
    """SIGINT after the first endpoint checkpoint appears; then SIGKILL mid-write during
    endpoint training (between an epoch's two files), alignment, path evaluation and the
    report, each run resuming the previous one; then a final re-run."""
    run = tmp_path / "run"
    _interrupt_when_exists(config_file, run, "endpoints/seed0/model.safetensors")
    assert not (run / "endpoints" / "seed1" / "done.json").exists()
    _chain(config_file, run, [KILL_ENDPOINTS_STATE, KILL_ALIGN, KILL_PATHS, KILL_REPORT])
    assert (run / "paths" / "pair0" / "unaligned-line.json").exists()
    assert not (run / "results.json").exists()
    assert main(_run_args(config_file, run)) == 0
    assert _results(run) == reference


@pytest.mark.slow
def test_sigkill_at_more_points_resumes_to_identical_results(
    config_file: Path, tmp_path: Path, reference: dict[str, Any]
) -> None:
    """An external SIGKILL when the first checkpoint appears, then kills mid-write in
    every stage, including curve training."""
    run = tmp_path / "run"
    _kill_when_exists(config_file, run, "endpoints/seed0/model.safetensors")
    _chain(config_file, run, [KILL_ENDPOINTS_STATE, KILL_ALIGN, KILL_CURVES, KILL_PATHS])
    _chain(config_file, run, [KILL_REPORT])
    assert main(_run_args(config_file, run)) == 0
    assert _results(run) == reference

    fresh = tmp_path / "fresh"
    _chain(config_file, fresh, [KILL_ENDPOINTS])  # seed 0, between trainer.pt and weights
    assert main(_run_args(config_file, fresh)) == 0
    assert _results(fresh) == reference


# ----------------------------------------------------------------------------- full disk


def _enospc_after(nbytes: int) -> Any:
    """A stand-in for safetensors' ``save_file`` that writes a bit, then hits a full disk."""

    def save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
        with open(filename, "wb") as fh:
            fh.write(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    return save_file


def test_disk_full_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_mlp(seed=0))
    before = path.read_bytes()
    monkeypatch.setattr("neuralign.io.checkpoint.save_file", _enospc_after(100))
    with pytest.raises(DiskFullError, match="disk full.*previous version is intact"):
        save_checkpoint(path, tiny_mlp(seed=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    state, _ = load_checkpoint(path)
    assert torch.equal(state["fc.weight"], tiny_mlp(seed=0).state_dict()["fc.weight"])


def test_disk_full_in_a_cpp_writer_is_recognised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save reports a full disk as RuntimeError("... file write failed")."""
    from collections import namedtuple

    from neuralign.io import atomic_path

    target = tmp_path / "trainer.pt"
    torch.save({"epoch": 0}, target)

    def failing_save(obj: Any, f: Any) -> None:
        Path(f).write_bytes(b"partial")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda p: usage(10**9, 10**9, 0))
    with pytest.raises(DiskFullError), atomic_path(target) as tmp:
        failing_save({"epoch": 1}, tmp)
    assert torch.load(target, weights_only=True) == {"epoch": 0}
    assert [p.name for p in tmp_path.iterdir()] == ["trainer.pt"]


def test_disk_full_during_training_cli_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`neuralign train`: epoch 0 saved, epoch 1 hits a full disk -> exit 2, one line, the
    epoch-0 checkpoint intact, and a later re-run resumes from it."""
    import safetensors.torch

    out = tmp_path / "train"
    args = ["train", "--arch", "mlp", "--dataset", SYNTH, "--epochs", "2", "--batch-size", "64"]
    args += ["--no-augment", "--out", str(out), "--no-progress", "--device", "cpu"]
    real = safetensors.torch.save_file
    calls = [0]

    def flaky(tensors: Any, filename: str, metadata: Any = None) -> None:
        calls[0] += 1
        if calls[0] == 2:
            _enospc_after(10)(tensors, filename, metadata)
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr("neuralign.io.checkpoint.save_file", flaky)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: disk full"), err
    state, meta = load_checkpoint(out / "model.safetensors")
    assert json.loads(json.dumps(meta))["epoch"] == 0
    monkeypatch.setattr("neuralign.io.checkpoint.save_file", real)
    assert main(args) == 0
    _, meta = load_checkpoint(out / "model.safetensors")
    assert meta["epoch"] == 1
