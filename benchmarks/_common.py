"""Shared helpers for the benchmark scripts: timing and CSV output."""

from __future__ import annotations

import csv
import datetime
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    """Human-readable device description recorded with every result."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1) -> float:
    """Best wall time over ``repeats`` calls of ``fn`` (synchronising CUDA)."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def write_rows(name: str, rows: list[dict[str, Any]]) -> Path:
    """Append ``rows`` (with a timestamp) to ``results/<name>.csv`` and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows = [{"timestamp": stamp, **r} for r in rows]
    new = not path.exists()
    fields = list(rows[0].keys())
    if not new:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header != fields:
            path = RESULTS / f"{name}-{stamp.replace(':', '')}.csv"
            new = True
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerows(rows)
    return path
