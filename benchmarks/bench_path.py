"""Path-point cost vs two plain forward passes, and the multi-point (vmap) path, in one run.

* Path point: ``evaluate_path(ts=[0.5])`` on a quadratic Bezier curve (state at ``t``, exact
  BatchNorm recomputation on the BN data, eval pass over the test data) / the same two
  passes of a plain model (a train-mode forward over the BN data with PyTorch's cumulative
  statistics, then ``evaluate_model`` over the test data). Goal (issue 15): <= 1.10.
* Multi-point: ``evaluate_path(ts=K, points_per_pass=K)`` (one vmapped pass for all ``K``
  points) against ``points_per_pass=1``: the largest relative difference of the test losses
  (goal: float rounding, <= 1e-5) and the time ratio (information; on a CPU the batched
  kernels do the same work, the gain is on a GPU).

Each timing is the median of ``--repeats`` repetitions that alternate the two sides (the
order flips every repetition), so load from other processes hits both alike; the load
average is recorded beside the result.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def alternate(
    a: Callable[[], None], b: Callable[[], None], repeats: int
) -> tuple[float, float, float, float]:
    """Median wall and CPU times of ``a`` and ``b`` over ``repeats`` alternating repetitions.

    Returns ``(wall_a, wall_b, cpu_a, cpu_b)``.
    """
    wa: list[float] = []
    wb: list[float] = []
    ca: list[float] = []
    cb: list[float] = []
    for i in range(repeats):
        order = ((a, wa, ca), (b, wb, cb)) if i % 2 == 0 else ((b, wb, cb), (a, wa, ca))
        for fn, wall, cpu in order:
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    med = statistics.median
    return med(wa), med(wb), med(ca), med(cb)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    from _common import device_name, write_rows

    from neuralign.curves import Bezier
    from neuralign.data import TensorLoader, balanced_subset, load_dataset
    from neuralign.models import create_model
    from neuralign.paths import evaluate_path
    from neuralign.training import evaluate_model

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="*", default=["tinyten", "resnet32"])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--bn-images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--points", type=int, default=4, help="K for the multi-point check")
    args = p.parse_args(argv)
    dev = torch.device("cpu")
    test = balanced_subset(load_dataset(args.dataset, "test"), n=args.test_images, seed=0)
    bn = balanced_subset(load_dataset(args.dataset, "train"), n=args.bn_images, seed=1)
    test_loader = TensorLoader(test, batch_size=args.batch_size)
    bn_loader = TensorLoader(bn, batch_size=args.batch_size)
    kw = {"num_classes": test.num_classes, "in_channels": test.images.shape[1]}
    rows = []
    for arch in args.models:
        torch.manual_seed(0)
        a = create_model(arch, **kw)
        torch.manual_seed(1)
        b = create_model(arch, **kw)
        curve = Bezier(a, b, num_bends=3)
        plain_model = create_model(arch, **kw)

        def path_point() -> None:
            evaluate_path(curve, test_loader, ts=[0.5], bn_data=bn_loader, progress=False)

        def plain_point() -> None:
            m = plain_model
            for mod in m.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.reset_running_stats()
                    mod.momentum = None
            m.train()
            with torch.no_grad():
                for x, _ in bn_loader:
                    m(x)
            evaluate_model(m, test_loader)

        load0 = os.getloadavg()[0]
        path_point()  # warm-up (allocator, oneDNN primitives)
        t_path, t_plain, c_path, c_plain = alternate(path_point, plain_point, args.repeats)

        # multi-point: K values of t in one vmapped pass vs one by one
        k = args.points
        small_bn = TensorLoader(balanced_subset(bn, n=min(1000, len(bn)), seed=2), batch_size=500)
        small_test = TensorLoader(
            balanced_subset(test, n=min(1000, len(test)), seed=2), batch_size=500
        )
        results: dict[int, object] = {}

        def run_path(per_pass: int) -> Callable[[], None]:
            def go() -> None:
                results[per_pass] = evaluate_path(
                    curve,
                    small_test,
                    ts=k,
                    bn_data=small_bn,
                    progress=False,
                    points_per_pass=per_pass,
                )

            return go

        t_many, t_one, _, _ = alternate(run_path(k), run_path(1), 1)
        one, many = results[1], results[k]
        rel = max(
            abs(x - y) / max(abs(y), 1e-12)
            for x, y in zip(many.test_loss, one.test_loss, strict=True)  # type: ignore[attr-defined]
        )
        acc_same = many.test_acc == one.test_acc  # type: ignore[attr-defined]
        load1 = os.getloadavg()[0]
        row = {
            "benchmark": "path_cost",
            "model": arch,
            "dataset": args.dataset,
            "bn_images": args.bn_images,
            "test_images": args.test_images,
            "device": device_name(dev),
            "plain_point_s": round(t_plain, 3),
            "path_point_s": round(t_path, 3),
            "path_ratio": round(t_path / t_plain, 3),
            "path_cpu_time_ratio": round(c_path / c_plain, 3),
            "multi_points": k,
            "multi_max_rel_loss_diff": float(f"{rel:.3g}"),
            "multi_acc_identical": acc_same,
            "multi_time_ratio": round(t_many / t_one, 3),
            "load_before": round(load0, 2),
            "load_after": round(load1, 2),
        }
        rows.append(row)
        print(
            f"{arch:9s} path point {t_path:.2f}s / plain {t_plain:.2f}s = {row['path_ratio']}x "
            f"(CPU time {row['path_cpu_time_ratio']}x); "
            f"{k} points vmapped vs one by one: max rel loss diff {rel:.2g}, "
            f"acc identical {acc_same}, time {row['multi_time_ratio']}x "
            f"(load {load0:.1f}->{load1:.1f})",
            flush=True,
        )
    write_rows("path_cost", rows)
    return rows


if __name__ == "__main__":
    main()
