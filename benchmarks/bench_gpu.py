"""GPU throughput (images/s): endpoint training, curve training and the alignment pass.

Runs the library's own code paths (``train_model`` with bf16 autocast + channels-last,
``train_curve``, ``correlation_statistics``) on a synthetic 32×32 RGB dataset resident on
the device, for TinyTen, ResNet32 and GoogLeNet, in one invocation (about two minutes on
one H100 with the defaults; the second, warm epoch is what is timed). ``--compile`` adds
:func:`torch.compile` to endpoint and curve training (compilation happens in the untimed
first epoch). Meant for a CUDA machine; runs on CPU too (smoke test:
``--images 256 --models tinyten``). Prints one line per (model, task) and appends to
``results/gpu_throughput.csv`` with the device name.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    from _common import device_name, write_rows

    from neuralign.alignment import correlation_statistics
    from neuralign.curves import Bezier, train_curve
    from neuralign.data import TensorLoader, load_dataset
    from neuralign.device import select_device
    from neuralign.models import create_model
    from neuralign.perm import discover_spec
    from neuralign.training import TrainConfig, train_model

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="*", default=["tinyten", "resnet32", "googlenet"])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--tasks", nargs="*", default=["train", "curve", "align"])
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    args = p.parse_args(argv)
    start = time.perf_counter()
    dev = select_device(args.device)
    ds = load_dataset(f"synthetic:train={args.images},test=1000", "train")
    rows = []
    for arch in args.models:
        n = args.images if arch != "googlenet" else args.images // 2
        sub = type(ds)(ds.images[:n], ds.labels[:n], ds.num_classes, ds.name, ds.mean, ds.std)
        kw = {"num_classes": 10, "in_channels": 3}
        res: dict[str, float] = {}
        if "train" in args.tasks:
            torch.manual_seed(0)
            m = create_model(arch, **kw)
            cfg = TrainConfig(
                epochs=2,
                batch_size=args.batch_size,
                lr=0.05,
                augment=True,
                amp=True,
                compile=args.compile,
            )
            h = train_model(m, sub, None, cfg, device=dev, progress=False).history
            res["train"] = n / h[-1]["time"]  # second epoch: warm
        if "curve" in args.tasks:
            torch.manual_seed(0)
            a, b = create_model(arch, **kw), create_model(arch, **kw)
            curve = Bezier(a, b, num_bends=3).to(dev)
            loader = TensorLoader(sub, batch_size=args.batch_size, shuffle=True, device=dev)
            r = train_curve(
                curve,
                loader,
                epochs=2,
                lr=0.01,
                device=dev,
                progress=False,
                compile=args.compile,
            )
            res["curve"] = n / r.history[-1]["time"]
        if "align" in args.tasks:
            torch.manual_seed(0)
            a = create_model(arch, **kw).to(dev).eval()
            b = create_model(arch, **kw).to(dev).eval()
            loader = TensorLoader(sub, batch_size=500, device=dev)
            spec = discover_spec(a, next(iter(loader))[0][:2])
            correlation_statistics(a, b, spec, [next(iter(loader))[0]])  # warm-up
            _sync(dev)
            t0 = time.perf_counter()
            correlation_statistics(a, b, spec, loader)
            _sync(dev)
            res["align"] = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.no_grad():
                for x, _ in loader:
                    a(x)
                    b(x)
            _sync(dev)
            res["forward_both"] = n / (time.perf_counter() - t0)
        for task, ips in res.items():
            rows.append(
                {
                    "benchmark": "gpu_throughput",
                    "model": arch,
                    "task": task,
                    "images": n,
                    "batch_size": args.batch_size,
                    "device": device_name(dev),
                    "img_per_s": round(ips, 1),
                    "compile": args.compile,
                }
            )
            print(f"{arch:10s} {task:13s} {ips:10.1f} img/s  ({device_name(dev)})", flush=True)
    print(f"total {time.perf_counter() - start:.1f}s", flush=True)
    write_rows("gpu_throughput", rows)
    return rows


if __name__ == "__main__":
    main()
