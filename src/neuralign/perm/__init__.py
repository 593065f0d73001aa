"""Permutation symmetry of any network: discover, represent, apply, verify, tap.

Example:
    >>> import torch
    >>> from neuralign.models import create_model
    >>> from neuralign.perm import Permutation, discover_spec, permute_model
    >>> model = create_model("resnet20")
    >>> spec = discover_spec(model, torch.rand(2, 3, 32, 32))   # verified
    >>> perm = Permutation.random(spec, seed=0)
    >>> permuted = permute_model(model, perm, spec)             # same function

Convention: applying ``perm`` gives new unit ``i`` = old unit ``perm.perms[g][i]`` on every
member axis of group ``g``; ``p.compose(q)`` applies ``q`` first, then ``p``.
"""

from neuralign.errors import SpecVerificationError, UnsupportedOpError
from neuralign.perm.apply import (
    apply_permutation,
    apply_soft_permutation,
    check_soft_supported,
)
from neuralign.perm.permutation import Permutation, PermutationError
from neuralign.perm.permute import permute_model
from neuralign.perm.spec import (
    AxisMember,
    Coverage,
    Group,
    PermutationSpec,
    SpecError,
    Tap,
    coverage,
    format_spec_table,
)
from neuralign.perm.taps import ActivationTap, capture_activations
from neuralign.perm.trace import discover_spec, trace_model
from neuralign.perm.verify import verify_spec

__all__ = [
    "ActivationTap",
    "AxisMember",
    "Coverage",
    "Group",
    "Permutation",
    "PermutationError",
    "PermutationSpec",
    "SpecError",
    "SpecVerificationError",
    "Tap",
    "UnsupportedOpError",
    "apply_permutation",
    "apply_soft_permutation",
    "capture_activations",
    "check_soft_supported",
    "coverage",
    "discover_spec",
    "format_spec_table",
    "permute_model",
    "trace_model",
    "verify_spec",
]
