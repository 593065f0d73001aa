"""Stage ``align``: align every pair with every method the configured variants need."""

from __future__ import annotations

from typing import Any

from neuralign import distributed as dist_
from neuralign.experiment.context import RunContext


def methods(variants: list[str]) -> list[str]:
    """Alignment methods that ``variants`` need (PAM Aligned starts from the correlation
    alignment; the PAM variants themselves run in the curves stage)."""
    needed = {"pam-aligned": "correlation", "pam-unaligned": "unaligned"}
    out: list[str] = []
    for v in variants:
        m = needed.get(v, v)
        if m != "unaligned" and m not in out:
            out.append(m)
    return out


def _align_pair(ctx: RunContext, pair: int, method: str, spec: Any) -> dict[str, Any]:
    """Align pair ``pair`` with ``method``; write the aligned B and the record (marker)."""
    from neuralign.alignment import align
    from neuralign.attacks import alignment_batches
    from neuralign.io.checkpoint import save_checkpoint

    c = ctx.cfg
    rd = ctx.run_dir
    a, b = c.pairs[pair]
    model_a = ctx.endpoint(a)
    adversarial = c.robust.enabled and c.robust.align_on == "adversarial"
    batches = alignment_batches(
        ctx.data.align,
        batch_size=c.align.batch_size,
        device=ctx.device,
        # The same PGD inputs (crafted against A, the reference) go to both networks.
        attack=ctx.pgd() if adversarial else None,
        reference=model_a,
        seed=c.seed,
    )
    res = align(
        model_a,
        ctx.endpoint(b),
        batches,
        method=method,
        spec=spec,
        pre_activation=c.align.pre_activation,
        seed=c.seed,
        progress=ctx.progress,
    )
    ckpt = rd.align_checkpoint(pair, method)
    dist_.on_main(
        save_checkpoint, ckpt, res.aligned_b, {"aligned_to_seed": a, "seed": b, "method": method}
    )
    info = {
        "pair": [a, b],
        "method": method,
        "seconds": res.seconds,
        "num_images": res.num_images,
        "permutation": {g: p.tolist() for g, p in res.permutation.perms.items()},
        "groups": res.table(),
    }
    rd.mark_done(
        rd.align_record(pair, method),
        info,
        artefacts=[ckpt],
        inputs=[rd.endpoint_checkpoint(a), rd.endpoint_checkpoint(b)],
    )
    return info


def run(ctx: RunContext) -> str:
    """Align every pair with every needed method (finished alignments are kept)."""
    needed = methods(ctx.cfg.curves.variants)
    if not needed:
        return "no aligned variant configured"
    spec = ctx.spec()
    parts = []
    for i, _ in enumerate(ctx.cfg.pairs):
        for method in needed:
            info = ctx.run_dir.done(ctx.run_dir.align_record(i, method))
            if info is None:
                info = _align_pair(ctx, i, method, spec)
            rows = [r for r in info["groups"] if r["before"] is not None]
            if rows:
                before = sum(r["before"] for r in rows) / len(rows)
                after = sum(r["after"] for r in rows) / len(rows)
                parts.append(f"pair {i} {method}: mean corr {before:.3f} -> {after:.3f}")
    return "; ".join(parts)
