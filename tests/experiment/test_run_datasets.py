"""`neuralign run` with the default config works on every dataset that is present.

Only the epoch counts, the number of points and the plane grid are shortened (they do not
change which data-dependent policies run: subset sizes, class balance, BN subsets); the
rest is the default config. Before this pass digits stopped in ``balanced_subset`` (its BN
subset of 5000 capped at 1438 images, which digits cannot balance) and the CIFAR fixtures
(15 images, some classes absent) stopped at the alignment subset.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest

import neuralign as na

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

SHORT = {
    "endpoints": {"epochs": 1},
    "curves": {"epochs": 1},
    "eval": {"points": 3, "plane_grid": 3},
}

# (dataset, fixture folder copied into the data folder or "" for an installed dataset, arch)
CASES = [
    pytest.param("digits", "", "mlp", id="digits-mlp"),
    pytest.param("fashion-mnist", "fashion-mnist", None, id="fashion-fixture"),
    pytest.param("cifar10", "cifar-10-batches-py", None, id="cifar10-fixture"),
    pytest.param("cifar100", "cifar-100-python", None, id="cifar100-fixture"),
    pytest.param("tinyimagenet", "tiny-imagenet-200", None, id="tinyimagenet-fixture"),
    pytest.param("mnist5k", "", None, id="mnist5k", marks=pytest.mark.slow),
]


def _config(dataset: str, data_dir: str, arch: str | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {"device": "cpu", "data": {"dataset": dataset, "data_dir": data_dir}}
    if arch:
        cfg["model"] = {"arch": arch}
    return {**cfg, **SHORT}


@pytest.mark.parametrize(("dataset", "fixture", "arch"), CASES)
def test_run_with_defaults(dataset: str, fixture: str, arch: str | None, tmp_path: Path) -> None:
    data_dir = ""
    if fixture:  # a copy: readers may write decode caches next to the files
        data_dir = str(tmp_path / "data")
        target = tmp_path / "data" if dataset == "fashion-mnist" else tmp_path / "data" / fixture
        shutil.copytree(FIXTURES / fixture, target)
    try:
        na.load_dataset(dataset, "test", data_dir=data_dir or None)
    except na.DataError:
        pytest.skip(f"{dataset} is not installed here")
    res = na.run_experiment(_config(dataset, data_dir, arch), tmp_path / "run", progress=False)
    rows = res["table"]
    assert rows and all(math.isfinite(r["endpoint_acc"]) for r in rows if "endpoint_acc" in r)
    assert (tmp_path / "run" / "report.md").exists()


@pytest.mark.slow
def test_digits_mlp_with_full_defaults(tmp_path: Path) -> None:
    """The issue's case: a config of only `dataset = "digits"`, `model.arch = "mlp"`."""
    cfg = {"device": "cpu", "data": {"dataset": "digits"}, "model": {"arch": "mlp"}}
    res = na.run_experiment(cfg, tmp_path / "run", progress=False)
    assert res["table"] and (tmp_path / "run" / "report.md").exists()
