"""The README's Python API flow, end to end on real digits with a tiny ResNet."""

from __future__ import annotations

import pytest
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
    line_mid = {k: v.clone() for k, v in curve.state_at(0.5).items()}
    hist = na.train_curve(
        curve, na.TensorLoader(train, 128, shuffle=True), epochs=1, progress=False
    )
    assert len(hist.history) == 1 and hist.history[0]["loss"] > 0
    moved = na.curves.parameter_distance(line_mid, curve.state_at(0.5), curve.interpolated_keys)
    assert moved > 0  # curve training moved the midpoint off the line
    bn = na.TensorLoader(na.balanced_subset(train, n=300), 1000)
    test_loader = na.TensorLoader(test, 1000)
    path = na.evaluate_path(curve, test_loader, ts=5, bn_data=bn, progress=False)
    assert path.ts == [0.0, 0.25, 0.5, 0.75, 1.0]
    # the metrics mean what they say, recomputed from the per-t values
    assert path.min_accuracy == min(path.test_acc)
    lin = [(1 - t) * path.test_loss[0] + t * path.test_loss[-1] for t in path.ts]
    barrier = max(v - w for v, w in zip(path.test_loss, lin, strict=True))
    assert path.loss_barrier == pytest.approx(barrier)
    # t = 1 is the aligned B, which computes B's function: same accuracy as B's own endpoint
    # on the path of the unaligned B (BN recomputed on the same data both times)
    unaligned = na.evaluate_path(na.Line(a, b), test_loader, ts=[1.0], bn_data=bn, progress=False)
    assert path.test_acc[-1] == pytest.approx(unaligned.test_acc[0], abs=1e-6)
