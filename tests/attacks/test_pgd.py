"""PGD: bounds, exact answers on hand-set models, determinism, and no side effects."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from neuralign.attacks import PGD, PGD_PRESETS, AdversarialBatches
from neuralign.errors import ConfigError, DataError


class Net(nn.Module):
    """Conv-BN-ReLU-dropout-GAP-Linear on 1x6x6 inputs (BN and dropout exercise modes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.head(h.mean(dim=(2, 3)))


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


def _data(n: int = 8, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _linear(w: Tensor) -> nn.Module:
    """Logits (w·x, 0): for label 1 the loss gradient is sigmoid(w·x)·w, sign = sign(w)."""
    lin = nn.Linear(w.numel(), 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = w
    return nn.Sequential(nn.Flatten(), lin)


# ---------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("eps,alpha,steps", [(0.1, 0.025, 5), (0.3, 0.5, 3), (0.05, 0.01, 0)])
def test_stays_in_ball_and_box(norm: str, eps: float, alpha: float, steps: int) -> None:
    x, y = _data()
    x[0] = 0.0  # corners of the box
    x[1] = 1.0
    x_adv = PGD(_net(), eps=eps, alpha=alpha, steps=steps, norm=norm)(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    delta = (x_adv - x).flatten(1)
    dist = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(dist.max()) <= eps + 1e-6
    assert not x_adv.requires_grad


@settings(max_examples=25, deadline=None)
@given(
    eps=st.floats(0.0, 0.5),
    alpha=st.floats(0.0, 0.5),
    steps=st.integers(0, 4),
    random_start=st.booleans(),
    norm=st.sampled_from(["linf", "l2"]),
    seed=st.integers(0, 2**16),
    n=st.integers(1, 5),
)
def test_property_ball_and_box(
    eps: float, alpha: float, steps: int, random_start: bool, norm: str, seed: int, n: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    # Inputs with values at and near the box edges as well as inside.
    x = torch.rand(n, 1, 6, 6, generator=g)
    x = torch.where(x < 0.15, torch.zeros_like(x), torch.where(x > 0.85, torch.ones_like(x), x))
    y = torch.randint(0, 3, (n,), generator=g)
    pgd = PGD(
        _net(seed % 7),
        eps=eps,
        alpha=alpha,
        steps=steps,
        random_start=random_start,
        norm=norm,
        generator=torch.Generator().manual_seed(seed),
    )
    x_adv = pgd(x, y)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    delta = (x_adv - x).flatten(1)
    dist = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(dist.max()) <= eps + 1e-6


# ---------------------------------------------------------------------------- exact answers


def test_one_step_no_random_start_is_clipped_sign_step() -> None:
    w = torch.tensor([1.0, -2.0, 0.0, 3.0, -0.5, 1.0])
    x = torch.tensor([[0.5, 0.5, 0.5, 0.97, 0.02, 0.0]])
    pgd = PGD(_linear(w), eps=0.1, alpha=0.05, steps=1, random_start=False)
    got = pgd(x, torch.tensor([1]))
    expected = (x + 0.05 * w.sign()).clamp(0, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
    # For label 0 the gradient flips: the step goes the other way.
    got0 = pgd(x, torch.tensor([0]))
    torch.testing.assert_close(got0, (x - 0.05 * w.sign()).clamp(0, 1), rtol=0, atol=1e-7)


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8])
def test_multi_step_linf_exact(steps: int) -> None:
    # The sign of the gradient never changes for a linear score, so after k steps the input
    # has moved k·alpha along sign(w), capped by eps (projection) and by the [0, 1] box.
    w = torch.tensor([1.0, -2.0, 0.0, 3.0, -0.5, 1.0, -1.0])
    x = torch.tensor([[0.5, 0.5, 0.5, 0.9, 0.1, 0.3, 0.95]])
    eps, alpha = 0.2, 0.07
    pgd = PGD(_linear(w), eps=eps, alpha=alpha, steps=steps, random_start=False)
    got = pgd(x, torch.tensor([1]))
    expected = (x + w.sign() * min(steps * alpha, eps)).clamp(0, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # Hand-computed values for 3 steps: 0.5 + 0.2, 0.5 - 0.2, 0.5, min(1, 1.1), ...
    if steps == 3:
        hand = torch.tensor([[0.7, 0.3, 0.5, 1.0, 0.0, 0.5, 0.75]])
        torch.testing.assert_close(got, hand, rtol=0, atol=1e-6)


def test_multi_step_l2_exact() -> None:
    w = torch.tensor([3.0, -4.0, 0.0])  # unit direction (0.6, -0.8, 0)
    x = torch.tensor([[0.5, 0.5, 0.5]])
    pgd = PGD(_linear(w), eps=0.25, alpha=0.1, steps=4, norm="l2", random_start=False)
    got = pgd(x, torch.tensor([1]))
    # 4 steps of 0.1 along w/|w| = 0.4, projected back to radius 0.25.
    hand = torch.tensor([[0.5 + 0.25 * 0.6, 0.5 - 0.25 * 0.8, 0.5]])
    torch.testing.assert_close(got, hand, rtol=0, atol=1e-6)


def test_attack_increases_loss_and_zero_eps_is_identity() -> None:
    net = _net()
    x, y = _data(32)
    pgd = PGD(net, eps=0.2, alpha=0.05, steps=5, random_start=False)
    net.eval()
    with torch.no_grad():
        clean = nn.functional.cross_entropy(net(x), y)
        adv = nn.functional.cross_entropy(net(pgd(x, y)), y)
    assert float(adv) > float(clean)
    assert torch.equal(PGD(net, eps=0.0, alpha=0.1, steps=3)(x, y), x)


# ---------------------------------------------------------------------------- determinism


def test_generator_makes_it_deterministic() -> None:
    net = _net()
    x, y = _data()

    def run(seed: int) -> Tensor:
        return PGD(
            net, eps=0.1, alpha=0.02, steps=2, generator=torch.Generator().manual_seed(seed)
        )(x, y)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    # Without a generator the global RNG is used (so checkpointed training loops resume exactly).
    torch.manual_seed(5)
    a = PGD(net, eps=0.1, alpha=0.02, steps=2)(x, y)
    torch.manual_seed(5)
    b = PGD(net, eps=0.1, alpha=0.02, steps=2)(x, y)
    assert torch.equal(a, b)


def test_state_attacks_that_point() -> None:
    net_a, net_b = _net(0), _net(1)
    x, y = _data()
    pgd = PGD(net_a, eps=0.1, alpha=0.03, steps=3, random_start=False)
    via_state = pgd(x, y, state=net_b.state_dict())
    direct = pgd(x, y, model=net_b)
    assert torch.equal(via_state, direct)
    assert not torch.equal(via_state, pgd(x, y))
    # hooks for the training loops
    assert torch.equal(pgd.attack_model(net_b, x, y), direct)
    assert torch.equal(pgd.attack_state(net_a, net_b.state_dict(), x, y), direct)


def test_adversarial_batches_repeatable() -> None:
    net = _net()
    x, y = _data(12)
    data = [(x[:6], y[:6]), (x[6:], y[6:])]
    batches = AdversarialBatches(PGD(net, eps=0.1, alpha=0.03, steps=2), data, seed=7)
    first = [b[0] for b in batches]
    second = [b[0] for b in batches]
    assert len(batches) == 2
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert all(float((a - c[0]).abs().max()) <= 0.1 + 1e-6 for a, c in zip(first, data))


# ---------------------------------------------------------------------------- side effects


def _snapshot(net: nn.Module) -> dict[str, object]:
    return {
        "modes": {n: m.training for n, m in net.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in net.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in net.named_parameters()},
        "grad_ids": {n: id(p.grad) for n, p in net.named_parameters()},
        "state": {k: v.clone() for k, v in net.state_dict().items()},
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            for m in net.modules()
        ),
    }


def _assert_unchanged(net: nn.Module, before: dict[str, object]) -> None:
    after = _snapshot(net)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["grad_ids"] == before["grad_ids"]
    assert after["hooks"] == before["hooks"]
    gb, ga = before["grads"], after["grads"]
    assert isinstance(gb, dict) and isinstance(ga, dict)
    for k in gb:
        assert (gb[k] is None and ga[k] is None) or torch.equal(gb[k], ga[k])
    sb, sa = before["state"], after["state"]
    assert isinstance(sb, dict) and isinstance(sa, dict)
    for k in sb:
        assert torch.equal(sb[k], sa[k]), k


def _prepared_net() -> Net:
    net = _net()
    x, y = _data()
    net.train()
    nn.functional.cross_entropy(net(x), y).backward()  # every parameter has a .grad
    net.conv.bias.requires_grad_(False)
    net.conv.bias.grad = None
    net.head.eval()  # a mixed-mode model
    return net


@pytest.mark.parametrize("mode", ["eval", "train", "batch-stats"])
def test_model_left_as_it_was(mode: str) -> None:
    net = _prepared_net()
    before = _snapshot(net)
    x, y = _data()
    x_adv = PGD(net, eps=0.1, alpha=0.02, steps=3, mode=mode)(x, y)
    assert float((x_adv - x).abs().max()) > 0
    _assert_unchanged(net, before)


def test_model_left_as_it_was_when_the_attack_raises() -> None:
    net = _prepared_net()
    before = _snapshot(net)
    x, _ = _data()
    bad_labels = torch.full((x.shape[0],), 7)  # out of range for 3 classes
    with pytest.raises((IndexError, RuntimeError)):
        PGD(net, eps=0.1, alpha=0.02, steps=3)(x, bad_labels)
    _assert_unchanged(net, before)


def test_mode_used_while_attacking() -> None:
    seen: list[tuple[bool, bool]] = []
    net = _net()
    net.bn.register_forward_pre_hook(lambda m, a: seen.append((m.training, net.drop.training)))
    x, y = _data()
    net.train()
    PGD(net, eps=0.1, alpha=0.02, steps=1, mode="eval")(x, y)
    PGD(net, eps=0.1, alpha=0.02, steps=1, mode="train")(x, y)
    PGD(net, eps=0.1, alpha=0.02, steps=1, mode="batch-stats")(x, y)
    assert seen == [(False, False), (True, True), (True, False)]
    assert net.training and net.bn.training


def test_works_under_no_grad() -> None:
    net = _net()
    x, y = _data()
    with torch.no_grad():
        x_adv = PGD(net, eps=0.1, alpha=0.05, steps=2, random_start=False)(x, y)
    assert float((x_adv - x).abs().max()) > 0


# ---------------------------------------------------------------------------- errors, presets


def test_errors_tell_the_fix() -> None:
    x, y = _data()
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        PGD(_net(), eps=0.1, alpha=0.1, steps=1)(x * 2 - 0.5, y)
    with pytest.raises(ConfigError, match="no model"):
        PGD(eps=0.1, alpha=0.1, steps=1)(x, y)
    for kwargs in ({"eps": -1.0}, {"alpha": float("nan")}, {"steps": -1}, {"norm": "l1"}):
        args = {"eps": 0.1, "alpha": 0.1, "steps": 1, **kwargs}
        with pytest.raises(ConfigError):
            PGD(_net(), **args)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="preset"):
        PGD.preset("imagenet")


def test_presets() -> None:
    cifar = PGD.preset("cifar")
    assert (cifar.eps, cifar.alpha, cifar.steps, cifar.norm) == (8 / 255, 2 / 255, 5, "linf")
    tiny = PGD.preset("tinyimagenet", _net(), steps=7)
    assert (tiny.eps, tiny.alpha, tiny.steps) == (4 / 255, 1 / 255, 7)
    assert tiny.model is not None
    assert set(PGD_PRESETS) >= {"cifar", "tinyimagenet"}
    assert PGD.preset("Tiny-ImageNet").eps == 4 / 255
    assert cifar.with_options(mode="train").mode == "train"
    assert cifar.config()["eps"] == 8 / 255
