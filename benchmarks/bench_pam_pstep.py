"""PAM's P-step and rounding on real endpoints: does it move, and does it help?

For PAM Unaligned (start: identity) and PAM Aligned (start: the correlation alignment) it
runs one P-step plus rounding (no curve training: with one outer iteration the ψ-step comes
after them) and records, per start: the step size η and the total step Σ η, the objective
(mean CE at t = ¼, ½, ¾ on the scoring subset) before the P-step, at the relaxed matrices
and after rounding, the fraction of units the Hungarian projection and the kept candidate
reassign, the relaxed matrices' distance from the start, and which candidate was kept; and the
objective of the start and of the kept permutation on an independent 2,000-image sample of
the training set (the kept one was chosen on the scoring subset, so its score there is
optimistic).

Endpoints: ``--endpoints DIR`` with ``seed0/model.safetensors`` and ``seed1/...``, e.g.
``neuralign train --arch tinyten --dataset fashion-mnist --train-subset 6000 --epochs 4
--lr-step 2 --lr-gamma 0.3 --no-augment --seed S --out DIR/seedS`` (the demo's endpoints).
``--label`` names the settings in the CSV (``benchmarks/results/pam_pstep.csv``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import device_name, write_rows

from neuralign.alignment import align
from neuralign.curves import CurveTrainConfig, interpolated_keys
from neuralign.data import TensorLoader, balanced_subset, load_dataset
from neuralign.device import select_device
from neuralign.io import load_model
from neuralign.pamopt import PAMConfig, pam, scoring_subset
from neuralign.pamopt.objective import pam_objective
from neuralign.perm import Permutation, apply_permutation, discover_spec


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoints", default="runs/pam-bench/endpoints")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-subset", type=int, default=6000)
    p.add_argument("--p-epochs", type=int, default=PAMConfig.p_epochs)
    p.add_argument("--p-lr", type=float, default=PAMConfig.p_lr, help="0: from the budget")
    p.add_argument("--round-samples", type=int, default=PAMConfig.round_samples)
    p.add_argument("--score-subset", type=int, default=PAMConfig.score_subset)
    p.add_argument("--inits", default="identity,correlation")
    p.add_argument("--label", default="defaults")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    dev = select_device(args.device)
    root = Path(args.endpoints)
    model_a = load_model(root / "seed0" / "model.safetensors", device=dev)
    model_b = load_model(root / "seed1" / "model.safetensors", device=dev)
    full = load_dataset(args.dataset, "train")
    train = balanced_subset(full, n=args.train_subset, seed=0)
    # an independent sample of the training set: is the kept candidate better off the
    # subset it was chosen on?
    heldout = [
        (x.to(dev), y.to(dev))
        for x, y in TensorLoader(balanced_subset(full, n=2000, seed=7), batch_size=500)
    ]
    loader = TensorLoader(train, batch_size=128, shuffle=True, device=dev, seed=0)
    cfg = PAMConfig(
        p_epochs=args.p_epochs,
        p_lr=args.p_lr,
        round_samples=args.round_samples,
        score_subset=args.score_subset,
        curve=CurveTrainConfig(epochs=0),
    )
    score = TensorLoader(scoring_subset(train, cfg, seed=2), batch_size=500, device=dev)
    spec = discover_spec(model_a, train.images[:2].float().div(255).to(dev))
    aligned = align(model_a, model_b, balanced_subset(train, fraction=0.2, seed=0), spec=spec)
    sizes = spec.sizes
    total = sum(sizes.values())
    rows: list[dict[str, object]] = []
    for init in args.inits.split(","):
        start = "identity" if init == "identity" else aligned.permutation
        t0 = time.perf_counter()
        res = pam(model_a, model_b, loader, cfg, init=start, spec=spec, score_data=score,
                  device=dev, progress=False)  # fmt: skip
        s = res.steps[0]
        theta1 = {k: v.detach().to(dev) for k, v in model_a.state_dict().items()}
        theta2 = {k: v.detach().to(dev) for k, v in model_b.state_dict().items()}
        psi = [{k: torch.zeros_like(theta1[k]) for k in interpolated_keys(model_a)}]

        def heldout_objective(perm: Permutation) -> float:
            ptheta2 = apply_permutation(theta2, spec, perm)
            return pam_objective(model_a, theta1, ptheta2, psi, heldout, cfg.objective_ts)

        held_before = heldout_objective(res.start_permutation)
        held_after = heldout_objective(res.permutation)
        hung = sum(s.hungarian_changed[g] * sizes[g] for g in sizes) / total
        row: dict[str, object] = {
            "label": args.label,
            "curve": "PAM Unaligned" if init == "identity" else "PAM Aligned",
            "step_size": round(s.step_size, 5),
            "total_step": round(s.total_step, 3),
            "objective_before": round(s.objective_before, 4),
            "objective_relaxed": round(s.objective_relaxed, 4),
            "objective_after_p": round(s.objective_after_p, 4),
            "decrease_pct": round(100 * (1 - s.objective_after_p / s.objective_before), 2),
            "heldout_before": round(held_before, 4),
            "heldout_after_p": round(held_after, 4),
            "heldout_decrease_pct": round(100 * (1 - held_after / held_before), 2),
            "hungarian_changed": round(hung, 4),
            "kept_changed": round(res.changed_units, 4),
            "max_relaxed_distance": round(max(s.relaxed_distance.values()), 4),
            "kept": s.chosen,
            "candidates": len(s.candidates),
            "p_epochs": args.p_epochs,
            "round_samples": args.round_samples,
            "train_images": len(train),
            "score_images": min(args.score_subset, len(train)),
            "seconds": round(time.perf_counter() - t0, 1),
            "device": device_name(dev),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        print("  per group:", json.dumps({
            g: {"dist": round(s.relaxed_distance[g], 3),
                "hungarian": round(s.hungarian_changed[g], 3),
                "kept": round(s.changed[g], 3)} for g in sizes}), flush=True)  # fmt: skip
    write_rows("pam_pstep", rows)
    return rows


if __name__ == "__main__":
    torch.manual_seed(0)
    torch.set_num_threads(1)
    main()
