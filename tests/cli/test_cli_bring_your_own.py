"""Your own model (``file.py:factory``) and data (``.npz``, image folder) through the CLI; merge
and plane commands; one-line errors (exit 2, nothing written) for bad new options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import neuralign as na
from neuralign.cli import main

HERE = Path(__file__).resolve()
FACTORY = f"{HERE}:small_net"


def small_net(num_classes: int = 10, in_channels: int = 3, hidden: int = 12) -> nn.Module:
    """A user network (conv + BN + ReLU, pooled, linear) referenced by this file's path."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.BatchNorm2d(hidden),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 3, padding=1),
        nn.BatchNorm2d(hidden),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(hidden, num_classes),
    )


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    tr, te = na.load_dataset("digits", "train"), na.load_dataset("digits", "test")
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(
        path,
        train_images=tr.images.numpy(),
        train_labels=tr.labels.numpy(),
        test_images=te.images.numpy(),
        test_labels=te.labels.numpy(),
    )
    return path


@pytest.fixture(scope="module")
def endpoints(digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("endpoints")
    out = []
    for seed in (0, 1, 2):
        d = root / f"seed{seed}"
        args = ["train", "--arch", FACTORY, "--dataset", str(digits_npz), "--epochs", "4"]
        args += ["--lr", "0.05", "--batch-size", "64", "--no-augment", "--seed", str(seed)]
        assert main([*args, "--out", str(d), "--no-progress", "--device", "cpu"]) == 0
        out.append(d / "model.safetensors")
    return out


def test_own_model_and_npz_through_train_align_curve_eval_path_plane(
    digits_npz: Path, endpoints: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from neuralign.models import reference

    a, b = endpoints[:2]
    model = na.load_model(a)
    assert na.model_spec(model)["name"] == FACTORY and isinstance(model[1], nn.BatchNorm2d)
    data = ["--dataset", str(digits_npz), "--device", "cpu", "--no-progress"]
    aligned = tmp_path / "b_aligned.safetensors"
    # A fresh process has not built the factory: reading checkpoints that name it needs
    # --trust-code (a one-line error otherwise, nothing written).
    reference._TRUSTED.clear()
    assert main(["align", str(a), str(b), *data, "--out", str(aligned)]) == 2
    assert "--trust-code" in capsys.readouterr().err and not aligned.exists()
    assert main(["--trust-code", "align", str(a), str(b), *data, "--out", str(aligned)]) == 0
    reference.trust_reference(FACTORY)  # as if built in this process (the other commands)
    curve = tmp_path / "curve"
    args = ["curve", str(a), str(aligned), *data, "--epochs", "1", "--batch-size", "64"]
    assert main([*args, "--no-augment", "--out", str(curve)]) == 0
    path_json = tmp_path / "path.json"
    assert main(["eval-path", str(curve), *data, "--points", "3", "--out", str(path_json)]) == 0
    res = na.PathResult.load(path_json)
    assert len(res.ts) == 3 and all(np.isfinite(res.test_acc))
    capsys.readouterr()
    args = ["plane", str(curve), *data, "--grid", "3", "--test-subset", "0", "--json"]
    assert main([*args, "--bn-subset", "300"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for f in ("plane-loss.png", "plane-loss.pdf", "plane-error.png", "plane-error.pdf"):
        assert (curve / f).stat().st_size > 5_000, f
    plane = na.paths.PlaneResult.load(curve / "plane.json")
    # The figure's values are those of evaluate_plane on the same data.
    from neuralign.curves import Curve
    from neuralign.data import bn_loader, make_loader

    tr, te = na.load_dataset(str(digits_npz), "train"), na.load_dataset(str(digits_npz), "test")
    direct = na.evaluate_plane(
        Curve.load(curve / "curve.safetensors"),
        make_loader(te, 256),
        grid=(3, 3),
        bn_data=bn_loader(tr, "train-subset", subset=300, batch_size=256),
        progress=False,
    )
    assert np.allclose(plane.test_loss, direct.test_loss, atol=1e-5)
    assert np.allclose(plane.test_acc, direct.test_acc, atol=1e-6)
    assert summary["min_test_loss"] == pytest.approx(float(np.min(direct.test_loss)), abs=1e-5)


@pytest.mark.parametrize("k", [2, 3])
def test_merge_command_beats_the_naive_average(
    digits_npz: Path,
    endpoints: list[Path],
    tmp_path: Path,
    k: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "merged.safetensors"
    args = ["merge", *map(str, endpoints[:k]), "--dataset", str(digits_npz), "--device", "cpu"]
    capsys.readouterr()
    assert main([*args, "--method", "weight", "--repair", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    acc = {r["model"]: r["accuracy"] for r in summary["evaluation"]}
    assert acc["merged"] > acc["naive average"] and acc["merged + REPAIR"] > acc["naive average"]
    merged = na.load_model(out)  # the user's factory rebuilt from the merged checkpoint
    assert na.model_spec(merged)["name"] == FACTORY
    assert na.io.read_metadata(out)["merge"]["method"] == "weight"
    # The merged checkpoint evaluates to the reported accuracy.
    from neuralign.data import make_loader

    te = na.load_dataset(str(digits_npz), "test")
    _, got = na.evaluate_model(merged, make_loader(te, 256))
    assert got == pytest.approx(acc["merged + REPAIR"], abs=1e-6)


def test_own_model_and_image_folder_through_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    from PIL import Image

    root = tmp_path / "images"
    for split in ("train", "test"):
        ds = na.load_dataset("digits", split)
        for i, (img, lab) in enumerate(zip(ds.images.numpy()[::3], ds.labels.numpy()[::3])):
            (root / split / f"digit{lab}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0]).save(root / split / f"digit{lab}" / f"{i}.png")
    cfg = tmp_path / "own.toml"
    cfg.write_text(
        f"""
name = "own"
device = "cpu"
[data]
dataset = "folder:{root}"
augment = false
batch_size = 64
[model]
arch = "{FACTORY}"
kwargs = {{ hidden = 8 }}
[endpoints]
seeds = [0, 1]
epochs = 2
lr = 0.05
[curves]
kinds = ["line"]
variants = ["unaligned", "correlation"]
epochs = 1
[eval]
points = 3
bn_subset = 100
plane = false
"""
    )
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(run), "--no-progress"]) == 0
    ep = na.load_model(run / "endpoints" / "seed0" / "model.safetensors")
    assert na.model_spec(ep) == {
        "name": FACTORY,
        "kwargs": {"num_classes": 10, "in_channels": 1, "hidden": 8},
    }
    assert (run / "report.md").is_file()
    # --json: one JSON object on stdout (a finished run resumes without work)
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(run), "--no-progress", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    on_disk = json.loads((run / "results.json").read_text())
    assert res["run_dir"] == str(run) and res["results"] == on_disk
    assert main(["report", str(run), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["report"] == str(run / "report.md")
    # the report stage's own wall time is re-measured; every result is the same
    assert {k: v for k, v in rep["results"].items() if k != "timings_s"} == {
        k: v for k, v in on_disk.items() if k != "timings_s"
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--arch", "nowhere/none.py:f"], "does not exist"),
        (["train", "--arch", f"{HERE}:not_there"], "has no attribute"),
        (["train", "--arch", f"{HERE}:_not_a_module"], "not a torch.nn.Module"),
        (["train", "--dataset", "folder:/no/such/folder"], "does not exist"),
        (["train", "--dataset", "/no/such/file.npz"], "does not exist"),
        (["merge", "A.safetensors"], "at least two"),
        (["plane", "/no/such/curve"], "no curve found"),
    ],
)
def test_bad_inputs_are_one_line_errors_and_write_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / "out")] if argv[0] == "train" else []
    if argv[0] == "merge":
        out = ["--out", str(tmp_path / "m.safetensors")]
    assert main([*argv, *out, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def _not_a_module(num_classes: int = 10) -> str:
    return "a string"


def test_json_output_of_eval_align_interpolate(
    digits_npz: Path, endpoints: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = map(str, endpoints[:2])
    data = ["--dataset", str(digits_npz), "--device", "cpu"]
    capsys.readouterr()
    assert main(["eval", a, *data]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and not text.lstrip().startswith("{")
    assert main(["eval", a, *data, "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["split"] == "test" and 0 <= ev["accuracy"] <= 100
    out = tmp_path / "al.safetensors"
    assert main(["align", a, b, *data, "--no-progress", "--out", str(out), "--json"]) == 0
    al = json.loads(capsys.readouterr().out)
    assert al["out"] == str(out) and al["groups"] and out.is_file()
    args = ["interpolate", a, str(out), *data, "--points", "3", "--no-progress", "--json"]
    assert main(args) == 0
    path = json.loads(capsys.readouterr().out)
    assert path["ts"] == [0.0, 0.5, 1.0] and len(path["test_acc"]) == 3  # BN recomputed at t
