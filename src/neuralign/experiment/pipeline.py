"""``neuralign run``: train endpoints → align pairs → fit curves → evaluate paths → report.

Every stage writes its outputs into the run folder atomically and marks completion with a
small JSON file; re-running skips finished work, and a run killed at any point resumes
where it stopped (endpoint and curve training resume from their last epoch checkpoint).

Run folder layout::

    config.toml                 the experiment's config (guards against mixing configs)
    spec.json                   the discovered permutation spec
    endpoints/seed{S}/          model.safetensors, trainer.pt, metrics.jsonl, done.json
    align/pair{I}/{method}.json permutation + per-group correlations; {method}.safetensors
    curves/pair{I}/{variant}-{kind}/   curve checkpoint, history, done.json
    paths/pair{I}/{variant}-{kind}.json   PathResult
    planes/pair0/{variant}-bezier.json    PlaneResult
    timings.json                wall time per stage
    report.md, results.json, results.csv, figures/*.png
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralign import distributed as dist_
from neuralign.data import (
    Dataset,
    TensorLoader,
    alignment_subset,
    balanced_subset,
    bn_loader,
    bn_subset,
    load_dataset,
    make_loader,
)
from neuralign.device import select_device
from neuralign.errors import ConfigError
from neuralign.experiment.config import PAM_VARIANTS, ExperimentConfig, parse_config
from neuralign.io.atomic import atomic_write_text, remove_stale_temporaries
from neuralign.io.checkpoint import load_model, save_checkpoint
from neuralign.models import data_kwargs

logger = logging.getLogger(__name__)

Echo = Callable[[str], None]

STAGES = ("endpoints", "align", "curves", "paths", "report")


def variant_label(variant: str) -> str:
    """Display name of an alignment variant."""
    return {
        "unaligned": "Unaligned",
        "correlation": "Aligned",
        "weight": "Weight-matched",
        "pam-unaligned": "PAM Unaligned",
        "pam-aligned": "PAM Aligned",
    }.get(variant, variant)


def kind_label(kind: str) -> str:
    """Display name of a path kind."""
    return {"line": "line", "bezier": "Bezier curve", "polychain": "polygonal chain"}.get(
        kind, kind
    )


@dataclass
class RunData:
    """The datasets of a run, prepared once."""

    train: Dataset
    test: Dataset
    align: Dataset
    bn: Dataset


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically; in a distributed run on rank 0 only (the others wait)."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    dist_.on_main(lambda: atomic_write_text(path, text))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class Experiment:
    """One experiment in one run folder (see the module docstring for the layout)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path,
        *,
        force: bool = False,
        progress: bool = True,
        echo: Echo | None = None,
    ) -> None:
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.progress = progress
        self.echo: Echo = echo or logger.info
        self.device = select_device(cfg.device)
        self._data: RunData | None = None
        self._guard(force)

    # ------------------------------------------------------------------ run folder
    def _guard(self, force: bool) -> None:
        cfg_file = self.dir / "config.toml"
        if cfg_file.exists():
            from neuralign.experiment.config import load_config

            try:
                old = load_config(cfg_file)
            except ConfigError:
                old = None
            if (old is None or old.fingerprint() != self.cfg.fingerprint()) and not force:
                raise ConfigError(
                    f"{self.dir} holds a run of a different config; choose another --out "
                    "folder, or pass --force to overwrite its config (finished stages "
                    "whose inputs changed are NOT recomputed: delete the folder for a "
                    "clean run)"
                )

    def _start(self, stages: tuple[str, ...]) -> None:
        """Validate the inputs, then claim the run folder (write ``config.toml``).

        Nothing is written before the data load and the model fits them, so a bad input
        leaves no half-started run folder behind.
        """
        if any(s != "report" for s in stages):
            from neuralign.checks import build_model, check_model_fits_data, check_training_data

            check_training_data(self.data.train)
            probe = build_model(self.cfg.model.arch, self._model_kwargs())
            check_model_fits_data(probe, self.data.test, f"model {self.cfg.model.arch!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        stale = dist_.on_main(lambda: remove_stale_temporaries(self.dir))
        if stale:
            logger.info("removed %d half-written temporary file(s) of a killed run", stale)
        toml = self.cfg.to_toml()
        dist_.on_main(lambda: atomic_write_text(self.dir / "config.toml", toml))

    def _timing(self, stage: str, seconds: float) -> None:
        path = self.dir / "timings.json"
        t = _read_json(path) if path.exists() else {}
        t[stage] = round(t.get(stage, 0.0) + seconds, 3)
        _write_json(path, t)

    # ------------------------------------------------------------------ data and models
    @property
    def data(self) -> RunData:
        """Datasets of the run (loaded on first use)."""
        if self._data is None:
            c = self.cfg
            data_dir = c.data.data_dir or None
            train = load_dataset(
                c.data.dataset, "train", data_dir=data_dir, download=c.data.download
            )
            test = load_dataset(c.data.dataset, "test", data_dir=data_dir, download=c.data.download)
            if c.data.train_subset:
                train = balanced_subset(train, n=min(c.data.train_subset, len(train)), seed=c.seed)
            if c.data.test_subset:
                test = balanced_subset(test, n=min(c.data.test_subset, len(test)), seed=c.seed)
            align = alignment_subset(
                train, fraction=c.align.subset_fraction, size=c.align.subset_size, seed=c.seed
            )
            bn = bn_subset(train, c.eval.bn_subset, seed=c.seed)
            self._data = RunData(train, test, align, bn)
        return self._data

    def _model_kwargs(self) -> dict[str, Any]:
        m = self.cfg.model
        return data_kwargs(m.arch, self.data.train, width=m.width or None, extra=m.kwargs)

    def endpoint_path(self, seed: int) -> Path:
        """Checkpoint of the endpoint trained with ``seed``."""
        return self.dir / "endpoints" / f"seed{seed}" / "model.safetensors"

    def endpoint(self, seed: int) -> nn.Module:
        """The trained endpoint of ``seed`` (on the run's device, eval mode)."""
        return load_model(self.endpoint_path(seed), device=self.device)

    def model_b(self, pair: int, variant: str) -> nn.Module:
        """Endpoint B of ``pair`` as used by ``variant`` (unaligned or aligned)."""
        _, b = self.cfg.pairs[pair]
        if variant == "unaligned":
            return self.endpoint(b)
        return load_model(
            self.dir / "align" / f"pair{pair}" / f"{variant}.safetensors", device=self.device
        )

    def _loader(
        self,
        ds: Dataset,
        batch: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        shard: bool = False,
    ) -> TensorLoader:
        """A loader on the run's device; ``shard``: this rank's slice of global batches."""
        return make_loader(
            ds, batch, shuffle=shuffle, augment=augment, device=self.device, seed=seed, shard=shard
        )

    def _pgd(self) -> Any:
        """The run's PGD attack when ``[robust] enabled``, else ``None`` (docs/method.md, Robustness)."""
        from neuralign.attacks import PGD

        r = self.cfg.robust
        return PGD(eps=r.eps, alpha=r.alpha, steps=r.steps) if r.enabled else None

    # ------------------------------------------------------------------ stages
    def run(self, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
        """Run (or resume) the given stages in order; return the report's results."""
        results: dict[str, Any] = {}
        self._start(stages)
        for stage in STAGES:
            if stage not in stages:
                continue
            t0 = time.perf_counter()
            summary = getattr(self, f"stage_{stage}")()
            dt = time.perf_counter() - t0
            self._timing(stage, dt)
            self.echo(f"[{stage}] {summary} ({dt:.1f}s)")
            if stage == "report":
                results = _read_json(self.dir / "results.json")
        return results

    def stage_endpoints(self) -> str:
        """Train every seed's endpoint (resumable)."""
        from neuralign.checks import build_model
        from neuralign.training import TrainConfig, evaluate_model, train_model

        c = self.cfg
        e = c.endpoints
        accs = []
        for seed in e.seeds:
            out = self.endpoint_path(seed).parent
            done = out / "done.json"
            if done.exists():
                accs.append(_read_json(done)["test_acc"])
                continue
            torch.manual_seed(seed)
            model = build_model(c.model.arch, self._model_kwargs())
            tcfg = TrainConfig(
                epochs=e.epochs,
                batch_size=c.data.batch_size,
                lr=e.lr,
                momentum=e.momentum,
                weight_decay=e.weight_decay,
                schedule=e.schedule,
                lr_step=e.lr_step,
                lr_gamma=e.lr_gamma,
                augment=c.data.augment,
                seed=seed,
            )
            t0 = time.perf_counter()
            train_model(
                model,
                self.data.train,
                None,
                tcfg,
                out_dir=out,
                device=self.device,
                progress=self.progress,
                attack=self._pgd().attack_model if c.robust.enabled else None,
                metadata={"dataset": c.data.dataset, "adversarial": c.robust.enabled},
            )
            loss, acc = evaluate_model(model, self._loader(self.data.test, c.eval.batch_size))
            info = {"seed": seed, "test_loss": loss, "test_acc": acc}
            if c.robust.enabled:
                from neuralign.paths import evaluate_state_robust

                _, _, info["robust_test_loss"], info["robust_test_acc"] = evaluate_state_robust(
                    model,
                    model.state_dict(),
                    self._loader(self._robust_test(), c.eval.batch_size),
                    self._pgd(),
                    generator=torch.Generator().manual_seed(c.seed),
                )
            _write_json(done, {**info, "seconds": time.perf_counter() - t0})
            accs.append(acc)
        return "endpoint test accuracy " + ", ".join(
            f"seed {s}: {a:.2f}%" for s, a in zip(e.seeds, accs, strict=True)
        )

    def spec(self) -> Any:
        """The permutation spec of the architecture (discovered once, saved as spec.json)."""
        from neuralign.perm import PermutationSpec, discover_spec

        path = self.dir / "spec.json"
        if path.exists():
            return PermutationSpec.load(path)
        model = self.endpoint(self.cfg.endpoints.seeds[0])
        x = self.data.test.images[:2].float().div(255).to(self.device)
        spec = discover_spec(model, x)
        dist_.on_main(lambda: spec.save(path))
        return spec

    def methods(self) -> list[str]:
        """Alignment methods the configured variants need (PAM Aligned starts from
        the correlation alignment; PAM variants are themselves run in the curves stage)."""
        needed = {"pam-aligned": "correlation", "pam-unaligned": "unaligned"}
        out: list[str] = []
        for v in self.cfg.curves.variants:
            m = needed.get(v, v)
            if m != "unaligned" and m not in out:
                out.append(m)
        return out

    def stage_align(self) -> str:
        """Align every pair with every needed method."""
        from neuralign.alignment import align
        from neuralign.attacks import alignment_batches

        c = self.cfg
        parts = []
        methods = self.methods()
        if not methods:
            return "no aligned variant configured"
        spec = self.spec()
        for i, (a, b) in enumerate(c.pairs):
            for method in methods:
                out = self.dir / "align" / f"pair{i}" / f"{method}.json"
                if out.exists():
                    info = _read_json(out)
                else:
                    adversarial = c.robust.enabled and c.robust.align_on == "adversarial"
                    loader = alignment_batches(
                        self.data.align,
                        batch_size=c.align.batch_size,
                        device=self.device,
                        attack=self._pgd() if adversarial else None,
                        reference=self.endpoint(a),
                        seed=c.seed,
                    )
                    res = align(
                        self.endpoint(a),
                        self.endpoint(b),
                        loader,
                        method=method,
                        spec=spec,
                        pre_activation=c.align.pre_activation,
                        seed=c.seed,
                        progress=self.progress,
                    )
                    meta = {"aligned_to_seed": a, "seed": b, "method": method}
                    ckpt = out.with_suffix(".safetensors")
                    aligned = res.aligned_b
                    dist_.on_main(save_checkpoint, ckpt, aligned, meta)
                    info = {
                        "pair": [a, b],
                        "method": method,
                        "seconds": res.seconds,
                        "num_images": res.num_images,
                        "permutation": {g: p.tolist() for g, p in res.permutation.perms.items()},
                        "groups": res.table(),
                    }
                    _write_json(out, info)
                rows = [r for r in info["groups"] if r["before"] is not None]
                if rows:
                    before = sum(r["before"] for r in rows) / len(rows)
                    after = sum(r["after"] for r in rows) / len(rows)
                    parts.append(f"pair {i} {method}: mean corr {before:.3f} -> {after:.3f}")
        return "; ".join(parts)

    def curve_dir(self, pair: int, variant: str, kind: str) -> Path:
        """Folder of the trained curve ``variant``-``kind`` of ``pair``."""
        return self.dir / "curves" / f"pair{pair}" / f"{variant}-{kind}"

    def _curve_class(self, kind: str) -> Any:
        from neuralign.curves import Bezier, Line, PolyChain

        return {"line": Line, "bezier": Bezier, "polychain": PolyChain}[kind]

    def curve(self, pair: int, variant: str, kind: str) -> Any:
        """The path ``variant``-``kind`` of ``pair`` (trained curves are loaded)."""
        a, _ = self.cfg.pairs[pair]
        model_a, model_b = self.endpoint(a), self.model_b(pair, variant)
        if kind == "line":
            return self._curve_class("line")(model_a, model_b).to(self.device)
        cls = self._curve_class(kind)
        curve = cls(model_a, model_b, num_bends=self.cfg.curves.bends)
        trained = self.curve_dir(pair, variant, kind) / "curve.safetensors"
        if trained.exists():
            curve = cls.load(trained, model_a)
        return curve.to(self.device)

    def stage_curves(self) -> str:
        """Train every (pair, variant, kind) curve (resumable)."""
        from neuralign.curves import train_curve

        c = self.cfg
        cc = c.curves
        kinds = [k for k in cc.kinds if k != "line"]
        parts = []
        for i, (a, _) in enumerate(c.pairs):
            for variant in cc.variants:
                if variant in PAM_VARIANTS:  # PAM trains the Bezier curve and the endpoint
                    parts.append(self.run_pam(i, variant))
                for kind in kinds:
                    out = self.curve_dir(i, variant, kind)
                    done = out / "done.json"
                    if done.exists():
                        parts.append(f"pair {i} {variant}-{kind}: done")
                        continue
                    cls = self._curve_class(kind)
                    curve = cls(self.endpoint(a), self.model_b(i, variant), num_bends=cc.bends).to(
                        self.device
                    )
                    loader = self._loader(
                        self.data.train,
                        c.data.batch_size,
                        shuffle=True,
                        augment=c.data.augment,
                        seed=c.seed,
                        shard=True,
                    )
                    res = train_curve(
                        curve,
                        loader,
                        cc.training,
                        device=self.device,
                        progress=self.progress,
                        log_path=out / "history.jsonl",
                        checkpoint_dir=out,
                        seed=c.seed,
                        # Robust curves: PGD against φ(t) with BN batch statistics (φ(t) has
                        # no running statistics of its own), trained on at that same t.
                        attack=(
                            self._pgd().with_options(mode="batch-stats").attack_state
                            if c.robust.enabled
                            else None
                        ),
                    )
                    last = res.history[-1] if res.history else {}
                    _write_json(done, {"epochs": cc.epochs, "final": last})
                    loss = last.get("loss", float("nan"))
                    parts.append(f"pair {i} {variant}-{kind}: train loss {loss:.3f}")
        return "; ".join(parts) if parts else "no trainable curve configured"

    def run_pam(self, pair: int, variant: str) -> str:
        """PAM for ``pair`` (``pam-unaligned`` or ``pam-aligned``), resumable.

        Writes the Bezier curve to ``curves/pair{I}/{variant}-bezier/`` (PAM's own checkpoints
        under ``pam/`` there) and the permuted endpoint P∘θ₂ to
        ``align/pair{I}/{variant}.safetensors`` (+ ``.json``: changed fractions, objective
        log), so :meth:`model_b` and :meth:`curve` serve PAM variants like any other.
        """
        from neuralign.pamopt import pam, scoring_subset
        from neuralign.perm import Permutation

        c, p = self.cfg, self.cfg.pam
        out = self.curve_dir(pair, variant, "bezier")
        done = out / "done.json"
        if done.exists():
            return f"pair {pair} {variant}: done"
        a, b = c.pairs[pair]
        spec = self.spec()
        if variant == "pam-aligned":
            info = _read_json(self.dir / "align" / f"pair{pair}" / "correlation.json")
            init: str | Permutation = Permutation(info["permutation"])
        else:
            init = "identity"
        train = self.data.train
        score = scoring_subset(train, p, seed=c.seed + 2)
        loader = self._loader(
            train, c.data.batch_size, shuffle=True, augment=c.data.augment, seed=c.seed, shard=True
        )
        res = pam(
            self.endpoint(a),
            self.endpoint(b),
            loader,
            p,
            init=init,
            spec=spec,
            score_data=self._loader(score, c.eval.batch_size),
            device=self.device,
            progress=self.progress,
            checkpoint_dir=out / "pam",
            metadata={"pair": pair, "variant": variant, "seeds": [a, b]},
        )
        align_file = self.dir / "align" / f"pair{pair}" / f"{variant}.json"

        def write() -> None:
            res.curve.save(out / "curve.safetensors")
            save_checkpoint(
                align_file.with_suffix(".safetensors"),
                res.aligned_b,
                {"aligned_to_seed": a, "seed": b, "method": variant},
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
        _write_json(align_file, summary)
        last = res.steps[-1].psi_history[-1] if res.steps[-1].psi_history else {}
        _write_json(done, {"epochs": c.curves.epochs, "final": last, "pam": summary})
        return (
            f"pair {pair} {variant}: PAM changed {100 * res.changed_units:.1f}% of units, "
            f"objective {res.objective_log[0]['objective']:.3f} -> "
            f"{res.objective_log[-1]['objective']:.3f}"
        )

    def path_file(self, pair: int, variant: str, kind: str) -> Path:
        """Where the PathResult of ``variant``-``kind`` of ``pair`` is written."""
        return self.dir / "paths" / f"pair{pair}" / f"{variant}-{kind}.json"

    def _bn_loader(self) -> TensorLoader | None:
        e = self.cfg.eval
        return bn_loader(
            self.data.train,
            e.bn_mode,
            subset=e.bn_subset,
            batch_size=e.batch_size,
            device=self.device,
            seed=self.cfg.seed,
        )

    def _robust_test(self) -> Dataset:
        """Test data of the robust series (``robust.test_subset`` class-balanced images)."""
        n = self.cfg.robust.test_subset
        if n and n < len(self.data.test):
            return balanced_subset(self.data.test, n=n, seed=self.cfg.seed)
        return self.data.test

    def _robust_path(self, pair: int, variant: str, kind: str, bn: Any) -> Any:
        """Clean and PGD series along a path (``[robust] enabled``)."""
        from neuralign.paths import evaluate_path_robust

        c = self.cfg
        return evaluate_path_robust(
            self.curve(pair, variant, kind),
            self._loader(self._robust_test(), c.eval.batch_size),
            attack=self._pgd(),
            ts=c.eval.points,
            bn_data=bn,
            bn_source=c.robust.bn_source,
            bn_mode=c.eval.bn_mode,
            seed=c.seed,
            device=self.device,
            progress=self.progress,
            metadata={"pair": pair, "variant": variant, "kind": kind, "seeds": list(c.pairs[pair])},
        )

    def stage_paths(self) -> str:
        """Evaluate every path at ``eval.points`` values of t (and the planes)."""
        from neuralign.paths import PathResult, evaluate_path, evaluate_plane

        c = self.cfg
        test = self._loader(self.data.test, c.eval.batch_size)
        bn = self._bn_loader()
        train = self._loader(self.data.bn, c.eval.batch_size) if c.eval.train_metrics else None
        parts = []
        for i, _ in enumerate(c.pairs):
            for variant in c.curves.variants:
                for kind in c.curves.kinds:
                    out = self.path_file(i, variant, kind)
                    if out.exists():
                        res = PathResult.load(out)
                    elif c.robust.enabled:
                        res = self._robust_path(i, variant, kind, bn)
                        dist_.on_main(res.save, out)
                    else:
                        res = evaluate_path(
                            self.curve(i, variant, kind),
                            test,
                            ts=c.eval.points,
                            bn_data=bn,
                            bn_mode=c.eval.bn_mode,
                            train_data=train,
                            device=self.device,
                            progress=self.progress,
                            metadata={
                                "pair": i,
                                "variant": variant,
                                "kind": kind,
                                "seeds": list(c.pairs[i]),
                            },
                        )
                        dist_.on_main(res.save, out)
                    parts.append(f"pair {i} {variant}-{kind}: min acc {res.min_accuracy:.2f}%")
        if c.eval.plane and "bezier" in c.curves.kinds:
            for variant in c.curves.variants:
                out = self.dir / "planes" / "pair0" / f"{variant}-bezier.json"
                if out.exists():
                    continue
                plane_test = test
                if c.eval.plane_test_subset and c.eval.plane_test_subset < len(self.data.test):
                    sub = balanced_subset(self.data.test, n=c.eval.plane_test_subset, seed=c.seed)
                    plane_test = self._loader(sub, c.eval.batch_size)
                plane = evaluate_plane(
                    self.curve(0, variant, "bezier"),
                    plane_test,
                    grid=(c.eval.plane_grid, c.eval.plane_grid),
                    bn_data=bn,
                    bn_mode=c.eval.bn_mode,
                    seed=c.seed,
                    device=self.device,
                    progress=self.progress,
                    metadata={"variant": variant, "pair": 0},
                )
                dist_.on_main(plane.save, out)
        return "; ".join(parts)

    def stage_report(self) -> str:
        """Write report.md, results.json, results.csv and the figures."""
        from neuralign.experiment.report import write_report

        provenance = self.provenance()
        path = dist_.on_main(lambda: write_report(self.dir, provenance=provenance))
        return f"report written to {path}"

    def provenance(self) -> dict[str, Any]:
        """Versions, device and seeds for the report."""
        from neuralign._version import __version__

        dev = self.device
        name = (
            torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else platform.processor() or platform.machine()
        )
        return {
            "neuralign": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": f"{dev.type} ({name})",
            "threads": torch.get_num_threads(),
            "seeds": self.cfg.endpoints.seeds,
            "pairs": self.cfg.pairs,
            "dataset": self.cfg.data.dataset,
            "arch": self.cfg.model.arch,
        }


def run_experiment(
    cfg: ExperimentConfig | dict[str, Any],
    run_dir: str | Path,
    *,
    stages: tuple[str, ...] = STAGES,
    force: bool = False,
    progress: bool = True,
    echo: Echo | None = None,
) -> dict[str, Any]:
    """Run or resume an experiment; return the report's ``results.json`` content."""
    if isinstance(cfg, dict):
        cfg = parse_config(cfg)
    return Experiment(cfg, run_dir, force=force, progress=progress, echo=echo).run(stages)
