"""Permuting a whole model: the one place that combines discovery and application.

It sits above :mod:`~neuralign.perm.trace` (discovery) and :mod:`~neuralign.perm.apply`
(applying a permutation to a state dict), so neither needs the other.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from neuralign.errors import ConfigError
from neuralign.perm.apply import apply_permutation
from neuralign.perm.permutation import Permutation, PermutationError
from neuralign.perm.spec import PermutationSpec
from neuralign.perm.trace import discover_spec

__all__ = ["permute_model"]


def permute_model(
    model: nn.Module,
    perm: Permutation,
    spec: PermutationSpec | None = None,
    *,
    example_input: Any = None,
) -> nn.Module:
    """Return a deep copy of ``model`` with ``perm`` applied; ``model`` is untouched.

    Args:
        model: The network.
        perm: The permutation.
        spec: Its spec; by default the spec ``perm`` was made for (``perm.spec``, set by
            :meth:`Permutation.random`, :meth:`Permutation.identity` and ``align``), else
            discovered from ``example_input``.
        example_input: Needed only when neither ``spec`` nor ``perm.spec`` is known.

    Returns:
        A new module computing the same function (up to float rounding).

    Raises:
        ConfigError: If no spec is known and no ``example_input`` is given.
        PermutationError: If ``spec`` is not the spec ``perm`` was made for.
    """
    known = getattr(perm, "spec", None)
    if spec is not None and known is not None and not spec.equivalent(known):
        raise PermutationError(
            "permute_model: spec= is not the spec the permutation was made for (groups "
            f"{list(spec.groups)[:4]}... vs {list(known.groups)[:4]}...)"
        )
    if spec is None:
        spec = known
    if spec is None:
        if example_input is None:
            raise ConfigError(
                "permute_model needs spec= (or a Permutation made from a spec, or "
                "example_input= to discover it)"
            )
        spec = discover_spec(model, example_input)
    new_state = apply_permutation(model.state_dict(), spec, perm)
    new = copy.deepcopy(model)
    new.load_state_dict(new_state)
    return new
