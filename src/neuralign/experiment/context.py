"""What every stage of a run uses: the config, the run folder, the device, data and models."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from neuralign.experiment.config import ExperimentConfig
from neuralign.experiment.rundir import RunDir
from neuralign.io.checkpoint import load_model
from neuralign.models import data_kwargs

__all__ = ["Echo", "RunContext", "RunData"]

logger = logging.getLogger(__name__)

Echo = Callable[[str], None]


@dataclass
class RunData:
    """The datasets of a run, prepared once."""

    train: Dataset
    test: Dataset
    align: Dataset
    bn: Dataset


class RunContext:
    """One experiment in one run folder: what the stages (``experiment/stages/``) share.

    Args:
        cfg: The experiment.
        run_dir: Its run folder (see :mod:`neuralign.experiment.rundir` for the layout).
        progress: Show progress bars.
        echo: Where the one-line stage summaries go (default: the log).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path,
        *,
        progress: bool = True,
        echo: Echo | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = RunDir(run_dir)
        self.dir = self.run_dir.root
        self.progress = progress
        #: Runs a whole experiment in another folder (the robust track's sub-run); set by
        #: the pipeline's Experiment, which is what runs one.
        self.run_sub: Callable[[ExperimentConfig, Path, Echo], dict[str, Any]] | None = None
        self.echo: Echo = echo or logger.info
        self.device = select_device(cfg.device)
        self._data: RunData | None = None

    # ------------------------------------------------------------------ data
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

    def loader(
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

    def train_loader(self) -> TensorLoader:
        """The shuffled, augmented (``data.augment``) training loader of endpoints and curves,
        sharded across processes."""
        c = self.cfg
        return self.loader(
            self.data.train,
            c.data.batch_size,
            shuffle=True,
            augment=c.data.augment,
            seed=c.seed,
            shard=True,
        )

    def bn_loader(self) -> TensorLoader | None:
        """The data of the per-point BatchNorm recomputation (``eval.bn_mode``)."""
        e = self.cfg.eval
        return bn_loader(
            self.data.train,
            e.bn_mode,
            subset=e.bn_subset,
            batch_size=e.batch_size,
            device=self.device,
            seed=self.cfg.seed,
        )

    def robust_test(self) -> Dataset:
        """Test data of the robust series (``robust.test_subset`` class-balanced images)."""
        n = self.cfg.robust.test_subset
        if n and n < len(self.data.test):
            return balanced_subset(self.data.test, n=n, seed=self.cfg.seed)
        return self.data.test

    def pgd(self) -> Any:
        """The run's PGD attack when ``[robust] enabled``, else ``None`` (docs/robustness.md)."""
        from neuralign.attacks import PGD

        r = self.cfg.robust
        return PGD(eps=r.eps, alpha=r.alpha, steps=r.steps) if r.enabled else None

    # ------------------------------------------------------------------ models and paths
    def model_kwargs(self) -> dict[str, Any]:
        """``create_model`` arguments of the configured architecture on the run's data."""
        m = self.cfg.model
        return data_kwargs(m.arch, self.data.train, width=m.width or None, extra=m.kwargs)

    def endpoint(self, seed: int) -> nn.Module:
        """The trained endpoint of ``seed`` (on the run's device, eval mode)."""
        return load_model(self.run_dir.endpoint_checkpoint(seed), device=self.device)

    def model_b_file(self, pair: int, variant: str) -> Path:
        """The checkpoint of endpoint B of ``pair`` as used by ``variant``."""
        _, b = self.cfg.pairs[pair]
        if variant == "unaligned":
            return self.run_dir.endpoint_checkpoint(b)
        return self.run_dir.align_checkpoint(pair, variant)

    def model_b(self, pair: int, variant: str) -> nn.Module:
        """Endpoint B of ``pair`` as used by ``variant`` (unaligned or aligned)."""
        return load_model(self.model_b_file(pair, variant), device=self.device)

    def path_inputs(self, pair: int, variant: str, kind: str) -> list[Path]:
        """The files the path ``variant``-``kind`` of ``pair`` is computed from."""
        if kind == "line":
            a, _ = self.cfg.pairs[pair]
            return [self.run_dir.endpoint_checkpoint(a), self.model_b_file(pair, variant)]
        return [self.run_dir.curve_checkpoint(pair, variant, kind)]

    def spec(self) -> Any:
        """The permutation spec of the architecture (discovered once, saved as spec.json)."""
        from neuralign.perm import PermutationSpec, discover_spec

        path = self.run_dir.spec_file
        if path.exists():
            return PermutationSpec.load(path)
        model = self.endpoint(self.cfg.endpoints.seeds[0])
        x = self.data.test.images[:2].float().div(255).to(self.device)
        spec = discover_spec(model, x)
        dist_.on_main(lambda: spec.save(path))
        return spec

    @staticmethod
    def curve_class(kind: str) -> Any:
        """The registered curve family ``kind`` (``line``, ``bezier``, ``polychain``, ...)."""
        from neuralign.curves import curve_family

        return curve_family(kind)

    def curve(self, pair: int, variant: str, kind: str) -> Any:
        """The path ``variant``-``kind`` of ``pair`` (trained curves are loaded)."""
        a, _ = self.cfg.pairs[pair]
        model_a, model_b = self.endpoint(a), self.model_b(pair, variant)
        cls = self.curve_class(kind)
        if kind == "line":
            return cls(model_a, model_b).to(self.device)
        curve = cls(model_a, model_b, num_bends=self.cfg.curves.bends)
        trained = self.run_dir.curve_checkpoint(pair, variant, kind)
        if not trained.exists():
            # never evaluate the untrained initial curve as if it were the trained one
            raise ConfigError(
                f"{trained} is missing: the curve {variant}-{kind} of pair {pair} is not "
                "trained yet; run the curves stage (`neuralign run` without --stage)"
            )
        curve = cls.load(trained, model_a)
        return curve.to(self.device)
