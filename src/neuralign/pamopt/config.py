"""Settings of PAM (:func:`neuralign.pam`): one frozen dataclass, embedding the curve steps'.

The experiment's ``[pam]`` table is this dataclass (its curve steps, ``bends`` and ``seed``
come from the experiment's ``[curves]`` table and top-level ``seed``); the CLI reads its
option defaults from it. See ``docs/method.md`` (PAM) and Tatro et al. 2020 (PAM).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from neuralign.curves.config import CurveTrainConfig
from neuralign.data import Dataset, balanced_subset
from neuralign.errors import ConfigError
from neuralign.pamopt.birkhoff import PROJECTIONS
from neuralign.ranges import MAX_BENDS, MAX_EPOCHS, MAX_IMAGES, MAX_SEED, check_ranges, ranged

__all__ = ["INITS", "PAMConfig", "scoring_subset"]

#: Starting points of PAM: the identity ("PAM Unaligned") or the correlation alignment.
INITS = ("identity", "correlation")


@dataclass(frozen=True)
class PAMConfig:
    """Settings of :func:`~neuralign.pamopt.pam` (defaults: the paper's, Tatro et al. 2020).

    Attributes:
        outer_iterations: Outer P-step + ψ-step iterations (paper: 1).
        p_epochs: Epochs of each P-step (paper: 20).
        p_budget: The P-step's total step :math:`\\sum\\eta` over its minibatch steps when
            ``p_lr`` is 0. Default 39: the paper's 20 epochs of 390 steps (CIFAR-10, batch
            128) at :math:`\\eta` = 0.005 (half the curve lr). :math:`\\eta` is the larger
            of half the curve ``lr`` and ``p_budget / (p_epochs × steps per epoch)``, so a
            shorter run (fewer epochs or images) takes proportionally larger steps and moves
            as far as the paper's (``docs/pam.md``).
        p_lr: A fixed step size :math:`\\eta` of the P-step (overrides ``p_budget``); 0 =
            derived from ``p_budget``.
        p_momentum: Momentum of the P-step's SGD (0: plain SGD, as in the paper).
        p_weight_decay: L2 penalty :math:`\\tfrac{\\lambda}{2}\\lVert\\varphi(t)\\rVert^2` in the
            P-step's loss. Default 0: for a relaxed :math:`P` the term is not permutation
            invariant — averaging units shrinks norms — and would pull every matrix toward
            the barycentre :math:`\\mathbf{1}\\mathbf{1}^\\top/n`.
        nu: Proximal parameter :math:`\\nu` (paper: 1e3); the pull toward :math:`P^k` has
            weight :math:`\\eta/\\nu` per step.
        projection: Projection onto the doubly stochastic matrices: ``"exact"`` (Euclidean,
            semi-smooth Newton; default), ``"dykstra"`` (Euclidean, slow) or ``"sinkhorn"``.
        round_samples: Permutations sampled from each relaxed matrix's Birkhoff–von Neumann
            decomposition as extra rounding candidates (the reference's 32; 0 = only the
            Hungarian projection and the previous permutation).
        score_subset: Class-balanced, non-augmented training images on which rounding
            candidates are scored and the objective is logged (callers that hold a dataset
            build it with :func:`scoring_subset`).
        score_batches: Batches of the training data used for scoring when :func:`pam` gets
            no ``score_data``.
        objective_ts: Fixed points :math:`t` over which the objective is averaged.
        bends: Control points of the Bezier curve including the endpoints (paper: 3).
        curve: Curve training of each ψ-step (:class:`~neuralign.curves.CurveTrainConfig`).
        seed: Seed of the ``t`` generators and the candidate sampling.
        amp: bf16 autocast (losses in float32) and channels-last input on CUDA in the
            P-step and the ψ-step (ignored elsewhere).

    Data parallelism (``torchrun``): pass this rank's shard as ``data``; every rank draws the
    same ``t``, the P-step's matrix gradients are averaged across ranks, the objective used
    to score rounding candidates is reduced over the ranks' scoring batches (so every rank
    keeps the same permutation), the ψ-step is :func:`~neuralign.curves.train_curve`'s
    distributed training, and only rank 0 writes the checkpoint folder.
    """

    # Ranges (neuralign.ranges): upper bounds where time or memory grows with the value.
    outer_iterations: int = ranged(1, 1, 1000)  # outer P-step + curve-step iterations (paper: 1)
    p_epochs: int = ranged(20, 0, MAX_EPOCHS)  # epochs of each P-step (paper: 20)
    p_budget: float = ranged(
        39.0, 0, 1e9, lo_open=True
    )  # total P-step Σ η (paper: 20 × 390 × 0.005)
    p_lr: float = ranged(0.0, 0)  # fixed P-step step size η; 0 = derived from p_budget
    p_momentum: float = ranged(
        0.0, 0, 1, hi_open=True
    )  # momentum of the P-step's SGD (paper: none)
    p_weight_decay: float = ranged(
        0.0, 0, 1
    )  # L2 on φ(t) in the P-step loss (0: keeps P a permutation)
    nu: float = ranged(1e3, 0, lo_open=True)  # proximal parameter ν: pull η/ν toward the starting P
    projection: str = "exact"  # exact | dykstra | sinkhorn: projection onto doubly stochastic
    round_samples: int = ranged(32, 0, 100_000)  # Birkhoff–von Neumann samples scored as candidates
    score_subset: int = ranged(
        2000, 1, MAX_IMAGES
    )  # class-balanced training images for the objective
    score_batches: int = ranged(8, 1, 1_000_000)  # batches scored when no score data is given
    objective_ts: tuple[float, ...] = ranged(
        (0.25, 0.5, 0.75), 0, 1, lo_open=True, hi_open=True, min_items=1, max_items=1000
    )  # fixed t's of the objective
    bends: int = ranged(
        3, 3, MAX_BENDS
    )  # control points of the Bezier curve incl. endpoints (paper: 3)
    curve: CurveTrainConfig = field(default_factory=CurveTrainConfig)  # the ψ-steps
    seed: int = ranged(0, 0, MAX_SEED)  # seed of the t generators and the candidate sampling
    amp: bool = True  # bf16 autocast + channels-last on CUDA (ignored elsewhere)

    def __post_init__(self) -> None:
        # TOML and JSON give lists; keep the config hashable and comparable
        object.__setattr__(self, "objective_ts", tuple(float(t) for t in self.objective_ts))
        if isinstance(self.curve, dict):
            object.__setattr__(self, "curve", CurveTrainConfig(**self.curve))

    def validate(self, where: str = "PAMConfig") -> PAMConfig:
        """Check ranges and choices; return ``self``.

        Args:
            where: Prefix of field names in error messages (e.g. ``"pam"``).

        Raises:
            ConfigError: Naming the first bad field.
        """
        check_ranges(self, where)
        if self.projection not in PROJECTIONS:
            raise ConfigError(
                f"{where}.projection: must be one of {PROJECTIONS}, got {self.projection!r}"
            )
        self.curve.validate(f"{where}.curve")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``curve`` as a nested dict)."""
        d = dataclasses.asdict(self)
        d["objective_ts"] = list(self.objective_ts)
        return d


def scoring_subset(train: Dataset, config: PAMConfig, *, seed: int) -> Dataset:
    """The training images that score rounding candidates and log the PAM objective.

    A class-balanced subset of ``config.score_subset`` images of ``train`` (all of ``train``
    when it is not larger), to be loaded without augmentation: large enough that the
    objective differences between candidates exceed its sampling noise (see
    ``docs/pam.md``).
    """
    if len(train) <= config.score_subset:
        return train
    return balanced_subset(train, n=config.score_subset, seed=seed)
