"""Run the benchmarks; each prints ratios measured in one run and appends to results/*.csv.

Usage: ``python benchmarks/run.py [NAME ...]`` with names from ``BENCHMARKS`` (default: all
CPU-sized ones).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHMARKS = {
    "data": ("bench_data", []),
    "train": ("bench_train", ["--models", "mlp", "tinyten", "resnet20", "resnet32", "vgg11"]),
    "align": ("bench_align", []),
    "curve": ("bench_curve", []),
    "barrier": ("bench_barrier", []),
}


def main() -> None:
    names = sys.argv[1:] or list(BENCHMARKS)
    for name in names:
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        module, args = BENCHMARKS[name]
        print(f"== {name}")
        importlib.import_module(module).main(args)


if __name__ == "__main__":
    main()
