"""Stage ``endpoints``: train every seed's endpoint network (resumable)."""

from __future__ import annotations

import time

import torch

from neuralign.experiment.context import RunContext


def run(ctx: RunContext) -> str:
    """Train (or resume) each seed's endpoint and record its test metrics in its marker."""
    from neuralign.attacks import adversarial_training
    from neuralign.checks import build_model
    from neuralign.training import TrainConfig, evaluate_model, train_model

    c = ctx.cfg
    e = c.endpoints
    rd = ctx.run_dir
    accs = []
    for seed in e.seeds:
        marker = rd.endpoint_marker(seed)
        done = rd.done(marker)
        if done is not None:
            accs.append(done["test_acc"])
            continue
        torch.manual_seed(seed)
        model = build_model(c.model.arch, ctx.model_kwargs())
        tcfg = TrainConfig(
            epochs=e.epochs,
            batch_size=c.data.batch_size,
            lr=e.lr,
            momentum=e.momentum,
            weight_decay=e.weight_decay,
            schedule=c.robust.schedule if c.robust.enabled and c.robust.schedule else e.schedule,
            lr_step=e.lr_step,
            lr_gamma=e.lr_gamma,
            augment=c.data.augment,
            seed=seed,
        )
        t0 = time.perf_counter()
        pgd = ctx.pgd()
        train_model(
            model,
            ctx.data.train,
            None,
            tcfg,
            out_dir=rd.endpoint_dir(seed),
            device=ctx.device,
            progress=ctx.progress,
            attack=adversarial_training(pgd, c.robust.train_mode) if pgd is not None else None,
            metadata={"dataset": c.data.dataset, "adversarial": c.robust.enabled},
        )
        loss, acc = evaluate_model(model, ctx.loader(ctx.data.test, c.eval.batch_size))
        info = {"seed": seed, "test_loss": loss, "test_acc": acc}
        if pgd is not None:
            from neuralign.paths import evaluate_state_robust

            _, _, info["robust_test_loss"], info["robust_test_acc"] = evaluate_state_robust(
                model,
                model.state_dict(),
                ctx.loader(ctx.robust_test(), c.eval.batch_size),
                pgd,
                generator=torch.Generator().manual_seed(c.seed),
            )
        rd.mark_done(
            marker,
            {**info, "seconds": time.perf_counter() - t0},
            artefacts=[rd.endpoint_checkpoint(seed)],
            state=[rd.endpoint_dir(seed) / "trainer.pt"],
        )
        accs.append(acc)
    return "endpoint test accuracy " + ", ".join(
        f"seed {s}: {a:.2f}%" for s, a in zip(e.seeds, accs, strict=True)
    )
