"""Make ``src/`` importable when neuralign is not installed (e.g. a bare checkout)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("neuralign") is None:  # pragma: no cover - depends on the env
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
