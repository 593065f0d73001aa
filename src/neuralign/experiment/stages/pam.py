"""PAM within the ``curves`` stage: the permutation and the Bezier curve of a pair, jointly."""

from __future__ import annotations

from neuralign import distributed as dist_
from neuralign.experiment.context import RunContext


def run_pair(ctx: RunContext, pair: int, variant: str) -> str:
    """PAM for ``pair`` (``pam-unaligned`` or ``pam-aligned``), resumable.

    Writes the Bezier curve to the ``{variant}-bezier`` curve folder (PAM's own checkpoints
    under ``pam/`` there) and the permuted endpoint P∘θ₂ as the alignment ``variant`` of the
    pair (+ its record: changed fractions, objective log), so that the context's ``model_b``
    and ``curve`` serve PAM variants like any other.
    """
    from neuralign.io.checkpoint import save_checkpoint
    from neuralign.pamopt import pam, scoring_subset
    from neuralign.perm import Permutation

    c, p, rd = ctx.cfg, ctx.cfg.pam, ctx.run_dir
    marker = rd.curve_marker(pair, variant, "bezier")
    if rd.is_done(marker):
        return f"pair {pair} {variant}: done"
    a, b = c.pairs[pair]
    spec = ctx.spec()
    if variant == "pam-aligned":
        info = rd.read_json(rd.align_record(pair, "correlation"))
        init: str | Permutation = Permutation(info["permutation"])
    else:
        init = "identity"
    score = scoring_subset(ctx.data.train, p, seed=c.seed + 2)
    res = pam(
        ctx.endpoint(a),
        ctx.endpoint(b),
        ctx.train_loader(),
        p,
        init=init,
        spec=spec,
        score_data=ctx.loader(score, c.eval.batch_size),
        device=ctx.device,
        progress=ctx.progress,
        checkpoint_dir=rd.pam_dir(pair, variant),
        metadata={"pair": pair, "variant": variant, "seeds": [a, b]},
    )
    curve_file = rd.curve_checkpoint(pair, variant, "bezier")
    aligned_file = rd.align_checkpoint(pair, variant)

    def write() -> None:
        res.curve.save(curve_file)
        save_checkpoint(
            aligned_file, res.aligned_b, {"aligned_to_seed": a, "seed": b, "method": variant}
        )

    dist_.on_main(write)
    summary = {
        "pair": [a, b],
        "method": variant,
        "changed_fraction": res.changed_fraction,
        "changed_units": res.changed_units,
        "objective_log": res.objective_log,
        "timings": res.timings,
        "permutation": {g: q.tolist() for g, q in res.permutation.perms.items()},
    }
    inputs = [rd.endpoint_checkpoint(a), rd.endpoint_checkpoint(b)]
    if variant == "pam-aligned":
        inputs.append(rd.align_record(pair, "correlation"))
    rd.mark_done(rd.align_record(pair, variant), summary, artefacts=[aligned_file], inputs=inputs)
    last = res.steps[-1].psi_history[-1] if res.steps[-1].psi_history else {}
    rd.mark_done(
        marker,
        {"epochs": c.curves.epochs, "final": last, "pam": summary},
        artefacts=[curve_file, aligned_file],
        inputs=inputs,
        state=[rd.pam_dir(pair, variant)],
    )
    return (
        f"pair {pair} {variant}: PAM changed {100 * res.changed_units:.1f}% of units, "
        f"objective {res.objective_log[0]['objective']:.3f} -> "
        f"{res.objective_log[-1]['objective']:.3f}"
    )
