"""Shared fixtures of the data tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# Let the tests run from a plain checkout (before `pip install -e .`).
if importlib.util.find_spec("neuralign") is None:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never read or write the user's real cache/download directories from the tests."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("NEURALIGN_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))


@pytest.fixture
def fixtures() -> Path:
    """The directory of committed dataset fixtures."""
    return FIXTURES
