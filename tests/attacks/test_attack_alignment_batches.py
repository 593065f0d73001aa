"""alignment_batches: the alignment inputs of clean and robust runs, defined once."""

from __future__ import annotations

import torch
from torch import nn

from neuralign.attacks import PGD, AdversarialBatches, alignment_batches
from neuralign.data import Dataset, TensorLoader


def _data(n: int = 24) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        images=torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
        labels=torch.arange(n) % 3,
        num_classes=3,
        name="toy",
        mean=(0.5,),
        std=(0.25,),
    )


def test_clean_alignment_batches_are_the_data_in_order() -> None:
    ds = _data()
    batches = alignment_batches(ds, batch_size=10)
    assert isinstance(batches, TensorLoader)
    xs = torch.cat([x for x, _ in batches])
    assert torch.equal(xs, ds.images.float() / 255)


def test_adversarial_alignment_batches_are_pgd_against_the_reference_and_repeatable() -> None:
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    ds = _data()
    eps = 4 / 255
    batches = alignment_batches(
        ds, batch_size=10, attack=PGD(eps=eps, alpha=1 / 255, steps=3), reference=ref, seed=5
    )
    assert isinstance(batches, AdversarialBatches) and batches.model is ref
    first = torch.cat([x for x, _ in batches])
    second = torch.cat([x for x, _ in batches])
    clean = ds.images.float() / 255
    assert torch.equal(first, second)  # both networks see the same inputs on every pass
    delta = (first - clean).abs()
    assert delta.max() <= eps + 1e-6 and delta.max() > 0  # perturbed, within the L-inf ball
    # the perturbation raises the reference's loss (it is crafted against it)
    loss = nn.functional.cross_entropy
    assert loss(ref(first), ds.labels) > loss(ref(clean), ds.labels)
