"""Run-folder lock, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neuralign.io.runlock import LOCK_NAME, RunLock, RunLockedError, lock_holder

HOLDER = textwrap.dedent(
    """
    import sys
    from neuralign.io.runlock import RunLock
    lock = RunLock(sys.argv[1], "holder-command").acquire()
    print("locked", flush=True)
    sys.stdin.read()          # hold until stdin closes (or we are killed)
    lock.release()
    print("released", flush=True)
    """
)


def _env() -> dict[str, str]:
    import neuralign

    env = dict(os.environ)
    src = str(Path(neuralign.__file__).parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start_holder(folder: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "locked"
    return p


def _try_lock(folder: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "from neuralign.io.runlock import RunLock, RunLockedError\n"
        "try:\n"
        "    RunLock(sys.argv[1], 'second', notify=print).acquire().release()\n"
        "except RunLockedError as e:\n"
        "    print('refused:', e); sys.exit(3)\n"
        "print('acquired')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )


def test_second_process_refused_then_free(tmp_path: Path) -> None:
    (tmp_path / "result.txt").write_text("work of the first process")
    holder = _start_holder(tmp_path)
    try:
        info = lock_holder(tmp_path)
        assert info is not None and info["pid"] == holder.pid
        assert info["command"] == "holder-command"
        second = _try_lock(tmp_path)
        assert second.returncode == 3, second.stdout + second.stderr
        line = second.stdout.strip()
        assert "\n" not in line
        assert f"pid {holder.pid}" in line and "holder-command" in line and "in use" in line
        # the refused process touched nothing
        assert (tmp_path / "result.txt").read_text() == "work of the first process"
        assert lock_holder(tmp_path)["pid"] == holder.pid  # type: ignore[index]
        # in this process too
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "released"
        holder.wait(timeout=60)
    assert not (tmp_path / LOCK_NAME).exists()  # a clean release removes the file
    again = _try_lock(tmp_path)
    assert again.returncode == 0 and "acquired" in again.stdout
    assert "stale" not in again.stdout


def test_killed_holder_lock_taken_over(tmp_path: Path) -> None:
    holder = _start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (tmp_path / LOCK_NAME).exists()  # left behind by the killed process
    after = _try_lock(tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "taking over the stale lock" in after.stdout
    assert f"pid {holder.pid}" in after.stdout and "no longer running" in after.stdout


def test_in_process_context_manager(tmp_path: Path) -> None:
    notes: list[str] = []
    with RunLock(tmp_path / "new", "cmd", notify=notes.append) as lock:
        assert lock.held
        data = json.loads((tmp_path / "new" / LOCK_NAME).read_text())
        assert data["pid"] == os.getpid() and data["command"] == "cmd"
        with pytest.raises(RunLockedError):
            RunLock(tmp_path / "new").acquire()
    assert not lock.held and not (tmp_path / "new" / LOCK_NAME).exists()
    lock.release()  # twice is fine
    assert notes == []


def test_excl_fallback_stale_and_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without flock: a dead PID on this host is stale; a live one refuses."""
    import socket

    import neuralign.io.runlock as rl

    monkeypatch.setattr(rl, "fcntl", None)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    host = socket.gethostname()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host, "started": 0}))
    notes: list[str] = []
    lock = RunLock(tmp_path, notify=notes.append).acquire()
    assert notes and "stale" in notes[0]
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
