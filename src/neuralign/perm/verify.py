"""Check a permutation spec: a random permutation must leave the network's outputs unchanged.

Run in float64 on a private copy of the model, in eval mode (running BatchNorm statistics)
and in train mode (batch statistics; dropout is made the identity there, modules and
``F.dropout`` calls alike, because a dropout mask is tied to positions, not units). The caller's model is never run or mutated.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neuralign.errors import SpecVerificationError
from neuralign.perm.apply import apply_permutation
from neuralign.perm.permutation import Permutation
from neuralign.perm.spec import PermutationSpec

__all__ = ["verify_spec"]

_DROPOUT_FUNCTIONS = (
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
)


def _identity(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x


@contextlib.contextmanager
def _no_dropout() -> Iterator[None]:
    """Make dropout (modules and ``F.dropout*`` calls, which modules use too) the identity.

    A dropout mask is tied to positions, not units, so it cannot commute with a permutation.
    """
    saved = {name: getattr(F, name) for name in _DROPOUT_FUNCTIONS if hasattr(F, name)}
    try:
        for name in saved:
            setattr(F, name, _identity)
        yield
    finally:
        for name, fn in saved.items():
            setattr(F, name, fn)


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flatten(out[k])]
    return []


def _cast(x: Any, dtype: torch.dtype) -> Any:
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.to(dtype)
    if isinstance(x, (tuple, list)):
        return type(x)(_cast(v, dtype) for v in x)
    return x


def _nontrivial(spec: PermutationSpec, seed: int) -> Permutation:
    perm = Permutation.random(spec, seed)
    perms = {}
    for name, p in perm.perms.items():
        g = spec.groups[name]
        if p.numel() > 1 and torch.equal(p, torch.arange(p.numel())):
            # A random draw may be the identity: avoid a vacuous check. A structured group
            # is reordered within its first block (its block permutation may be linked).
            s = g.block_size
            if g.blocks == 1:
                p = p.roll(1)
            elif s > 1:
                p = p.clone()
                p[:s] = p[:s].roll(1)
        perms[name] = p
    return Permutation(perms, spec)


class _Runner:
    def __init__(self, model: nn.Module, inputs: tuple[Any, ...], dtype: torch.dtype | None):
        self.model = copy.deepcopy(model)
        if dtype is not None:
            self.model.to(dtype)
            inputs = _cast(inputs, dtype)
        self.inputs = inputs
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}

    def run(self, state: dict[str, torch.Tensor], mode: str, seed: int) -> list[torch.Tensor]:
        m = self.model
        m.load_state_dict(state)
        m.train(mode == "train")
        with torch.no_grad(), torch.random.fork_rng(devices=[]), _no_dropout():
            torch.manual_seed(seed)
            return [t.detach().clone() for t in _flatten(m(*self.inputs))]


def _close(a: list[torch.Tensor], b: list[torch.Tensor], atol: float, rtol: float) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return False
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return False
            continue
        scale = max(1.0, float(y.abs().max()) if y.numel() else 1.0)
        if not torch.allclose(x, y, atol=atol * scale, rtol=rtol):
            return False
    return True


def verify_spec(
    model: nn.Module,
    spec: PermutationSpec,
    example_input: Any,
    *,
    modes: Sequence[str] | None = None,
    seed: int = 0,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    dtype: torch.dtype | None = torch.float64,
) -> None:
    """Check that a random permutation of every group leaves the outputs unchanged.

    Every element of the output (e.g. GoogLeNet's ``(logits, aux1, aux2)`` in train mode) is
    compared, with tolerance ``atol * max(1, |reference|max)`` and ``rtol``. On failure each
    group is permuted alone to name the culprit.

    Args:
        model: The network (not mutated; its mode is unchanged).
        spec: The spec to check.
        example_input: A tensor or tuple of tensors (batch of at least 2 for train mode).
        modes: ``"eval"`` and/or ``"train"``; default: the modes the spec was traced in
            (``spec.meta["modes"]``), else both.
        seed: Seed of the random permutation and of the forward passes.
        atol: Absolute tolerance (scaled by the output magnitude).
        rtol: Relative tolerance.
        dtype: Run in this floating dtype (``None``: the model's own). Float64 makes the
            check sharp; if the model cannot run in it, float32 is used with a warning.

    Raises:
        SpecVerificationError: Naming the group (and mode) whose permutation changes the
            outputs.
        SpecError: If the spec does not fit the model's state dict.
    """
    modes = list(modes or spec.meta.get("modes") or ("eval", "train"))
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    runner = _Runner(model, inputs, dtype)
    spec.validate(runner.state)
    try:
        refs = {mode: runner.run(runner.state, mode, seed) for mode in modes}
    except RuntimeError as exc:
        if dtype is None:
            raise
        warnings.warn(
            f"verify_spec: the model does not run in {dtype} ({exc}); checking in its own "
            "dtype with looser tolerances",
            stacklevel=2,
        )
        verify_spec(
            model,
            spec,
            example_input,
            modes=modes,
            seed=seed,
            atol=max(atol, 1e-4),
            rtol=max(rtol, 1e-3),
            dtype=None,
        )
        return
    perm = _nontrivial(spec, seed)
    state = apply_permutation(runner.state, spec, perm)
    bad_modes = [m for m in modes if not _close(runner.run(state, m, seed), refs[m], atol, rtol)]
    if not bad_modes:
        return
    for name, p in perm.perms.items():
        one = apply_permutation(runner.state, spec, Permutation({name: p}))
        for mode in bad_modes:
            if not _close(runner.run(one, mode, seed), refs[mode], atol, rtol):
                raise SpecVerificationError(
                    f"permuting group {name!r} ({spec.groups[name].size} units) changes the "
                    f"outputs in {mode} mode: its members "
                    f"{[str(m) for m in spec.groups[name].members]} are incomplete or wrong"
                )
    raise SpecVerificationError(
        f"a random permutation of all groups changes the outputs in {bad_modes} mode, but no "
        "single group does: some groups that must be tied are separate"
    )
