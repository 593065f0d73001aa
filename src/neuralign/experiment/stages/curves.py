"""Stage ``curves``: train every (pair, variant, kind) curve; PAM variants run PAM."""

from __future__ import annotations

from neuralign.experiment.config import PAM_VARIANTS
from neuralign.experiment.context import RunContext
from neuralign.experiment.stages import pam


def _train(ctx: RunContext, pair: int, variant: str, kind: str) -> str:
    """Train (or resume) one curve; write its marker."""
    from neuralign.curves import train_curve

    c = ctx.cfg
    rd = ctx.run_dir
    a, _ = c.pairs[pair]
    cls = ctx.curve_class(kind)
    curve = cls(ctx.endpoint(a), ctx.model_b(pair, variant), num_bends=c.curves.bends)
    pgd = ctx.pgd()
    training = c.curves.training
    if pgd is not None and c.robust.schedule:  # robust curves: the robust schedule
        training = training.replace(schedule=c.robust.schedule)
    res = train_curve(
        curve.to(ctx.device),
        ctx.train_loader(),
        training,
        device=ctx.device,
        progress=ctx.progress,
        log_path=rd.curve_history(pair, variant, kind),
        checkpoint_dir=rd.curve_dir(pair, variant, kind),
        seed=c.seed,
        # Robust curves: PGD against φ(t) with BN batch statistics (φ(t) has no running
        # statistics of its own), trained on at that same t (docs/robustness.md).
        attack=pgd.with_options(mode="batch-stats").attack_state if pgd is not None else None,
    )
    last = res.history[-1] if res.history else {}
    rd.mark_done(
        rd.curve_marker(pair, variant, kind),
        {"epochs": c.curves.epochs, "final": last},
        artefacts=[rd.curve_checkpoint(pair, variant, kind)],
        inputs=[rd.endpoint_checkpoint(a), ctx.model_b_file(pair, variant)],
        state=[rd.curve_dir(pair, variant, kind)],
    )
    return f"pair {pair} {variant}-{kind}: train loss {last.get('loss', float('nan')):.3f}"


def run(ctx: RunContext) -> str:
    """Train every configured curve (finished ones are kept, killed ones resume)."""
    cc = ctx.cfg.curves
    kinds = [k for k in cc.kinds if k != "line"]
    parts = []
    for i, _ in enumerate(ctx.cfg.pairs):
        for variant in cc.variants:
            if variant in PAM_VARIANTS:  # PAM trains the Bezier curve and the endpoint
                parts.append(pam.run_pair(ctx, i, variant))
            for kind in kinds:
                if ctx.run_dir.is_done(ctx.run_dir.curve_marker(i, variant, kind)):
                    parts.append(f"pair {i} {variant}-{kind}: done")
                else:
                    parts.append(_train(ctx, i, variant, kind))
    return "; ".join(parts) if parts else "no trainable curve configured"
