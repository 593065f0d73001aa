"""Model zoo of neuralign: registry, shared blocks and the paper's architectures.

Every model takes pixels in ``[0, 1]`` (normalisation lives inside the model, as
tensors outside the state dict) and is ``torch.fx``-traceable. Registered names: ``googlenet``,
``mlp``, ``resnet20``, ``resnet32``, ``resnet56``, ``tinyten``, ``vgg11``, ``vgg16``,
``vit``, ``convnext``.

Example:
    >>> import torch
    >>> from neuralign.models import create_model
    >>> model = create_model("tinyten", num_classes=10, in_channels=3).eval()
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

# Importing the model modules registers them.
from neuralign.models import convnext, googlenet, mlp, resnet, tinyten, vgg, vit  # noqa: F401
from neuralign.models.common import Normalize, split_logits
from neuralign.models.fit import data_kwargs
from neuralign.models.reference import is_reference
from neuralign.models.registry import (
    create_model,
    list_models,
    model_spec,
    register_model,
    tiny_kwargs,
)

__all__ = [
    "Normalize",
    "create_model",
    "data_kwargs",
    "is_reference",
    "list_models",
    "model_spec",
    "register_model",
    "split_logits",
    "tiny_kwargs",
]
