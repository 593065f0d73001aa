"""The Birkhoff polytope: projections onto it, rounding, and its vertex decomposition.

The Birkhoff polytope :math:`\\mathcal{B}_n = \\{X \\in \\mathbb{R}^{n \\times n} : X \\ge 0,\\;
X\\mathbf{1} = \\mathbf{1},\\; X^\\top\\mathbf{1} = \\mathbf{1}\\}` is the convex hull of the
``n x n`` permutation matrices (Birkhoff–von Neumann theorem). PAM (Tatro et al. 2020,
"Optimizing Mode Connectivity via Neuron Alignment", §4) relaxes each permutation group to a
point of :math:`\\mathcal{B}_n`, takes projected (proximal) gradient steps in it, and rounds
back to a permutation. This module holds the geometry:

* :func:`project_doubly_stochastic` — the exact Euclidean projection (semi-smooth Newton on
  its dual: the default; or Dykstra's alternating projections between the affine set and
  the nonnegative orthant, slower) or the Sinkhorn–Knopp scaling of the positive part (a
  KL/Bregman projection, not Euclidean);
* :func:`round_to_permutation` — the Hungarian projection
  :math:`\\arg\\max_{\\pi} \\sum_i X_{i\\pi(i)}`;
* :func:`birkhoff_decomposition` — a greedy Birkhoff–von Neumann decomposition
  :math:`X \\approx \\sum_j w_j P_{\\sigma_j}` used to sample candidate permutations.

Matrices follow the convention of :mod:`neuralign.perm`: the permutation ``perm`` is the
one-hot matrix ``M[i, perm[i]] = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from neuralign.alignment._lap import solve_lap
from neuralign.errors import ConfigError

__all__ = [
    "PROJECTIONS",
    "BirkhoffTerm",
    "birkhoff_decomposition",
    "constraint_violation",
    "project_affine",
    "project_doubly_stochastic",
    "round_to_permutation",
    "sinkhorn",
]

PROJECTIONS = ("exact", "dykstra", "sinkhorn")


def _check_square(x: Tensor) -> int:
    if x.dim() != 2 or x.shape[0] != x.shape[1] or x.shape[0] < 1:
        raise ConfigError(f"expected a non-empty square matrix, got shape {tuple(x.shape)}")
    return int(x.shape[0])


def constraint_violation(x: Tensor) -> float:
    """Largest deviation of a row or column sum from one, and of an entry below zero.

    .. math:: \\max\\big(\\lVert X\\mathbf{1} - \\mathbf{1}\\rVert_\\infty,\\;
        \\lVert X^\\top\\mathbf{1} - \\mathbf{1}\\rVert_\\infty,\\; \\max(0, -\\min_{ij} X_{ij})\\big)
    """
    _check_square(x)
    rows = (x.sum(1) - 1).abs().max()
    cols = (x.sum(0) - 1).abs().max()
    neg = (-x.min()).clamp_min(0)
    return float(torch.stack([rows, cols, neg]).max())


def project_affine(x: Tensor) -> Tensor:
    """Euclidean projection onto the affine set :math:`\\{X : X\\mathbf{1} = \\mathbf{1},\\;
    X^\\top\\mathbf{1} = \\mathbf{1}\\}` (no sign constraint).

    The minimiser of :math:`\\lVert Y - X\\rVert_F` under both sum constraints has the form
    :math:`Y = X + a\\mathbf{1}^\\top + \\mathbf{1}b^\\top`; with row sums :math:`r`, column
    sums :math:`c` and total :math:`s` of :math:`X` the multipliers are

    .. math:: a = \\tfrac{1}{n}\\big(\\mathbf{1} - r - \\beta\\mathbf{1}\\big),\\quad
        b = \\tfrac{1}{n}\\big(\\mathbf{1} - c - \\alpha\\mathbf{1}\\big),\\quad
        \\alpha = \\beta = \\tfrac{1}{2}\\big(1 - \\tfrac{s}{n}\\big)

    (only :math:`\\alpha + \\beta = 1 - s/n` is determined; the split does not change
    :math:`Y`).

    Args:
        x: An ``n x n`` matrix.

    Returns:
        The projection, same dtype and device.
    """
    n = _check_square(x)
    r = x.sum(1)
    c = x.sum(0)
    half = 0.5 * (1.0 - x.sum() / n)
    a = (1.0 - r - half) / n
    b = (1.0 - c - half) / n
    return x + a[:, None] + b[None, :]


def sinkhorn(x: Tensor, *, iters: int = 1000, tol: float = 1e-9, eps: float = 1e-12) -> Tensor:
    """Sinkhorn–Knopp scaling of the positive part of ``x`` to a doubly stochastic matrix.

    :math:`X_+ = \\max(X, \\varepsilon)`; rows and columns are normalised alternately until
    every row and column sum is within ``tol`` of one. The result
    :math:`\\operatorname{diag}(u) X_+ \\operatorname{diag}(v)` is the KL (Bregman) projection
    of :math:`X_+` onto :math:`\\mathcal{B}_n`, *not* the Euclidean one: every entry stays
    :math:`> 0`, so vertices are reached only in the limit.

    Args:
        x: An ``n x n`` matrix (any sign).
        iters: Maximum number of row + column normalisations.
        tol: Stop when the largest row/column-sum error is below this.
        eps: Floor of the positive part (keeps the scaling well defined).

    Returns:
        A doubly stochastic matrix (float64 arithmetic, returned in ``x``'s dtype).
    """
    _check_square(x)
    y = x.detach().to(torch.float64).clamp_min(eps)
    for _ in range(iters):
        y = y / y.sum(1, keepdim=True)
        y = y / y.sum(0, keepdim=True)
        if (y.sum(1) - 1).abs().max() < tol:
            break
    return y.to(x.dtype)


def _dykstra(x: Tensor, iters: int, tol: float) -> Tensor:
    # Dykstra's algorithm for the intersection of the affine set A and the orthant O:
    #   y = P_A(z);  z' = P_O(y + q);  q' = y + q - z'.
    # A is affine, so its own correction term is not needed (it lies in the normal space of
    # A and P_A ignores it); only the orthant's correction q is kept.
    z = x
    q = torch.zeros_like(x)
    for _ in range(iters):
        y = project_affine(z)
        z = (y + q).clamp_min(0)
        q = y + q - z
        if (z.sum(1) - 1).abs().max() < tol and (z.sum(0) - 1).abs().max() < tol:
            break
    return z


def _newton(x: Tensor, iters: int, tol: float) -> Tensor:
    """Semi-smooth Newton ascent on the dual of the Euclidean projection, batched.

    ``x`` is ``(B, n, n)`` float64. The projection is
    :math:`Y = (X + a\\mathbf{1}^\\top + \\mathbf{1}b^\\top)_+` at the maximiser of the concave,
    piecewise-quadratic dual
    :math:`D(a, b) = \\mathbf{1}^\\top a + \\mathbf{1}^\\top b - \\tfrac12\\lVert(X +
    a\\mathbf{1}^\\top + \\mathbf{1}b^\\top)_+\\rVert^2`, whose gradient is the residual of the
    row and column sums. The generalised Hessian (of :math:`-D`) is
    :math:`\\begin{pmatrix}\\operatorname{diag}(S\\mathbf{1}) & S\\\\ S^\\top &
    \\operatorname{diag}(S^\\top\\mathbf{1})\\end{pmatrix}` with :math:`S` the support
    indicator; the Newton system is solved through its ``n x n`` Schur complement, with a
    small Levenberg shift, and an Armijo backtracking line search keeps the ascent monotone.
    """
    bsz, n, _ = x.shape
    a = x.new_zeros(bsz, n)
    b = x.new_zeros(bsz, n)

    def evaluate(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = x + a[:, :, None] + b[:, None, :]
        y = z.clamp_min(0)
        return z, y, a.sum(1) + b.sum(1) - 0.5 * (y * y).sum((1, 2))

    z, y, dual = evaluate(a, b)
    for _ in range(iters):
        r = 1.0 - y.sum(2)
        c = 1.0 - y.sum(1)
        err = torch.maximum(r.abs().amax(1), c.abs().amax(1))
        active = err > tol
        if not bool(active.any()):
            break
        s = (z > 0).to(x.dtype)
        g = torch.cat([r, c], 1)
        shift = g.norm(dim=1).clamp_max(1e-3) + 1e-12
        # A row or column with empty support has a zero Hessian block; flooring its
        # curvature at 1 turns its component into a unit gradient step (still an ascent
        # direction) instead of a huge one that the line search must undo.
        dr = s.sum(2).clamp_min(1.0) + shift[:, None]
        dc = s.sum(1).clamp_min(1.0) + shift[:, None]
        st = s.transpose(1, 2)
        schur = torch.diag_embed(dc) - st @ (s / dr[:, :, None])
        rhs = c - (st @ (r / dr)[:, :, None]).squeeze(-1)
        db = torch.linalg.solve(schur, rhs)
        da = (r - (s @ db[:, :, None]).squeeze(-1)) / dr
        slope = (g * torch.cat([da, db], 1)).sum(1)
        step = torch.ones(bsz, dtype=x.dtype, device=x.device)
        for _ in range(40):
            z_new, y_new, dual_new = evaluate(a + step[:, None] * da, b + step[:, None] * db)
            # The slack absorbs float64 rounding of the dual near convergence, where the
            # true increase (~ slope) falls below the dual's last digit.
            slack = 1e-12 * (1.0 + dual.abs())
            ok = dual_new >= dual + 1e-4 * step * slope - slack
            if bool(ok.all()):
                break
            step = torch.where(ok, step, 0.5 * step)
        keep = active[:, None]
        a = torch.where(keep, a + step[:, None] * da, a)
        b = torch.where(keep, b + step[:, None] * db, b)
        z, y, dual = evaluate(a, b)
    return y


def project_doubly_stochastic(
    x: Tensor,
    method: str = "exact",
    *,
    iters: int | None = None,
    tol: float = 1e-10,
) -> Tensor:
    """Project ``x`` (one ``n x n`` matrix or a ``(B, n, n)`` stack) onto the Birkhoff
    polytope of doubly stochastic matrices.

    ``"exact"`` (default) computes the Euclidean projection

    .. math:: \\Pi_{\\mathcal{B}_n}(X) = \\arg\\min_{Y \\in \\mathcal{B}_n} \\lVert Y - X\\rVert_F

    by a semi-smooth Newton method on its dual (two multiplier vectors, one per row and one
    per column constraint; :math:`Y = (X + a\\mathbf{1}^\\top + \\mathbf{1}b^\\top)_+`), in
    float64; it converges in about ten iterations. ``"dykstra"`` reaches the same point by
    Dykstra's alternating projections between the affine set of unit row/column sums
    (closed form, :func:`project_affine`) and the nonnegative orthant, but needs hundreds
    to thousands of iterations (kept as a reference). ``"sinkhorn"`` scales the positive
    part (:func:`sinkhorn`): the KL projection, not the Euclidean one.

    The exact projection is the default because PAM's P-step is a projected (proximal)
    gradient step, whose descent guarantee needs the Euclidean projection, and because it
    keeps the sparsity of the problem: a permutation matrix, or a small gradient step away
    from one, projects back *onto the vertex*, so the relaxation leaves a permutation only
    when the loss pushes it to. Sinkhorn fills every zero with mass, which blurs the matrix
    toward the barycentre :math:`\\mathbf{1}\\mathbf{1}^\\top/n`. (The IBM reference code
    alternated a ReLU with the affine projection 20 times — von Neumann's alternating
    projections without Dykstra's correction, stopped early — which gives a roughly feasible
    point, not the projection.)

    Args:
        x: An ``n x n`` matrix or a ``(B, n, n)`` batch (projected independently).
        method: ``"exact"``, ``"dykstra"`` or ``"sinkhorn"``.
        iters: Maximum iterations (default: 100 for exact, 5000 for the others).
        tol: Target accuracy of the row and column sums.

    Returns:
        Nonnegative matrices whose rows and columns sum to one (to about ``tol``, then
        rounded to ``x``'s dtype), same shape, dtype and device as ``x``; computed without
        gradient.

    Raises:
        ConfigError: On an unknown method or a non-square input.
    """
    if method not in PROJECTIONS:
        raise ConfigError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    batched = x.dim() == 3
    if batched:
        if x.shape[1] != x.shape[2] or x.shape[1] < 1:
            raise ConfigError(f"expected (B, n, n) matrices, got shape {tuple(x.shape)}")
    else:
        _check_square(x)
    with torch.no_grad():
        x64 = x.detach().to(torch.float64)
        stack = x64 if batched else x64[None]
        if method == "exact":
            y = _newton(stack, 100 if iters is None else iters, tol)
        elif method == "dykstra":
            y = torch.stack([_dykstra(m, 5000 if iters is None else iters, tol) for m in stack])
        else:
            y = torch.stack(
                [sinkhorn(m, iters=5000 if iters is None else iters, tol=tol) for m in stack]
            )
        out = y if batched else y[0]
    return out.to(dtype=x.dtype, device=x.device)


def round_to_permutation(x: Tensor) -> Tensor:
    """Hungarian projection: the permutation :math:`\\pi` maximising
    :math:`\\sum_i X_{i\\pi(i)}`, i.e. the vertex of :math:`\\mathcal{B}_n` closest to
    :math:`X` in Frobenius norm (:math:`\\lVert P - X\\rVert^2 = n + \\lVert X\\rVert^2 -
    2\\langle P, X\\rangle`).

    Args:
        x: An ``n x n`` matrix.

    Returns:
        ``perm`` (int64, CPU) with ``M[i, perm[i]] = 1``; a permutation matrix is returned
        unchanged.
    """
    _check_square(x)
    return solve_lap(x.detach()).cpu()


@dataclass(frozen=True)
class BirkhoffTerm:
    """One term :math:`w\\,P_\\sigma` of a Birkhoff–von Neumann decomposition.

    Attributes:
        weight: The coefficient :math:`w > 0`.
        perm: The permutation ``sigma`` (int64, ``M[i, sigma[i]] = 1``).
    """

    weight: float
    perm: Tensor


def birkhoff_decomposition(
    x: Tensor, *, max_terms: int | None = None, tol: float = 1e-9
) -> list[BirkhoffTerm]:
    """Greedy Birkhoff–von Neumann decomposition :math:`X \\approx \\sum_j w_j P_{\\sigma_j}`.

    Repeatedly: find a permutation inside the support of the residual :math:`R` (entries
    :math:`> \\text{tol}`) with the Hungarian algorithm, maximising the matched mass; take
    :math:`w = \\min_i R_{i\\sigma(i)}`; subtract :math:`w P_\\sigma`. Each term zeroes at
    least one entry, so at most :math:`n^2 - 2n + 2` terms are needed for a doubly
    stochastic input (Birkhoff's theorem guarantees a permutation in the support of any
    positive multiple of a doubly stochastic matrix).

    Args:
        x: A (nearly) doubly stochastic ``n x n`` matrix.
        max_terms: Stop after this many terms (default :math:`n^2 - 2n + 2`).
        tol: Entries at or below ``tol`` count as zero; stop when the remaining mass is
            below ``n * tol``.

    Returns:
        Terms in extraction order (weights positive and summing to at most one).
    """
    n = _check_square(x)
    limit = n * n - 2 * n + 2 if max_terms is None else int(max_terms)
    residual = x.detach().to("cpu", torch.float64).clone()
    rows = torch.arange(n)
    terms: list[BirkhoffTerm] = []
    while len(terms) < limit and float(residual.sum()) > n * tol:
        support = residual > tol
        score = torch.where(support, residual, torch.full_like(residual, -(n + 1.0)))
        perm = solve_lap(score).cpu()
        picked = residual[rows, perm]
        if not bool(support[rows, perm].all()):
            break  # no permutation left inside the support (input not doubly stochastic)
        w = float(picked.min())
        terms.append(BirkhoffTerm(w, perm))
        residual[rows, perm] -= w
        residual[rows[picked == picked.min()], perm[picked == picked.min()]] = 0.0
    return terms
