"""Permutations of the groups of a :class:`~neuralign.perm.spec.PermutationSpec`.

Convention: ``perm.perms[g]`` is an int64 index tensor; applying it gives new unit ``i`` =
old unit ``perm[i]`` (``new = old[perm]`` along every member axis; the same as multiplying by
the one-hot matrix ``M[i, perm[i]] = 1``: ``new = M @ old``).

Composition: ``p.compose(q)`` is "``p`` after ``q``": applying it equals applying ``q``
first, then ``p``; its index tensor is ``q[p]``. Hence ``p.compose(p.inverse())`` and
``p.inverse().compose(p)`` are the identity.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch

from neuralign.errors import NeuralignError
from neuralign.io.atomic import atomic_write_text
from neuralign.perm.spec import PermutationSpec

__all__ = ["Permutation", "PermutationError", "block_permutation", "structured"]

_FORMAT = "neuralign.permutation"


class PermutationError(NeuralignError, ValueError):
    """A permutation is malformed or does not fit a spec."""


class Permutation:
    """One permutation per group: ``perms[g]`` is an int64 tensor holding a permutation of
    ``range(size)``.

    Args:
        perms: Index tensors (or sequences of ints) by group name.

    Raises:
        PermutationError: If an entry is not a permutation.
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, perms: Mapping[str, Any], spec: PermutationSpec | None = None) -> None:
        #: The spec this permutation was made for, when known (``identity``, ``random``,
        #: ``align``): :func:`~neuralign.perm.permute_model` then needs no ``spec=``.
        self.spec = spec
        self.perms: dict[str, torch.Tensor] = {}
        for name, p in perms.items():
            t = torch.as_tensor(p, dtype=torch.int64).detach().cpu().flatten()
            if not torch.equal(torch.sort(t).values, torch.arange(t.numel())):
                raise PermutationError(
                    f"perms[{name!r}] is not a permutation of 0..{t.numel() - 1}"
                )
            self.perms[name] = t

    # ------------------------------------------------------------------ constructors
    @classmethod
    def identity(cls, spec: PermutationSpec) -> Permutation:
        """The identity permutation of every group of ``spec``."""
        return cls({g.name: torch.arange(g.size) for g in spec.groups.values()}, spec)

    @classmethod
    def random(cls, spec: PermutationSpec, seed: int = 0) -> Permutation:
        """A uniformly random permutation of every group (``torch.Generator`` seeded with
        ``seed``; groups drawn in spec order, so the result is reproducible)."""
        gen = torch.Generator().manual_seed(seed)
        perms: dict[str, torch.Tensor] = {}
        outer: dict[str, torch.Tensor] = {}  # block permutation per link
        for g in spec.groups.values():
            if g.blocks == 1:
                perms[g.name] = torch.randperm(g.size, generator=gen)
                continue
            if g.link is not None and g.link in outer:
                pi = outer[g.link]
            else:
                pi = torch.randperm(g.blocks, generator=gen)
                if g.link is not None:
                    outer[g.link] = pi
            within = [torch.randperm(g.block_size, generator=gen) for _ in range(g.blocks)]
            perms[g.name] = structured(pi, within)
        return cls(perms, spec)

    # ------------------------------------------------------------------ algebra
    def inverse(self) -> Permutation:
        """The permutation undoing this one."""
        return Permutation({k: torch.argsort(p) for k, p in self.perms.items()}, self.spec)

    def compose(self, other: Permutation) -> Permutation:
        """``self`` after ``other``: applying the result = applying ``other``, then ``self``.

        Groups present in only one of the two are taken from that one.

        Raises:
            PermutationError: If a shared group has different sizes.
        """
        out: dict[str, torch.Tensor] = {}
        for k in list(other.perms) + [k for k in self.perms if k not in other.perms]:
            p, q = self.perms.get(k), other.perms.get(k)
            if p is None:
                assert q is not None
                out[k] = q
            elif q is None:
                out[k] = p
            else:
                if p.numel() != q.numel():
                    raise PermutationError(f"group {k!r}: sizes {p.numel()} and {q.numel()}")
                out[k] = q[p]
        same = self.spec is other.spec or (
            self.spec is not None and other.spec is not None and self.spec.equivalent(other.spec)
        )
        return Permutation(out, self.spec if same else None)

    def is_identity(self) -> bool:
        """Whether every group is mapped to itself."""
        return all(torch.equal(p, torch.arange(p.numel())) for p in self.perms.values())

    def check(self, spec: PermutationSpec) -> None:
        """Check that every group of the permutation exists in ``spec`` with the same size,
        and that structured groups are permuted block to block (linked groups alike).

        Raises:
            PermutationError: Naming the first mismatch.
        """
        outer: dict[str, tuple[str, torch.Tensor]] = {}
        for k, p in self.perms.items():
            if k not in spec.groups:
                raise PermutationError(f"group {k!r} is not in the spec")
            g = spec.groups[k]
            if p.numel() != g.size:
                raise PermutationError(
                    f"group {k!r}: permutation of {p.numel()} units, spec says {g.size}"
                )
            if g.blocks == 1:
                continue
            pi = block_permutation(p, g.blocks)
            if pi is None:
                raise PermutationError(
                    f"group {k!r} is made of {g.blocks} blocks of {g.block_size} units "
                    "(GroupNorm groups, attention heads) and its permutation does not map "
                    "whole blocks to blocks"
                )
            if g.link is not None:
                first = outer.setdefault(g.link, (k, pi))
                if not torch.equal(first[1], pi):
                    raise PermutationError(
                        f"groups {first[0]!r} and {k!r} are linked ({g.link!r}) but their "
                        "block permutations differ"
                    )

    def matrices(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """One-hot matrices ``M[i, perm[i]] = 1`` (so ``M @ old`` applies the permutation)."""
        out = {}
        for k, p in self.perms.items():
            m = torch.zeros(p.numel(), p.numel(), dtype=dtype)
            m[torch.arange(p.numel()), p] = 1
            out[k] = m
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Permutation):
            return NotImplemented
        return self.perms.keys() == other.perms.keys() and all(
            torch.equal(p, other.perms[k]) for k, p in self.perms.items()
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}: {p.numel()}" for k, p in self.perms.items())
        return f"Permutation({{{sizes}}})"

    # ------------------------------------------------------------------ files
    def to_json(self) -> str:
        """Serialise as JSON ``{"format", "perms": {group: [ints]}}``."""
        return json.dumps(
            {"format": _FORMAT, "perms": {k: p.tolist() for k, p in self.perms.items()}}
        )

    @classmethod
    def from_json(cls, text: str) -> Permutation:
        """Parse :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise PermutationError(f"permutation file is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise PermutationError("not a neuralign permutation file")
        perms = data.get("perms")
        if not isinstance(perms, dict) or not all(
            isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
            for v in perms.values()
        ):
            raise PermutationError(
                "malformed permutation file: 'perms' must map groups to lists of integers"
            )
        try:
            return cls(perms)
        except PermutationError:
            raise
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise PermutationError(f"malformed permutation file ({exc})") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as JSON, atomically."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Permutation:
        """Read a file written by :meth:`save`.

        Raises:
            PermutationError: missing, special, unreadable or malformed file.
        """
        from neuralign.io.files import regular_file

        regular_file(path, "permutation file", PermutationError, max_bytes=256 << 20)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise PermutationError(f"cannot read permutation file {path}: {exc}") from None
        try:
            return cls.from_json(text)
        except PermutationError as exc:
            raise PermutationError(f"{path}: {exc}") from None


def structured(pi: torch.Tensor, within: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """The permutation of ``len(pi) * s`` units that puts old block ``pi[j]`` at block ``j``,
    reordered by ``within[j]``: ``p[j*s + r] = pi[j]*s + within[j][r]``."""
    w = torch.stack(list(within)) if not isinstance(within, torch.Tensor) else within
    s = w.shape[1]
    return (pi.to(torch.int64)[:, None] * s + w.to(torch.int64)).reshape(-1)


def block_permutation(p: torch.Tensor, blocks: int) -> torch.Tensor | None:
    """The block permutation of a structured permutation (``None`` if ``p`` splits a block)."""
    s = p.numel() // blocks
    src = p.view(blocks, s) // s
    if not bool((src == src[:, :1]).all()):
        return None
    return src[:, 0].clone()
