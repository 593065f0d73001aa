"""Loss surface on the plane through both endpoints and a curve's control point.

Garipov et al. (2018), "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs"
(Fig. 1), and Tatro et al. (2020), "Optimizing Mode Connectivity via Neuron Alignment"
(Fig. 3), draw the test loss on the affine plane through :math:`\\theta_A`,
:math:`\\theta_B` and the midpoint :math:`\\theta_{mid}`, with the learned curve on it.

With :math:`u = \\theta_B - \\theta_A` and :math:`w = \\theta_{mid} - \\theta_A`, Gram-Schmidt
gives the orthonormal basis :math:`e_1 = u / \\lVert u\\rVert`,
:math:`e_2 = (w - \\langle w, e_1\\rangle e_1) / \\lVert\\cdot\\rVert`, and the grid point
:math:`(x, y)` is the network :math:`\\theta_A + x e_1 + y e_2` (coordinates in units of
parameter-space distance).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from neuralign.curves.base import Curve
from neuralign.errors import ConfigError
from neuralign.io.atomic import atomic_write_text
from neuralign.paths.bn import has_batchnorm
from neuralign.paths.evaluate import evaluate_points, resolve_points_per_pass
from neuralign.paths.metrics import BN_MODES
from neuralign.ranges import Range, check_args

__all__ = ["PlaneResult", "evaluate_plane"]


@dataclass
class PlaneResult:
    """Loss and accuracy on a grid of the plane through a curve's control points.

    Attributes:
        xs: Grid coordinates along :math:`e_1` (direction :math:`\\theta_B - \\theta_A`).
        ys: Grid coordinates along :math:`e_2`.
        test_loss: ``test_loss[j][i]`` at ``(xs[i], ys[j])``.
        test_acc: Test accuracy in % on the same grid.
        curve_ts: Points ``t`` where the curve was projected.
        curve_xy: ``[x, y]`` projection of :math:`\\varphi(t)` for each ``t``.
        points: Projections of the control points: ``"theta_a"``, ``"theta_b"``,
            ``"bend1"``, ... (``"bend1"`` is the paper's midpoint for a quadratic curve).
        off_plane: Largest distance of a projected curve point from the plane (zero for a
            quadratic Bezier curve or a 3-bend chain, whose points all lie in it).
        random_direction: Whether :math:`e_2` is a random direction (a straight path).
        bn_mode: Which data recomputed BatchNorm statistics at each grid point.
        metadata: Free-form metadata.
    """

    xs: list[float]
    ys: list[float]
    test_loss: list[list[float]]
    test_acc: list[list[float]]
    curve_ts: list[float]
    curve_xy: list[list[float]]
    points: dict[str, list[float]]
    off_plane: float = 0.0
    random_direction: bool = False
    bn_mode: str = "train-subset"
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text."""
        return json.dumps(asdict(self), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> PlaneResult:
        """Parse :meth:`to_json` output."""
        return cls(**json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically and return the path."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlaneResult:
        """Read a file written by :meth:`save` (a :class:`CheckpointError` if malformed)."""
        from neuralign.paths.metrics import read_json_file

        return read_json_file(path, "PlaneResult JSON file", cls.from_json)


def _flat(state: dict[str, Tensor], keys: list[str]) -> Tensor:
    return torch.cat([state[k].detach().reshape(-1).to("cpu", torch.float64) for k in keys])


def _unflat(vec: Tensor, like: dict[str, Tensor], keys: list[str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    offset = 0
    for k in keys:
        ref = like[k]
        n = ref.numel()
        out[k] = vec[offset : offset + n].view(ref.shape).to(device=ref.device, dtype=ref.dtype)
        offset += n
    return out


#: Validated ranges of :func:`evaluate_plane`'s numeric arguments (read by the CLI).
PARAM_RANGES: dict[str, Range] = {"margin": Range(0, 100)}


def evaluate_plane(
    curve: Curve,
    data: Iterable[Any],
    *,
    grid: tuple[int, int] = (21, 21),
    margin: float = 0.2,
    bn_data: Iterable[Any] | None = None,
    bn_mode: str = "train-subset",
    bn_max_batches: int | None = None,
    curve_ts: int = 61,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    points_per_pass: int | None = None,
) -> PlaneResult:
    """Evaluate the loss surface on the plane through the endpoints and the first bend.

    The basis is built by Gram-Schmidt in the space of the interpolated entries (float64).
    For a curve without interior point (a :class:`~neuralign.curves.Line`), or one whose first
    bend still lies on the line (an untrained curve), the second direction is a random unit
    vector orthogonal to :math:`\\theta_B - \\theta_A` (drawn with ``seed``) and a warning is
    issued for the untrained case. The grid spans the projected curve and control points,
    widened by ``margin`` times the span on each side. At every grid point the BatchNorm
    statistics are recomputed on ``bn_data`` (non-interpolated entries come from endpoint A).

    Args:
        curve: The curve.
        data: Test batches ``(x, y)``.
        grid: Number of points ``(nx, ny)``.
        margin: Relative margin around the curve.
        bn_data: Batches for BatchNorm statistics (required when the model has BatchNorm and
            ``bn_mode != "none"``).
        bn_mode: As in :func:`~neuralign.paths.evaluate_path`.
        bn_max_batches: Use at most this many BN batches per grid point.
        curve_ts: Number of points of the curve to project.
        seed: Seed of the random direction (straight paths only).
        device: Where to evaluate; default: where the curve is.
        progress: Show a tqdm progress bar over the grid.
        metadata: Extra metadata stored in the result.
        points_per_pass: Grid points evaluated together in one vmapped pass, as in
            :func:`~neuralign.paths.evaluate_path` (default: automatic).

    Returns:
        A :class:`PlaneResult`.
    """
    if bn_mode not in BN_MODES:
        raise ConfigError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    nx, ny = grid
    if nx < 2 or ny < 2:
        raise ConfigError(f"grid must be at least (2, 2), got {grid}")
    check_args(PARAM_RANGES, margin=margin)
    model = curve.model
    use_bn = has_batchnorm(model) and bn_mode != "none"
    if use_bn and bn_data is None:
        raise ConfigError(f"the model has BatchNorm and bn_mode={bn_mode!r}: pass bn_data")
    keys = list(curve.interpolated_keys)
    base = curve.control_point(0)
    if device is not None:
        base = {k: v.to(device) for k, v in base.items()}
    theta_a = _flat(base, keys)
    theta_b = _flat(curve.control_point(curve.num_bends - 1), keys)
    u = theta_b - theta_a
    norm_u = float(u.norm())
    if norm_u == 0.0:
        raise ConfigError("the endpoints coincide: there is no plane to draw")
    e1 = u / norm_u
    random_direction = True
    e2: Tensor | None = None
    if curve.num_bends > 2:
        w = _flat(curve.control_point(1), keys) - theta_a
        w = w - (w @ e1) * e1
        if float(w.norm()) > 1e-6 * norm_u:
            e2 = w / w.norm()
            random_direction = False
        else:
            warnings.warn(
                "the first bend lies on the line through the endpoints (untrained curve?); "
                "using a random second direction",
                stacklevel=2,
            )
    if e2 is None:
        gen = torch.Generator().manual_seed(seed)
        r = torch.randn(theta_a.shape, generator=gen, dtype=torch.float64)
        r = r - (r @ e1) * e1
        e2 = r / r.norm()

    def project(vec: Tensor) -> tuple[float, float, float]:
        d = vec - theta_a
        x, y = float(d @ e1), float(d @ e2)
        resid = float((d - x * e1 - y * e2).norm())
        return x, y, resid

    points: dict[str, list[float]] = {}
    for k in range(curve.num_bends):
        x, y, _ = project(_flat(curve.control_point(k), keys))
        name = "theta_a" if k == 0 else "theta_b" if k == curve.num_bends - 1 else f"bend{k}"
        points[name] = [x, y]
    ts = torch.linspace(0.0, 1.0, curve_ts, dtype=torch.float64).tolist()
    curve_xy: list[list[float]] = []
    off_plane = 0.0
    with torch.no_grad():
        for t in ts:
            x, y, resid = project(_flat(curve.state_at(t), keys))
            curve_xy.append([x, y])
            off_plane = max(off_plane, resid)

    all_x = [p[0] for p in curve_xy] + [p[0] for p in points.values()]
    all_y = [p[1] for p in curve_xy] + [p[1] for p in points.values()]
    span_x = max(all_x) - min(all_x)
    span_y = max(max(all_y) - min(all_y), 0.4 * span_x)
    mid_y = 0.5 * (max(all_y) + min(all_y))
    xs = torch.linspace(min(all_x) - margin * span_x, max(all_x) + margin * span_x, nx)
    y_lo = mid_y - 0.5 * span_y - margin * span_y
    y_hi = mid_y + 0.5 * span_y + margin * span_y
    ys = torch.linspace(y_lo, y_hi, ny)

    loss_grid = [[0.0] * nx for _ in range(ny)]
    acc_grid = [[0.0] * nx for _ in range(ny)]
    bar = tqdm(total=nx * ny, desc="plane", disable=not progress, unit="pt")
    per_pass = resolve_points_per_pass(model, points_per_pass, device)
    cells = [(j, i, y, x) for j, y in enumerate(ys.tolist()) for i, x in enumerate(xs.tolist())]
    for start in range(0, len(cells), per_pass):
        group = cells[start : start + per_pass]
        states = []
        for _, _, y, x in group:
            state = dict(base)
            state.update(_unflat(theta_a + x * e1 + y * e2, base, keys))
            states.append(state)
        test, _ = evaluate_points(model, states, data, bn_data if use_bn else None, bn_max_batches)
        for (j, i, _, _), (loss, acc) in zip(group, test, strict=True):
            loss_grid[j][i], acc_grid[j][i] = loss, acc
        bar.update(len(group))
    bar.close()
    meta = {"family": curve.family, "num_bends": curve.num_bends, **(metadata or {})}
    return PlaneResult(
        xs=xs.tolist(),
        ys=ys.tolist(),
        test_loss=loss_grid,
        test_acc=acc_grid,
        curve_ts=ts,
        curve_xy=curve_xy,
        points=points,
        off_plane=off_plane,
        random_direction=random_direction,
        bn_mode=bn_mode if has_batchnorm(model) else "none",
        metadata=meta,
    )
