"""Discover the permutation symmetry of a network by tracing it with ``torch.fx``.

The model is traced symbolically (once per mode: ``forward`` may branch on
``self.training``, e.g. GoogLeNet's auxiliary heads), shapes are propagated with the example
input, and every node is interpreted by the op table of :mod:`neuralign.perm._rules`. Each
tensor carries the layout of its channel axis as segments of permutation groups. Layers with
weights start groups; elementwise ops between permuted tensors tie groups (union-find), so a
residual stream becomes one group; a parameter claimed by two groups ties them (a shared
layer); anything reaching a network output, meeting a fixed tensor, or crossing an op the table
cannot reason about is frozen (left unpermuted, i.e. dropped from the spec).

Discovery is sound by construction and, by default, checked: a random permutation of every
group must leave the outputs unchanged in eval and train mode
(:func:`neuralign.perm.verify.verify_spec`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from neuralign.errors import ConfigError
from neuralign.perm.fxtrace import (  # noqa: F401
    LeafSpec,
    _as_tuple,
    _propagate_shapes,
    describe_node,
    leaf_names,
    trace_model,
)
from neuralign.perm.spec import PermutationSpec, coverage
from neuralign.perm.verify import verify_spec
from neuralign.perm.walker import Walker

__all__ = ["LeafSpec", "Walker", "discover_spec", "trace_model"]

log = logging.getLogger(__name__)


def discover_spec(
    model: nn.Module,
    example_input: Any,
    *,
    leaf_modules: LeafSpec = (),
    freeze: Sequence[str] = (),
    verify: bool = True,
    modes: Sequence[str] = ("train", "eval"),
    atol: float = 1e-6,
    rtol: float = 1e-5,
) -> PermutationSpec:
    """Discover which hidden units of ``model`` can be permuted without changing its function.

    The model is traced with ``torch.fx`` in each of ``modes`` (train mode first, so that
    branches taken only in training, such as auxiliary classifier heads, are covered and
    ordered where they occur); shapes come from running ``example_input`` through a deep copy
    (the model itself is never run, mutated, or left in another mode). See
    :mod:`neuralign.perm._rules` for the op table.

    Args:
        model: Any ``torch.fx``-traceable module.
        example_input: A tensor (or tuple of tensors) the model accepts; use a batch of at
            least 2 so that train-mode BatchNorm works.
        leaf_modules: Module classes or qualified names to treat as opaque: their parameters
            are left unpermuted and the groups entering them are frozen.
        freeze: Names of groups to leave unpermuted; required to acknowledge the groups that
            meet an unsupported op (the error message lists them).
        verify: Check the result with :func:`neuralign.perm.verify.verify_spec`.
        modes: The modes to trace (and verify) in: ``"train"`` and/or ``"eval"``.
        atol: Absolute tolerance of the verification (float64).
        rtol: Relative tolerance of the verification.

    Returns:
        The spec: groups in forward order, each with its members and taps.

    Raises:
        UnsupportedOpError: An op the table cannot reason about meets a permuted tensor.
        SpecVerificationError: The verification failed (a bug: please report it).
        ConfigError: ``freeze`` names a group that does not exist, or a mode is unknown.
    """
    if not modes or any(m not in ("train", "eval") for m in modes):
        raise ConfigError(f"modes must be a non-empty subset of ('train', 'eval'), got {modes}")
    inputs = _as_tuple(example_input)
    work = copy.deepcopy(model)
    leaves = leaf_names(work, leaf_modules)
    walker = Walker(work, set(leaves))
    meta_work: nn.Module | None = None
    records = []
    for mode in modes:
        work.train(mode == "train")
        graph = trace_model(work, leaf_modules)
        meta_work = _propagate_shapes(work, graph, inputs, meta_work)
        records.append(walker.walk(graph, mode))
    spec = walker.build(records, freeze)
    spec.meta.update({"modes": list(modes), "leaf_modules": leaves})
    if verify:
        verify_spec(model, spec, example_input, modes=modes, atol=atol, rtol=rtol)
    cov = coverage(spec, model)
    if not spec.groups:
        log.warning("discovered no permutation groups in %s:\n%s", type(model).__name__, cov)
    else:
        log.info("permutation symmetry of %s:\n%s", type(model).__name__, cov)
    return spec
