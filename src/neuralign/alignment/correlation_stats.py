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
batch's ``m`` samples (in ``batch_dtype``; float32 by default) and its sums, laid out as one
``(n + 4, n)`` block, are added to a float64 running block with one addition.

Two ways of summing a batch, chosen per accumulator on its first batch:

* *shifted*: ``x − c_x`` is written out as a ``(units, samples)`` matrix and summed; the
  float32 error on the correlations is ~1e-7 whatever the means.
* *direct* (when every unit's ``|mean| / std`` on the first batch is at most
  ``DIRECT_MAX_RATIO`` = 4, and the batch is float32): the products of the raw activations
  are summed in place, one small GEMM per image (``bmm`` over the native ``(N, n, H·W)``
  layout or over samples × units; for channels-last feature maps on CPU, oneDNN's weight
  gradient of a 1×1 convolution, which is the same sum; each unit's ``Σ x`` and ``Σ x²`` in
  one read by BatchNorm's backward kernel, :func:`_bn_unit_sums`), into float64 sums of the
  *unshifted* values, re-expressed around the shift in float64 when they are read. No copy
  of the activations is made (the copy is ~40% of the shifted path's time), and the float32
  error grows as ``~2e-7 · (1 + (mean/std)²)``: measured 1.8e-6 (per-image GEMMs),
  2.9e-6 (the convolution weight gradient) and 3.5e-6 (one GEMM) at a ratio of 3.9, ~1e-7
  at the post-ReLU ratio ~0.7 (the test in
  tests/alignment/test_align.py asserts 1e-5). Units with larger offsets (or a constant
  non-zero unit) take the shifted path.

The correlation is ``C[i, j] = cov(x_i, y_j) / ((σ_i + eps)(σ_j + eps))`` with ``eps = 1e-5``
so that dead (constant) units give 0, never NaN.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator

import torch

EPS = 1e-5
# Largest |mean| / std (first batch, every unit) for which a batch is summed unshifted.
DIRECT_MAX_RATIO = 4.0

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


def _kept(key: tuple[object, ...], make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The active workspace's tensor under ``key``, made by ``make`` the first time (and
    every time when no workspace is active)."""
    ws = _WORKSPACE.get()
    if ws is None:
        return make()
    buf = ws.get(key)
    if buf is None:
        buf = ws[key] = make()
    return buf


def _scratch(
    slot: int, shape: torch.Size, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """An uninitialised buffer, reused for this slot and shape while a workspace is active."""
    return _kept(
        (slot, tuple(shape), dtype, device),
        lambda: torch.empty(shape, dtype=dtype, device=device),
    )


def _constant(
    slot: int, size: int, value: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A length-``size`` vector filled with ``value``, kept in the active workspace."""
    return _kept(
        ("constant", slot, size, value, dtype, device),
        lambda: torch.full((size,), value, dtype=dtype, device=device),
    )


def units_as_rows(t: torch.Tensor) -> torch.Tensor:
    """Reshape activations ``(N, n, *spatial)`` to samples × units ``(N·∏spatial, n)``."""
    if t.ndim == 2:
        return t
    n = t.shape[1]
    return t.movedim(1, -1).reshape(-1, n)


def _units_by_samples(
    t: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype, slot: int = 0
) -> torch.Tensor:
    """``(t − shift)`` laid out as a contiguous ``(n, samples)`` matrix, in one pass.

    ``shift`` is ``(n, 1, 1)`` in ``dtype``.
    """
    n = t.shape[1]
    src = t.reshape(t.shape[0], n, -1).transpose(0, 1)  # (n, N, S) view
    out = _scratch(slot, src.shape, dtype, t.device)
    torch.sub(src.to(dtype) if t.dtype != dtype else src, shift, out=out)
    return out.view(n, -1)


def _rows_are_samples(t: torch.Tensor) -> bool:
    """Whether ``t`` (units on dim 1) is stored samples × units: 2-D, or channels-last."""
    return t.ndim == 2 or (t.ndim > 2 and t.movedim(1, -1).is_contiguous())


def _samples_by_units(
    t: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype, slot: int = 0
) -> torch.Tensor:
    """``(t − shift)`` as a contiguous ``(samples, n)`` matrix, for ``t`` stored that way.

    ``shift`` is ``(n,)`` in ``dtype``. No transposition: a streaming subtraction.
    """
    n = t.shape[1]
    src = t.movedim(1, -1).reshape(-1, n)  # a view: the memory already is samples x units
    out = _scratch(slot, src.shape, dtype, t.device)
    torch.sub(src.to(dtype) if t.dtype != dtype else src, shift, out=out)
    return out


def _offsets_small(mean: torch.Tensor, std: torch.Tensor) -> bool:
    """Whether every unit's ``|mean| / std`` is at most ``DIRECT_MAX_RATIO`` (0/0 counts as 0)."""
    if not bool(torch.isfinite(mean).all() and torch.isfinite(std).all()):
        return False
    big = mean.abs() > DIRECT_MAX_RATIO * std
    return not bool(big.any())


def _gram_by_conv(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``Σ x yᵀ`` of ``a`` and ``b`` is taken as a convolution's weight gradient.

    On CPU with oneDNN, for channels-last 4-D float32 activations: the weight gradient of a
    1×1 convolution with output gradient ``a`` and input ``b`` is exactly ``Σ_samples a bᵀ``,
    and oneDNN's kernel for it is faster than per-image GEMMs (``bmm``) on these tall, narrow
    matrices: 2-2.4x on ResNet32's tap shapes (16-64 units) in isolation (warm caches), but
    only 0.70-0.93x of the GEMMs' time inside the alignment pass (about 1.5% of the pass)
    (``benchmarks/bench_corr_gemm.py``, this project's 2-core machine). Its float32
    error is ~2x that of the per-image GEMMs (4e-7 vs 2e-7 of the largest sum), within the
    direct path's bound. In the default layout it is slower (4-10x on 16 units at 28-32
    pixels square), so there the GEMMs stay.
    """
    return (
        a.ndim == 4
        and a.device.type == "cpu"
        and a.dtype == b.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and a.is_contiguous(memory_format=torch.channels_last)
        and b.is_contiguous(memory_format=torch.channels_last)
    )


def _conv_gram(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """``out = Σ_samples a bᵀ`` (``(n, n)``) for 4-D ``a``, ``b``, as the weight gradient of
    a 1×1 convolution (see :func:`_gram_by_conv`)."""
    n = a.shape[1]
    weight = _scratch(4, torch.Size((n, n, 1, 1)), a.dtype, a.device)  # only its shape is read
    grad = torch.ops.aten.convolution_backward(
        a, b, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False]
    )[1]
    out.copy_(grad.view(n, n))


def _rows_cross_sum(
    a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor
) -> None:
    """``out = Σ x yᵀ`` for ``a``, ``b`` stored samples × units, ``x``, ``y`` their per-image
    ``(groups, S, n)`` views: oneDNN's weight gradient where :func:`_gram_by_conv` says so,
    else one GEMM per image."""
    if _gram_by_conv(a, b):
        _conv_gram(a, b, out)
    else:
        torch.sum(torch.bmm(x.transpose(1, 2), y), 0, out=out)


# Unit sums of a samples x units batch by BatchNorm's backward kernel (see _bn_unit_sums):
# the view's width is chosen near _BN_WIDTH columns, with at most _BN_MAX_ROWS rows summed
# into each float32 accumulator.
_BN_WIDTH = 448
_BN_MAX_ROWS = 16384


@functools.lru_cache(maxsize=256)
def _bn_fold(rows: int, n: int) -> int | None:
    """The ``k`` for which ``(rows, n)`` is viewed as ``(rows / k, k·n)`` in
    :func:`_bn_unit_sums`: a divisor of ``rows`` with ``k·n`` nearest ``_BN_WIDTH`` and at most
    ``_BN_MAX_ROWS`` rows per column; None when no divisor qualifies (then the sums are
    taken the plain way)."""
    best = None
    for k in range(1, max(1, 4 * _BN_WIDTH // n) + 1):
        if rows % k or rows // k > _BN_MAX_ROWS:
            continue
        if best is None or abs(k * n - _BN_WIDTH) < abs(best * n - _BN_WIDTH):
            best = k
    return best


def _bn_unit_sums(z: torch.Tensor, out_sum: torch.Tensor, out_sq: torch.Tensor) -> bool:
    """``Σ x`` and ``Σ x²`` of each column of a contiguous float32 CPU ``(rows, n)`` matrix
    in one read, by the backward kernel of training-mode BatchNorm: with output gradient and
    input both ``x``, saved mean 0 and inverse std 1, its bias gradient is ``Σ x`` and its
    weight gradient ``Σ x·x``, per column. ``False`` (nothing written) where it does not
    apply.

    The kernel sums each column sequentially per thread, so over ~10⁵ rows its float32 error
    reaches ~5e-6; the matrix is therefore viewed (for free) as ``(rows / k, k·n)``, the
    ``k`` partial sums of each unit, each over at most ``_BN_MAX_ROWS`` rows, are added
    afterwards: error ~1e-7, like the two-pass way. Measured on ResNet32's tap shapes (this
    project's 2-core machine, warm caches): 0.11 ms against 0.20 ms for ``Σ x``, ``x·x`` and
    ``Σ x·x`` as three operations at 16 units × 784 pixels × 125 images, 0.04 vs 0.05 ms at
    64 × 49. Inside ResNet32's alignment pass (10k Fashion-MNIST images, interleaved batch
    by batch with the three operations) it saved 0.03-0.07 of the forward floor's time in
    four runs.
    """
    if z.device.type != "cpu" or z.dtype != torch.float32 or not z.is_contiguous():
        return False
    rows, n = z.shape
    k = _bn_fold(rows, n) if rows > 0 else None
    if k is None:
        return False
    wide = z.view(rows // k, k * n)
    zero = _constant(8, k * n, 0.0, z.dtype, z.device)
    one = _constant(9, k * n, 1.0, z.dtype, z.device)
    _, g_sq, g_sum = torch.ops.aten.native_batch_norm_backward(
        wide, wide, None, None, None, zero, one, True, 0.0, [False, True, True]
    )
    torch.sum(g_sum.view(k, n), 0, out=out_sum)
    torch.sum(g_sq.view(k, n), 0, out=out_sq)
    return True


def _direct_sums(a: torch.Tensor, b: torch.Tensor, part: torch.Tensor, rows: bool) -> int:
    """Unshifted ``Σ x yᵀ, Σ x, Σ y, Σ x², Σ y²`` of one batch into ``part``; the sample count.

    No copy of the activations: ``Σ x yᵀ`` is one GEMM per image on views, over
    ``(N, S, n)`` when the memory is samples × units (``rows``: channels-last or 2-D; for
    4-D channels-last on CPU a convolution's weight gradient instead, :func:`_gram_by_conv`),
    else over the native ``(N, n, S)``.
    """
    n = a.shape[1]
    if rows:  # per image a (S, n) matrix (a 2-D batch is one "image" of N samples)
        groups = a.shape[0] if a.ndim > 2 else 1
        x = a.movedim(1, -1).reshape(groups, -1, n)
        y = b.movedim(1, -1).reshape(groups, -1, n)
        _rows_cross_sum(a, b, x, y, part[:n])
        for i, z in enumerate((x, y)):
            if _bn_unit_sums(z.reshape(-1, n), part[n + i], part[n + 2 + i]):
                continue
            torch.sum(z.sum(1), 0, out=part[n + i])
            sq = _scratch(3, z.shape, z.dtype, z.device)
            torch.mul(z, z, out=sq)
            torch.sum(sq.sum(1), 0, out=part[n + 2 + i])
        return int(x.shape[0] * x.shape[1])
    a3 = a.reshape(a.shape[0], n, -1)
    b3 = b.reshape(b.shape[0], n, -1)
    torch.sum(torch.bmm(a3, b3.transpose(1, 2)), 0, out=part[:n])
    for i, z in enumerate((a3, b3)):
        torch.sum(z.sum(2), 0, out=part[n + i])
        torch.sum(torch.linalg.vector_norm(z, dim=2).square_(), 0, out=part[n + 2 + i])
    return int(a3.shape[0] * a3.shape[2])


class _Sums:
    """One of the running sums: a slice of the float64 block ``_acc`` (rows 0..n-1 for
    ``S_xy``, ``n + row`` for the others), read and written after folding in the direct
    path's pending sums."""

    def __init__(self, row: int | None) -> None:
        self.row = row

    def _index(self, obj: CrossCorrelation) -> slice | int:
        return slice(0, obj.n) if self.row is None else obj.n + self.row

    def __get__(self, obj: CrossCorrelation, owner: object = None) -> torch.Tensor:
        obj._flush()
        return obj._acc[self._index(obj)]

    def __set__(self, obj: CrossCorrelation, value: torch.Tensor) -> None:
        obj._flush()
        obj._acc[self._index(obj)] = value


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
        self._shift_xb: torch.Tensor | None = None  # the shifts in batch_dtype, (n,)
        self._shift_yb: torch.Tensor | None = None
        # All running sums in one float64 block, so that a batch is folded in with one add:
        # rows 0..n-1 S_xy, then S_x, S_y, S_xx, S_yy (the attributes below are its rows).
        self._acc = torch.zeros(n + 4, n, dtype=torch.float64, device=device)
        # The direct path's sums of the unshifted values (same layout) and their count; folded
        # into ``_acc`` (re-expressed around the shift) whenever the sums are read.
        self._raw = torch.zeros(n + 4, n, dtype=torch.float64, device=device)
        self._raw_count = 0
        self.direct: bool | None = None  # which path this accumulator takes (first batch)

    def _flush(self) -> None:
        """Fold the direct path's unshifted sums into the shifted running sums (float64)."""
        if self._raw_count == 0:
            return
        assert self.shift_x is not None and self.shift_y is not None
        n, mm, raw = self.n, float(self._raw_count), self._raw
        c, d = self.shift_x, self.shift_y
        u_x, u_y = raw[n], raw[n + 1]
        acc = self._acc
        acc[:n] += raw[:n] - torch.outer(c, u_y) - torch.outer(u_x, d) + mm * torch.outer(c, d)
        acc[n] += u_x - mm * c
        acc[n + 1] += u_y - mm * d
        acc[n + 2] += raw[n + 2] - 2 * c * u_x + mm * c * c
        acc[n + 3] += raw[n + 3] - 2 * d * u_y + mm * d * d
        raw.zero_()
        self._raw_count = 0

    s_xy = _Sums(None)
    s_x = _Sums(0)
    s_y = _Sums(1)
    s_xx = _Sums(2)
    s_yy = _Sums(3)

    def _add_raw(self, part: torch.Tensor, m: int) -> None:
        """Add a batch's direct (unshifted) sums."""
        self._raw.add_(part)
        self._raw_count += m
        self.count += m

    @torch.no_grad()
    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add a batch: activations of A and B with units on dim 1 (any trailing dims)."""
        if a.shape != b.shape or a.ndim < 2 or a.shape[1] != self.n:
            raise ValueError(f"activation shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        if a.numel() == 0:
            return
        a, b = a.detach(), b.detach()
        n = self.n
        rows = _rows_are_samples(a) and _rows_are_samples(b)
        # this batch's sums, in the layout of the running block, then one float64 add
        part = _scratch(2, self._acc.shape, self.batch_dtype, a.device)
        can_direct = self.batch_dtype == torch.float32 and a.dtype == b.dtype == torch.float32
        if self.shift_x is None or self.shift_y is None:
            if can_direct and self.direct is not False:
                # the first batch's direct sums give the shift and decide the path
                m = _direct_sums(a, b, part, rows)
                mean = part[n : n + 2].double() / m
                var = (part[n + 2 : n + 4].double() / m - mean * mean).clamp_min(0)
                self.shift_x, self.shift_y = mean[0], mean[1]
                self.direct = _offsets_small(mean, var.sqrt())
                if self.direct:
                    self._add_raw(part, m)
                    return
            else:
                dims = [0, *range(2, a.ndim)]
                self.shift_x = a.mean(dims).double()
                self.shift_y = b.mean(dims).double()
                self.direct = False
        elif self.direct and can_direct:
            self._add_raw(part, _direct_sums(a, b, part, rows))
            return
        if self._shift_xb is None or self._shift_yb is None:
            self._shift_xb = self.shift_x.to(self.batch_dtype)
            self._shift_yb = self.shift_y.to(self.batch_dtype)
        if rows:  # samples x units in memory (channels-last, or 2-D): no transposition
            x = _samples_by_units(a, self._shift_xb, self.batch_dtype, 0)
            y = _samples_by_units(b, self._shift_yb, self.batch_dtype, 1)
            m = _direct_sums(x, y, part, rows=True)  # the sums of the shifted copies
        else:
            x = _units_by_samples(a, self._shift_xb[:, None, None], self.batch_dtype, 0)
            y = _units_by_samples(b, self._shift_yb[:, None, None], self.batch_dtype, 1)
            torch.mm(x, y.T, out=part[:n])
            torch.sum(x, 1, out=part[n])
            torch.sum(y, 1, out=part[n + 1])
            torch.linalg.vector_norm(x, dim=1, out=part[n + 2])
            torch.linalg.vector_norm(y, dim=1, out=part[n + 3])
            part[n + 2 :].square_()
            m = x.shape[1]
        self._acc.add_(part)
        self.count += m

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
            self._shift_xb = self._shift_yb = None
            self.direct = other.direct
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
        self._shift_xb = self._shift_yb = None
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
