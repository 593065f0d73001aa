"""train_model on your own batches (a torch DataLoader) and the model's mode afterwards."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import neuralign as na
from neuralign.errors import ConfigError, DataError


def _data() -> tuple[na.Dataset, na.Dataset]:
    return (
        na.load_dataset("synthetic:channels=1,size=8,classes=3,train=96,test=48", "train"),
        na.load_dataset("synthetic:channels=1,size=8,classes=3,train=96,test=48", "test"),
    )


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return na.create_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden=[16])


def test_a_dataloader_trains_like_the_same_batches_and_restores_the_mode() -> None:
    train, test = _data()
    x = train.images.float() / 255
    loader = DataLoader(TensorDataset(x, train.labels), batch_size=32, shuffle=False)
    test_loader = DataLoader(TensorDataset(test.images, test.labels), batch_size=48)  # uint8 ok
    cfg = na.TrainConfig(epochs=3, batch_size=32, lr=0.1, augment=False, schedule="constant")
    model = _mlp()
    assert model.training
    res = na.train_model(model, loader, test_loader, cfg, progress=False, device="cpu")
    assert model.training  # left in the mode it came in
    assert len(res.history) == 3 and res.test_acc is not None
    # The same batches as plain tensors in a list give the same weights.
    twin = _mlp()
    batches = [(x[i : i + 32], train.labels[i : i + 32]) for i in range(0, 96, 32)]
    na.train_model(twin, batches, None, cfg, progress=False, device="cpu")
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    model.eval()
    na.train_model(model, batches, None, cfg, progress=False, device="cpu")
    assert not model.training


def test_bad_batches_give_typed_errors() -> None:
    cfg = na.TrainConfig(epochs=1, batch_size=8, augment=False)
    with pytest.raises(ConfigError, match="re-iterable of \\(x, y\\) batches"):
        na.train_model(_mlp(), iter([]), None, cfg, progress=False, device="cpu")
    with pytest.raises(ConfigError, match="got int"):
        na.train_model(_mlp(), 3, None, cfg, progress=False, device="cpu")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="not an \\(x, y\\) pair"):
        na.train_model(_mlp(), [torch.zeros(2, 1, 8, 8)], None, cfg, progress=False, device="cpu")
    with pytest.raises(DataError, match="yielded no batch"):
        na.train_model(_mlp(), [], None, cfg, progress=False, device="cpu")
