"""Merging on real Fashion-MNIST: endpoints, naive average, aligned merge, aligned + REPAIR.

Trains three endpoints per architecture from different seeds (demo-sized: a class-balanced
training subset, a few epochs, no augmentation), then merges the first two and all three with
activation-correlation and weight matching, and evaluates every model on the full 10k test set.
Results go to ``results/merge_fashion.csv`` (one row per architecture, k, method, model).

    python benchmarks/bench_merge.py [--train-subset 20000] [--epochs 6] [--archs mlp,tinyten]
    python benchmarks/bench_merge.py --archs resnet20 --width 0.25 --train-subset 10000
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import write_rows

import neuralign as na
from neuralign.data import balanced_subset
from neuralign.merge import merge


def _endpoints(
    arch: str, train: na.Dataset, epochs: int, seeds: int, width: float | None
) -> list[torch.nn.Module]:
    models = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        kw = {"num_classes": 10, "in_channels": 1, "mean": list(train.mean), "std": list(train.std)}
        if arch == "mlp":
            kw["image_size"] = 28
        if width is not None and arch != "mlp":
            kw["width"] = width
        model = na.create_model(arch, **kw)
        cfg = na.TrainConfig(
            epochs=epochs,
            batch_size=128,
            lr=0.05 if arch == "mlp" else 0.1,
            schedule="cosine",
            augment=False,
            seed=seed,
        )
        t0 = time.perf_counter()
        na.train_model(model, train, None, cfg, progress=False)
        print(f"{arch} seed {seed}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        models.append(model.eval())
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train-subset", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--archs", default="mlp,tinyten")
    ap.add_argument("--width", type=float, default=None, help="width of the conv models")
    args = ap.parse_args()
    full = na.load_dataset("fashion-mnist", "train")
    train = balanced_subset(full, n=args.train_subset, seed=0)
    test = na.load_dataset("fashion-mnist", "test")
    rows = []
    for arch in args.archs.split(","):
        models = _endpoints(arch, train, args.epochs, 3, args.width)
        for k in (2, 3):
            for method in ("correlation", "weight"):
                res = merge(models[:k], train, method, test_data=test, repair_stats=True)
                for r in res.evaluation:
                    rows.append(
                        {
                            "arch": arch if args.width is None else f"{arch}-w{args.width:g}",
                            "models": k,
                            "method": method,
                            "model": r["model"],
                            "test_accuracy": round(r["accuracy"], 2),
                            "test_loss": round(r["loss"], 4),
                            "rounds": res.rounds,
                            "converged": res.converged,
                            "repaired_layers": len(res.repair.corrected) if res.repair else 0,
                            "train_subset": args.train_subset,
                            "epochs": args.epochs,
                        }
                    )
                    print(arch, k, method, r["model"], f"{r['accuracy']:.2f}", flush=True)
    print(write_rows("merge_fashion", rows))


if __name__ == "__main__":
    main()
