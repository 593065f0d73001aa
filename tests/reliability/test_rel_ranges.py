"""Issue 19, class 5: validated ranges (with upper bounds), devices, special files, reader errors.

Each case is a bad input tried from outside; the answer must be a typed, one-line error
naming the field, option or file, and nothing may block or be written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import typing
from pathlib import Path
from typing import Any

import click
import pytest
import torch
from rel_testlib import tiny_mlp

from neuralign.cli import cli
from neuralign.cli.app import main
from neuralign.curves import CurveTrainConfig
from neuralign.device import check_device_name, select_device
from neuralign.errors import CheckpointError, ConfigError, DataError, NeuralignError
from neuralign.experiment import ExperimentConfig, load_config
from neuralign.experiment.config import (
    AlignConfig,
    CurveConfig,
    DataConfig,
    EndpointConfig,
    EvalConfig,
    ModelConfig,
    RobustConfig,
    dump_toml,
)
from neuralign.pamopt import PAMConfig
from neuralign.ranges import Range, field_range
from neuralign.training import TrainConfig

#: The experiment's tables and their dataclasses (``""``: the top level).
SECTIONS: dict[str, Any] = {
    "": ExperimentConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "endpoints": EndpointConfig,
    "align": AlignConfig,
    "curves": CurveConfig,
    "eval": EvalConfig,
    "pam": PAMConfig,
    "robust": RobustConfig,
}
_PAM_ELSEWHERE = {"curve", "bends", "seed"}


def cli_run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip()


def one_line_refusal(result: tuple[int, str], *phrases: str) -> str:
    rc, err = result
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for p in phrases:
        assert p.lower() in err.lower(), (p, err)
    return err


def ranged_fields() -> list[tuple[str, str, Range, bool]]:
    """``(section, field, range, is_int)`` of every ranged field of the experiment config."""
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            rng = f.metadata.get("range")
            if not isinstance(rng, Range) or (section == "pam" and f.name in _PAM_ELSEWHERE):
                continue
            if section == "" and f.name not in ("seed",):
                continue
            out.append((section, f.name, rng, hints[f.name] is int))
    return out


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(dump_toml(raw))
    return p


def _raw(section: str, name: str, value: Any) -> dict[str, Any]:
    return {name: value} if section == "" else {section: {name: value}}


# ------------------------------------------------------------------ ranges, config side


def test_every_numeric_config_field_has_a_range() -> None:
    """No int/float field of the experiment config (and the library configs it embeds)
    is left without a declared range."""
    missing = []
    for section, cls in {**SECTIONS, "curve": CurveTrainConfig, "train": TrainConfig}.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            numeric = hints[f.name] in (int, float) or f.name in ("seeds", "objective_ts")
            if numeric and field_range(cls, f.name) is None:
                missing.append(f"{section}.{f.name}")
    assert not missing, missing


@pytest.mark.parametrize(
    "section, name, rng, is_int",
    [pytest.param(*r, id=f"{r[0]}.{r[1]}") for r in ranged_fields()],
)
def test_out_of_range_config_value_names_the_field(
    tmp_path: Path, section: str, name: str, rng: Range, is_int: bool
) -> None:
    """Just above the upper bound (or below the lower one) is refused naming the field."""
    where = f"{section}.{name}" if section else name
    bad: list[Any] = []
    if rng.hi is not None:
        bad.append(int(rng.hi) + 1 if is_int else rng.hi * 2 + 1)
    if rng.lo is not None:
        bad.append(int(rng.lo) - 1 if is_int else rng.lo - 1)
    assert bad
    for value in bad:
        if name in ("seeds", "objective_ts"):
            value = [value] * max(2, rng.min_items)
            if name == "seeds":
                value = [value[0], value[0] + (1 if value[0] < 0 else -1)]
        with pytest.raises(ConfigError, match=rf"{where}(\[\d+\])?: must be"):
            load_config(_write(tmp_path, _raw(section, name, value)))


def test_list_lengths_have_upper_bounds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"endpoints\.seeds: must hold at least 2 and at most"):
        load_config(_write(tmp_path, {"endpoints": {"seeds": list(range(1000))}}))
    with pytest.raises(ConfigError, match=r"pam\.objective_ts: must hold at least 1"):
        load_config(_write(tmp_path, {"pam": {"objective_ts": [0.5] * 5000}}))


def test_huge_integer_and_nan_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"eval\.points: must be in \[2, 1001\]"):
        load_config(_write(tmp_path, {"eval": {"points": 10**30}}))
    p = tmp_path / "nan.toml"
    p.write_text("[curves]\nlr_gamma = nan\n")
    with pytest.raises(ConfigError, match=r"curves\.lr_gamma: expected a finite number"):
        load_config(p)


def test_model_kwargs_describing_a_huge_network_are_refused_before_allocating() -> None:
    from neuralign.checks import build_model

    with pytest.raises(ConfigError, match=r"model\.kwargs: 'mlp' .* parameters, more than"):
        build_model("mlp", {"hidden": [10**6, 10**6]})


def test_library_configs_use_the_same_ranges() -> None:
    with pytest.raises(ConfigError, match=r"x\.lr_gamma: must be in \(0, 1\]"):
        CurveTrainConfig(lr_gamma=3.0).validate("x")
    with pytest.raises(ConfigError, match=r"batch_size: must be in \[1, "):
        TrainConfig(batch_size=10**9).validate()
    with pytest.raises(ConfigError, match=r"pam\.bends: must be in \[3, 64\]"):
        PAMConfig(bends=1000).validate("pam")


# ------------------------------------------------------------------ ranges, CLI side


def _options() -> list[tuple[str, click.Option]]:
    out = []
    for name, cmd in sorted(cli.commands.items()):
        for p in cmd.params:
            if isinstance(p, click.Option) and isinstance(
                p.type, (click.IntRange, click.FloatRange)
            ):
                out.append((name, p))
    return out


def test_cli_numeric_options_all_have_ranges_with_upper_bounds_where_costly() -> None:
    """Every numeric option is a range type; the costly ones have an upper bound."""
    numeric_untyped = [
        f"{name} {p.opts[0]}"
        for name, cmd in cli.commands.items()
        for p in cmd.params
        if isinstance(p, click.Option) and p.type in (click.INT, click.FLOAT)
    ]
    assert not numeric_untyped, numeric_untyped
    costly = {
        "--points", "--bends", "--grid", "--epochs", "--batch-size", "--steps", "--bn-subset",
        "--test-subset", "--train-subset", "--p-epochs", "--round-samples", "--outer",
        "--max-rounds", "--lr-gamma", "--eps", "--width", "--seed",
    }  # fmt: skip
    unbounded = [
        f"{n} {p.opts[0]}" for n, p in _options() if p.opts[0] in costly and p.type.max is None
    ]
    assert not unbounded, unbounded


def test_cli_option_ranges_are_the_config_ranges() -> None:
    """No range declared twice: each option's bounds are its dataclass field's."""
    pairs = [
        ("interpolate", "--points", EvalConfig, "points"),
        ("curve", "--bends", PAMConfig, "bends"),
        ("plane", "--grid", EvalConfig, "plane_grid"),
        ("train", "--lr-gamma", TrainConfig, "lr_gamma"),
        ("train", "--epochs", TrainConfig, "epochs"),
        ("curve", "--epochs", CurveTrainConfig, "epochs"),
        ("pam", "--nu", PAMConfig, "nu"),
        ("align", "--steps", RobustConfig, "steps"),
        ("train", "--width", ModelConfig, "width"),
    ]
    for cmd, opt, cls, name in pairs:
        param = next(p for p in cli.commands[cmd].params if opt in p.opts)
        rng = field_range(cls, name)
        assert rng is not None
        assert (param.type.min, param.type.max) == (rng.lo, rng.hi), (cmd, opt)
        assert (param.type.min_open, param.type.max_open) == (rng.lo_open, rng.hi_open)


@pytest.mark.parametrize(
    "argv, option",
    [
        (["interpolate", "a", "b", "--points", "5000"], "--points"),
        (["curve", "a", "b", "--out", "o", "--bends", "100"], "--bends"),
        (["plane", "c", "--grid", "1000"], "--grid"),
        (["train", "--out", "o", "--lr-gamma", "2"], "--lr-gamma"),
        (["train", "--out", "o", "--lr", "nan"], "--lr"),
        (["train", "--out", "o", "--lr", "inf"], "--lr"),
        (["train", "--out", "o", "--seed", "-1"], "--seed"),
        (["train", "--out", "o", "--width", "1e9"], "--width"),
        (["train", "--out", "o", "--adversarial", "--steps", "100000"], "--steps"),
        (["pam", "a", "b", "--out", "o", "--outer", "100000"], "--outer"),
        (["merge", "a", "b", "--out", "m.safetensors", "--max-rounds", "0"], "--max-rounds"),
        (["eval-path", "a", "b", "--out", "p.json", "--batch-size", "99999999"], "--batch-size"),
    ],
)
def test_cli_out_of_range_option_is_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    option: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    one_line_refusal(cli_run(capsys, *argv), f"'{option}'")
    assert list(tmp_path.iterdir()) == []  # nothing written


# ------------------------------------------------------------------ devices


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cuda:-1", "mps:0", "", "cuda:0:1", "gpu"])
def test_malformed_device_names(name: str) -> None:
    with pytest.raises(ConfigError, match="must be cpu, cuda, cuda:N, mps or auto"):
        select_device(name)
    with pytest.raises(ConfigError):
        check_device_name(name)


def test_cuda_without_cuda_and_index_beyond_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"has 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        select_device("cuda:7")
    assert select_device("cuda:1") == torch.device("cuda:1")


def test_mps_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="MPS is not available"):
        select_device("mps")


@pytest.mark.parametrize("device", ["garbage", "cuda:99", "tpu:0"])
def test_cli_device_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, device: str
) -> None:
    """--device is checked at parse time: before the (missing) checkpoint is even looked at."""
    if device == "cuda:99" and torch.cuda.is_available() and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    err = one_line_refusal(
        cli_run(capsys, "eval", tmp_path / "missing.safetensors", "--device", device), "'--device'"
    )
    assert "not found" not in err
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'device = "{device}"\n')
    if device != "cuda:99":
        one_line_refusal(cli_run(capsys, "run", cfg, "--out", tmp_path / "run"), "device: must be")
        assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ special files


def _finishes(fn: Any, timeout: float = 20.0) -> BaseException | None:
    """Run ``fn`` in a thread; fail if it blocks; return what it raised (None: returned)."""
    box: dict[str, BaseException | None] = {"exc": None}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} blocked"
    return box["exc"]


def _readers(path: Path) -> dict[str, tuple[Any, type[NeuralignError]]]:
    from neuralign.curves import Curve
    from neuralign.data import idx
    from neuralign.data.cifar import restricted_load
    from neuralign.io import load_checkpoint, load_model, read_metadata
    from neuralign.paths import PathResult
    from neuralign.paths.plane import PlaneResult
    from neuralign.perm import Permutation, PermutationError, PermutationSpec, SpecError

    return {
        "config": (lambda: load_config(path), ConfigError),
        "checkpoint": (lambda: load_checkpoint(path), CheckpointError),
        "metadata": (lambda: read_metadata(path), CheckpointError),
        "model": (lambda: load_model(path, arch="mlp"), CheckpointError),
        "curve": (lambda: Curve.load(path), CheckpointError),
        "spec": (lambda: PermutationSpec.load(path), SpecError),
        "permutation": (lambda: Permutation.load(path), PermutationError),
        "path": (lambda: PathResult.load(path), CheckpointError),
        "plane": (lambda: PlaneResult.load(path), CheckpointError),
        "idx": (lambda: idx.read_maybe_gzip(path), DataError),
        "cifar pickle": (lambda: restricted_load(path), DataError),
    }


def _special(kind: str, tmp_path: Path, suffix: str) -> Path:
    if kind == "fifo":
        p = tmp_path / f"fifo{suffix}"
        os.mkfifo(p)
        return p
    if kind == "dir":
        p = tmp_path / f"folder{suffix}"
        p.mkdir()
        return p
    link = tmp_path / f"zero{suffix}"  # /dev/zero under the name a reader expects
    link.symlink_to("/dev/zero")
    return link


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX")
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "dir"])
def test_special_files_are_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    failures = []
    for suffix in (".toml", ".safetensors", ".pt", ".json"):
        path = _special(kind, tmp_path, suffix)
        for name, (fn, error) in _readers(path).items():
            exc = _finishes(fn)
            if not isinstance(exc, error):
                failures.append(f"{name} on {path.name}: {exc!r}")
    assert not failures, failures


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX")
def test_cli_refuses_a_fifo_config_and_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fifo = tmp_path / "cfg.toml"
    os.mkfifo(fifo)
    box: dict[str, Any] = {}
    exc = _finishes(lambda: box.update(r=cli_run(capsys, "run", fifo, "--out", tmp_path / "r")))
    assert exc is None
    one_line_refusal(box["r"], "is a FIFO (named pipe), expected a config file")
    ck = tmp_path / "a.safetensors"
    os.mkfifo(ck)
    exc = _finishes(lambda: box.update(r=cli_run(capsys, "eval", ck, "--dataset", "digits")))
    assert exc is None
    one_line_refusal(box["r"], "is a FIFO (named pipe), expected a checkpoint")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ reader parser errors


@pytest.mark.parametrize(
    "text",
    [
        b"\xff\xfe\x00bad utf-8 = 1",
        b"[" * 5000 + b"]" * 5000,
        b"a = " + b"[" * 5000 + b"]" * 5000,
        b"eval = 3",
        b"[eval]\npoints = 1979-05-27T07:32:00Z",
        b"[model]\nkwargs = 5",
        b"[pam]\nobjective_ts = [[0.5]]",
        b"[endpoints]\nseeds = [0, 1.5]",
        b"x" * ((1 << 20) + 1),
    ],
)
def test_config_parser_errors_are_config_errors(tmp_path: Path, text: bytes) -> None:
    p = tmp_path / "c.toml"
    p.write_bytes(text)
    exc = _finishes(lambda: load_config(p))
    assert isinstance(exc, ConfigError), repr(exc)


def test_yaml_without_pyyaml_or_not_a_mapping(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError):
        load_config(p)


@pytest.mark.parametrize(
    "doc",
    [
        "[]",
        '{"format": "neuralign-permutation/1", "perms": 5}',
        '{"format": "neuralign-permutation/1", "perms": {"g": "abc"}}',
        '{"format": "neuralign-permutation/1", "perms": {"g": [0, 0]}}',
        '{"format": "neuralign-permutation/1", "perms": {"g": [true, 1.5]}}',
        "[" * 100000,
    ],
)
def test_permutation_file_structure_errors(tmp_path: Path, doc: str) -> None:
    from neuralign.perm import Permutation, PermutationError
    from neuralign.perm.permutation import _FORMAT

    p = tmp_path / "p.json"
    p.write_text(doc.replace("neuralign-permutation/1", _FORMAT))
    with pytest.raises(PermutationError):
        Permutation.load(p)


@pytest.mark.parametrize(
    "doc",
    [
        "[]",
        '{"ts": 1}',
        '{"ts": [0, 1], "test_loss": [1, 2]}',
        '{"ts": "ab", "test_loss": 3, "test_acc": {}}',
        "\x00",
        "[" * 100000,
    ],
)
def test_path_json_structure_errors(tmp_path: Path, doc: str) -> None:
    from neuralign.paths import PathResult

    p = tmp_path / "path.json"
    p.write_text(doc)
    with pytest.raises(CheckpointError, match="not a PathResult JSON file"):
        PathResult.load(p)


def test_plot_on_a_malformed_path_json_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "path.json"
    p.write_text('{"ts": [0, 1]}')
    one_line_refusal(cli_run(capsys, "plot", p, "--out", tmp_path / "f.png"), "not a PathResult")
    assert not (tmp_path / "f.png").exists()


def test_curve_with_a_corrupt_header(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from neuralign.curves import Curve

    for header in ("not json", "[1, 2]", json.dumps({"format": "x"})):
        p = tmp_path / "curve.safetensors"
        save_file({"a": torch.zeros(1)}, str(p), metadata={"neuralign": header})
        with pytest.raises(CheckpointError):
            Curve.load(p)


def test_checkpoint_reader_still_reads_a_regular_file(tmp_path: Path) -> None:
    """The special-file guard does not refuse the ordinary case (through a symlink too)."""
    from neuralign.io import load_checkpoint, save_checkpoint

    p = save_checkpoint(tmp_path / "a.safetensors", tiny_mlp())
    link = tmp_path / "link.safetensors"
    link.symlink_to(p)
    state, _ = load_checkpoint(link)
    assert state.keys() == tiny_mlp().state_dict().keys()
