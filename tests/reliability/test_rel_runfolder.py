"""Run folders that cannot be double-run or silently corrupted (issue 18), and the CLI's
refusals of issue 19 (divergence, resumes with other arguments, output paths).

Every test here reproduces a case tried from outside the project; the "before" behaviour
is in the docstring, and docs/reliability.md lists them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rel_testlib import run_config

from neuralign.cli import main
from neuralign.errors import ConfigError
from neuralign.io import load_checkpoint
from neuralign.io.runlock import LOCK_NAME

CONFIG = run_config("runfolder")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _args(cfg: Path, run: Path, *more: str) -> list[str]:
    return ["run", str(cfg), "--out", str(run), "--no-progress", *more]


def _results(run: Path) -> dict[str, Any]:
    """Every number a run computes: weights, curves, path metrics, the report's table."""
    out: dict[str, Any] = {}
    for f in sorted(run.rglob("*.safetensors")):
        state, _ = load_checkpoint(f)
        out[str(f.relative_to(run))] = {k: v.tolist() for k, v in sorted(state.items())}
    for f in sorted((run / "paths").rglob("*.json")):
        out[str(f.relative_to(run))] = json.loads(f.read_text())
    out["table"] = json.loads((run / "results.json").read_text())["table"]
    return out


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "runfolder.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def finished(cfg_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder (copy it before changing it)."""
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(_args(cfg_file, run)) == 0
    return run


@pytest.fixture(scope="module")
def reference(finished: Path) -> dict[str, Any]:
    return _results(finished)


# ----------------------------------------------------------------------------- the lock


def test_second_run_on_a_live_folder_is_refused(
    cfg_file: Path, tmp_path: Path, reference: dict[str, Any]
) -> None:
    """Before: two `run` on one folder both ran every stage to the end."""
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "neuralign", *_args(cfg_file, run)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (run / LOCK_NAME).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert first.poll() is None, "the first run ended before taking the lock"
    first.send_signal(signal.SIGSTOP)  # hold it inside its run (no timing assumptions)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "neuralign", *_args(cfg_file, run)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    err = second.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert f"in use by `neuralign run` (pid {first.pid}" in err
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert _results(run) == reference  # nothing lost, nothing mixed in
    assert not (run / LOCK_NAME).exists()


def test_killed_holder_lock_is_taken_over(
    cfg_file: Path, tmp_path: Path, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "neuralign", *_args(cfg_file, run)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = run / "endpoints" / "seed0" / "done.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert (run / LOCK_NAME).exists()  # the killed holder's lock file stays behind
    capsys.readouterr()
    assert main(_args(cfg_file, run)) == 0
    out = capsys.readouterr().out
    assert "taking over the stale lock" in out and f"pid {proc.pid}" in out
    assert "no longer running" in out
    assert _results(run) == reference


# ----------------------------------------------------------------------------- integrity


def _truncate(f: Path) -> None:
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)


def _flip(f: Path) -> None:
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x01
    f.write_bytes(bytes(raw))


def _edit_path_json(f: Path) -> None:
    text = f.read_text()
    i = text.index('"test_acc": [') + len('"test_acc": [')
    j = next(k for k in range(i, len(text)) if text[k].isdigit())
    digit = "1" if text[j] != "1" else "2"
    f.write_text(text[:j] + digit + text[j + 1 :])  # same size, other content


CORRUPTIONS = [
    ("endpoints/seed0/model.safetensors", _truncate, "size"),
    ("align/pair0/correlation.safetensors", _flip, "content changed"),
    ("curves/pair0/correlation-bezier/curve.safetensors", _truncate, "size"),
    ("paths/pair0/unaligned-line.json", _edit_path_json, "content changed"),
]


@pytest.mark.parametrize(("rel", "damage", "reason"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corrupted_artefact_is_recomputed(
    cfg_file: Path,
    finished: Path,
    reference: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rel: str,
    damage: Any,
    reason: str,
) -> None:
    """Before: a truncated endpoint in a finished run folder was reported "done"."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    damage(run / rel)
    # the report refuses to write from it
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no longer match their stage markers" in err and rel in err
    # a re-run names the file and the reason, recomputes it, ends where the original did
    assert main(_args(cfg_file, run)) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("integrity: "))
    assert rel in line and reason in line and "recomputing it" in line
    assert _results(run) == reference
    assert main(["report", str(run)]) == 0


def test_verify_hashes_a_flip_that_kept_the_mtime(
    cfg_file: Path,
    finished: Path,
    reference: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    f = run / "curves" / "pair0" / "unaligned-bezier" / "curve.safetensors"
    st = f.stat()
    _flip(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    capsys.readouterr()
    assert main(_args(cfg_file, run, "--verify")) == 0
    assert "unaligned-bezier/curve.safetensors: content changed" in capsys.readouterr().out
    assert _results(run) == reference


# ----------------------------------------------------------------------------- output paths


def test_run_over_a_foreign_folder_keeps_its_tmp_files(cfg_file: Path, tmp_path: Path) -> None:
    """Before: `run --out` on a non-run folder deleted every .*.tmp file below it."""
    run = tmp_path / "mine"
    (run / "sub").mkdir(parents=True)
    mine = [run / ".notes.tmp", run / "sub" / ".draft.tmp", run / "keep.txt"]
    for f in mine:
        f.write_text("mine")
    assert main(_args(cfg_file, run, "--stage", "endpoints")) == 0
    assert all(f.read_text() == "mine" for f in mine)


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "a/b", ".."])
def test_config_name_is_one_path_component(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: name = "../../../x" wrote the run outside runs/."""
    from neuralign.experiment import parse_config

    with pytest.raises(ConfigError, match="name: .* is not a plain folder name"):
        parse_config({"name": name})
    cfg = tmp_path / "deep" / "a" / "c.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(CONFIG.replace('name = "runfolder"', f"name = {json.dumps(name)}"))
    monkeypatch.chdir(cfg.parent)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert "not a plain folder name" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
