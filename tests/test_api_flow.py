"""The README's Python API flow, end to end on real digits with a tiny ResNet."""

from __future__ import annotations

import torch

import neuralign as na


def test_readme_api_flow() -> None:
    train = na.load_dataset("digits", "train")
    test = na.load_dataset("digits", "test")
    kw = dict(num_classes=10, in_channels=1, mean=train.mean, std=train.std, width=0.25)
    torch.manual_seed(0)
    a = na.create_model("resnet20", **kw)
    torch.manual_seed(1)
    b = na.create_model("resnet20", **kw)
    na.train_model(a, train, test, na.TrainConfig(epochs=2, augment=False, lr=0.05), progress=False)
    na.train_model(
        b, train, test, na.TrainConfig(epochs=2, augment=False, lr=0.05, seed=1), progress=False
    )

    spec = na.discover_spec(a, test.images[:2].float() / 255)
    assert len(spec.groups) == 12 and "layer1.residual" in str(spec)
    res = na.align(a, b, train, method="correlation")
    assert set(res.correlation_after) == set(res.correlation_before)
    # alignment never lowers the summed matched correlation of a group
    for g in res.correlation_after:
        assert res.correlation_after[g] >= res.correlation_before[g] - 1e-9

    curve = na.Bezier(a, res.aligned_b, num_bends=3)
    na.train_curve(curve, na.TensorLoader(train, 128, shuffle=True), epochs=1, progress=False)
    bn = na.TensorLoader(na.balanced_subset(train, n=300), 1000)
    path = na.evaluate_path(curve, na.TensorLoader(test, 1000), ts=5, bn_data=bn, progress=False)
    assert len(path.test_acc) == 5
    assert path.min_accuracy <= path.avg_accuracy <= max(path.test_acc)
    assert torch.isfinite(torch.tensor(path.loss_barrier))
