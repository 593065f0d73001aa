"""`neuralign run` with a [robust] section: adversarial endpoints, robust curves and paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from neuralign.errors import ConfigError
from neuralign.experiment import parse_config, run_experiment


def _config(**robust: Any) -> dict[str, Any]:
    return {
        "name": "robust-digits",
        "device": "cpu",
        "data": {"dataset": "digits", "augment": False, "batch_size": 64},
        "model": {"arch": "mlp", "kwargs": {"hidden": [32, 32]}},
        "endpoints": {"seeds": [0, 1], "epochs": 2, "lr": 0.1, "schedule": "robust"},
        "align": {"subset_fraction": 0.5},
        "curves": {
            "kinds": ["line", "bezier"],
            "variants": ["unaligned", "correlation"],
            "epochs": 1,
            "lr": 0.05,
        },
        "eval": {"points": 3, "plane": False, "bn_subset": 200},
        "robust": {"enabled": True, "eps": 0.1, "alpha": 0.04, "steps": 2, **robust},
    }


def test_robust_run_and_report(tmp_path: Path) -> None:
    results = run_experiment(
        _config(align_on="adversarial", test_subset=200), tmp_path, progress=False
    )
    done = json.loads((tmp_path / "endpoints" / "seed0" / "done.json").read_text())
    assert 0.0 <= done["robust_test_acc"] <= done["test_acc"] + 1e-9
    meta = (tmp_path / "endpoints" / "seed0" / "metrics.jsonl").read_text().splitlines()
    assert len(meta) == 2
    path = json.loads((tmp_path / "paths" / "pair0" / "correlation-bezier.json").read_text())
    assert len(path["robust_loss"]) == 3 and path["metadata"]["attack"]["eps"] == 0.1
    rows = [r for r in results["table"] if r["path"] != "Endpoints"]
    assert rows and all("robust_loss_barrier" in r for r in rows)
    report = (tmp_path / "report.md").read_text()
    assert "## Robustness (PGD)" in report and "Robust loss barrier" in report
    assert (tmp_path / "figures" / "robust_loss.png").exists()


def test_robust_config_validation() -> None:
    cfg = parse_config(_config())
    # the paper's robust defaults: BN on adversarial inputs along paths, PGD crafted in train
    # mode for adversarial endpoint training, the robust schedule for endpoints and curves
    assert cfg.robust.enabled and cfg.robust.bn_source == "adversarial"
    assert cfg.robust.train_mode == "train" and cfg.robust.schedule == "robust"
    with pytest.raises(ConfigError, match="robust.train_mode"):
        parse_config(_config(train_mode="inference"))
    with pytest.raises(ConfigError, match="robust.schedule"):
        parse_config(_config(schedule="fast"))
    with pytest.raises(ConfigError, match="robust.bn_source"):
        parse_config(_config(bn_source="both"))
    with pytest.raises(ConfigError, match="robust.align_on"):
        parse_config(_config(align_on="pgd"))
    with pytest.raises(ConfigError, match="robust.eps"):
        parse_config(_config(eps=-0.1))
