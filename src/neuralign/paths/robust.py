"""Clean and adversarial (PGD) loss and accuracy along a path in weight space.

Between two adversarially trained networks, the *robust* loss — the loss on adversarial
examples crafted against each point :math:`\\varphi(t)` — peaks in the middle of the path
even where the clean loss does not: the *robust loss barrier* of P. Zhao, P.-Y. Chen,
P. Das, K. N. Ramamurthy, X. Lin, "Bridging Mode Connectivity in Loss Landscapes and
Adversarial Robustness" (ICLR 2020). Tatro et al. (2020), "Optimizing Mode Connectivity via
Neuron Alignment", §5, show that aligning the endpoints' neurons lowers it (docs/method.md, Robustness).

At each ``t`` the adversarial examples are crafted against :math:`\\varphi(t)` itself (with
its recomputed BatchNorm statistics), not transferred from an endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralign.attacks.pgd import PGD, AdversarialBatches
from neuralign.curves.base import functional_forward
from neuralign.errors import ConfigError, DataError
from neuralign.models.common import split_logits
from neuralign.paths.bn import has_batchnorm, recompute_bn
from neuralign.paths.evaluate import PathLike, path_states, resolve_ts
from neuralign.paths.metrics import BN_MODES, PathResult

__all__ = ["BN_SOURCES", "evaluate_path_robust", "evaluate_state_robust"]

#: Inputs BatchNorm statistics are recomputed on in a robust evaluation.
BN_SOURCES = ("clean", "adversarial")


def evaluate_state_robust(
    model: nn.Module,
    state: Mapping[str, Tensor],
    data: Iterable[Any],
    attack: PGD,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> tuple[float, float, float, float]:
    """Clean and robust loss and accuracy of ``model`` at ``state``, in eval mode.

    Args:
        model: The architecture (its train/eval flags are restored afterwards).
        state: Full state dict (with the BatchNorm statistics to evaluate with).
        data: Iterable of ``(x, y)`` batches, ``x`` in ``[0, 1]``.
        attack: The attack; examples are crafted against ``model`` at ``state``.
        generator: Random-start generator (default: the attack's, else the global RNG).
        device: Where to run; default: the device of the state's tensors.

    Returns:
        ``(clean_loss, clean_acc, robust_loss, robust_acc)``, accuracies in %, averaged over
        samples.

    Raises:
        DataError: when ``data`` yields no batch.
    """
    dev = torch.device(device) if device is not None else next(iter(state.values())).device
    work = {k: v.detach().to(dev) for k, v in state.items()}
    modes = {m: m.training for m in model.modules()}
    sums = [0.0, 0, 0.0, 0]
    n = 0
    try:
        model.eval()
        for x, y in data:
            x, y = x.to(dev), y.to(dev)
            x_adv = attack.perturb(x, y, model=model, state=work, generator=generator)
            with torch.no_grad():
                for slot, inp in ((0, x), (2, x_adv)):
                    logits, _ = split_logits(functional_forward(model, work, inp))
                    sums[slot] += float(F.cross_entropy(logits.float(), y, reduction="sum"))
                    sums[slot + 1] += int((logits.argmax(1) == y).sum())
            n += int(y.shape[0])
    finally:
        for m, flag in modes.items():
            m.training = flag
    if n == 0:
        raise DataError("evaluate_state_robust: the data yielded no batch")
    out = [sums[0] / n, 100.0 * sums[1] / n, sums[2] / n, 100.0 * sums[3] / n]
    # NaN logits (a diverged state) have no meaningful argmax: the accuracy is NaN too
    for slot in (0, 2):
        if math.isnan(out[slot]):
            out[slot + 1] = float("nan")
    return out[0], out[1], out[2], out[3]


def evaluate_path_robust(
    path: PathLike,
    data: Iterable[Any],
    *,
    attack: PGD,
    ts: int | Sequence[float] = 65,
    bn_data: Iterable[Any] | None = None,
    bn_source: str = "clean",
    bn_mode: str = "train-subset",
    bn_max_batches: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> PathResult:
    """Clean *and* robust test loss and accuracy at points :math:`\\varphi(t)` of a path.

    At every ``t``:

    1. :math:`\\varphi(t)` is built;
    2. with BatchNorm (and ``bn_mode != "none"``) its running statistics are recomputed
       (:func:`~neuralign.paths.recompute_bn`) on ``bn_data`` — for
       ``bn_source="clean"`` on the clean inputs; for ``bn_source="adversarial"`` (the
       reference code's choice) on PGD examples of ``bn_data`` crafted against
       :math:`\\varphi(t)` itself. An eval-mode attack needs statistics to attack with, so
       those examples are crafted against :math:`\\varphi(t)` with its clean statistics, and
       the statistics are then recomputed on them;
    3. on ``data``, the clean loss/accuracy and the robust loss/accuracy (PGD against
       :math:`\\varphi(t)`, eval mode) are measured.

    The random starts of the attack are drawn from a generator reseeded with ``seed`` at
    every ``t``, so every point sees the same random starts (common random numbers: less
    noise in differences along the path) and the result does not depend on which ``ts`` are
    evaluated.

    The result's ``test_loss``/``test_acc`` are the clean series, ``robust_loss``/
    ``robust_acc`` the adversarial ones; ``bn_source`` and ``metadata["attack"]`` record
    the choices. :meth:`~neuralign.paths.PathResult.summary` then holds the robust loss
    Avg (``robust_loss_arc_mean``), the robust loss barrier in both forms
    (``robust_loss_barrier``, ``robust_loss_barrier_ainsworth``; Zhao et al. 2020), min and
    max robust accuracy with the clean accuracy at those ``t``, and endpoint clean and
    robust accuracy.

    Args:
        path: A curve, or anything with ``state_at(t)``, ``model`` and ``interpolated_keys``.
        data: Test batches ``(x, y)`` with ``x`` in ``[0, 1]``.
        attack: The attack (e.g. ``PGD.preset("cifar")``; its own model is ignored).
        ts: Number of equally spaced points in ``[0, 1]`` or the points.
        bn_data: Training batches for the BatchNorm statistics (needed with BatchNorm unless
            ``bn_mode="none"``).
        bn_source: ``"clean"`` or ``"adversarial"`` (see above).
        bn_mode: Which BN data the caller passes, recorded as in
            :func:`~neuralign.paths.evaluate_path`.
        bn_max_batches: Use at most this many BN batches per point.
        seed: Seed of the attack's random starts.
        device: Where to run; default: where the path's tensors are.
        progress: Show a tqdm progress bar over ``t``.
        metadata: Extra metadata stored in the result.

    Returns:
        A :class:`~neuralign.paths.PathResult` with clean and robust series.

    Raises:
        ConfigError: on an unknown ``bn_source``/``bn_mode`` or missing ``bn_data``.
    """
    if bn_source not in BN_SOURCES:
        raise ConfigError(f"bn_source must be one of {BN_SOURCES}, got {bn_source!r}")
    if bn_mode not in BN_MODES:
        raise ConfigError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    model = path.model
    use_bn = has_batchnorm(model) and bn_mode != "none"
    if use_bn and bn_data is None:
        raise ConfigError(
            f"the model has BatchNorm and bn_mode={bn_mode!r}: pass bn_data (training batches) "
            "or bn_mode='none'"
        )
    points = resolve_ts(ts)
    keys = list(path.interpolated_keys)
    meta = dict(metadata or {})
    meta.setdefault("attack", attack.config())
    for attr in ("family", "num_bends"):
        if hasattr(path, attr):
            meta.setdefault(attr, getattr(path, attr))
    result = PathResult(
        ts=points,
        test_loss=[],
        test_acc=[],
        robust_loss=[],
        robust_acc=[],
        distances=[],
        bn_mode=bn_mode if has_batchnorm(model) else "none",
        bn_source=bn_source if use_bn else "none",
        metadata=meta,
    )
    assert result.robust_loss is not None and result.robust_acc is not None
    for _, state in path_states(
        path, points, keys, result.distances, device, progress, "robust path"
    ):
        if use_bn:
            assert bn_data is not None
            clean_state = recompute_bn(model, state, bn_data, max_batches=bn_max_batches)
            if bn_source == "adversarial":
                adv = AdversarialBatches(attack, bn_data, model=model, state=clean_state, seed=seed)
                state = recompute_bn(model, state, adv, max_batches=bn_max_batches)
            else:
                state = clean_state
        gen = torch.Generator().manual_seed(seed)
        c_loss, c_acc, r_loss, r_acc = evaluate_state_robust(
            model, state, data, attack, generator=gen
        )
        result.test_loss.append(c_loss)
        result.test_acc.append(c_acc)
        result.robust_loss.append(r_loss)
        result.robust_acc.append(r_acc)
    return result
