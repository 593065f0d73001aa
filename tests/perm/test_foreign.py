"""Networks from other libraries (run only where they are installed; not a dependency).

With transformers 5.24 (checked by hand for docs/symmetry.md), models built from a config
cannot be traced by torch.fx; discovery must refuse clearly, naming the submodule.
"""

from __future__ import annotations

import pytest
import torch

from neuralign.errors import UnsupportedOpError
from neuralign.perm import discover_spec

transformers = pytest.importorskip("transformers")


def test_huggingface_vit_is_discovered_or_refused_clearly() -> None:
    cfg = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=10,
    )
    model = transformers.ViTForImageClassification(cfg).eval()
    try:
        spec = discover_spec(model, torch.randn(2, 3, 32, 32))
    except UnsupportedOpError as exc:
        assert "leaf_modules=" in str(exc) and "submodule" in str(exc)
    else:
        assert len(spec.groups) > 0
