"""Robust loss barrier between adversarially trained TinyTens on Fashion-MNIST, CPU-sized.

Two TinyTens are trained adversarially (L∞ PGD, the robust schedule of Tatro et al. 2020, Sec. 5) on a
class-balanced Fashion-MNIST subset; B is aligned to A by activation correlation on clean
inputs (and, for the line, also on PGD inputs crafted against A); robust quadratic Bezier
curves are trained (PGD against φ(t) per minibatch); then clean and robust (PGD against
φ(t)) test loss/accuracy are measured along the line and the curve, unaligned vs aligned,
with BatchNorm statistics recomputed at every t on clean training data.

Question (Tatro et al. 2020, §5; Zhao et al. 2020): does alignment lower the robust loss
barrier? Prints the table and appends it to ``results/robust.csv``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from _common import device_name, write_rows

from neuralign.alignment import align
from neuralign.attacks import PGD, AdversarialBatches
from neuralign.curves import Bezier, Line, train_curve
from neuralign.data import TensorLoader, balanced_subset, load_dataset
from neuralign.device import select_device
from neuralign.models import create_model
from neuralign.paths import PathResult, evaluate_path_robust, evaluate_state_robust
from neuralign.training import TrainConfig, train_model


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--arch", default="tinyten")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--bn-size", type=int, default=500)
    p.add_argument("--align-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3, help="adversarial endpoint epochs")
    p.add_argument("--curve-epochs", type=int, default=2)
    p.add_argument("--curve-lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--points", type=int, default=7)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.025)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    p.add_argument("--bn-source", choices=["clean", "adversarial"], default="clean")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", default="/tmp/neuralign-bench-robust")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = select_device(args.device)
    work = Path(args.workdir)
    timings: dict[str, float] = {}

    train_full = load_dataset(args.dataset, "train")
    test_full = load_dataset(args.dataset, "test")
    train = balanced_subset(train_full, n=args.train_size, seed=0)
    test = balanced_subset(test_full, n=args.test_size, seed=0)
    bn_set = balanced_subset(train, n=args.bn_size, seed=1)
    align_set = balanced_subset(train, n=args.align_size, seed=2)
    test_loader = TensorLoader(test, batch_size=250, device=dev)
    bn_loader = TensorLoader(bn_set, batch_size=250, device=dev)
    pgd = PGD(eps=args.eps, alpha=args.alpha, steps=args.steps)

    # 1. adversarially trained endpoints -------------------------------------------------
    t0 = time.perf_counter()
    models = []
    endpoint_info = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        model = create_model(
            args.arch,
            num_classes=train.num_classes,
            in_channels=train.images.shape[1],
            mean=list(train.mean),
            std=list(train.std),
        )
        cfg = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=0.1,
            schedule="robust",
            augment=False,
            seed=seed,
        )
        train_model(
            model,
            train,
            None,
            cfg,
            out_dir=work / f"seed{seed}-e{args.epochs}-n{args.train_size}-eps{args.eps}",
            device=dev,
            progress=False,
            attack=pgd.attack_model,
        )
        cl, ca, rl, ra = evaluate_state_robust(
            model, model.state_dict(), test_loader, pgd, generator=torch.Generator().manual_seed(0)
        )
        endpoint_info.append({"seed": seed, "clean_acc": ca, "robust_acc": ra, "robust_loss": rl})
        print(
            f"endpoint seed {seed}: clean acc {ca:.2f}%  robust acc {ra:.2f}%  robust loss {rl:.3f}"
        )
        models.append(model.eval())
    model_a, model_b = models
    timings["endpoints"] = time.perf_counter() - t0

    # 2. alignment: clean inputs, and PGD inputs crafted against A ----------------------
    t0 = time.perf_counter()
    align_loader = TensorLoader(align_set, batch_size=250, device=dev)
    aligned_clean = align(model_a, model_b, align_loader, method="correlation").aligned_b
    adv_loader = AdversarialBatches(pgd, align_loader, model=model_a, seed=0)
    res_adv = align(model_a, model_b, adv_loader, method="correlation")
    aligned_adv = res_adv.aligned_b
    timings["align"] = time.perf_counter() - t0

    # 3. robust curves ------------------------------------------------------------------
    t0 = time.perf_counter()
    curve_attack = pgd.with_options(mode="batch-stats").attack_state
    curves: dict[str, Bezier] = {}
    for variant, b in (("unaligned", model_b), ("aligned", aligned_clean)):
        curve = Bezier(model_a, b)
        loader = TensorLoader(
            train, batch_size=args.batch_size, shuffle=True, augment=None, device=dev, seed=0
        )
        train_curve(
            curve,
            loader,
            epochs=args.curve_epochs,
            lr=args.curve_lr,
            schedule="constant",
            progress=False,
            seed=0,
            attack=curve_attack,
        )
        curves[variant] = curve
    timings["curves"] = time.perf_counter() - t0

    # 4. clean + robust evaluation along the paths ---------------------------------------
    t0 = time.perf_counter()
    paths: dict[str, Any] = {
        "Unaligned line": Line(model_a, model_b),
        "Aligned line": Line(model_a, aligned_clean),
        "Aligned (PGD data) line": Line(model_a, aligned_adv),
        "Unaligned robust curve": curves["unaligned"],
        "Aligned robust curve": curves["aligned"],
    }
    results: dict[str, PathResult] = {}
    for label, path in paths.items():
        results[label] = evaluate_path_robust(
            path,
            test_loader,
            attack=pgd,
            ts=args.points,
            bn_data=bn_loader,
            bn_source=args.bn_source,
            progress=False,
            metadata={"path": label},
        )
    timings["paths"] = time.perf_counter() - t0
    work.mkdir(parents=True, exist_ok=True)
    (work / "paths.json").write_text(
        json.dumps({k: v.to_dict() for k, v in results.items()}, indent=1)
    )

    rows: list[dict[str, Any]] = []
    header = (
        f"{'path':26s} {'rob.barrier':>11s} {'rob.b(mid)':>10s} {'avg rob.loss':>12s} "
        f"{'max rob.loss':>12s} {'min rob.acc':>11s} {'(clean there)':>13s} "
        f"{'min clean':>9s} {'clean barrier':>13s}"
    )
    print(header)
    for label, r in results.items():
        s = r.summary()
        row = {
            "benchmark": "robust_barrier",
            "dataset": args.dataset,
            "arch": args.arch,
            "path": label,
            "eps": args.eps,
            "alpha": args.alpha,
            "steps": args.steps,
            "train_size": args.train_size,
            "test_size": args.test_size,
            "epochs": args.epochs,
            "curve_epochs": args.curve_epochs,
            "points": args.points,
            "bn_source": r.bn_source,
            "endpoint_clean_acc": round(r.endpoint_accuracy, 2),
            "endpoint_robust_acc": round(r.endpoint_robust_accuracy, 2),
            "robust_loss_barrier": round(r.robust_loss_barrier, 4),
            "robust_loss_barrier_mid": round(s["robust_loss_barrier_ainsworth"], 4),
            "robust_loss_avg": round(r.avg_robust_loss, 4),
            "robust_loss_max": round(r.max("robust_loss"), 4),
            "robust_acc_min": round(r.min_robust_accuracy, 2),
            "clean_acc_at_robust_min": round(s["clean_acc_at_robust_min"], 2),
            "robust_acc_max": round(r.max("robust_acc"), 2),
            "clean_acc_at_robust_max": round(s["clean_acc_at_robust_max"], 2),
            "clean_acc_min": round(r.min_accuracy, 2),
            "clean_loss_barrier": round(r.loss_barrier, 4),
            "device": device_name(dev),
            "seconds_total": round(sum(timings.values()), 1),
        }
        rows.append(row)
        print(
            f"{label:26s} {row['robust_loss_barrier']:11.3f} {row['robust_loss_barrier_mid']:10.3f} "
            f"{row['robust_loss_avg']:12.3f} {row['robust_loss_max']:12.3f} "
            f"{row['robust_acc_min']:11.2f} {row['clean_acc_at_robust_min']:13.2f} "
            f"{row['clean_acc_min']:9.2f} {row['clean_loss_barrier']:13.3f}"
        )
    print("robust loss along t:")
    for label, r in results.items():
        print(f"  {label:26s} " + " ".join(f"{v:.3f}" for v in r.series("robust_loss")))
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"device: {device_name(dev)}")
    write_rows("robust", rows)
    return rows


if __name__ == "__main__":
    main()
