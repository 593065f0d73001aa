"""Streaming Pearson cross-correlation between the units of two networks (Tatro et al. 2020;
docs/method.md, Alignment).

For units ``x ∈ R^n`` of model A and ``y ∈ R^n`` of model B observed on the same inputs
(every spatial position of every image is one sample) we accumulate, in float64, the count
and the first and second moments of the *shifted* values ``x − c_x``, ``y − c_y``:

    S_x = Σ (x − c_x),  S_xx = Σ (x − c_x)²,  S_xy = Σ (x − c_x)(y − c_y)ᵀ, ...

where the shift ``c`` is each unit's mean over the first batch. Shifting by a value close to
the mean makes the final centring ``cov = S_xy/m − (S_x/m)(S_y/m)ᵀ`` free of cancellation
(the classical shifted-data algorithm), so one pass gives the exact centred statistic;
memory is O(n²) whatever the number of images. Each batch is summed with one GEMM over the
batch's ``m`` samples (in ``batch_dtype``; float32 by default, whose relative error on the
correlations is ~1e-6) and added to the float64 running sums.

The correlation is ``C[i, j] = cov(x_i, y_j) / ((σ_i + eps)(σ_j + eps))`` with ``eps = 1e-5``
so that dead (constant) units give 0, never NaN.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

EPS = 1e-5

# Scratch buffers for the shifted (units × samples) copies, reused across batches and taps
# while a workspace is active (see :func:`scratch_buffers`): a fresh multi-megabyte buffer
# per tap and batch costs page faults on CPU that are a visible part of the alignment pass.
_WORKSPACE: contextvars.ContextVar[dict[tuple[object, ...], torch.Tensor] | None] = (
    contextvars.ContextVar("neuralign_correlation_workspace", default=None)
)


@contextlib.contextmanager
def scratch_buffers(workspace: dict[tuple[object, ...], torch.Tensor]) -> Iterator[None]:
    """Let :meth:`CrossCorrelation.update` reuse the buffers of ``workspace`` in this block.

    The buffers are only used inside one ``update`` call, so one buffer per shape serves
    every tap; the owner of ``workspace`` (the lock-step runner of one alignment pass) frees
    them when it is dropped.
    """
    token = _WORKSPACE.set(workspace)
    try:
        yield
    finally:
        _WORKSPACE.reset(token)


def _scratch(
    slot: int, shape: torch.Size, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    ws = _WORKSPACE.get()
    if ws is None:
        return torch.empty(shape, dtype=dtype, device=device)
    key = (slot, tuple(shape), dtype, device)
    buf = ws.get(key)
    if buf is None:
        buf = ws[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def units_as_rows(t: torch.Tensor) -> torch.Tensor:
    """Reshape activations ``(N, n, *spatial)`` to samples × units ``(N·∏spatial, n)``."""
    if t.ndim == 2:
        return t
    n = t.shape[1]
    return t.movedim(1, -1).reshape(-1, n)


def _units_by_samples(
    t: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype, slot: int = 0
) -> torch.Tensor:
    """``(t − shift)`` laid out as a contiguous ``(n, samples)`` matrix, in one pass."""
    n = t.shape[1]
    src = t.reshape(t.shape[0], n, -1).transpose(0, 1)  # (n, N, S) view
    out = _scratch(slot, src.shape, dtype, t.device)
    torch.sub(src.to(dtype) if t.dtype != dtype else src, shift.to(dtype)[:, None, None], out=out)
    return out.view(n, -1)


class CrossCorrelation:
    """Streaming cross-correlation of two sets of ``n`` units.

    Args:
        n: number of units of each model.
        device: where the accumulators live (the models' device).
        batch_dtype: dtype of the per-batch GEMM and sums (float32: fast; float64: exact
            to round-off). The running sums are always float64.
    """

    def __init__(
        self,
        n: int,
        device: torch.device | str = "cpu",
        batch_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.n = n
        self.batch_dtype = batch_dtype
        self.count = 0
        self.shift_x: torch.Tensor | None = None
        self.shift_y: torch.Tensor | None = None
        self.s_x = torch.zeros(n, dtype=torch.float64, device=device)
        self.s_y = torch.zeros(n, dtype=torch.float64, device=device)
        self.s_xx = torch.zeros(n, dtype=torch.float64, device=device)
        self.s_yy = torch.zeros(n, dtype=torch.float64, device=device)
        self.s_xy = torch.zeros(n, n, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add a batch: activations of A and B with units on dim 1 (any trailing dims)."""
        if a.shape != b.shape or a.ndim < 2 or a.shape[1] != self.n:
            raise ValueError(f"activation shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        if a.numel() == 0:
            return
        if self.shift_x is None or self.shift_y is None:
            dims = [0, *range(2, a.ndim)]
            self.shift_x = a.detach().mean(dims).double()
            self.shift_y = b.detach().mean(dims).double()
        x = _units_by_samples(a.detach(), self.shift_x, self.batch_dtype, 0)
        y = _units_by_samples(b.detach(), self.shift_y, self.batch_dtype, 1)
        self.count += x.shape[1]
        self.s_x += x.sum(1).double()
        self.s_y += y.sum(1).double()
        self.s_xx += torch.linalg.vector_norm(x, dim=1).double().square()
        self.s_yy += torch.linalg.vector_norm(y, dim=1).double().square()
        self.s_xy += (x @ y.T).double()

    def _shifted_to(self, shift_x: torch.Tensor, shift_y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This accumulator's sums re-expressed around other shifts."""
        assert self.shift_x is not None and self.shift_y is not None
        dx = self.shift_x - shift_x
        dy = self.shift_y - shift_y
        m = self.count
        s_x = self.s_x + m * dx
        s_y = self.s_y + m * dy
        s_xx = self.s_xx + 2 * dx * self.s_x + m * dx * dx
        s_yy = self.s_yy + 2 * dy * self.s_y + m * dy * dy
        s_xy = (
            self.s_xy
            + torch.outer(dx, self.s_y)
            + torch.outer(self.s_x, dy)
            + m * torch.outer(dx, dy)
        )
        return s_x, s_y, s_xx, s_yy, s_xy

    def merge_(self, other: CrossCorrelation) -> CrossCorrelation:
        """Fold another accumulator's samples into this one (e.g. from another rank)."""
        if other.count == 0:
            return self
        if self.count == 0 or self.shift_x is None or self.shift_y is None:
            self.shift_x, self.shift_y = other.shift_x, other.shift_y
            self.count = other.count
            self.s_x, self.s_y = other.s_x.clone(), other.s_y.clone()
            self.s_xx, self.s_yy, self.s_xy = (
                other.s_xx.clone(),
                other.s_yy.clone(),
                other.s_xy.clone(),
            )
            return self
        s_x, s_y, s_xx, s_yy, s_xy = other._shifted_to(self.shift_x, self.shift_y)
        self.s_x += s_x
        self.s_y += s_y
        self.s_xx += s_xx
        self.s_yy += s_yy
        self.s_xy += s_xy
        self.count += other.count
        return self

    @torch.no_grad()
    def all_reduce_(self) -> CrossCorrelation:
        """Replace this rank's sums by the sums over all ranks (no-op in a single process).

        The shift must be the same everywhere for sums to add up: every rank re-expresses its
        sums around the shift of the lowest rank holding samples (rank 0 when the data were
        split with :func:`neuralign.distributed.shard_batches`, whose first batch is the
        single-process first batch, so that shift is the single-process one and rank 0's
        sums are unchanged bit for bit), then the count and the float64 sums are all-reduced
        as one flat vector. Every rank ends with identical statistics, equal to the
        single-process ones up to the order of the float64 additions.
        """
        from neuralign import distributed as dist_

        if not dist_.is_distributed():
            return self
        dev = self.s_x.device
        world = dist_.world_size()
        src = torch.tensor(
            [dist_.rank() if self.count > 0 else world], dtype=torch.int64, device=dev
        )
        source = int(dist_.all_reduce_(src, op="min").item())
        if source == world:  # no rank saw a sample
            return self
        shift = torch.zeros(2, self.n, dtype=torch.float64, device=dev)
        if self.shift_x is not None and self.shift_y is not None:
            shift[0], shift[1] = self.shift_x, self.shift_y
        dist_.broadcast_(shift, src=source)
        if self.count > 0:
            s_x, s_y, s_xx, s_yy, s_xy = self._shifted_to(shift[0], shift[1])
        else:
            s_x, s_y, s_xx, s_yy, s_xy = self.s_x, self.s_y, self.s_xx, self.s_yy, self.s_xy
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=dev)
        flat = torch.cat([count, s_x, s_y, s_xx, s_yy, s_xy.reshape(-1)])
        dist_.all_reduce_(flat)
        n = self.n
        self.count = int(flat[0].item())
        self.s_x, self.s_y = flat[1 : 1 + n].clone(), flat[1 + n : 1 + 2 * n].clone()
        self.s_xx = flat[1 + 2 * n : 1 + 3 * n].clone()
        self.s_yy = flat[1 + 3 * n : 1 + 4 * n].clone()
        self.s_xy = flat[1 + 4 * n :].reshape(n, n).clone()
        self.shift_x, self.shift_y = shift[0].clone(), shift[1].clone()
        return self

    def correlation(self) -> torch.Tensor:
        """Pearson correlation matrix ``(n, n)`` (rows: A's units, columns: B's), float64."""
        if self.count == 0:
            raise ValueError("no samples accumulated")
        m = self.count
        mx = self.s_x / m
        my = self.s_y / m
        cov = self.s_xy / m - torch.outer(mx, my)
        sx = (self.s_xx / m - mx * mx).clamp_min(0).sqrt()
        sy = (self.s_yy / m - my * my).clamp_min(0).sqrt()
        return cov / torch.outer(sx + EPS, sy + EPS)
