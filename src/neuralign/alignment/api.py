"""``align``: permute model B's hidden units to match model A's."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neuralign.alignment.correlation import (
    correlation_of,
    correlation_statistics,
    match_correlation,
)
from neuralign.alignment.weight_matching import weight_matching
from neuralign.errors import ConfigError
from neuralign.perm import (
    Coverage,
    Permutation,
    PermutationSpec,
    SpecError,
    apply_permutation,
    coverage,
    discover_spec,
)
from neuralign.perm.taps import derive_taps

METHODS = ("correlation", "weight")

log = logging.getLogger(__name__)


@dataclass
class AlignmentResult:
    """Outcome of :func:`align`.

    Attributes:
        permutation: per-group permutation; applying it to B gives ``aligned_b``.
        aligned_b: a new module computing the same function as B, units matched to A.
        spec: the permutation spec used.
        method: ``"correlation"`` or ``"weight"``.
        correlation_before: per group, mean correlation of A's unit i with B's unit i
            (identity matching); empty when no data was given.
        correlation_after: per group, mean correlation of matched units after alignment.
        objective: weight matching's objective after each sweep (empty for correlation).
        num_images: images used for the statistics.
        seconds: wall time of the alignment.
        coverage: what the spec permutes and what it leaves unpermuted, with reasons.
        untapped: groups the correlation method could not observe (no activation tap even
            after deriving taps from their producer layers); they keep the identity.
    """

    permutation: Permutation
    aligned_b: nn.Module
    spec: PermutationSpec
    method: str
    correlation_before: dict[str, float] = field(default_factory=dict)
    correlation_after: dict[str, float] = field(default_factory=dict)
    objective: list[float] = field(default_factory=list)
    num_images: int = 0
    seconds: float = 0.0
    coverage: Coverage | None = None
    untapped: list[str] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        """Rows ``{group, size, before, after}`` in forward order (for printing/CSV)."""
        rows = []
        for g, grp in self.spec.groups.items():
            rows.append(
                {
                    "group": g,
                    "size": grp.size,
                    "before": self.correlation_before.get(g),
                    "after": self.correlation_after.get(g),
                }
            )
        return rows


def _as_batches(
    data: Any, subset_fraction: float, seed: int, batch_size: int, device: torch.device
) -> Iterable[Any]:
    from neuralign.data import Dataset, TensorLoader, balanced_subset

    if isinstance(data, Dataset):
        if not 0 < subset_fraction <= 1:
            raise ConfigError(f"subset_fraction must be in (0, 1], got {subset_fraction}")
        sub = (
            data
            if subset_fraction >= 1
            else balanced_subset(data, fraction=subset_fraction, seed=seed)
        )
        return TensorLoader(sub, batch_size=batch_size, device=device)
    if isinstance(data, torch.Tensor):
        return [data[i : i + batch_size] for i in range(0, data.shape[0], batch_size)]
    return data


def _example_input(data: Any, batches: Iterable[Any]) -> torch.Tensor:
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return x[:2]
    raise ConfigError("alignment data is empty")


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def align(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any = None,
    method: str = "correlation",
    *,
    spec: PermutationSpec | None = None,
    example_input: torch.Tensor | None = None,
    pre_activation: bool = False,
    subset_fraction: float = 0.2,
    batch_size: int = 500,
    seed: int = 0,
    max_sweeps: int = 100,
    progress: bool = False,
) -> AlignmentResult:
    """Align ``model_b`` to ``model_a`` (neither is modified).

    Args:
        model_a: the reference network θ₁ (never changed).
        model_b: the network θ₂ whose hidden units are permuted.
        data: a :class:`~neuralign.data.Dataset` (a class-balanced, non-augmented
            ``subset_fraction`` of it is used — the paper's 20% of the training set), an
            iterable of ``(x, y)`` batches or of input tensors, or a tensor of inputs.
            Required for ``method="correlation"``; optional for ``"weight"`` (then used
            only to report correlations).
        method: ``"correlation"`` (the paper's Algorithm 1) or ``"weight"`` (weight
            matching, Ainsworth et al. 2023).
        spec: permutation spec; discovered (and verified) from the model when None.
        example_input: input for discovery when no data is given.
        pre_activation: correlate pre-activation values (BN output) instead of
            post-activation ones (an ablation; default post-activation as in the paper).
        subset_fraction: fraction of a Dataset used as alignment data.
        batch_size: batch size for Dataset/tensor data.
        seed: subset selection and weight matching's group order.
        max_sweeps: weight matching's sweep limit.
        progress: show a progress bar.

    Returns:
        An :class:`AlignmentResult`.
    """
    if method not in METHODS:
        raise ConfigError(
            f"unknown alignment method {method!r}; choose one of {', '.join(METHODS)}"
        )
    from neuralign.checks import check_compatible_models

    check_compatible_models([model_a, model_b], what="align")
    t0 = time.perf_counter()
    device = _model_device(model_a)
    batches = (
        _as_batches(data, subset_fraction, seed, batch_size, device) if data is not None else None
    )
    if spec is None:
        if example_input is None:
            if batches is None:
                raise ConfigError(
                    "pass data or example_input so the permutation spec can be discovered"
                )
            example_input = _example_input(data, batches)
        spec = discover_spec(model_a, example_input.to(device))
    check_compatible_models([model_a, model_b], spec=spec, what="align")
    cov = coverage(spec, model_a)
    if cov.empty:
        raise SpecError(
            f"nothing to align: the permutation spec of {type(model_a).__name__} has no "
            f"groups.\n{cov}"
        )
    untapped: list[str] = []
    if batches is not None:
        missing = [g.name for g in spec.groups.values() if not g.taps]
        if missing:
            # A hand-written spec has no taps: read activations at its producer layers.
            if example_input is None:
                example_input = _example_input(data, batches)
            spec_stats = derive_taps(model_a, spec, example_input.to(device))
            untapped = [g.name for g in spec_stats.groups.values() if not g.taps]
            if len(untapped) == len(spec.groups) and method == "correlation":
                raise SpecError(
                    "method='correlation' needs activation taps, and none of the spec's groups "
                    f"has one or a producer layer (Linear/Conv output) to tap ({untapped[:6]}"
                    f"{'...' if len(untapped) > 6 else ''}): use a discovered spec "
                    "(discover_spec) or method='weight'"
                )
            if untapped:
                log.warning(
                    "alignment: groups without activation taps keep the identity under "
                    "correlation matching: %s",
                    ", ".join(untapped),
                )
        else:
            spec_stats = spec
    stats = None
    if batches is not None:
        stats = correlation_statistics(
            model_a, model_b, spec_stats, batches, pre_activation=pre_activation, progress=progress
        )
    elif method == "correlation":
        raise ConfigError("method='correlation' needs data: pass a Dataset or batches of inputs")
    objective: list[float] = []
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    if method == "correlation":
        assert stats is not None
        perms, before, after = match_correlation(stats, spec)
    else:
        params = {k for k, _ in model_a.named_parameters()}
        perms, objective = weight_matching(
            model_a.state_dict(),
            model_b.state_dict(),
            spec,
            parameter_keys=params,
            max_sweeps=max_sweeps,
            seed=seed,
        )
        if stats is not None:
            before, after = correlation_of(stats, spec, perms)
    perm = Permutation(perms, spec)
    aligned = copy.deepcopy(model_b)
    aligned.load_state_dict(apply_permutation(model_b.state_dict(), spec, perm))
    return AlignmentResult(
        permutation=perm,
        aligned_b=aligned,
        spec=spec,
        method=method,
        correlation_before=before,
        correlation_after=after,
        objective=objective,
        num_images=stats.num_images if stats is not None else 0,
        seconds=time.perf_counter() - t0,
        coverage=cov,
        untapped=untapped if method == "correlation" else [],
    )
