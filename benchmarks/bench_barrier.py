"""Straight-line test-loss barrier: unaligned vs correlation-aligned vs weight-matched.

Two networks of one architecture trained from different seeds on Fashion-MNIST
(class-balanced subsets); the line between them is evaluated at ``--points`` values of t
with BatchNorm statistics recomputed at each t (BN models). Prints the loss barrier
max_t L(t) − [(1−t)L(0) + tL(1)] and the worst accuracy for each variant. Endpoints can be
given as checkpoints (``--a``/``--b``, e.g. the demo's) or are trained here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    from _common import device_name, write_rows

    from neuralign.alignment import align
    from neuralign.curves import Line
    from neuralign.data import TensorLoader, balanced_subset, load_dataset
    from neuralign.io import load_model
    from neuralign.models import create_model
    from neuralign.paths import evaluate_path
    from neuralign.training import TrainConfig, train_model

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="mlp")
    p.add_argument("--a", default=None, help="checkpoint of endpoint A")
    p.add_argument("--b", default=None, help="checkpoint of endpoint B")
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--points", type=int, default=11)
    args = p.parse_args(argv)
    full = load_dataset("fashion-mnist", "train")
    train = balanced_subset(full, n=args.train_images, seed=0)
    test = balanced_subset(load_dataset("fashion-mnist", "test"), n=args.test_images, seed=0)
    if args.a and args.b:
        a, b = load_model(args.a), load_model(args.b)
    else:
        kw = {"num_classes": 10, "in_channels": 1, "mean": list(train.mean), "std": list(train.std)}
        models = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            m = create_model(args.arch, **kw)
            cfg = TrainConfig(
                epochs=args.epochs, lr=0.05, lr_step=2, lr_gamma=0.3, augment=False, seed=seed
            )
            train_model(m, train, test, cfg, progress=False)
            models.append(m.eval())
        a, b = models
    test_loader = TensorLoader(test, batch_size=256)
    bn = TensorLoader(balanced_subset(train, n=1000, seed=1), batch_size=256)
    rows = []
    for variant in ("unaligned", "correlation", "weight"):
        t0 = time.perf_counter()
        b_v = b if variant == "unaligned" else align(a, b, train, method=variant).aligned_b
        res = evaluate_path(Line(a, b_v), test_loader, ts=args.points, bn_data=bn, progress=False)
        row = {
            "benchmark": "line_barrier",
            "arch": args.arch,
            "variant": variant,
            "train_images": args.train_images,
            "test_images": args.test_images,
            "points": args.points,
            "device": device_name(torch.device("cpu")),
            "endpoint_acc": round(res.endpoint_accuracy, 2),
            "loss_barrier": round(res.loss_barrier, 4),
            "min_acc": round(res.min_accuracy, 2),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        print(
            f"{args.arch:8s} {variant:12s} endpoint acc {row['endpoint_acc']:.2f}%  "
            f"line loss barrier {row['loss_barrier']:.4f} nats  min acc {row['min_acc']:.2f}%"
        )
    write_rows("line_barrier", rows)
    return rows


if __name__ == "__main__":
    main()
