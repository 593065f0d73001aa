"""Workload run by the distributed tests, once per rank under ``torchrun`` or in one process.

``python dist_worker.py OUT_DIR`` runs every piece of work (endpoint training, curve
training, PAM, alignment statistics, BatchNorm recomputation, evaluation) and rank 0 saves the
results to ``OUT_DIR/results.pt`` (plus ``timing.json``). Started by torchrun it joins the
gloo process group through :func:`neuralign.distributed.init_from_env`; started plainly it
is the single-process reference with the same global batch sizes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

import neuralign as na
from neuralign import distributed as dist_
from neuralign.alignment.correlation import correlation_statistics
from neuralign.data import Dataset, TensorLoader
from neuralign.pamopt import PAMConfig, pam
from neuralign.paths import curve_test_point, evaluate_state, recompute_bn

GLOBAL_BATCH = 64
EPOCHS = 2


def digits_subset() -> Dataset:
    """1,408 training digits: 22 global batches of 64 (no incomplete batch to drop)."""
    ds = na.load_dataset("digits")
    n = 1408
    return Dataset(ds.images[:n], ds.labels[:n], ds.num_classes, ds.name, ds.mean, ds.std)


def mlp(seed: int, ds: Dataset) -> nn.Module:
    torch.manual_seed(seed)
    return na.create_model(
        "mlp", in_channels=1, image_size=8, hidden=[32], mean=ds.mean, std=ds.std
    )


def bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)
    )


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist_.init_from_env()
    world, rank = dist_.world_size(), dist_.rank()
    ds = digits_subset()
    res: dict[str, object] = {"world": world}
    t0 = time.perf_counter()

    # endpoint training: global batch 64 (32 per rank with 2 ranks), augmentation on
    model = mlp(0, ds)
    cfg = na.TrainConfig(epochs=EPOCHS, batch_size=GLOBAL_BATCH, lr=0.05, augment=True, seed=3)
    tr = na.train_model(model, ds, ds, cfg, progress=False, out_dir=out / "train")
    res["train_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    res["train_history"] = tr.history
    t_train = time.perf_counter() - t0

    # curve training between two mlps: this rank's shard of each global batch
    t1 = time.perf_counter()
    curve = na.Bezier(mlp(1, ds), mlp(2, ds), num_bends=3)
    loader = TensorLoader(
        ds,
        GLOBAL_BATCH // world,
        shuffle=True,
        augment=na.Augment(crop_padding=1, flip=False, rotation=15.0),
        seed=5,
        drop_last=True,
        rank=rank,
        world_size=world,
    )
    hist = na.train_curve(
        curve,
        loader,
        epochs=EPOCHS,
        lr=0.05,
        progress=False,
        checkpoint_dir=out / "curve",
        evaluate=curve_test_point(loader, TensorLoader(ds, 200)),
    )
    res["curve_points"] = [p.detach().clone() for p in curve.control_parameters()]
    res["curve_history"] = hist.history
    t_curve = time.perf_counter() - t1

    # PAM (correlation init, P-step with averaged matrix gradients, ψ-step): sharded data
    t2 = time.perf_counter()
    pam_res = pam(
        mlp(1, ds),
        mlp(2, ds),
        TensorLoader(
            ds,
            GLOBAL_BATCH // world,
            shuffle=True,
            seed=2,
            drop_last=True,
            rank=rank,
            world_size=world,
        ),
        PAMConfig(p_epochs=2, round_samples=2, curve=na.CurveTrainConfig(epochs=1, lr=0.05)),
        init="correlation",
        align_data=ds,
        score_data=TensorLoader(ds, 200),
        progress=False,
        checkpoint_dir=out / "pam",
    )
    res["pam_points"] = [p.detach().clone() for p in pam_res.curve.control_parameters()]
    res["pam_perm"] = dict(pam_res.permutation.perms)
    res["pam_log"] = pam_res.objective_log
    t_pam = time.perf_counter() - t2

    # alignment statistics (float64 batches): same loader on every rank, sharded inside
    a, b = mlp(1, ds), mlp(2, ds)
    spec = na.discover_spec(a, ds.images[:2].float() / 255)
    stats = correlation_statistics(a, b, spec, TensorLoader(ds, 100), batch_dtype=torch.float64)
    res["corr"] = {
        g: [
            {
                "count": acc.count,
                "s_x": acc.s_x,
                "s_xy": acc.s_xy,
                "s_xx": acc.s_xx,
                "correlation": acc.correlation(),
            }
            for acc in accs
        ]
        for g, accs in stats.accumulators.items()
    }
    res["corr_images"] = stats.num_images

    # BatchNorm recomputation and evaluation: same loader everywhere, sharded inside
    net = bn_net(4)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    bn_loader = TensorLoader(ds, 100, shuffle=True, seed=1)
    res["bn_state"] = recompute_bn(net, state, bn_loader)
    res["bn_state_limited"] = recompute_bn(net, state, bn_loader, max_batches=5)
    res["eval"] = evaluate_state(net, res["bn_state"], TensorLoader(ds, 128))  # type: ignore[arg-type]

    if dist_.is_main():
        torch.save(res, out / "results.pt")
        timing = {
            "train_s": t_train,
            "curve_s": t_curve,
            "pam_s": t_pam,
            "total_s": time.perf_counter() - t0,
        }
        (out / "timing.json").write_text(json.dumps(timing))
    dist_.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
