"""The one place where the curve-training hyper-parameters and their defaults live.

:func:`~neuralign.curves.train_curve` consumes a :class:`CurveTrainConfig`; the PAM
configuration (:class:`neuralign.pamopt.PAMConfig`) embeds one for its curve steps, the
experiment's ``[curves]`` table extends it, and the CLI reads its option defaults from it.
Defaults are the paper's (Tatro et al. 2020; Garipov et al. 2018): SGD
with momentum 0.9, lr 1e-2 halved every 20 epochs, 250 epochs, L2 5e-4 on the point of the
curve.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from neuralign.errors import ConfigError
from neuralign.optim.schedules import SCHEDULES
from neuralign.ranges import MAX_EPOCHS, check_ranges, ranged

__all__ = ["CurveTrainConfig"]


@dataclass(frozen=True)
class CurveTrainConfig:
    """Hyper-parameters of curve training (frozen; change with :func:`dataclasses.replace`).

    Attributes:
        epochs: Passes over the training data (paper: 250).
        lr: Initial learning rate (paper: 1e-2).
        momentum: SGD momentum.
        nesterov: Use Nesterov momentum.
        weight_decay: :math:`\\lambda` of the L2 term :math:`\\tfrac{\\lambda}{2}\\lVert
            \\varphi(t)\\rVert^2` on the point of the curve (paper: 5e-4); there is no optimizer
            weight decay on the control points.
        schedule: Learning-rate schedule (:data:`neuralign.optim.SCHEDULES`): ``step``,
            ``cosine``, ``constant`` or ``robust``.
        lr_step: Epochs between decays of the ``step`` schedule.
        lr_gamma: Decay factor of the ``step`` schedule.
        aux_weight: Weight of auxiliary-head losses (models returning ``(logits, *aux)``).
    """

    # Ranges (neuralign.ranges): upper bounds where time grows with the value; lr has
    # none (a diverging lr is stopped by DivergedError, docs/reliability.md).
    epochs: int = ranged(250, 0, MAX_EPOCHS)  # curve-training epochs (paper: 250)
    lr: float = ranged(1e-2, 0, lo_open=True)  # initial learning rate (paper: 1e-2)
    momentum: float = ranged(0.9, 0, 1, hi_open=True)  # SGD momentum
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = ranged(5e-4, 0, 1)  # L2 penalty on the point of the curve φ(t)
    schedule: str = "step"  # step | cosine | constant | robust
    lr_step: int = ranged(20, 1, MAX_EPOCHS)  # epochs between step decays
    lr_gamma: float = ranged(0.5, 0, 1, lo_open=True)  # step decay factor
    aux_weight: float = ranged(0.3, 0, 100)  # weight of auxiliary heads' losses (GoogLeNet)

    def validate(self, where: str = "CurveTrainConfig") -> CurveTrainConfig:
        """Check ranges and choices; return ``self``.

        Args:
            where: Prefix of the field names in error messages (e.g. ``"curves"``).

        Raises:
            ConfigError: Naming the first bad field, e.g. ``curves.lr: must be > 0, got 0``.
        """
        check_ranges(self, where)
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"{where}.schedule: must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        return self

    def replace(self, **changes: Any) -> CurveTrainConfig:
        """A copy with ``changes`` applied (unknown names raise :class:`ConfigError`)."""
        names = {f.name for f in dataclasses.fields(CurveTrainConfig)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(
                f"unknown curve-training setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, obj: Any) -> CurveTrainConfig:
        """The :class:`CurveTrainConfig` part of ``obj`` (e.g. a subclass instance)."""
        return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)})
