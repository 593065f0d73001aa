"""Stage ``paths``: evaluate every path at ``eval.points`` values of t, and the planes."""

from __future__ import annotations

from typing import Any

from neuralign.data import balanced_subset
from neuralign.experiment.context import RunContext


def _evaluate(ctx: RunContext, pair: int, variant: str, kind: str, test: Any, bn: Any) -> Any:
    """The PathResult of one path (clean, or clean + PGD with ``[robust] enabled``)."""
    from neuralign.paths import evaluate_path, evaluate_path_robust

    c = ctx.cfg
    meta = {"pair": pair, "variant": variant, "kind": kind, "seeds": list(c.pairs[pair])}
    if c.robust.enabled:
        return evaluate_path_robust(
            ctx.curve(pair, variant, kind),
            ctx.loader(ctx.robust_test(), c.eval.batch_size),
            attack=ctx.pgd(),
            ts=c.eval.points,
            bn_data=bn,
            bn_source=c.robust.bn_source,
            bn_mode=c.eval.bn_mode,
            seed=c.seed,
            device=ctx.device,
            progress=ctx.progress,
            metadata=meta,
        )
    train = ctx.loader(ctx.data.bn, c.eval.batch_size) if c.eval.train_metrics else None
    return evaluate_path(
        ctx.curve(pair, variant, kind),
        test,
        ts=c.eval.points,
        bn_data=bn,
        bn_mode=c.eval.bn_mode,
        train_data=train,
        device=ctx.device,
        progress=ctx.progress,
        metadata=meta,
    )


def _planes(ctx: RunContext, test: Any, bn: Any) -> None:
    """The loss/accuracy plane through each variant's Bezier curve of pair 0."""
    from neuralign.paths import evaluate_plane

    c = ctx.cfg
    for variant in c.curves.variants:
        out = ctx.run_dir.plane_file(variant)
        if ctx.run_dir.is_done(out):
            continue
        plane_test = test
        if c.eval.plane_test_subset and c.eval.plane_test_subset < len(ctx.data.test):
            sub = balanced_subset(ctx.data.test, n=c.eval.plane_test_subset, seed=c.seed)
            plane_test = ctx.loader(sub, c.eval.batch_size)
        plane = evaluate_plane(
            ctx.curve(0, variant, "bezier"),
            plane_test,
            grid=(c.eval.plane_grid, c.eval.plane_grid),
            bn_data=bn,
            bn_mode=c.eval.bn_mode,
            seed=c.seed,
            device=ctx.device,
            progress=ctx.progress,
            metadata={"variant": variant, "pair": 0},
        )
        ctx.run_dir.mark_done(out, save=plane.save, inputs=ctx.path_inputs(0, variant, "bezier"))


def run(ctx: RunContext) -> str:
    """Evaluate every (pair, variant, kind) path and, with ``eval.plane``, the planes."""
    from neuralign.paths import PathResult

    c = ctx.cfg
    rd = ctx.run_dir
    test = ctx.loader(ctx.data.test, c.eval.batch_size)
    bn = ctx.bn_loader()
    parts = []
    for i, _ in enumerate(c.pairs):
        for variant in c.curves.variants:
            for kind in c.curves.kinds:
                out = rd.path_file(i, variant, kind)
                if rd.is_done(out):
                    res = PathResult.load(out)
                else:
                    res = _evaluate(ctx, i, variant, kind, test, bn)
                    rd.mark_done(out, save=res.save, inputs=ctx.path_inputs(i, variant, kind))
                parts.append(f"pair {i} {variant}-{kind}: min acc {res.min_accuracy:.2f}%")
    if c.eval.plane and "bezier" in c.curves.kinds:
        _planes(ctx, test, bn)
    return "; ".join(parts)
