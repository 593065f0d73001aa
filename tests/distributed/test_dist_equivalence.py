"""Two gloo processes under torchrun reproduce the single-process run with the same global batch.

The workload (:mod:`dist_worker`) trains an MLP endpoint (augmentation on), a Bezier curve,
runs PAM, computes float64 alignment statistics, recomputes BatchNorm statistics and evaluates; it runs
once plainly and once under ``python -m torch.distributed.run --nproc_per_node 2`` on CPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

WORKER = Path(__file__).with_name("dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(cmd: list[str], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return wall


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dist")
    single, double = root / "single", root / "double"
    wall1 = _run([sys.executable, str(WORKER), str(single)], single)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        str(double),
    ]
    wall2 = _run(torchrun, double)
    r1 = torch.load(single / "results.pt", weights_only=False)
    r2 = torch.load(double / "results.pt", weights_only=False)
    timing = {
        "wall_1proc_s": wall1,
        "wall_2proc_s": wall2,
        "work_1proc": json.loads((single / "timing.json").read_text()),
        "work_2proc": json.loads((double / "timing.json").read_text()),
    }
    print("distributed timing:", json.dumps(timing))
    return {"single": r1, "double": r2, "root": root, "timing": timing}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_dist_runs_are_what_they_claim(runs: dict[str, Any]) -> None:
    assert runs["single"]["world"] == 1 and runs["double"]["world"] == 2


def test_dist_endpoint_training_matches_single_process(runs: dict[str, Any]) -> None:
    one, two = runs["single"], runs["double"]
    diff = _max_diff(one["train_state"], two["train_state"])
    print(f"endpoint weights max |diff| = {diff:.3g}")
    assert diff < 1e-5
    for h1, h2 in zip(one["train_history"], two["train_history"], strict=True):
        assert h1["train_acc"] == pytest.approx(h2["train_acc"], abs=1e-9)
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], abs=1e-5)
        assert h1["test_loss"] == pytest.approx(h2["test_loss"], abs=1e-5)
    # rank 0 alone wrote the run folder, completely
    folder = runs["root"] / "double" / "train"
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "trainer.pt"}
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]


def test_dist_curve_training_matches_single_process(runs: dict[str, Any]) -> None:
    one, two = runs["single"], runs["double"]
    diff = max(
        float((p - q).abs().max())
        for p, q in zip(one["curve_points"], two["curve_points"], strict=True)
    )
    print(f"curve control points max |diff| = {diff:.3g}")
    assert diff < 1e-5
    for h1, h2 in zip(one["curve_history"], two["curve_history"], strict=True):
        assert h1["loss"] == pytest.approx(h2["loss"], abs=1e-5)
        assert h1["acc"] == pytest.approx(h2["acc"], abs=1e-9)
        assert h1["test_acc"] == pytest.approx(h2["test_acc"], abs=1e-9)
    assert (runs["root"] / "double" / "curve" / "curve.safetensors").exists()


def test_dist_pam_matches_single_process(runs: dict[str, Any]) -> None:
    one, two = runs["single"], runs["double"]
    assert one["pam_perm"].keys() == two["pam_perm"].keys()
    assert all(torch.equal(one["pam_perm"][g], two["pam_perm"][g]) for g in one["pam_perm"])
    diff = max(
        float((p - q).abs().max())
        for p, q in zip(one["pam_points"], two["pam_points"], strict=True)
    )
    print(f"PAM control points max |diff| = {diff:.3g}")
    assert diff < 1e-5
    for r1, r2 in zip(one["pam_log"], two["pam_log"], strict=True):
        assert r1["objective"] == pytest.approx(r2["objective"], abs=1e-5)
    assert (runs["root"] / "double" / "pam" / "pam.json").exists()


def test_dist_alignment_statistics_equal_single_process(runs: dict[str, Any]) -> None:
    one, two = runs["single"], runs["double"]
    assert one["corr_images"] == two["corr_images"] == 1408
    worst = 0.0
    for g, accs in one["corr"].items():
        for a1, a2 in zip(accs, two["corr"][g], strict=True):
            assert a1["count"] == a2["count"]
            for key in ("s_x", "s_xx", "s_xy"):
                scale = max(1.0, float(a1[key].abs().max()))
                worst = max(worst, float((a1[key] - a2[key]).abs().max()) / scale)
            worst = max(worst, float((a1["correlation"] - a2["correlation"]).abs().max()))
    print(f"alignment statistics max relative |diff| = {worst:.3g}")
    assert worst <= 1e-12


def test_dist_recompute_bn_and_evaluation_equal_single_process(runs: dict[str, Any]) -> None:
    one, two = runs["single"], runs["double"]
    for key in ("bn_state", "bn_state_limited"):
        s1, s2 = one[key], two[key]
        assert torch.equal(s1["2.num_batches_tracked"], s2["2.num_batches_tracked"])
        diff = _max_diff(s1, s2)
        print(f"{key} max |diff| = {diff:.3g}")
        assert diff <= 1e-6
    assert int(one["bn_state_limited"]["2.num_batches_tracked"]) == 5
    loss1, acc1 = one["eval"]
    loss2, acc2 = two["eval"]
    assert acc1 == acc2
    assert loss1 == pytest.approx(loss2, abs=1e-9)
