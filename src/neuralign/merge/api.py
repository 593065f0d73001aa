"""``merge``: align several networks' hidden units, average them, recompute BatchNorm.

Two models: model B is aligned to model A (:func:`neuralign.align`) and the two are averaged
(the midpoint of the aligned line, Tatro et al. 2020 Sec. 3, and Ainsworth et al., "Git
Re-Basin", ICLR 2023, Sec. 4). Three or more: every model is first aligned to the first, then,
as Git Re-Basin's MergeMany (Ainsworth et al. 2023, Algorithm 3), each model in turn is
re-aligned to the average of all the *others* until a full round changes no permutation (or
``max_rounds`` is reached). For correlation matching the average of the others is a network
whose BatchNorm statistics are recomputed before its activations are read. The merged state
is the average of the aligned states with recomputed BatchNorm statistics; optionally
REPAIR (:mod:`neuralign.merge.repair`) corrects the variance collapse of averaged units.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neuralign.alignment import align
from neuralign.checks import check_compatible_models
from neuralign.data import Dataset, TensorLoader, balanced_subset
from neuralign.data.recipes import bn_subset as bn_subset_of
from neuralign.errors import ConfigError
from neuralign.merge.average import average_states
from neuralign.merge.repair import RepairReport, repair
from neuralign.paths import recompute_bn
from neuralign.perm import Permutation, PermutationSpec, apply_permutation, discover_spec
from neuralign.ranges import MAX_BATCH, MAX_IMAGES, MAX_SEED, Range, check_args
from neuralign.training import evaluate_model

__all__ = ["MergeResult", "merge"]

logger = logging.getLogger(__name__)

METHODS = ("correlation", "weight")


@dataclass
class MergeResult:
    """Outcome of :func:`merge`.

    Attributes:
        model: The merged network (REPAIR applied if requested), in eval mode.
        method: ``"correlation"`` or ``"weight"``.
        permutations: Per input model, the permutation taking it to the shared units
            (identity for the first model).
        rounds: MergeMany rounds run after the initial alignment to the first model (0 for
            two models).
        converged: Whether the last round changed no permutation (always True for two).
        moved_units: Per MergeMany round, how many units (over all models and groups) were
            re-assigned; a few units swapping back and forth keep a merge from converging.
        repair: What REPAIR corrected (None when not requested).
        evaluation: Rows ``{"model", "loss", "accuracy"}`` on ``test_data`` (empty without):
            ``endpoint i``, ``naive average`` (no alignment, BN recomputed), ``merged``, and
            ``merged + REPAIR`` when requested.
        seconds: Wall time.
    """

    model: nn.Module
    method: str
    permutations: list[Permutation]
    rounds: int = 0
    converged: bool = True
    repair: RepairReport | None = None
    moved_units: list[int] = field(default_factory=list)
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def accuracy(self, name: str) -> float:
        """Test accuracy (%) of the row ``name`` of :attr:`evaluation`."""
        for row in self.evaluation:
            if row["model"] == name:
                return float(row["accuracy"])
        raise KeyError(f"no evaluation row {name!r}; rows: {[r['model'] for r in self.evaluation]}")


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _with_state(template: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    m = copy.deepcopy(template)
    m.load_state_dict(state)
    return m.eval()


#: Validated ranges of :func:`merge`'s numeric arguments (the CLI's option types read them).
PARAM_RANGES: dict[str, Range] = {
    "subset_fraction": Range(0, 1, lo_open=True),
    "bn_subset": Range(1, MAX_IMAGES),
    "batch_size": Range(1, MAX_BATCH),
    "max_rounds": Range(1, 1000),
    "seed": Range(0, MAX_SEED),
}


def merge(
    models: Sequence[nn.Module],
    data: Dataset,
    method: str = "correlation",
    *,
    test_data: Dataset | None = None,
    repair_stats: bool = False,
    subset_fraction: float = 0.2,
    bn_subset: int = 2000,
    batch_size: int = 500,
    max_rounds: int = 10,
    seed: int = 0,
    spec: PermutationSpec | None = None,
) -> MergeResult:
    """Merge networks of one architecture into one (none of the inputs is modified).

    Args:
        models: Two or more networks of the same architecture (the first is the reference
            whose units the merged network keeps).
        data: The training set: a class-balanced ``subset_fraction`` of it (no augmentation)
            feeds the correlation statistics; a balanced subset of ``bn_subset`` images feeds
            the BatchNorm recomputation and REPAIR's statistics.
        method: ``"correlation"`` (activation matching, Tatro et al. 2020 Algorithm 1) or
            ``"weight"`` (weight matching, Ainsworth et al. 2023).
        test_data: If given, evaluate the endpoints, the naive average, the merge (and the
            REPAIRed merge) on it (:attr:`MergeResult.evaluation`).
        repair_stats: Apply REPAIR (Jordan et al. 2023) to the merge.
        subset_fraction: Fraction of ``data`` used for the correlation statistics.
        bn_subset: Images used to recompute BatchNorm statistics and for REPAIR.
        batch_size: Batch size of those passes.
        max_rounds: Limit of MergeMany rounds (three or more models).
        seed: Subset selection and weight matching's order.
        spec: Permutation spec; discovered from the first model when None.

    Returns:
        A :class:`MergeResult`.

    Raises:
        ConfigError: Fewer than two models, an unknown method, a bad fraction.
        ModelMismatchError: The models do not share one architecture.
    """
    t0 = time.perf_counter()
    if len(models) < 2:
        raise ConfigError(f"merge needs at least two models, got {len(models)}")
    if method not in METHODS:
        raise ConfigError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")
    check_args(
        PARAM_RANGES,
        subset_fraction=subset_fraction,
        bn_subset=bn_subset,
        batch_size=batch_size,
        max_rounds=max_rounds,
        seed=seed,
    )
    check_compatible_models(list(models), what="merge")
    device = _device(models[0])
    align_data = balanced_subset(data, fraction=subset_fraction, seed=seed)
    bn_data = bn_subset_of(data, bn_subset, seed)  # the same BN subset as path evaluation
    bn_loader = TensorLoader(bn_data, batch_size=batch_size, device=device)
    if spec is None:
        x = bn_data.images[:2].to(device).float().div_(255.0)
        spec = discover_spec(models[0], x)
    template = models[0]

    def align_to(reference: nn.Module, model: nn.Module) -> Permutation:
        res = align(
            reference,
            model,
            align_data if method == "correlation" else None,
            method,
            spec=spec,
            subset_fraction=1.0,
            batch_size=batch_size,
            seed=seed,
        )
        return res.permutation

    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]
    perms = [Permutation.identity(spec)]
    for i in range(1, len(models)):
        p = align_to(models[0], models[i])
        perms.append(p)
        states[i] = apply_permutation(states[i], spec, p)
    rounds, converged = 0, True
    moved: list[int] = []
    if len(models) >= 3:
        converged = False
        order_gen = torch.Generator().manual_seed(seed)
        while rounds < max_rounds and not converged:
            rounds += 1
            changed = 0
            moved.append(0)
            for i in torch.randperm(len(models), generator=order_gen).tolist():
                others = average_states([s for j, s in enumerate(states) if j != i])
                if method == "correlation":
                    others = recompute_bn(template, others, bn_loader)
                p = align_to(_with_state(template, others), _with_state(template, states[i]))
                if not p.is_identity():
                    changed += 1
                    moved[-1] += sum(
                        int((q != torch.arange(q.numel())).sum()) for q in p.perms.values()
                    )
                    states[i] = apply_permutation(states[i], spec, p)
                    perms[i] = p.compose(perms[i])
            logger.info(
                "merge round %d: %d of %d models re-aligned, %d units moved",
                rounds,
                changed,
                len(models),
                moved[-1],
            )
            converged = changed == 0
        if not converged:
            logger.warning("merge: permutations still changing after %d rounds", max_rounds)
        # Permuting every model alike changes no function: give the merge the first model's
        # units back (its permutation becomes the identity).
        back = perms[0].inverse()
        if not back.is_identity():
            states = [apply_permutation(s, spec, back) for s in states]
            perms = [back.compose(p) for p in perms]
    merged_state = recompute_bn(template, average_states(states), bn_loader)
    merged = _with_state(template, merged_state)
    result = MergeResult(merged, method, perms, rounds, converged, moved_units=moved)
    rows: list[dict[str, Any]] = []
    if test_data is not None:
        test_loader = TensorLoader(test_data, batch_size=256, device=device)

        def row(name: str, model: nn.Module) -> None:
            loss, acc = evaluate_model(model, test_loader)
            rows.append({"model": name, "loss": float(loss), "accuracy": float(acc)})

        for i, m in enumerate(models):
            row(f"endpoint {i}", m)
        naive = recompute_bn(template, average_states([m.state_dict() for m in models]), bn_loader)
        row("naive average", _with_state(template, naive))
        row("merged", merged)
    if repair_stats:
        endpoints = [_with_state(template, s) for s in states]
        result.repair = repair(merged, endpoints, spec, bn_loader)
        # Units feeding a later BatchNorm changed: refresh its statistics.
        merged.load_state_dict(recompute_bn(merged, merged.state_dict(), bn_loader))
        merged.eval()
        if test_data is not None:
            row("merged + REPAIR", merged)
    result.evaluation = rows
    result.seconds = time.perf_counter() - t0
    return result
