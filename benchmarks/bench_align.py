"""Alignment cost vs its floor (issue: wall time and peak memory of ``align``).

For each model: wall time of ``align(method="correlation")`` over N images divided by the
wall time of plain forward passes of both models over the same images (same batches, split
into the same 4 micro-batches that align's lock-step pass uses — on CPU small batches are
faster, so this is the honest floor; eval mode, no grad). Peak memory:
each measurement runs in a fresh subprocess; we report the peak RSS growth over the
process's RSS just before the measured work (data and models already loaded, one warm-up
batch done), for ``align`` and for the plain forward passes, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _child(arch: str, mode: str, images: int, batch: int, dataset: str) -> dict[str, float]:
    from neuralign.alignment import align
    from neuralign.data import TensorLoader, balanced_subset, load_dataset
    from neuralign.models import create_model
    from neuralign.perm import discover_spec

    ds = load_dataset(dataset, "train")
    ds = balanced_subset(ds, n=min(images, len(ds)), seed=0)
    kw = {"num_classes": 10, "in_channels": ds.images.shape[1]}
    torch.manual_seed(0)
    a = create_model(arch, **kw).eval()
    torch.manual_seed(1)
    b = create_model(arch, **kw).eval()
    loader = TensorLoader(ds, batch_size=batch)
    x0 = next(iter(loader))[0]
    spec = discover_spec(a, x0[:2])
    with torch.no_grad():  # warm-up
        a(x0)
        b(x0)
    base = _rss_mb()
    t0 = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            for x, _ in loader:
                # the same micro-batches as align's lock-step pass (4 per batch)
                for chunk in x.split(-(-x.shape[0] // 4)):
                    a(chunk)
                    b(chunk)
    else:
        align(a, b, loader, method="correlation", spec=spec)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": dt, "extra_mb": max(peak - base, 0.0), "base_mb": base}


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="*", default=["tinyten", "resnet32"])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--child", nargs=2, metavar=("ARCH", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(
            json.dumps(
                _child(args.child[0], args.child[1], args.images, args.batch_size, args.dataset)
            )
        )
        return []
    from _common import device_name, write_rows

    rows = []
    for arch in args.models:
        res = {}
        for mode in ("forward", "align"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    arch,
                    mode,
                    "--images",
                    str(args.images),
                    "--batch-size",
                    str(args.batch_size),
                    "--dataset",
                    args.dataset,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        row = {
            "benchmark": "align_cost",
            "model": arch,
            "dataset": args.dataset,
            "images": args.images,
            "batch_size": args.batch_size,
            "device": device_name(torch.device("cpu")),
            "forward_s": round(res["forward"]["seconds"], 2),
            "align_s": round(res["align"]["seconds"], 2),
            "time_ratio": round(res["align"]["seconds"] / res["forward"]["seconds"], 3),
            "forward_extra_mb": round(res["forward"]["extra_mb"], 1),
            "align_extra_mb": round(res["align"]["extra_mb"], 1),
            "memory_ratio": round(
                res["align"]["extra_mb"] / max(res["forward"]["extra_mb"], 1.0), 3
            ),
        }
        rows.append(row)
        print(
            f"{arch:9s} align {row['align_s']}s / forward passes {row['forward_s']}s = "
            f"{row['time_ratio']}x;  extra memory {row['align_extra_mb']} MB vs "
            f"{row['forward_extra_mb']} MB = {row['memory_ratio']}x"
        )
    write_rows("align_cost", rows)
    return rows


if __name__ == "__main__":
    main()
