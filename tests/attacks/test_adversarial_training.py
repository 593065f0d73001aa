"""PGD on real data: it breaks a clean digits model; adversarial training resists it."""

from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner

from neuralign.attacks import PGD
from neuralign.data import TensorLoader, load_dataset
from neuralign.models import create_model
from neuralign.training import TrainConfig, evaluate_model, train_model

EPS, ALPHA, STEPS = 0.15, 0.04, 5
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[64, 64])


def _robust_acc(model: torch.nn.Module, test: TensorLoader) -> float:
    pgd = PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, generator=torch.Generator().manual_seed(0))
    correct = n = 0
    for x, y in test:
        with torch.no_grad():
            correct += int((model(pgd(x, y)).argmax(1) == y).sum())
        n += y.numel()
    return 100.0 * correct / n


def test_pgd_breaks_clean_model_and_adversarial_training_resists() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    loader = TensorLoader(test, batch_size=512)
    cfg = TrainConfig(epochs=6, batch_size=64, lr=0.1, lr_step=4, augment=False, seed=0)
    clean = _model(0)
    train_model(clean, train, None, cfg, device="cpu", progress=False)
    _, clean_acc = evaluate_model(clean, loader)
    clean_robust = _robust_acc(clean, loader)

    robust_cfg = TrainConfig(
        epochs=6, batch_size=64, lr=0.1, schedule="robust", augment=False, seed=0
    )
    robust = _model(0)
    pgd = PGD(eps=EPS, alpha=ALPHA, steps=STEPS)
    res = train_model(
        robust, train, None, robust_cfg, device="cpu", progress=False, attack=pgd.attack_model
    )
    _, robust_clean_acc = evaluate_model(robust, loader)
    robust_robust = _robust_acc(robust, loader)

    assert clean_acc >= 90.0
    assert clean_robust <= clean_acc - 40.0, (clean_acc, clean_robust)  # PGD cuts accuracy
    assert robust_robust >= clean_robust + 25.0, (clean_robust, robust_robust)
    assert robust_clean_acc >= 70.0
    assert [r["lr"] for r in res.history][:3] == [0.1] * 3  # robust schedule: flat half
    assert res.history[-1]["lr"] < 0.1


def test_cli_train_adversarial(tmp_path: Path) -> None:
    from neuralign.cli import cli

    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--arch",
            "tinyten",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(FIXTURES / "fashion-mnist"),
            "--epochs",
            "2",
            "--batch-size",
            "50",
            "--no-augment",
            "--adversarial",
            "--eps",
            "0.1",
            "--alpha",
            "0.05",
            "--steps",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "adversarial" in result.output
    import json

    meta = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert meta["lr"] == 0.1  # the robust schedule keeps lr flat for the first half
    from neuralign.io import read_metadata

    assert read_metadata(out / "model.safetensors")["adversarial_training"]["mode"] == "train"


def test_cli_align_on_adversarial(tmp_path: Path) -> None:
    from neuralign.cli import cli

    common = ["--arch", "tinyten", "--dataset", "fashion-mnist"]
    common += ["--data-dir", str(FIXTURES / "fashion-mnist"), "--epochs", "1", "--no-augment"]
    common += ["--device", "cpu", "--no-progress"]
    for seed in (0, 1):
        out = str(tmp_path / f"s{seed}")
        r = CliRunner().invoke(cli, ["train", *common, "--seed", str(seed), "--out", out])
        assert r.exit_code == 0, r.output
    result = CliRunner().invoke(
        cli,
        [
            "align",
            str(tmp_path / "s0" / "model.safetensors"),
            str(tmp_path / "s1" / "model.safetensors"),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(FIXTURES / "fashion-mnist"),
            "--subset-fraction",
            "1.0",
            "--align-on",
            "adversarial",
            "--eps",
            "0.1",
            "--alpha",
            "0.05",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "b_aligned.safetensors"),
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "alignment on 100 images" in result.output
    from neuralign.io import read_metadata

    assert read_metadata(tmp_path / "b_aligned.safetensors")["align_on"] == "adversarial"


def test_adversarial_training_crafts_in_train_mode() -> None:
    """The endpoint-training hook crafts PGD with BatchNorm on batch statistics by default."""
    from neuralign.attacks import TRAINING_MODE, adversarial_training

    torch.manual_seed(0)
    model = create_model("tinyten", num_classes=10, in_channels=1).eval()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    pgd = PGD(eps=0.1, alpha=0.05, steps=2, random_start=False)
    hooked = adversarial_training(pgd)(model, x, y)
    assert TRAINING_MODE == "train"
    assert torch.equal(hooked, pgd.with_options(mode="train").attack_model(model, x, y))
    assert not torch.equal(hooked, pgd.attack_model(model, x, y))  # eval mode differs
    assert not model.training
    assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())
