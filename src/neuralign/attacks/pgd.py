"""Projected gradient descent (PGD) adversarial examples (Madry et al. 2018).

PGD maximises the cross-entropy of a classifier inside a norm ball of radius
:math:`\\varepsilon` around a clean input :math:`x` in pixel space :math:`[0, 1]^d`
(A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu, "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018):

.. math::

    x^{(0)} = \\Pi\\big(x + \\delta_0\\big), \\qquad
    x^{(k+1)} = \\Pi\\big(x^{(k)} + \\alpha\\, s(\\nabla_{x}\\,
    \\mathrm{CE}(f(x^{(k)}), y))\\big),

where :math:`\\delta_0` is uniform in the ball (``random_start``) or zero, :math:`\\Pi`
projects onto :math:`\\{x' : \\lVert x' - x \\rVert \\le \\varepsilon\\} \\cap [0, 1]^d`,
and the step direction :math:`s` is :math:`\\mathrm{sign}(g)` for the
:math:`\\ell_\\infty` attack and :math:`g / \\lVert g \\rVert_2` for the :math:`\\ell_2`
attack. Tatro et al. (2020), "Optimizing Mode Connectivity via Neuron Alignment", §5, use
the :math:`\\ell_\\infty` attack to train robust endpoints and robust curves and to measure
the robust loss along paths (docs/method.md, Robustness).

Models take pixels in :math:`[0, 1]` and normalise internally, so the attack works directly
in pixel space. A model can be attacked at any point of a curve by passing the point's state
dict (``state=``): the forward pass then goes through
:func:`~neuralign.curves.functional_forward`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from neuralign.data.datasets import Dataset
from neuralign.data.loader import TensorLoader
from neuralign.errors import ConfigError, DataError
from neuralign.models.common import split_logits

__all__ = [
    "PGD",
    "PGD_PRESETS",
    "TRAINING_MODE",
    "AdversarialBatches",
    "PGDPreset",
    "adversarial_training",
]

NORMS = ("linf", "l2")
MODES = ("eval", "train", "batch-stats")
#: The model mode in which PGD crafts adversarial *training* examples by default: train mode
#: (BatchNorm batch statistics), as the paper's reference code and adversarial training do.
TRAINING_MODE = "train"
_RANGE_TOL = 1e-6  # inputs outside [0, 1] by more than this are rejected


@dataclass(frozen=True)
class PGDPreset:
    """Published attack settings (docs/method.md, Robustness)."""

    eps: float  # radius of the L∞ ball in [0, 1] pixel units
    alpha: float  # step size
    steps: int  # number of gradient steps


#: The paper's attacks: CIFAR 8/255 (2/255 steps), Tiny ImageNet 4/255 (1/255 steps), 5 steps.
PGD_PRESETS: dict[str, PGDPreset] = {
    "cifar": PGDPreset(eps=8 / 255, alpha=2 / 255, steps=5),
    "cifar10": PGDPreset(eps=8 / 255, alpha=2 / 255, steps=5),
    "cifar100": PGDPreset(eps=8 / 255, alpha=2 / 255, steps=5),
    "tinyimagenet": PGDPreset(eps=4 / 255, alpha=1 / 255, steps=5),
}


class PGD:
    """The PGD attack as an object built around a model (captum / torchattacks style).

    ``PGD(model, eps=8/255, alpha=2/255, steps=5)(x, y)`` returns adversarial inputs
    ``x_adv`` in ``[0, 1]`` with ``‖x_adv − x‖ ≤ eps``.

    Nothing of the caller's model changes: the attack runs a functional copy of the forward
    pass on *detached* parameters (so no parameter's ``.grad`` is written and no
    ``requires_grad`` flag is touched) and on *cloned* buffers (so BatchNorm running
    statistics never move, even in ``mode="train"``); every module's train/eval flag is
    restored afterwards, also when the forward pass raises. The attack enables gradients for
    its own computation, so it works inside ``torch.no_grad()``.

    Mode: the attack runs the model in **eval mode** by default (BatchNorm uses its running
    statistics, dropout is off), so an adversarial example depends on its own image only and
    not on the rest of the batch — the usual choice for evaluation and the one we also use
    for adversarial training of endpoints. ``mode="train"`` crafts the examples with the
    model in train mode (BatchNorm batch statistics, dropout on), as adversarial-training
    code commonly does; ``mode="batch-stats"`` puts only the BatchNorm layers in train mode
    (batch statistics, no dropout). Use one of the two for **robust curve training** of
    BatchNorm networks: an interior point :math:`\varphi(t)` has no running statistics of
    its own (the curve carries endpoint A's), and curve training itself normalises with batch
    statistics, so the attack then maximises exactly the loss being trained. Running
    statistics are left untouched in every mode.

    Determinism: the random start is drawn from ``generator`` when given (a CPU
    ``torch.Generator``), else from the global torch RNG — on the CPU in both cases, then
    moved to the input's device — so training loops that checkpoint the global RNG (
    :func:`~neuralign.training.train_model`, :func:`~neuralign.curves.train_curve`) resume
    bit-exactly.

    Args:
        model: The classifier (pixels in ``[0, 1]`` → logits, or ``(logits, *aux)``; only the
            logits enter the loss). May be ``None`` when every call passes ``model=``.
        eps: Radius of the ball (``[0, 1]`` pixel units); ``0`` returns a copy of ``x``.
        alpha: Step size.
        steps: Number of gradient steps (``0``: random start only).
        random_start: Start from a uniformly random point of the ball (Madry et al.).
        norm: ``"linf"`` (sign steps, the paper's) or ``"l2"`` (normalised-gradient steps).
        mode: ``"eval"`` (default), ``"train"`` or ``"batch-stats"``: the module modes
            used while attacking (see above).
        generator: Optional CPU generator of the random start.

    Raises:
        ConfigError: on a negative ``eps``/``alpha``/``steps`` or an unknown norm/mode.
    """

    presets: ClassVar[dict[str, PGDPreset]] = PGD_PRESETS

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        alpha: float,
        steps: int,
        random_start: bool = True,
        norm: str = "linf",
        mode: str = "eval",
        generator: torch.Generator | None = None,
    ) -> None:
        if not (eps >= 0 and math.isfinite(eps)):
            raise ConfigError(f"eps must be a finite number >= 0, got {eps}")
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ConfigError(f"alpha must be a finite number >= 0, got {alpha}")
        if int(steps) != steps or steps < 0:
            raise ConfigError(f"steps must be an integer >= 0, got {steps}")
        if norm not in NORMS:
            raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        self.model = model
        self.eps = float(eps)
        self.alpha = float(alpha)
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.norm = norm
        self.mode = mode
        self.generator = generator

    @classmethod
    def preset(cls, name: str, model: nn.Module | None = None, **overrides: Any) -> PGD:
        """The paper's attack for a dataset family.

        Args:
            name: ``"cifar"`` (ε = 8/255, α = 2/255, 5 steps) or ``"tinyimagenet"``
                (ε = 4/255, α = 1/255, 5 steps); ``"cifar10"``/``"cifar100"`` alias
                ``"cifar"``.
            model: The model to attack (optional, see :class:`PGD`).
            **overrides: Any other :class:`PGD` argument (``steps=10``, ``generator=...``).

        Returns:
            The attack.

        Raises:
            ConfigError: on an unknown preset name.
        """
        key = name.lower().replace("-", "").replace("_", "")
        if key not in PGD_PRESETS:
            raise ConfigError(
                f"unknown PGD preset {name!r}; choose one of {', '.join(sorted(PGD_PRESETS))} "
                "or pass eps, alpha and steps"
            )
        p = PGD_PRESETS[key]
        kwargs: dict[str, Any] = {"eps": p.eps, "alpha": p.alpha, "steps": p.steps}
        kwargs.update(overrides)
        return cls(model, **kwargs)

    def with_options(self, **changes: Any) -> PGD:
        """A copy with some settings changed (``pgd.with_options(mode="batch-stats")``)."""
        kwargs: dict[str, Any] = {
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "random_start": self.random_start,
            "norm": self.norm,
            "mode": self.mode,
            "generator": self.generator,
        }
        kwargs.update(changes)
        model = kwargs.pop("model", self.model)
        return PGD(model, **kwargs)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings (recorded with results)."""
        return {
            "attack": "pgd",
            "norm": self.norm,
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "random_start": self.random_start,
            "mode": self.mode,
        }

    def __repr__(self) -> str:
        return (
            f"PGD(norm={self.norm!r}, eps={self.eps:.6g}, alpha={self.alpha:.6g}, "
            f"steps={self.steps}, random_start={self.random_start}, mode={self.mode!r})"
        )

    # ------------------------------------------------------------------ calling

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        state: Mapping[str, Tensor] | None = None,
        model: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Adversarial examples for ``(x, y)``; see :meth:`perturb`."""
        return self.perturb(x, y, state=state, model=model, generator=generator)

    def attack_model(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """``attack(model, x, y)`` hook of :func:`~neuralign.training.train_model`."""
        return self.perturb(x, y, model=model)

    def attack_state(
        self, model: nn.Module, state: Mapping[str, Tensor], x: Tensor, y: Tensor
    ) -> Tensor:
        """``attack(model, state, x, y)`` hook of :func:`~neuralign.curves.train_curve`."""
        return self.perturb(x, y, model=model, state=state)

    def perturb(
        self,
        x: Tensor,
        y: Tensor,
        *,
        state: Mapping[str, Tensor] | None = None,
        model: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run PGD against the model (at ``state`` when given).

        Args:
            x: Clean inputs in ``[0, 1]``, shape ``(N, ...)``.
            y: Integer class labels, shape ``(N,)``.
            state: Optional full state dict (e.g. :math:`\\varphi(t)` of a curve); the model's
                own tensors are then not used. Tensors are detached, never written to.
            model: Attack this model instead of the one given at construction.
            generator: Random-start generator for this call (overrides the attack's).

        Returns:
            ``x_adv``, detached, same shape, dtype and device as ``x``, with
            ``‖x_adv − x‖ ≤ eps`` (``∞``- or ``2``-norm per sample) and entries in ``[0, 1]``.

        Raises:
            ConfigError: when no model is known.
            DataError: when ``x`` is not in ``[0, 1]`` (normalise inside the model instead).
        """
        net = model if model is not None else self.model
        if net is None:
            raise ConfigError("PGD has no model: build it with PGD(model, ...) or pass model=")
        x = x.detach()
        if x.numel() and (float(x.min()) < -_RANGE_TOL or float(x.max()) > 1.0 + _RANGE_TOL):
            raise DataError(
                f"PGD expects pixels in [0, 1], got values in [{float(x.min()):.3g}, "
                f"{float(x.max()):.3g}]; normalise inside the model (neuralign models do)"
            )
        if self.eps == 0 or x.numel() == 0:
            return x.clone()
        gen = generator if generator is not None else self.generator
        mapping = _attack_mapping(net, state, x.device)
        modes = {m: m.training for m in net.modules()}
        try:
            net.train(self.mode == "train")
            if self.mode == "batch-stats":
                for m in net.modules():
                    if isinstance(m, _BatchNorm):
                        m.train()
            with torch.enable_grad():
                x_adv = self._run(net, mapping, x, y, gen)
        finally:
            for m, flag in modes.items():
                m.training = flag
        return x_adv

    # ------------------------------------------------------------------ internals

    def _run(
        self,
        net: nn.Module,
        mapping: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
        gen: torch.Generator | None,
    ) -> Tensor:
        x_adv = x.clone()
        if self.random_start:
            x_adv = self._project(x_adv + self._random_delta(x, gen), x)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            logits, _ = split_logits(functional_call(net, mapping, (x_adv,), strict=True))
            # Sum, not mean: each sample's gradient is then independent of the batch size.
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                x_adv = self._project(x_adv.detach() + self.alpha * self._direction(grad), x)
        return x_adv.detach()

    def _direction(self, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return grad.sign()
        flat = grad.flatten(1)
        norms = flat.norm(dim=1).clamp_min(1e-12)
        return (flat / norms[:, None]).view_as(grad)

    def _project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        if self.norm == "linf":
            x_adv = torch.minimum(torch.maximum(x_adv, x - self.eps), x + self.eps)
        else:
            delta = (x_adv - x).flatten(1)
            norms = delta.norm(dim=1)
            factor = torch.clamp(self.eps / norms.clamp_min(1e-12), max=1.0)
            x_adv = x + (delta * factor[:, None]).view_as(x)
        # Clipping to [0, 1] moves each coordinate toward x (which lies in [0, 1]), so the
        # result stays inside the ball.
        return x_adv.clamp(0.0, 1.0)

    def _random_delta(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        dev = gen.device if gen is not None else torch.device("cpu")
        shape = x.shape
        if self.norm == "linf":
            u = torch.rand(shape, generator=gen, device=dev, dtype=torch.float32)
            delta = (2.0 * u - 1.0) * self.eps
        else:
            n, d = shape[0], int(math.prod(shape[1:]))
            direction = torch.randn((n, d), generator=gen, device=dev, dtype=torch.float32)
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            radius = torch.rand((n, 1), generator=gen, device=dev).pow(1.0 / max(d, 1))
            delta = (direction * radius * self.eps).view(shape)
        return delta.to(device=x.device, dtype=x.dtype)


def _attack_mapping(
    net: nn.Module, state: Mapping[str, Tensor] | None, device: torch.device
) -> dict[str, Tensor]:
    """Detached parameters and cloned buffers for a side-effect-free functional forward."""
    buffer_names = {name for name, _ in net.named_buffers(remove_duplicate=False)}
    mapping: dict[str, Tensor] = {}
    if state is None:
        for name, p in net.named_parameters(remove_duplicate=False):
            mapping[name] = p.detach()
        for name, b in net.named_buffers(remove_duplicate=False):
            mapping[name] = b.detach().clone()
        return mapping
    for name, v in state.items():
        v = v.detach()
        mapping[name] = v.clone() if name in buffer_names else v
    for name, b in net.named_buffers(remove_duplicate=False):
        if name not in mapping:  # non-persistent buffers (input normalisation)
            mapping[name] = b.detach().to(device)
    return mapping


class AdversarialBatches:
    """Re-iterable ``(x_adv, y)`` batches: PGD examples crafted on the fly from ``data``.

    Use it to align robust endpoints on adversarial inputs (docs/method.md, Robustness): correlation
    alignment needs *the same* inputs fed to both networks, so the examples are crafted
    against one network (``model``, by convention endpoint A — the reference of the
    alignment) and then shown to both. Every iteration reseeds the random start from
    ``seed``, so two passes yield identical examples.

    Args:
        attack: The attack.
        data: Iterable of ``(x, y)`` clean batches (re-iterable, e.g. a
            :class:`~neuralign.data.TensorLoader`).
        model: The network the examples are crafted against (default: the attack's own).
        state: Optional state dict of ``model`` to attack instead.
        seed: Seed of the random starts.
    """

    def __init__(
        self,
        attack: PGD,
        data: Iterable[Any],
        *,
        model: nn.Module | None = None,
        state: Mapping[str, Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        self.attack = attack
        self.data = data
        self.model = model
        self.state = state
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        for batch in self.data:
            x, y = batch[0], batch[1]
            x_adv = self.attack.perturb(x, y, model=self.model, state=self.state, generator=gen)
            yield x_adv, y

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]


def alignment_batches(
    data: Dataset,
    *,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    attack: PGD | None = None,
    reference: nn.Module | None = None,
    seed: int = 0,
) -> TensorLoader | AdversarialBatches:
    """The batches that alignment statistics are computed on.

    Clean: ``data`` in order. Adversarial (``attack`` given, for robust endpoints; see
    ``docs/robustness.md``): PGD examples crafted against ``reference`` (endpoint A, the
    reference of the alignment) and fed to both networks, as :class:`AdversarialBatches`.
    """
    loader = TensorLoader(data, batch_size=batch_size, device=device)
    if attack is None:
        return loader
    return AdversarialBatches(attack, loader, model=reference, seed=seed)


def adversarial_training(
    pgd: PGD, mode: str = TRAINING_MODE
) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """The ``attack`` hook of :func:`~neuralign.training.train_model` for adversarial training.

    The examples are crafted with the model in ``mode`` (default :data:`TRAINING_MODE`:
    train mode, BatchNorm on batch statistics), whatever ``pgd.mode`` says; evaluation keeps
    using ``pgd`` itself (eval mode by default).
    """
    return pgd.with_options(mode=mode).attack_model
