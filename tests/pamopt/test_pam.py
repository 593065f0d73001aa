"""PAM (Tatro et al. 2020, §4): Birkhoff geometry, the planted-permutation problem, resume, CLI."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from neuralign.curves import CurveTrainConfig
from neuralign.data import TensorLoader, load_dataset
from neuralign.errors import CheckpointError, ConfigError
from neuralign.models import create_model
from neuralign.pamopt import PAMConfig, changed_fraction, pam
from neuralign.pamopt.birkhoff import (
    birkhoff_decomposition,
    constraint_violation,
    project_doubly_stochastic,
    round_to_permutation,
)
from neuralign.perm import Permutation, PermutationSpec, apply_permutation, discover_spec
from neuralign.training import TrainConfig, train_model


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with _single_thread():
        yield


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("method", ["exact", "dykstra", "sinkhorn"])
def test_projection_is_doubly_stochastic(method: str) -> None:
    gen = torch.Generator().manual_seed(0)
    for x in (
        torch.randn(12, 12, generator=gen),
        torch.eye(12) + 0.3 * torch.randn(12, 12, generator=gen),
        3.0 * torch.randn(3, 7, 7, generator=gen),  # a batch
    ):
        y = project_doubly_stochastic(x.double(), method)
        assert y.shape == x.shape and y.dtype == torch.float64
        for m in y.reshape(-1, *y.shape[-2:]):
            assert float(m.min()) >= 0.0
            assert (m.sum(0) - 1).abs().max() < 1e-6
            assert (m.sum(1) - 1).abs().max() < 1e-6
            assert constraint_violation(m) < 1e-6


def test_exact_projection_is_the_euclidean_one() -> None:
    gen = torch.Generator().manual_seed(1)
    x = (torch.eye(10) + 0.5 * torch.randn(10, 10, generator=gen)).double()
    y = project_doubly_stochastic(x, "exact")
    z = project_doubly_stochastic(x, "dykstra", iters=20000, tol=1e-12)
    assert torch.allclose(y, z, atol=1e-6)
    # Optimality: no other doubly stochastic point (mixtures with permutations) is closer.
    for seed in range(5):
        p = Permutation({"g": torch.randperm(10, generator=torch.Generator().manual_seed(seed))})
        m = p.matrices(torch.float64)["g"]
        for w in (0.1, 0.5):
            assert (((1 - w) * y + w * m) - x).norm() >= (y - x).norm() - 1e-9
    # A vertex, or a small step away from one, projects back onto the vertex.
    eye = torch.eye(10, dtype=torch.float64)
    assert torch.equal(project_doubly_stochastic(eye), eye)
    near = eye + 1e-3 * torch.randn(10, 10, generator=gen, dtype=torch.float64)
    assert torch.allclose(project_doubly_stochastic(near), eye, atol=1e-2)


def test_projection_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="projection"):
        project_doubly_stochastic(torch.eye(3), "nope")
    with pytest.raises(ConfigError, match="square"):
        project_doubly_stochastic(torch.ones(2, 3))


def test_rounding_a_permutation_matrix_returns_it() -> None:
    perm = torch.randperm(17, generator=torch.Generator().manual_seed(2))
    m = Permutation({"g": perm}).matrices()["g"]
    assert torch.equal(round_to_permutation(m), perm)
    # ...and rounding a slightly blurred one too.
    blurred = 0.8 * m + 0.2 / 17
    assert torch.equal(round_to_permutation(blurred), perm)


def test_birkhoff_decomposition_reconstructs_the_matrix() -> None:
    gen = torch.Generator().manual_seed(3)
    n = 9
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    perms = [torch.randperm(n, generator=gen) for _ in weights]
    x = sum(w * Permutation({"g": p}).matrices(torch.float64)["g"] for w, p in zip(weights, perms))
    assert isinstance(x, Tensor)
    terms = birkhoff_decomposition(x)
    assert abs(sum(t.weight for t in terms) - 1.0) < 1e-9
    rebuilt = sum(t.weight * Permutation({"g": t.perm}).matrices(torch.float64)["g"] for t in terms)
    assert torch.allclose(rebuilt, x, atol=1e-9)  # type: ignore[arg-type]
    # A generic projected matrix is decomposed too.
    y = project_doubly_stochastic(torch.randn(n, n, generator=gen, dtype=torch.float64))
    terms = birkhoff_decomposition(y)
    rebuilt = sum(t.weight * Permutation({"g": t.perm}).matrices(torch.float64)["g"] for t in terms)
    assert torch.allclose(rebuilt, y, atol=1e-6)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- planted problem


class Planted:
    """A trained digits MLP ``a``, ``b = pi(a) + noise``; the right answer is ``pi^-1``."""

    def __init__(self) -> None:
        self.train = load_dataset("digits", "train")
        d = self.train
        self.kwargs: dict[str, Any] = {
            "num_classes": 10,
            "in_channels": 1,
            "image_size": 8,
            "hidden": [16, 16],
            "mean": list(d.mean),
            "std": list(d.std),
        }
        torch.manual_seed(0)
        self.a = create_model("mlp", **self.kwargs)
        cfg = TrainConfig(epochs=6, batch_size=64, lr=0.05, augment=False, seed=0)
        train_model(self.a, d, None, cfg, progress=False)
        self.spec: PermutationSpec = discover_spec(self.a, d.images[:2].float() / 255)
        self.pi = Permutation.random(self.spec, seed=3)
        state = apply_permutation(self.a.state_dict(), self.spec, self.pi)
        gen = torch.Generator().manual_seed(0)
        state = {
            k: v + 0.05 * v.std() * torch.randn(v.shape, generator=gen) for k, v in state.items()
        }
        self.b = create_model("mlp", **self.kwargs)
        self.b.load_state_dict(state)
        self.target = self.pi.inverse()

    def loader(self) -> TensorLoader:
        return TensorLoader(self.train, batch_size=64, shuffle=True, seed=0)

    def correct(self, perm: Permutation) -> int:
        return sum(int((p == self.target.perms[g]).sum()) for g, p in perm.perms.items())


@pytest.fixture(scope="module")
def planted() -> Planted:
    with _single_thread():
        return Planted()


CFG = PAMConfig(
    p_epochs=2,
    p_lr=4.0,
    round_samples=4,
    score_batches=6,
    curve=CurveTrainConfig(epochs=1, lr=0.05),
)


def test_pam_from_identity_moves_toward_the_planted_permutation(planted: Planted) -> None:
    a_before = {k: v.clone() for k, v in planted.a.state_dict().items()}
    planted.a.eval()
    res = pam(planted.a, planted.b, planted.loader(), CFG, spec=planted.spec, progress=False)
    identity = Permutation.identity(planted.spec)
    assert res.start_permutation == identity
    assert planted.correct(res.permutation) > planted.correct(identity) + 4
    log = {r["stage"]: r["objective"] for r in res.objective_log}
    assert log["p-step"] < log["start"]
    assert log["psi-step"] < log["start"]
    assert res.changed_fraction == changed_fraction(res.permutation, identity)
    assert res.changed_units > 0
    assert set(res.timings) >= {"p_step", "rounding", "psi_step", "total"}
    # The permuted endpoint computes B's function and is the curve's endpoint.
    x = planted.train.images[:32].float() / 255
    assert torch.allclose(res.aligned_b(x), planted.b(x), atol=1e-5)
    end = res.curve.state_at(1.0)
    assert all(torch.equal(end[k], v) for k, v in res.aligned_b.state_dict().items())
    # Nothing was mutated and modes are intact.
    assert all(torch.equal(planted.a.state_dict()[k], v) for k, v in a_before.items())
    assert not planted.a.training and not any(m.training for m in res.curve.model.modules())


def test_pam_from_the_exact_alignment_keeps_it(planted: Planted) -> None:
    res = pam(
        planted.a,
        planted.b,
        planted.loader(),
        CFG,
        spec=planted.spec,
        init=planted.target,
        progress=False,
    )
    log = {r["stage"]: r["objective"] for r in res.objective_log}
    assert res.init == "given"
    assert res.changed_units == 0.0 or log["p-step"] <= log["start"]
    assert log["p-step"] <= log["start"]  # rounding keeps the previous one if nothing is better
    assert planted.correct(res.permutation) >= planted.correct(planted.target) - 2


class _Interrupting:
    """Wraps a loader and raises KeyboardInterrupt after ``limit`` batches."""

    def __init__(self, inner: TensorLoader, limit: int) -> None:
        self.inner, self.limit, self.seen = inner, limit, 0

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.inner:
            self.seen += 1
            if self.seen > self.limit:
                raise KeyboardInterrupt
            yield batch


@pytest.mark.parametrize("where", ["p-step", "psi-step"])
def test_pam_resume_matches_an_uninterrupted_run(
    planted: Planted, tmp_path: Path, where: str
) -> None:
    cfg = PAMConfig(
        p_epochs=2,
        p_lr=4.0,
        round_samples=2,
        score_batches=4,
        curve=CurveTrainConfig(epochs=2, lr=0.05),
    )
    full = pam(
        planted.a,
        planted.b,
        planted.loader(),
        cfg,
        spec=planted.spec,
        progress=False,
        checkpoint_dir=tmp_path / "full",
    )
    n = len(planted.loader())
    # score batches (4) + one P-step epoch + half of the next, or both P-step epochs + 1.5
    # ψ-step epochs (rounding and objective use the fixed score batches, not the loader).
    limit = 4 + n + n // 2 if where == "p-step" else 4 + 2 * n + n + n // 2
    with pytest.raises(KeyboardInterrupt):
        pam(
            planted.a,
            planted.b,
            _Interrupting(planted.loader(), limit),
            cfg,
            spec=planted.spec,
            progress=False,
            checkpoint_dir=tmp_path / "cut",
        )
    assert not (tmp_path / "cut" / "pam.json").exists()
    resumed = pam(
        planted.a,
        planted.b,
        planted.loader(),
        cfg,
        spec=planted.spec,
        progress=False,
        checkpoint_dir=tmp_path / "cut",
    )
    assert resumed.permutation == full.permutation
    for p, q in zip(resumed.curve.control_parameters(), full.curve.control_parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert [r["objective"] for r in resumed.objective_log] == pytest.approx(
        [r["objective"] for r in full.objective_log], abs=1e-6
    )
    # A finished folder is simply reloaded; other settings are refused.
    again = pam(
        planted.a,
        planted.b,
        planted.loader(),
        cfg,
        spec=planted.spec,
        progress=False,
        checkpoint_dir=tmp_path / "full",
    )
    assert again.permutation == full.permutation
    with pytest.raises(CheckpointError, match="other settings"):
        pam(
            planted.a,
            planted.b,
            planted.loader(),
            PAMConfig(p_epochs=1, curve=CurveTrainConfig(epochs=1)),
            spec=planted.spec,
            progress=False,
            checkpoint_dir=tmp_path / "full",
        )
    summary = json.loads((tmp_path / "full" / "pam.json").read_text())
    assert summary["format"] == "neuralign.pam" and len(summary["steps"]) == 1


def test_pam_correlation_init_needs_data(planted: Planted) -> None:
    with pytest.raises(ConfigError, match="align_data"):
        pam(planted.a, planted.b, planted.loader(), CFG, init="correlation", progress=False)
    with pytest.raises(ConfigError, match="p_epochs"):
        PAMConfig(p_epochs=-1).validate()


# --------------------------------------------------------------------------- CLI


def _save(model: nn.Module, path: Path, seed: int) -> None:
    from neuralign.io import save_checkpoint

    save_checkpoint(path, model, {"seed": seed, "dataset": "digits"})


def test_cli_pam_runs_on_tiny_checkpoints(
    planted: Planted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from neuralign.cli import main

    _save(planted.a, tmp_path / "a.safetensors", 0)
    _save(planted.b, tmp_path / "b.safetensors", 1)
    out = tmp_path / "pam"
    args = [
        "pam", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
        "--dataset", "digits", "--init", "correlation", "--p-epochs", "1", "--epochs", "1",
        "--batch-size", "128", "--no-augment", "--round-samples", "1", "--lr", "0.05",
        "--out", str(out), "--no-progress", "--device", "cpu",
    ]  # fmt: skip
    assert main(args) == 0
    for name in ("curve.safetensors", "model_b.safetensors", "permutation.json", "pam.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "pam.json").read_text())
    assert summary["init"] == "correlation"
    # Re-running on the finished folder resumes (nothing to do) and succeeds; --json prints
    # the same summary as one JSON object.
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["init"] == "correlation"
    assert printed["changed_units"] == pytest.approx(summary["changed_units"])
    assert printed["model_b"] == str(out / "model_b.safetensors")
    shutil.rmtree(out)
    assert main([*args[:-5], "--init", "bogus", "--out", str(out)]) == 2


# --------------------------------------------------------------------------- P-step budget


def test_p_step_size_keeps_the_papers_total_step() -> None:
    from neuralign.pamopt.pstep import p_step_size

    paper = PAMConfig()  # 20 epochs; at the paper's 390 steps per epoch: eta = 0.005
    assert p_step_size(paper, 390) == pytest.approx(0.005)
    assert p_step_size(paper, 390) * 20 * 390 == pytest.approx(paper.p_budget)
    short = PAMConfig(p_epochs=2)  # a short run takes larger steps, same total
    assert p_step_size(short, 47) * 2 * 47 == pytest.approx(paper.p_budget)
    assert p_step_size(paper, 10_000) == pytest.approx(0.005)  # never below the paper's step
    assert p_step_size(PAMConfig(p_lr=0.3), 47) == 0.3  # a fixed step overrides the budget


def test_default_budget_moves_pam_and_logs_per_group(
    planted: Planted, caplog: pytest.LogCaptureFixture
) -> None:
    """No step size given: the budget alone makes the P-step leave the identity."""
    cfg = PAMConfig(p_epochs=2, score_batches=6, curve=CurveTrainConfig(epochs=0))
    loader = planted.loader()
    with caplog.at_level("INFO", logger="neuralign.pamopt.loop"):
        res = pam(planted.a, planted.b, loader, cfg, spec=planted.spec, progress=False)
    step = res.steps[0]
    assert step.step_size == pytest.approx(cfg.p_budget / (2 * len(loader)))
    assert step.total_step == pytest.approx(cfg.p_budget)
    assert set(step.relaxed_distance) == set(planted.spec.groups)
    assert all(0 < d <= 1 for d in step.relaxed_distance.values())
    assert any(f > 0 for f in step.hungarian_changed.values())
    assert step.objective_after_p < step.objective_before
    assert planted.correct(res.permutation) > planted.correct(Permutation.identity(planted.spec))
    assert len(step.candidates) > 2  # Birkhoff samples were scored (32 by default)
    assert "Hungarian changed" in caplog.text
    assert "did not move" not in caplog.text


def test_warns_when_the_relaxed_matrices_do_not_move(
    planted: Planted, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = PAMConfig(p_epochs=1, p_lr=1e-9, round_samples=0, curve=CurveTrainConfig(epochs=0))
    with caplog.at_level("WARNING", logger="neuralign.pamopt.loop"):
        res = pam(planted.a, planted.b, planted.loader(), cfg, spec=planted.spec, progress=False)
    assert res.changed_units == 0.0
    assert all(f == 0 for f in res.steps[0].hungarian_changed.values())
    assert "did not move" in caplog.text


def test_rounding_keeps_the_start_only_when_it_scores_best() -> None:
    from neuralign.pamopt.rounding import round_relaxed

    start = Permutation({"g": torch.arange(4)})
    swapped = torch.tensor([1, 0, 2, 3])
    relaxed = {"g": Permutation({"g": swapped}).matrices()["g"] * 0.9 + 0.1 / 4}

    def prefers(target: Tensor) -> Any:
        return lambda p: 0.0 if torch.equal(p.perms["g"], target) else 1.0

    kept, name, scored = round_relaxed(relaxed, start, prefers(swapped), samples=4, seed=0)
    assert name != "previous" and torch.equal(kept.perms["g"], swapped)
    kept, name, _ = round_relaxed(relaxed, start, prefers(torch.arange(4)), samples=4, seed=0)
    assert name == "previous" and kept == start
    assert [c["name"] for c in scored][:2] == ["previous", "hungarian"]
