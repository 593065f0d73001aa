"""data_kwargs: the architecture arguments a dataset determines."""

from __future__ import annotations

import torch

from neuralign.data import Dataset
from neuralign.models import create_model, data_kwargs


def _data(channels: int, size: int, classes: int) -> Dataset:
    return Dataset(
        images=torch.zeros(classes, channels, size, size, dtype=torch.uint8),
        labels=torch.arange(classes),
        num_classes=classes,
        name="toy",
        mean=(0.1,) * channels,
        std=(0.2,) * channels,
    )


def test_kwargs_build_a_model_that_fits_the_data() -> None:
    ds = _data(channels=1, size=12, classes=5)
    kw = data_kwargs("mlp", ds)
    assert kw["num_classes"] == 5 and kw["in_channels"] == 1 and kw["image_size"] == 12
    assert kw["mean"] == [0.1] and kw["std"] == [0.2] and "width" not in kw
    model = create_model("mlp", **kw)
    assert model(torch.rand(2, 1, 12, 12)).shape == (2, 5)


def test_only_the_mlp_gets_the_image_size_and_extra_wins() -> None:
    ds = _data(channels=3, size=32, classes=10)
    kw = data_kwargs("tinyten", ds, width=0.5, extra={"num_classes": 7})
    assert "image_size" not in kw and kw["width"] == 0.5
    assert kw["num_classes"] == 7  # a config's model.kwargs are applied last
