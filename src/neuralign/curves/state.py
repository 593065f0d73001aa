"""Helpers of curves over state dicts: the functional forward pass, which entries a curve
interpolates, endpoint checks, parameter distance, and frozen tensor storage.

See :mod:`neuralign.curves.base` for the curves themselves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from neuralign.errors import ConfigError

State = dict[str, Tensor]


def fused_combination(
    controls: Sequence[Sequence[Tensor]], coeffs: Sequence[float]
) -> list[Tensor]:
    """:math:`\\sum_k c_k \\theta^{(k)}` for every tensor of a list, with ``torch._foreach_*``.

    ``controls[k]`` lists the tensors of control point ``k`` (the same shapes for every
    ``k``). One fused multi-tensor kernel per control point replaces one small kernel per
    tensor and control point (the combination of Garipov et al. 2018, Eq. 2, for a Bezier
    curve). The result matches ``coeffs[0] * controls[0][i] + coeffs[1] * controls[1][i] +
    ...`` evaluated left to right, element for element. Usable under autograd.

    Args:
        controls: ``num_bends`` lists of tensors.
        coeffs: ``num_bends`` coefficients.

    Returns:
        The combined tensors, one per entry of ``controls[0]``.
    """
    if len(controls) != len(coeffs) or not controls:
        raise ValueError("need one coefficient per control point, and at least one")
    acc = torch._foreach_mul(list(controls[0]), float(coeffs[0]))
    for tensors, c in zip(controls[1:], coeffs[1:]):
        acc = torch._foreach_add(acc, torch._foreach_mul(list(tensors), float(c)))
    return list(acc)


def functional_forward(model: nn.Module, state: Mapping[str, Tensor], x: Tensor) -> Any:
    """Run ``model`` on ``x`` with the parameters and buffers of ``state``.

    ``state`` holds the keys of ``model.state_dict()``; the model's *non-persistent* buffers
    (e.g. input normalisation constants, absent from state dicts) are taken from the module
    itself and moved to the device of ``x``. The module's own tensors are never written to.

    Note:
        In train mode BatchNorm updates its running statistics *in place* on the tensors it is
        given. Pass copies (as :meth:`Curve.state_at` does) when that must not leak.

    Args:
        model: The architecture.
        state: A full state dict for ``model``.
        x: The input batch.

    Returns:
        Whatever ``model`` returns (logits, or a tuple ``(logits, *aux)``).
    """
    mapping: dict[str, Tensor] = dict(state)
    for name, buf in model.named_buffers():
        if name not in mapping:
            mapping[name] = buf.to(x.device)
    return functional_call(model, mapping, (x,), strict=True)


def interpolated_keys(model: nn.Module, state: Mapping[str, Tensor] | None = None) -> list[str]:
    """Keys of the state dict that a curve interpolates.

    These are the floating-point entries that are *parameters* of ``model`` (weights, biases,
    BatchNorm :math:`\\gamma, \\beta`); buffers (BatchNorm running statistics,
    ``num_batches_tracked``) are not interpolated.

    Args:
        model: The architecture.
        state: Optional state dict; defaults to ``model.state_dict()``. Keys are returned in
            its order.

    Returns:
        The interpolated keys.
    """
    state = model.state_dict() if state is None else state
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return [k for k, v in state.items() if k in params and torch.is_floating_point(v)]


def validate_states(
    model: nn.Module, state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor]
) -> None:
    """Check that two state dicts fit ``model`` and each other.

    Raises:
        ModelMismatchError: (a ``ValueError``) naming the first missing or unexpected key,
            or key whose shape or dtype differs
            (:func:`neuralign.checks.check_compatible_models`).
    """
    from neuralign.checks import check_compatible_models

    check_compatible_models(
        [model.state_dict(), state_a, state_b], ["the architecture", "endpoint A", "endpoint B"]
    )
    check_compatible_models([state_a, state_b], ["endpoint A", "endpoint B"])


def parameter_distance(
    state1: Mapping[str, Tensor], state2: Mapping[str, Tensor], keys: Sequence[str]
) -> float:
    """Euclidean distance between two states over ``keys``.

    .. math:: d(\\theta_1, \\theta_2) = \\Big(\\sum_{k \\in \\text{keys}}
        \\lVert \\theta_1[k] - \\theta_2[k] \\rVert_F^2\\Big)^{1/2}

    Used for arc-length weighting along a path. Accumulated in float64.
    """
    total = 0.0
    for k in keys:
        diff = state1[k].detach().to(torch.float64) - state2[k].detach().to(
            device=state1[k].device, dtype=torch.float64
        )
        total += float(diff.pow(2).sum())
    return math.sqrt(total)


def _model_spec(model: nn.Module) -> dict[str, Any] | None:
    """Return the model's rebuild spec when one is available, else ``None``."""
    attr = getattr(model, "model_spec", None)
    try:
        spec = attr() if callable(attr) else attr
        if spec is None:
            from neuralign.models import model_spec  # type: ignore[attr-defined]

            spec = model_spec(model)
    except Exception:  # the spec is optional metadata; no spec is not an error
        return None
    if not isinstance(spec, Mapping):
        return None
    try:
        json.dumps(spec)
    except (TypeError, ValueError):
        return None
    return dict(spec)


def _as_t(t: float | Tensor) -> float:
    value = float(t.item()) if isinstance(t, Tensor) else float(t)
    if not (0.0 <= value <= 1.0):
        raise ConfigError(f"t must lie in [0, 1], got {value}")
    return value


class _TensorStore(nn.Module):
    """Frozen tensors kept as buffers (so ``.to(device)`` moves them), addressed by key."""

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        super().__init__()
        self._names: dict[str, str] = {}
        for i, (key, value) in enumerate(tensors.items()):
            name = f"t{i}"
            self._names[key] = name
            self.register_buffer(name, value.detach().clone())

    def __getitem__(self, key: str) -> Tensor:
        return self.get_buffer(self._names[key])

    def keys(self) -> list[str]:
        return list(self._names)

    def items(self) -> Iterator[tuple[str, Tensor]]:
        for key in self._names:
            yield key, self[key]
