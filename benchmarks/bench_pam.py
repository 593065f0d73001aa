"""PAM vs plain curves between two TinyTens (Tatro et al. 2020, Table 2 shape), on CPU.

Four quadratic Bezier curves between the same two endpoints: Unaligned, PAM Unaligned,
PAM Aligned, Aligned; each evaluated along t with BatchNorm statistics recomputed
(class-balanced, non-augmented training subset). Prints Avg (arc-length weighted) and Min
test accuracy along each curve, PAM Aligned's changed-assignment fraction, and PAM's wall
time relative to a plain curve training with the same curve epochs (one run, same machine).

Endpoints: ``--endpoints DIR`` holding ``seed0/model.safetensors`` and
``seed1/model.safetensors``, e.g. trained with ``neuralign train --arch tinyten --dataset
fashion-mnist --train-subset 10000 --epochs 4 --lr-step 2 --lr-gamma 0.3 --no-augment
--seed S --out DIR/seedS``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import device_name, write_rows

from neuralign.alignment import align
from neuralign.curves import Bezier, CurveTrainConfig, train_curve
from neuralign.data import TensorLoader, balanced_subset, load_dataset
from neuralign.device import select_device
from neuralign.io import load_model
from neuralign.pamopt import PAMConfig, pam
from neuralign.paths import evaluate_path
from neuralign.perm import discover_spec


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoints", default="runs/pam-bench/endpoints")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-subset", type=int, default=5000, help="curve/PAM training images")
    p.add_argument("--test-subset", type=int, default=5000)
    p.add_argument("--bn-subset", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2, help="curve epochs (ψ-step epochs for PAM)")
    p.add_argument(
        "--p-epochs",
        type=int,
        default=2,
        help="P-step epochs (η follows PAMConfig.p_budget, the paper's total step)",
    )
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--points", type=int, default=9)
    p.add_argument(
        "--round-samples",
        type=int,
        default=PAMConfig().round_samples,
        help="Birkhoff-von Neumann rounding candidates (default: PAMConfig's)",
    )
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    dev = select_device(args.device)
    root = Path(args.endpoints)
    model_a = load_model(root / "seed0" / "model.safetensors", device=dev)
    model_b = load_model(root / "seed1" / "model.safetensors", device=dev)
    train_full = load_dataset(args.dataset, "train")
    test = balanced_subset(load_dataset(args.dataset, "test"), n=args.test_subset, seed=0)
    train = balanced_subset(train_full, n=args.train_subset, seed=0)
    loader = TensorLoader(train, batch_size=128, shuffle=True, device=dev, seed=0)
    bn = TensorLoader(balanced_subset(train, n=args.bn_subset, seed=1), 1000, device=dev)
    score = TensorLoader(balanced_subset(train, n=1000, seed=2), 500, device=dev)
    test_loader = TensorLoader(test, batch_size=1000, device=dev)
    spec = discover_spec(model_a, test.images[:2].float().div(255).to(dev))
    res_align = align(
        model_a, model_b, balanced_subset(train, fraction=0.2, seed=0), spec=spec, seed=0
    )
    cfg = PAMConfig(
        p_epochs=args.p_epochs,
        round_samples=args.round_samples,
        curve=CurveTrainConfig(epochs=args.epochs, lr=args.lr, lr_step=max(1, args.epochs // 2)),
    )

    curves: dict[str, Bezier] = {}
    seconds: dict[str, float] = {}
    extra: dict[str, object] = {}
    for name, b in (("Unaligned", model_b), ("Aligned", res_align.aligned_b)):
        curve = Bezier(model_a, b, num_bends=3).to(dev)
        t0 = time.perf_counter()
        train_curve(
            curve,
            loader,
            cfg.curve,
            progress=False,
            seed=0,
        )
        seconds[name] = time.perf_counter() - t0
        curves[name] = curve
    for name, init in (("PAM Unaligned", "identity"), ("PAM Aligned", res_align.permutation)):
        t0 = time.perf_counter()
        res = pam(
            model_a,
            model_b,
            loader,
            cfg,
            init=init,
            spec=spec,
            score_data=score,
            device=dev,
            progress=False,
        )
        seconds[name] = time.perf_counter() - t0
        curves[name] = res.curve
        extra[name] = res
    rows: list[dict[str, object]] = []
    print(
        f"TinyTen on {args.dataset}: {len(train)} train / {len(test)} test images, "
        f"{args.epochs} curve epochs, {args.p_epochs} P-step epochs, {args.points} points, "
        f"BN on {args.bn_subset} train images; {device_name(dev)}"
    )
    print(f"{'curve':<15} {'Avg acc':>8} {'Min acc':>8} {'endpts':>8} {'changed':>8} {'time s':>8}")
    for name in ("Unaligned", "PAM Unaligned", "PAM Aligned", "Aligned"):
        path = evaluate_path(
            curves[name], test_loader, ts=args.points, bn_data=bn, device=dev, progress=False
        )
        res_pam = extra.get(name)
        changed = getattr(res_pam, "changed_units", float("nan"))
        row: dict[str, object] = {
            "curve": name,
            "avg_acc": round(path.avg_accuracy, 2),
            "min_acc": round(path.min_accuracy, 2),
            "endpoint_acc": round(path.endpoint_accuracy, 2),
            "changed_units": round(float(changed), 4),
            "seconds": round(seconds[name], 1),
            "train_images": len(train),
            "test_images": len(test),
            "epochs": args.epochs,
            "p_epochs": args.p_epochs,
            "points": args.points,
            "device": device_name(dev),
        }
        rows.append(row)
        print(
            f"{name:<15} {path.avg_accuracy:8.2f} {path.min_accuracy:8.2f} "
            f"{path.endpoint_accuracy:8.2f} {100 * float(changed):7.2f}% {seconds[name]:8.1f}"
        )
    pa = extra["PAM Aligned"]
    sizes = spec.sizes
    for r in rows:  # one CSV header: plain curves have no PAM objective
        r.update(
            dict.fromkeys(
                (
                    "objective_start",
                    "objective_relaxed",
                    "objective_rounded",
                    "objective_final",
                    "hungarian_changed_units",
                    "relaxed_distance_max",
                    "total_step",
                ),
                float("nan"),
            ),
            kept="",
            round_samples=cfg.round_samples,
        )
    for name in ("PAM Unaligned", "PAM Aligned"):
        res_pam = extra[name]
        st = res_pam.steps[0]
        total = sum(sizes[g] for g in st.hungarian_changed) or 1
        hung = sum(st.hungarian_changed[g] * sizes[g] for g in st.hungarian_changed) / total
        print(
            f"{name}: objective start {st.objective_before:.4f} -> relaxed "
            f"{st.objective_relaxed:.4f} -> rounded {st.objective_after_p:.4f} "
            f"({100 * (st.objective_after_p / st.objective_before - 1):+.1f}%) -> psi-step "
            f"{st.objective_after_psi:.4f}; kept {st.chosen}; eta {st.step_size:.4g}, "
            f"sum eta {st.total_step:.3g}; max relaxed distance "
            f"{max(st.relaxed_distance.values(), default=0.0):.3f}; Hungarian changed "
            f"{100 * hung:.1f}%, kept changed {100 * res_pam.changed_units:.1f}%"
        )
        for g, frac in res_pam.changed_fraction.items():
            print(
                f"  {g:<24} kept {100 * frac:6.2f}%  Hungarian "
                f"{100 * st.hungarian_changed.get(g, 0.0):6.2f}%  relaxed distance "
                f"{st.relaxed_distance.get(g, 0.0):.3f}"
            )
        for r in rows:
            if r["curve"] == name:
                r.update(
                    objective_start=round(st.objective_before, 4),
                    objective_relaxed=round(st.objective_relaxed, 4),
                    objective_rounded=round(st.objective_after_p, 4),
                    objective_final=round(st.objective_after_psi, 4),
                    kept=st.chosen,
                    hungarian_changed_units=round(hung, 4),
                    relaxed_distance_max=round(max(st.relaxed_distance.values(), default=0.0), 4),
                    total_step=round(st.total_step, 4),
                    round_samples=cfg.round_samples,
                )
    ratio = seconds["PAM Aligned"] / seconds["Aligned"]
    print(
        f"PAM Aligned wall time / plain Aligned curve training: {ratio:.2f}x "
        f"({seconds['PAM Aligned']:.1f}s vs {seconds['Aligned']:.1f}s)"
    )
    # Per-epoch costs, to extrapolate to the paper's 20 P-step + 250 curve epochs.
    step = getattr(pa, "steps", [])[0]
    p_epoch = sum(h["time"] for h in step.p_history) / max(1, len(step.p_history))
    c_epoch = seconds["Aligned"] / max(1, args.epochs)
    paper = (250 * c_epoch + 20 * p_epoch + step.seconds.get("rounding", 0.0)) / (250 * c_epoch)
    print(
        f"one P-step epoch {p_epoch:.1f}s vs one curve epoch {c_epoch:.1f}s "
        f"({p_epoch / c_epoch:.2f}x); rounding {step.seconds.get('rounding', 0.0):.1f}s; "
        f"extrapolated to 20 P-step + 250 curve epochs: {paper:.2f}x a plain curve"
    )
    for r in rows:
        r["pam_over_curve_time"] = round(ratio, 3)
        r["p_epoch_over_curve_epoch"] = round(p_epoch / c_epoch, 3)
        r["paper_schedule_ratio"] = round(paper, 3)
    write_rows("pam", rows)
    return rows


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
