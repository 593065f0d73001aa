"""Fixtures for the curves tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from nets_testlib import MLPBN, Batches, load_digits_tensors, single_thread, train_endpoint


@pytest.fixture(scope="session")
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return load_digits_tensors()


@pytest.fixture(scope="session")
def trained_mlps(digits: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[MLPBN, MLPBN]:
    xtr, ytr, _, _ = digits
    models = []
    with single_thread():
        for seed in (1, 2):
            torch.manual_seed(seed)
            model = MLPBN(hidden=32)
            train_endpoint(model, Batches(xtr, ytr, 64, shuffle=True, seed=seed), 15, seed)
            models.append(model)
    return models[0], models[1]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield
