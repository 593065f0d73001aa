"""Curve-training and path-evaluation cost vs plain-model work, measured in one run.

* Curve training: epoch time of ``train_curve`` (quadratic Bezier) / epoch time of
  ``train_model`` (endpoint training), same architecture, data, batch size and device.
* Path evaluation at one t: ``evaluate_path(ts=[0.5])`` (BN recomputation + test pass) /
  the same two passes of a plain model (a train-mode forward over the BN data with
  cumulative statistics, then an eval pass over the test data).
Each timing is the best of ``--repeats`` runs, alternating the two sides.
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

    from neuralign.curves import Bezier, train_curve
    from neuralign.data import TensorLoader, balanced_subset, load_dataset
    from neuralign.models import create_model
    from neuralign.paths import evaluate_path
    from neuralign.training import TrainConfig, evaluate_model, train_model

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="tinyten")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--test-images", type=int, default=5000)
    p.add_argument("--bn-images", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    dev = torch.device("cpu")
    train = balanced_subset(load_dataset(args.dataset, "train"), n=args.train_images, seed=0)
    test = balanced_subset(load_dataset(args.dataset, "test"), n=args.test_images, seed=0)
    bn = balanced_subset(load_dataset(args.dataset, "train"), n=args.bn_images, seed=1)
    kw = {"num_classes": train.num_classes, "in_channels": train.images.shape[1]}
    torch.manual_seed(0)
    a = create_model(args.arch, **kw)
    torch.manual_seed(1)
    b = create_model(args.arch, **kw)
    loader = TensorLoader(train, batch_size=args.batch_size, shuffle=True, seed=0)

    def endpoint_epoch() -> float:
        m = create_model(args.arch, **kw)
        cfg = TrainConfig(epochs=1, batch_size=args.batch_size, augment=False, lr=0.05)
        res = train_model(m, train, None, cfg, device=dev, progress=False)
        return float(res.history[-1]["time"])

    def curve_epoch() -> float:
        curve = Bezier(a, b, num_bends=3)
        t0 = time.perf_counter()
        train_curve(curve, loader, epochs=1, lr=0.05, progress=False, device=dev)
        return time.perf_counter() - t0

    t_end, t_curve = float("inf"), float("inf")
    for _ in range(args.repeats):
        t_end = min(t_end, endpoint_epoch())
        t_curve = min(t_curve, curve_epoch())

    test_loader = TensorLoader(test, batch_size=1000)
    bn_loader = TensorLoader(bn, batch_size=1000)
    curve = Bezier(a, b, num_bends=3)

    def path_point() -> float:
        t0 = time.perf_counter()
        evaluate_path(curve, test_loader, ts=[0.5], bn_data=bn_loader, progress=False)
        return time.perf_counter() - t0

    def plain_point() -> float:
        m = create_model(args.arch, **kw)
        t0 = time.perf_counter()
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()
                mod.momentum = None
        m.train()
        with torch.no_grad():
            for x, _ in bn_loader:
                m(x)
        evaluate_model(m, test_loader)
        return time.perf_counter() - t0

    t_path, t_plain = float("inf"), float("inf")
    for _ in range(args.repeats + 1):
        t_path = min(t_path, path_point())
        t_plain = min(t_plain, plain_point())
    row = {
        "benchmark": "curve_cost",
        "model": args.arch,
        "dataset": args.dataset,
        "train_images": args.train_images,
        "device": device_name(dev),
        "endpoint_epoch_s": round(t_end, 3),
        "curve_epoch_s": round(t_curve, 3),
        "curve_ratio": round(t_curve / t_end, 3),
        "plain_point_s": round(t_plain, 3),
        "path_point_s": round(t_path, 3),
        "path_ratio": round(t_path / t_plain, 3),
    }
    print(
        f"curve training epoch {t_curve:.2f}s / endpoint epoch {t_end:.2f}s = {row['curve_ratio']}x"
    )
    print(
        f"path point (BN + test) {t_path:.2f}s / plain model {t_plain:.2f}s = {row['path_ratio']}x"
    )
    write_rows("curve_cost", [row])
    return [row]


if __name__ == "__main__":
    main()
