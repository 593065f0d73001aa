"""The error taxonomy: every exception class neuralign defines is a NeuralignError, and the
CLI turns exactly those (and OS errors) into one line + exit 2, never hiding a bug."""

from __future__ import annotations

import errno
import importlib
import inspect
import pkgutil

import pytest

import neuralign
from neuralign import cli
from neuralign.errors import ConfigError, NeuralignError


def _neuralign_exceptions() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(neuralign.__path__, "neuralign."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("neuralign"):
                found.append(obj)
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def test_every_exception_class_is_a_neuralign_error() -> None:
    classes = _neuralign_exceptions()
    names = {c.__name__ for c in classes}
    assert {"SpecError", "PermutationError", "DiskFullError", "CheckpointError"} <= names
    assert [c for c in classes if not issubclass(c, NeuralignError)] == []
    # input errors stay ValueErrors, so `except ValueError` in user code keeps working
    for c in classes:
        if c.__name__ in ("DataError", "ConfigError", "CheckpointError", "SpecError"):
            assert issubclass(c, ValueError)


def _fail_with(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def boom() -> None:
        raise exc

    monkeypatch.setattr(cli.models_cmd, "callback", boom)


def test_cli_answers_neuralign_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fail_with(monkeypatch, ConfigError("first line\n  second line"))
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err == "error: first line second line\n"


def test_cli_answers_a_full_disk_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fail_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "x.bin"))
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: disk full") and err.count("\n") == 1


def test_cli_does_not_hide_bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain ValueError/TypeError is a bug: it propagates (traceback, exit code 1)."""
    for exc in (ValueError("bug"), TypeError("bug"), IndexError("bug")):
        _fail_with(monkeypatch, exc)
        with pytest.raises(type(exc), match="bug"):
            cli.main(["models"])


def test_cli_interrupt_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fail_with(monkeypatch, KeyboardInterrupt())
    assert cli.main(["models"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "interrupted: finished work is saved; re-run the same command to resume"


def test_debug_mode_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_with(monkeypatch, ConfigError("bad"))
    monkeypatch.setenv("NEURALIGN_DEBUG", "1")
    with pytest.raises(ConfigError):
        cli.main(["models"])
