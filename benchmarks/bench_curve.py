"""Curve-training cost vs endpoint training, measured in one run (CPU).

Epoch time of ``train_curve`` (quadratic Bezier, one epoch) / epoch time of ``train_model``
(endpoint training), same architecture, data, batch size and device; the median of
``--repeats`` alternating repetitions, for wall time and for the process's CPU time. On a
GPU the goal of issue 15 is <= 1.25 (``bench_gpu.py`` measures it there); on a CPU this is
the equivalent measurement (compute-bound, so the per-parameter Python overhead that the
GPU goal is about hardly shows). The path-point cost moved to ``bench_path.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    from _common import device_name, write_rows

    from neuralign.curves import Bezier, CurveTrainConfig, train_curve
    from neuralign.data import TensorLoader, balanced_subset, load_dataset
    from neuralign.models import create_model
    from neuralign.training import TrainConfig, train_model

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="*", default=["tinyten"])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    dev = torch.device("cpu")
    train = balanced_subset(load_dataset(args.dataset, "train"), n=args.train_images, seed=0)
    kw = {"num_classes": train.num_classes, "in_channels": train.images.shape[1]}
    rows = []
    for arch in args.models:
        torch.manual_seed(0)
        a = create_model(arch, **kw)
        torch.manual_seed(1)
        b = create_model(arch, **kw)
        loader = TensorLoader(train, batch_size=args.batch_size, shuffle=True, seed=0)

        def endpoint_epoch(arch: str = arch) -> None:
            m = create_model(arch, **kw)
            cfg = TrainConfig(epochs=1, batch_size=args.batch_size, augment=False, lr=0.05)
            train_model(m, train, None, cfg, device=dev, progress=False)

        def curve_epoch(a: torch.nn.Module = a, b: torch.nn.Module = b) -> None:
            curve = Bezier(a, b, num_bends=3)
            cfg = CurveTrainConfig(epochs=1, lr=0.05)
            train_curve(curve, loader, cfg, progress=False, device=dev)

        load0 = os.getloadavg()[0]
        wall: dict[str, list[float]] = {"endpoint": [], "curve": []}
        cpu: dict[str, list[float]] = {"endpoint": [], "curve": []}
        sides = {"endpoint": endpoint_epoch, "curve": curve_epoch}
        for i in range(args.repeats):
            for side in ("endpoint", "curve") if i % 2 == 0 else ("curve", "endpoint"):
                w0, c0 = time.perf_counter(), time.process_time()
                sides[side]()
                wall[side].append(time.perf_counter() - w0)
                cpu[side].append(time.process_time() - c0)
        med = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        row = {
            "benchmark": "curve_train_cost",
            "model": arch,
            "dataset": args.dataset,
            "train_images": args.train_images,
            "device": device_name(dev),
            "repeats": args.repeats,
            "endpoint_epoch_s": round(med["endpoint"], 3),
            "curve_epoch_s": round(med["curve"], 3),
            "curve_ratio": round(med["curve"] / med["endpoint"], 3),
            "curve_cpu_time_ratio": round(med_cpu["curve"] / med_cpu["endpoint"], 3),
            "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2),
        }
        rows.append(row)
        print(
            f"{arch:9s} curve training epoch {row['curve_epoch_s']}s / endpoint epoch "
            f"{row['endpoint_epoch_s']}s = {row['curve_ratio']}x "
            f"(CPU time {row['curve_cpu_time_ratio']}x; load {load0:.1f})",
            flush=True,
        )
    write_rows("curve_train_cost", rows)
    return rows


if __name__ == "__main__":
    main()
