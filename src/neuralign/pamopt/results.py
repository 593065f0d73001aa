"""What PAM returns: :class:`PAMStep` per outer iteration and :class:`PAMResult`; and the
log line of each P-step (:func:`report_p_step`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from neuralign.curves.bezier import Bezier
from neuralign.pamopt.config import PAMConfig
from neuralign.perm import Permutation, PermutationSpec

__all__ = ["PAMResult", "PAMStep", "changed_fraction"]

# The P-step report is part of the loop's log (``neuralign.pamopt.loop``).
logger = logging.getLogger("neuralign.pamopt.loop")

#: Below this relaxed distance from the start (largest over groups, see
#: :func:`~neuralign.pamopt.pstep.relaxed_distance`) the P-step counts as not having moved.
STILL = 0.05


_FORMAT = "neuralign.pam"


@dataclass
class PAMStep:
    """What one outer iteration did.

    Attributes:
        outer: Index of the outer iteration (0-based).
        objective_before: :math:`F(P^k, \\psi^k)` before the P-step.
        objective_relaxed: :math:`F` at the relaxed (doubly stochastic) matrices after the
            P-step.
        objective_after_p: :math:`F(P^{k+1}, \\psi^k)` after rounding.
        objective_after_psi: :math:`F(P^{k+1}, \\psi^{k+1})` after the ψ-step.
        changed: Per group, the fraction of units whose assignment this step changed.
        relaxed_offset: Per group, :math:`1 - \\tfrac1n\\sum_i \\tilde P_{i\\pi(i)}` for the
            relaxed matrix :math:`\\tilde P` and its Hungarian projection :math:`\\pi`: how far
            the relaxation moved off a vertex (0 = it stayed a permutation).
        candidates: ``{"name", "objective"}`` of every scored rounding candidate.
        chosen: Name of the kept candidate (``"previous"``, ``"hungarian"``,
            ``"sample{j}"``).
        hungarian_changed: Per group, the fraction of units the Hungarian projection of the
            relaxed matrix assigns differently from the start (the kept candidate's is
            ``changed``).
        relaxed_distance: Per group, :math:`\\lVert P - P^k\rVert_F/\\sqrt{2n}` of the relaxed
            matrix from the start (0: it did not move; 1: all mass moved).
        step_size: The P-step's :math:`\\eta`.
        total_step: :math:`\\sum\\eta` over the P-step (``step_size`` × minibatch steps).
        p_history: Per P-step epoch: ``epoch``, ``loss`` (mean CE), ``lr``, ``time``.
        psi_history: The ψ-step's :func:`~neuralign.curves.train_curve` history.
        seconds: Wall time of ``p_step``, ``rounding`` and ``psi_step``.
    """

    outer: int
    objective_before: float
    objective_relaxed: float
    objective_after_p: float
    objective_after_psi: float
    changed: dict[str, float]
    relaxed_offset: dict[str, float]
    candidates: list[dict[str, Any]]
    chosen: str
    hungarian_changed: dict[str, float] = field(default_factory=dict)
    relaxed_distance: dict[str, float] = field(default_factory=dict)
    step_size: float = 0.0
    total_step: float = 0.0
    p_history: list[dict[str, float]] = field(default_factory=list)
    psi_history: list[dict[str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class PAMResult:
    """Outcome of :func:`pam`.

    Attributes:
        permutation: The final permutation (applied to model B).
        start_permutation: Where PAM started (identity or the correlation alignment).
        curve: The trained Bezier curve between :math:`\\theta_1` and
            :math:`P\\circ\\theta_2`.
        aligned_b: Model B with ``permutation`` applied (same function as B).
        spec: The permutation spec.
        init: ``"identity"``, ``"correlation"`` or ``"given"``.
        changed_fraction: Per group, the fraction of units whose final assignment differs
            from the starting one (PAM's local-optimality evidence).
        objective_log: ``{"outer", "stage", "objective"}`` records: the objective (mean loss
            over ``objective_ts`` on the scoring subset) at ``start``, after the relaxed
            P-step (``p-relaxed``), after rounding (``p-step``) and after the ``psi-step``.
        steps: One :class:`PAMStep` per outer iteration.
        timings: Wall seconds: ``init`` (alignment), ``p_step``, ``rounding``, ``psi_step``,
            ``total`` (steps done before a resume count with their recorded times).
        config: The configuration used.
    """

    permutation: Permutation
    start_permutation: Permutation
    curve: Bezier
    aligned_b: nn.Module
    spec: PermutationSpec
    init: str
    changed_fraction: dict[str, float]
    objective_log: list[dict[str, Any]]
    steps: list[PAMStep]
    timings: dict[str, float]
    config: PAMConfig

    @property
    def changed_units(self) -> float:
        """Fraction of all units (over every group) whose assignment PAM changed."""
        sizes = self.spec.sizes
        total = sum(sizes[g] for g in self.changed_fraction)
        if total == 0:
            return 0.0
        return sum(self.changed_fraction[g] * sizes[g] for g in self.changed_fraction) / total

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (no tensors but the permutation's index lists)."""
        return {
            "format": _FORMAT,
            "init": self.init,
            "changed_fraction": self.changed_fraction,
            "changed_units": self.changed_units,
            "objective_log": self.objective_log,
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "timings": self.timings,
            "config": self.config.to_dict(),
            "permutation": {g: p.tolist() for g, p in self.permutation.perms.items()},
            "start_permutation": {g: p.tolist() for g, p in self.start_permutation.perms.items()},
        }


def changed_fraction(new: Permutation, old: Permutation) -> dict[str, float]:
    """Per group, the fraction of positions ``i`` with ``new[i] != old[i]``."""
    return {g: float((p != old.perms[g]).double().mean()) for g, p in new.perms.items()}


def report_p_step(k: int, fields: Mapping[str, Any], spec: PermutationSpec) -> None:
    """Log the P-step per group; warn when the relaxed matrices did not move."""
    logger.info(
        "PAM outer %d: P-step eta %.4g (sum %.3g), objective %.4f -> relaxed %.4f -> %.4f "
        "(kept %s)",
        k,
        fields.get("step_size", float("nan")),
        fields.get("total_step", float("nan")),
        fields["objective_before"],
        fields["objective_relaxed"],
        fields["objective_after_p"],
        fields["chosen"],
    )
    dist = fields.get("relaxed_distance", {})
    hung = fields.get("hungarian_changed", {})
    for g in spec.groups:
        logger.info(
            "PAM outer %d group %s: |P-P0| %.4f, Hungarian changed %.1f%%, kept changed %.1f%%",
            k,
            g,
            dist.get(g, float("nan")),
            100 * hung.get(g, float("nan")),
            100 * fields["changed"].get(g, float("nan")),
        )
    moved = max(dist.values(), default=0.0)
    if dist and moved < STILL:
        logger.warning(
            "PAM outer %d: the relaxed matrices did not move (largest |P-P0| %.2g < %.2g of "
            "the largest possible distance): the P-step's total step (sum eta = %.3g) is too "
            "small for this run; raise pam.p_budget or set p_lr",
            k,
            moved,
            STILL,
            fields.get("total_step", float("nan")),
        )
    elif hung and not any(hung.values()):
        logger.info(
            "PAM outer %d: the relaxed matrices moved (largest |P-P0| %.2g) but their "
            "Hungarian projection is the start in every group",
            k,
            moved,
        )
