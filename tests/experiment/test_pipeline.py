"""`neuralign run`: end to end on digits, resume after SIGKILL, config errors, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuralign.cli import main
from neuralign.errors import ConfigError
from neuralign.experiment import load_config, parse_config, run_experiment, write_report

TINY = """
name = "tiny-digits"
device = "cpu"
seed = 0
[data]
dataset = "digits"
augment = false
batch_size = 64
[model]
arch = "resnet20"
width = 0.25
[endpoints]
seeds = [0, 1]
epochs = 3
lr = 0.05
[curves]
kinds = ["line", "bezier"]
variants = ["unaligned", "correlation"]
epochs = {curve_epochs}
lr = 0.05
[eval]
points = 5
bn_subset = 300
plane = {plane}
plane_grid = 3
plane_test_subset = 100
"""


def _write(tmp_path: Path, curve_epochs: int = 2, plane: bool = True) -> Path:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.format(curve_epochs=curve_epochs, plane=str(plane).lower()))
    return cfg


def _paths(run: Path) -> dict[str, list[float]]:
    out = {}
    for f in sorted((run / "paths").rglob("*.json")):
        d = json.loads(f.read_text())
        out[str(f.relative_to(run))] = d["test_loss"] + d["test_acc"]
    return out


def test_tiny_config_end_to_end_and_report_regeneration(tmp_path: Path) -> None:
    cfg = _write(tmp_path)
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(run), "--no-progress"]) == 0
    for name in ("report.md", "results.json", "results.csv", "config.toml", "spec.json"):
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    labels = [r["path"] for r in results["table"]]
    assert labels[0] == "Endpoints"
    assert {
        "Unaligned line",
        "Aligned line",
        "Unaligned Bezier curve",
        "Aligned Bezier curve",
    } <= set(labels)
    for fig in ("accuracy.png", "loss.png", "correlation.png", "plane-unaligned-bezier.png"):
        assert (run / "figures" / fig).stat().st_size > 10_000, fig
    md = (run / "report.md").read_text()
    assert "| Aligned Bezier curve |" in md and "wall time per stage" in md
    # regeneration from the folder alone gives the same table
    (run / "report.md").unlink()
    (run / "results.json").unlink()
    write_report(run)
    again = json.loads((run / "results.json").read_text())
    assert again["table"] == results["table"]
    # re-running skips all finished work: no checkpoint or result is rewritten
    outputs = [
        p
        for p in run.rglob("*")
        if p.suffix in (".safetensors", ".json") and "figures" not in p.parts
    ]
    outputs = [
        p for p in outputs if p.name not in ("results.json", "provenance.json", "timings.json")
    ]
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    assert main(["run", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps


def test_killed_during_curve_training_resumes_to_identical_results(tmp_path: Path) -> None:
    cfg = _write(tmp_path, curve_epochs=6, plane=False)
    ref = tmp_path / "ref"
    run_experiment(load_config(cfg), ref, progress=False)

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "neuralign", "run", str(cfg), "--out", str(run), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run / "curves" / "pair0" / "unaligned-bezier" / "history.jsonl"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "curves" / "pair0" / "unaligned-bezier" / "done.json").exists()
    run_experiment(load_config(cfg), run, progress=False)
    assert _paths(run) == _paths(ref)


def test_invalid_config_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"curves\.bends: must be in \[3, 64\]"):
        parse_config({"curves": {"bends": 1}})
    with pytest.raises(ConfigError, match=r"curves\.bendz: unknown field"):
        parse_config({"curves": {"bendz": 3}})
    with pytest.raises(ConfigError, match=r"endpoints\.epochs: expected an integer"):
        parse_config({"endpoints": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"data\.dataset: unknown dataset"):
        parse_config({"data": {"dataset": "imagenet22k"}})
    with pytest.raises(ConfigError, match=r"curves\.variants: unknown variant"):
        parse_config({"curves": {"variants": ["aligned-ish"]}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[eval]\npoints = 1\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_run_folder_of_another_config_is_refused(tmp_path: Path) -> None:
    cfg = _write(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    other = load_config(cfg)
    other.endpoints.epochs = 7
    (run / "config.toml").write_text(other.to_toml())
    with pytest.raises(ConfigError, match="different config"):
        run_experiment(load_config(cfg), run, stages=("endpoints",), progress=False)


def test_config_toml_round_trip() -> None:
    from neuralign.experiment.config import demo_config

    cfg = demo_config()
    import tomllib

    assert parse_config(tomllib.loads(cfg.to_toml())) == cfg
    assert cfg.pairs == [(0, 1)]


def test_paper_presets_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "paper"
    files = sorted(root.glob("*.toml"))
    assert len(files) == 9
    for f in files:
        cfg = load_config(f)
        assert cfg.endpoints.epochs == 250 and cfg.curves.epochs == 250
        assert len(cfg.pairs) == 3 and cfg.eval.points == 65
        assert cfg.endpoints.lr == 0.1 and cfg.curves.lr == 0.01
        expected_batch = 64 if f.stem == "tinyten-cifar10" else 128
        assert cfg.data.batch_size == expected_batch, f


def test_fashion_mnist_paper_preset_is_the_whole_table() -> None:
    f = Path(__file__).resolve().parents[2] / "configs" / "fashion-mnist-paper.toml"
    cfg = load_config(f)
    assert cfg.data.dataset == "fashion-mnist"
    # a class-balanced 12k/2k of the 60k/10k, sized to finish on 2 cores (see its header)
    assert cfg.data.train_subset == 12000 and cfg.data.test_subset == 2000
    assert len(cfg.pairs) == 3 and cfg.eval.points == 65
    assert set(cfg.curves.kinds) == {"line", "bezier"}
    assert set(cfg.curves.variants) == {
        "unaligned",
        "correlation",
        "weight",
        "pam-unaligned",
        "pam-aligned",
    }
    # robust rows for one pair: adversarial endpoints + robust curves, Unaligned vs Aligned
    assert not cfg.robust.enabled and cfg.robust.pairs == 1
    assert set(cfg.robust.variants) == {"unaligned", "correlation"}
    from neuralign.experiment.config import robust_track_config

    track = robust_track_config(cfg)
    assert track is not None and track.robust.enabled and track.endpoints.seeds == [0, 1]
    assert track.robust.bn_source == "adversarial" and track.robust.train_mode == "train"


ROBUST_TRACK = """
[robust]
pairs = 1
variants = ["unaligned", "correlation"]
eps = 0.05
alpha = 0.02
steps = 2
endpoint_epochs = 1
curve_epochs = 1
points = 3
train_subset = 400
test_subset = 100
"""


def test_robust_track_adds_robust_rows_for_one_pair(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    text = TINY.format(curve_epochs=1, plane="false").replace("epochs = 3", "epochs = 1")
    cfg.write_text(text + ROBUST_TRACK)
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(run), "--no-progress"]) == 0
    sub = load_config(run / "robust" / "config.toml")
    assert sub.robust.enabled and sub.robust.pairs == 0 and sub.endpoints.seeds == [0, 1]
    assert sub.endpoints.epochs == 1 and sub.eval.points == 3 and sub.data.train_subset == 400
    # the clean run's endpoints are clean, the track's adversarially trained
    clean = json.loads((run / "endpoints" / "seed0" / "done.json").read_text())
    robust = json.loads((run / "robust" / "endpoints" / "seed0" / "done.json").read_text())
    assert "robust_test_acc" in robust and "robust_test_acc" not in clean
    results = json.loads((run / "results.json").read_text())
    track = results["robust_track"]
    labels = {r["path"] for r in track["table"]}
    assert {"Unaligned line", "Aligned Bezier curve"} <= labels
    for r in track["table"]:
        if r["path"] != "Endpoints":
            assert r["n"] == 1 and r["robust_loss_barrier"] == r["robust_loss_barrier"]
    # the clean table has no robust columns; the report shows the track's
    assert all(r.get("robust_avg_loss") is None for r in results["table"])
    assert "robust" in results["timings_s"]
    claims = {c["claim"]: c for c in results["paper_checks"]}
    robust_line = claims["Alignment lowers the robust loss barrier (line)"]
    rows = {r["path"]: r for r in track["table"]}
    assert robust_line["holds"] == (
        rows["Aligned line"]["robust_loss_barrier"] < rows["Unaligned line"]["robust_loss_barrier"]
    )
    md = (run / "report.md").read_text()
    assert "## Robust track" in md and "Robust loss barrier" in md
    assert (run / "robust" / "figures" / "robust_loss.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "extra, field",
    [
        ("[robust]\npairs = 1\nenabled = true\n", "robust.pairs"),
        ("[robust]\npairs = 2\n", "robust.pairs"),
        ("[robust]\npairs = 1\nvariants = ['pam-unaligned']\n", "robust.variants"),
        ("[robust]\npairs = 1\npoints = 1\n", "robust.points"),
    ],
)
def test_robust_track_config_errors_name_the_field(extra: str, field: str) -> None:
    import tomllib

    raw = tomllib.loads(TINY.format(curve_epochs=1, plane="false") + extra)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(raw)


def test_paper_checks_compare_the_rows_they_name() -> None:
    from neuralign.experiment.report import paper_checks

    def row(variant: str, avg: float, mn: float, n: int = 3, sd: float = 0.2) -> dict:
        return {
            "variant": variant,
            "kind": "bezier",
            "n": n,
            "avg_acc": avg,
            "avg_acc_std": sd,
            "min_acc": mn,
            "min_acc_std": sd,
        }

    rows = [
        row("unaligned", 85.0, 80.0),
        row("correlation", 86.0, 84.0),
        row("pam-unaligned", 85.5, 82.0),
        row("pam-aligned", 86.3, 84.1),
    ]
    pam = [
        {"variant": "pam-unaligned", "changed_units": 30.0},
        {"variant": "pam-aligned", "changed_units": 2.0},
    ]
    checks = {c["claim"]: c["holds"] for c in paper_checks(rows, pam)}
    assert checks == {
        "Aligned Min ≥ Unaligned Min (Bezier curve)": True,
        "PAM Unaligned better than Unaligned (Bezier Avg), units changed": True,
        "PAM Aligned ≈ Aligned (Bezier Avg)": True,  # 0.3 apart, tolerance 0.4
    }
    # PAM that changed nothing is not "better", whatever the accuracy says
    pam[0]["changed_units"] = 0.0
    rows[3]["avg_acc"] = 87.0  # 1.0 apart: beyond the summed std
    rows[0]["min_acc"] = 85.0
    checks = {c["claim"]: c["holds"] for c in paper_checks(rows, pam)}
    assert not any(checks.values())
