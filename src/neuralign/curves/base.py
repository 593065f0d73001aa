"""Parametric curves between two networks, over state dicts.

A curve :math:`\\varphi: [0, 1] \\to \\Theta` joins two trained networks
:math:`\\theta_A = \\theta^{(0)}` and :math:`\\theta_B = \\theta^{(n-1)}` through ``n - 2``
trainable interior control points :math:`\\theta^{(1)}, \\dots, \\theta^{(n-2)}`:

.. math::

    \\varphi(t) = \\sum_{k=0}^{n-1} c_k(t)\\, \\theta^{(k)}, \\qquad \\sum_k c_k(t) = 1,

with the family fixing the coefficients :math:`c_k(t)` (Bernstein polynomials for a Bezier
curve, hat functions for a polygonal chain). Following Garipov et al. (2018), "Loss Surfaces,
Mode Connectivity, and Fast Ensembling of DNNs", and Tatro et al. (2020), "Optimizing Mode
Connectivity via Neuron Alignment", only the *parameters* (convolution / linear weights and
biases, BatchNorm :math:`\\gamma, \\beta`) are interpolated; BatchNorm running statistics are
taken from an endpoint and recomputed for evaluation (:func:`neuralign.paths.recompute_bn`).

No architecture is rewritten: one ordinary ``nn.Module`` evaluates every point of the curve
with :func:`torch.func.functional_call`.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import torch
from torch import Tensor, nn

from neuralign.curves.registry import REGISTRY, curve_families, curve_family
from neuralign.curves.state import (
    State,
    _as_t,
    _model_spec,
    _TensorStore,
    functional_forward,
    fused_combination,
    interpolated_keys,
    parameter_distance,
    validate_states,
)
from neuralign.errors import CheckpointError, ConfigError
from neuralign.io.atomic import atomic_path

__all__ = [
    "Curve",
    "curve_families",
    "curve_family",
    "functional_forward",
    "interpolated_keys",
    "parameter_distance",
    "validate_states",
]

CurveT = TypeVar("CurveT", bound="Curve")

_FORMAT = "neuralign.curve"
_FORMAT_VERSION = 1
_HEADER_KEY = "neuralign"


# --------------------------------------------------------------------------- helpers

# --------------------------------------------------------------------------- curve


class Curve(nn.Module):
    """A curve in weight space between two networks of one architecture.

    The curve holds a private copy of the architecture (``self.model``; its own tensors are
    never used or modified), the two endpoint states (frozen buffers) and, for every
    interpolated entry, ``num_bends - 2`` trainable interior control points, initialised on
    the straight line :math:`\\theta^{(k)} = (1 - \\tfrac{k}{n-1})\\theta_A +
    \\tfrac{k}{n-1}\\theta_B`, so the untrained curve is the linear path.

    Subclasses define the coefficients :math:`c_k(t)` by overriding :meth:`_coefficients`.

    Non-interpolated entries (BatchNorm running statistics, ``num_batches_tracked``) are
    those of endpoint A for every ``t < 1`` and of endpoint B at exactly ``t = 1``, so that
    ``state_at(0)`` and ``state_at(1)`` reproduce the endpoints bit for bit.

    Args:
        model_a: Endpoint A (also provides the architecture).
        model_b: Endpoint B, of the same architecture (e.g. permuted toward A).
        num_bends: Number of control points ``n`` including both endpoints (``n >= 2``).
        metadata: Free-form JSON-serialisable metadata kept with the curve and saved.

    Raises:
        ModelMismatchError: (a ``ValueError``) naming the first key the endpoints do not
            share, or whose shape or dtype differs.
    """

    family: ClassVar[str] = "curve"
    default_num_bends: ClassVar[int] = 3
    fixed_num_bends: ClassVar[int | None] = None
    _registry: ClassVar[dict[str, type[Curve]]] = REGISTRY

    model: nn.Module
    num_bends: int
    keys: list[str]
    interpolated_keys: list[str]
    fixed_keys: list[str]
    metadata: dict[str, Any]
    model_spec: dict[str, Any] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "family" in cls.__dict__:
            Curve._registry[cls.family] = cls

    def __init__(
        self,
        model_a: nn.Module,
        model_b: nn.Module,
        num_bends: int | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if type(model_a) is not type(model_b):
            raise ConfigError(
                f"endpoints have different classes ({type(model_a).__name__} vs "
                f"{type(model_b).__name__}); a curve joins two networks of one architecture"
            )
        self._initialize(model_a, model_a.state_dict(), model_b.state_dict(), num_bends, metadata)

    @classmethod
    def from_states(
        cls: type[CurveT],
        model: nn.Module,
        state_a: Mapping[str, Tensor],
        state_b: Mapping[str, Tensor],
        num_bends: int | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> CurveT:
        """Build a curve from an architecture and two state dicts.

        Args:
            model: The architecture (its own tensors are ignored).
            state_a: Endpoint A, with the keys of ``model.state_dict()``.
            state_b: Endpoint B, same keys, shapes and dtypes.
            num_bends: Number of control points including the endpoints.
            metadata: Free-form JSON-serialisable metadata.

        Returns:
            The curve, initialised on the straight line.
        """
        curve = cls.__new__(cls)
        curve._initialize(model, state_a, state_b, num_bends, metadata)
        return curve

    def _initialize(
        self,
        model: nn.Module,
        state_a: Mapping[str, Tensor],
        state_b: Mapping[str, Tensor],
        num_bends: int | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        nn.Module.__init__(self)
        n = self.default_num_bends if num_bends is None else int(num_bends)
        if self.fixed_num_bends is not None and n != self.fixed_num_bends:
            raise ConfigError(
                f"{type(self).__name__} has exactly {self.fixed_num_bends} bends, got {n}"
            )
        if n < 2:
            raise ConfigError(f"num_bends must be >= 2 (the two endpoints), got {n}")
        validate_states(model, state_a, state_b)
        self.num_bends = n
        self.model_spec = _model_spec(model)
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.keys = list(model.state_dict().keys())
        self.interpolated_keys = interpolated_keys(model, model.state_dict())
        interp = set(self.interpolated_keys)
        self.fixed_keys = [k for k in self.keys if k not in interp]
        self.metadata = dict(metadata or {})
        self.endpoint_a = _TensorStore({k: state_a[k] for k in self.keys})
        self.endpoint_b = _TensorStore({k: state_b[k] for k in self.keys})
        bends = nn.ModuleList()
        with torch.no_grad():
            for k in range(1, n - 1):
                frac = k / (n - 1)
                plist = nn.ParameterList()
                for key in self.interpolated_keys:
                    a = state_a[key].detach()
                    b = state_b[key].detach().to(a.device)
                    plist.append(nn.Parameter((1.0 - frac) * a + frac * b))
                bends.append(plist)
        self.bends = bends

    # ------------------------------------------------------------------ coefficients

    def _coefficients(self, t: float) -> list[float]:
        """Coefficients :math:`c_0(t), \\dots, c_{n-1}(t)` as Python floats (float64)."""
        raise NotImplementedError

    def coefficients(self, t: float | Tensor) -> Tensor:
        """Coefficients of the control points at ``t``.

        Args:
            t: A point in ``[0, 1]``.

        Returns:
            A float64 tensor of shape ``(num_bends,)`` summing to one.
        """
        return torch.tensor(self._coefficients(_as_t(t)), dtype=torch.float64)

    # ------------------------------------------------------------------ points

    def control_parameters(self) -> list[nn.Parameter]:
        """The trainable interior control points (what an optimizer should update)."""
        out: list[nn.Parameter] = []
        for plist in self.bends:
            out.extend(cast(nn.ParameterList, plist))
        return out

    def _bend_tensor(self, bend: int, index: int) -> Tensor:
        if bend == 0:
            return self.endpoint_a[self.interpolated_keys[index]]
        if bend == self.num_bends - 1:
            return self.endpoint_b[self.interpolated_keys[index]]
        plist = self.bends[bend - 1]
        return plist[index]  # type: ignore[index, no-any-return]

    def control_point(self, k: int) -> State:
        """Control point ``k`` (``0`` = endpoint A, ``num_bends - 1`` = endpoint B).

        Returns:
            A full state dict: the interpolated entries of bend ``k`` (detached copies) and the
            non-interpolated entries of endpoint A (of B for the last bend).
        """
        if not 0 <= k < self.num_bends:
            raise ConfigError(f"control point index must be in [0, {self.num_bends}), got {k}")
        source = self.endpoint_b if k == self.num_bends - 1 else self.endpoint_a
        out: State = {}
        for key in self.keys:
            if key in self.fixed_keys:
                out[key] = source[key].clone()
            else:
                out[key] = self._bend_tensor(k, self.interpolated_keys.index(key)).detach().clone()
        return out

    def state_at(self, t: float | Tensor) -> State:
        """The network :math:`\\varphi(t)` as a state dict.

        Interpolated entries are :math:`\\sum_k c_k(t)\\theta^{(k)}` (differentiable with
        respect to the interior control points). At exactly ``t = 0`` and ``t = 1`` copies of
        the endpoints are returned, bit for bit (and without a graph). Non-interpolated
        entries are fresh copies, so BatchNorm's in-place running-statistic updates in train
        mode never reach the curve's endpoints or the model.

        Args:
            t: A point in ``[0, 1]``.

        Returns:
            A state dict with every key of ``model.state_dict()``, in order.
        """
        tv = _as_t(t)
        if tv in (0.0, 1.0):
            source = self.endpoint_a if tv == 0.0 else self.endpoint_b
            return {key: source[key].clone() for key in self.keys}
        coeffs = self._coefficients(tv)
        n = len(self.interpolated_keys)
        # one fused multi-tensor kernel per control point instead of one small kernel per
        # tensor and control point (the Python/launch cost that dominates on a GPU)
        combined = fused_combination(
            [[self._bend_tensor(k, i) for i in range(n)] for k in range(self.num_bends)],
            coeffs,
        )
        interp: State = dict(zip(self.interpolated_keys, combined, strict=True))
        out: State = {}
        for key in self.keys:
            out[key] = interp[key] if key in interp else self.endpoint_a[key].clone()
        return out

    def forward(self, x: Tensor, t: float | Tensor) -> Any:
        """Evaluate :math:`f(x; \\varphi(t))` with :func:`torch.func.functional_call`.

        Args:
            x: Input batch.
            t: Point on the curve in ``[0, 1]``.

        Returns:
            The model's output (logits, or ``(logits, *aux)`` for models with aux heads).
        """
        return functional_forward(self.model, self.state_at(t), x)

    def extra_repr(self) -> str:
        return (
            f"family={self.family!r}, num_bends={self.num_bends}, "
            f"interpolated={len(self.interpolated_keys)}/{len(self.keys)} entries"
        )

    # ------------------------------------------------------------------ persistence

    def _header(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "family": self.family,
            "num_bends": self.num_bends,
            "keys": self.keys,
            "interpolated_keys": self.interpolated_keys,
            "model_spec": self.model_spec,
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save every control point and the metadata to one safetensors file, atomically.

        Tensor names: ``bend{k}/{key}`` for interpolated entries of bend ``k`` (endpoints
        included), ``a/{key}`` and ``b/{key}`` for the non-interpolated entries of the
        endpoints. The JSON header (family, num_bends, keys, model spec, metadata) is stored
        under the safetensors metadata key ``"neuralign"``.

        Args:
            path: Destination (must end in ``.safetensors``).

        Returns:
            The path written.
        """
        from safetensors.torch import save_file

        from neuralign.io.checkpoint import require_safetensors_suffix

        require_safetensors_suffix(path)
        tensors: dict[str, Tensor] = {}
        for k in range(self.num_bends):
            for i, key in enumerate(self.interpolated_keys):
                tensors[f"bend{k}/{key}"] = self._bend_tensor(k, i).detach().cpu().contiguous()
        for key in self.fixed_keys:
            tensors[f"a/{key}"] = self.endpoint_a[key].detach().cpu().contiguous()
            tensors[f"b/{key}"] = self.endpoint_b[key].detach().cpu().contiguous()
        # safetensors refuses tensors that share memory; copies are cheap next to the I/O.
        tensors = {name: t.clone() for name, t in tensors.items()}
        header = {_HEADER_KEY: json.dumps(self._header())}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        return Path(path)

    @staticmethod
    def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read the JSON header of a saved curve without loading its tensors."""
        from safetensors import safe_open

        from neuralign.io.files import regular_file

        regular_file(path, "curve file", CheckpointError)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:
            raise CheckpointError(f"cannot read curve file {path}: {exc}") from exc
        if _HEADER_KEY not in meta:
            raise CheckpointError(f"{path} is not a neuralign curve file (no header)")
        try:
            header: dict[str, Any] = json.loads(meta[_HEADER_KEY])
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"{path}: corrupt curve header ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            raise CheckpointError(f"{path} is not a neuralign curve file")
        return header

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model: nn.Module | None = None,
        *,
        map_location: str | torch.device = "cpu",
    ) -> Curve:
        """Load a curve written by :meth:`save`.

        Args:
            path: The safetensors file.
            model: The architecture. When omitted it is rebuilt from the saved model spec with
                ``neuralign.models.create_model``.
            map_location: Device for the loaded tensors.

        Returns:
            A curve of the saved family (``Curve.load`` dispatches; ``Bezier.load`` checks).

        Raises:
            CheckpointError: on a missing/corrupt file, non-finite control points, a family
                mismatch, or a model whose state-dict keys differ from the saved ones.
        """
        from safetensors.torch import load_file

        header = cls.read_header(path)
        family = header.get("family")
        target = Curve._registry.get(family) if isinstance(family, str) else None
        if target is None:
            raise CheckpointError(f"unknown curve family {family!r} in {path}")
        if cls is not Curve and not issubclass(target, cls):
            raise CheckpointError(f"{path} holds a {family!r} curve, not a {cls.family!r} one")
        if model is None:
            spec = header.get("model_spec")
            if not spec:
                raise CheckpointError(
                    f"{path} records no model spec; pass the architecture: "
                    f"{cls.__name__}.load(path, model=...)"
                )
            try:
                from neuralign.models import create_model  # type: ignore[attr-defined]
                from neuralign.models.reference import is_reference, require_trusted

                if is_reference(spec["name"]):
                    require_trusted(spec["name"], str(path))  # a file naming code: only if allowed
                model = create_model(spec["name"], **spec.get("kwargs", {}))
            except CheckpointError:
                raise
            except Exception as exc:
                raise CheckpointError(
                    f"cannot rebuild the model from spec {spec}: {exc}; pass model=..."
                ) from exc
        assert model is not None
        keys: list[str] = header["keys"]
        model_keys = list(model.state_dict().keys())
        if model_keys != keys:
            missing = [k for k in keys if k not in model_keys]
            extra = [k for k in model_keys if k not in keys]
            raise CheckpointError(
                f"model does not fit the saved curve: missing keys {missing}, "
                f"unexpected keys {extra}"
            )
        tensors = load_file(str(path), device=str(map_location))
        bad = [
            name
            for name, t in tensors.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())
        ]
        if bad:
            raise CheckpointError(
                f"{path}: non-finite (NaN/Inf) values in {len(bad)} curve tensors, e.g. "
                f"{sorted(bad)[:3]}; the curve training that wrote it diverged: train it again "
                "with a lower learning rate"
            )
        n = int(header["num_bends"])
        interp: list[str] = header["interpolated_keys"]
        try:
            state_a = {k: tensors[f"bend0/{k}"] if k in interp else tensors[f"a/{k}"] for k in keys}
            state_b = {
                k: tensors[f"bend{n - 1}/{k}"] if k in interp else tensors[f"b/{k}"] for k in keys
            }
        except KeyError as exc:
            raise CheckpointError(f"{path} is missing tensor {exc}") from exc
        curve = target.from_states(model, state_a, state_b, n, metadata=header.get("metadata"))
        if curve.interpolated_keys != interp:
            raise CheckpointError(f"{path}: interpolated keys differ from the model's")
        if header.get("model_spec") is not None:
            curve.model_spec = header["model_spec"]
        with torch.no_grad():
            for k in range(1, n - 1):
                for i, key in enumerate(interp):
                    curve._bend_tensor(k, i).copy_(tensors[f"bend{k}/{key}"])
        return curve
