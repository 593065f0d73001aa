"""The run folder object, provenance and labels of experiment/."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from neuralign.errors import ConfigError
from neuralign.experiment import RunDir
from neuralign.experiment.config import demo_config
from neuralign.experiment.labels import kind_label, path_label, variant_label
from neuralign.experiment.provenance import git_revision


def test_layout_of_every_artefact(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rel = {
        "endpoint": rd.endpoint_checkpoint(3),
        "endpoint_marker": rd.endpoint_marker(3),
        "align": rd.align_record(1, "correlation"),
        "aligned": rd.align_checkpoint(1, "correlation"),
        "curve": rd.curve_checkpoint(0, "unaligned", "bezier"),
        "history": rd.curve_history(0, "unaligned", "bezier"),
        "curve_marker": rd.curve_marker(0, "unaligned", "bezier"),
        "pam": rd.pam_dir(0, "pam-aligned"),
        "path": rd.path_file(2, "weight", "line"),
        "plane": rd.plane_file("correlation"),
    }
    assert {k: str(v.relative_to(tmp_path)) for k, v in rel.items()} == {
        "endpoint": "endpoints/seed3/model.safetensors",
        "endpoint_marker": "endpoints/seed3/done.json",
        "align": "align/pair1/correlation.json",
        "aligned": "align/pair1/correlation.safetensors",
        "curve": "curves/pair0/unaligned-bezier/curve.safetensors",
        "history": "curves/pair0/unaligned-bezier/history.jsonl",
        "curve_marker": "curves/pair0/unaligned-bezier/done.json",
        "pam": "curves/pair0/pam-aligned-bezier/pam",
        "path": "paths/pair2/weight-line.json",
        "plane": "planes/pair0/correlation-bezier.json",
    }


def test_markers_are_written_last_and_read_back(tmp_path: Path) -> None:
    notes: list[str] = []
    rd = RunDir(tmp_path, notify=notes.append)
    marker = rd.endpoint_marker(0)
    assert rd.done(marker) is None and not rd.is_done(marker)
    rd.endpoint_dir(0).mkdir(parents=True)
    rd.endpoint_checkpoint(0).write_bytes(b"weights")
    with pytest.raises(FileNotFoundError):  # a marker cannot vouch for a missing file
        rd.mark_done(marker, {"test_acc": 91.5}, artefacts=[rd.endpoint_checkpoint(1)])
    rd.mark_done(marker, {"test_acc": 91.5}, artefacts=[rd.endpoint_checkpoint(0)])
    assert rd.is_done(marker) and rd.done(marker) == {"test_acc": 91.5}
    rd.endpoint_checkpoint(0).write_bytes(b"weigh")  # truncated: the marker is void
    assert not rd.is_done(marker) and not marker.exists()
    assert not rd.endpoint_checkpoint(0).exists()  # the corrupted file went too
    assert "endpoints/seed0/model.safetensors: size 5 bytes, recorded 7" in notes[0]
    saved = []
    out = rd.path_file(0, "unaligned", "line")
    rd.mark_done(
        out, save=lambda p: (saved.append(p), p.parent.mkdir(parents=True), p.write_text("{}"))
    )
    assert saved == [out] and rd.is_done(out)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_guard_refuses_another_config_and_claim_writes_it(tmp_path: Path) -> None:
    cfg = demo_config()
    rd = RunDir(tmp_path / "run")
    rd.guard(cfg, force=False)  # nothing there yet
    rd.claim(cfg)
    assert rd.config_file.exists()
    rd.guard(cfg, force=False)  # same config: resumable
    other = demo_config()
    other.seed = cfg.seed + 1
    with pytest.raises(ConfigError, match="different config"):
        rd.guard(other, force=False)
    rd.guard(other, force=True)
    rd.add_timing("endpoints", 1.25)
    rd.add_timing("endpoints", 1.0)
    assert rd.read_json(rd.timings_file) == {"endpoints": 2.25}


def test_git_revision_in_a_repository_and_outside(tmp_path: Path) -> None:
    assert git_revision(tmp_path) is None  # not a checkout
    try:
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
        env = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
        (tmp_path / "f").write_text("x")
        subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True, timeout=30)
        subprocess.run(
            ["git", *env, "-C", str(tmp_path), "commit", "-qm", "x"], check=True, timeout=30
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    sha = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert git_revision(tmp_path) == sha
    (tmp_path / "f").write_text("changed")
    assert git_revision(tmp_path) == sha + "-dirty"


def test_labels() -> None:
    assert variant_label("correlation") == "Aligned"
    assert kind_label("bezier") == "Bezier curve"
    assert path_label("pam-aligned", "bezier") == "PAM Aligned Bezier curve"
    assert path_label("custom", "spline") == "custom spline"  # unknown names pass through


def test_curve_families_are_found_through_the_registry() -> None:
    from neuralign.curves import Bezier, Line, curve_families, curve_family
    from neuralign.experiment.config import KINDS

    assert {"line", "bezier", "polychain"} <= set(curve_families())
    assert curve_family("bezier") is Bezier and curve_family("line") is Line
    assert set(KINDS) == set(curve_families())
    with pytest.raises(ConfigError, match="unknown curve family"):
        curve_family("spline")
