"""The architecture arguments that a dataset determines (classes, channels, statistics)."""

from __future__ import annotations

from typing import Any

from neuralign.models.reference import is_reference

__all__ = ["data_kwargs"]


def data_kwargs(
    arch: str, dataset: Any, *, width: float | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``create_model`` arguments for ``arch`` trained on ``dataset``.

    The class count, input channels and per-channel normalisation statistics come from the
    dataset (normalisation lives inside the model); the MLP also needs the image size, the
    only zoo model whose layer sizes depend on it. ``width`` (when given) and ``extra``
    (a config's ``model.kwargs``) are added last.
    """
    kw: dict[str, Any] = {
        "num_classes": dataset.num_classes,
        "in_channels": dataset.images.shape[1],
        "mean": list(dataset.mean),
        "std": list(dataset.std),
    }
    if arch in ("mlp", "vit") or is_reference(arch):
        kw["image_size"] = dataset.images.shape[-1]
    if width is not None:
        kw["width"] = width
    kw.update(extra or {})
    return kw
