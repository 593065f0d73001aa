"""The CLI package's structure: defaults read from the library's dataclasses, option groups."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from neuralign.cli import cli, curve_cmd, pam_cmd, train_cmd
from neuralign.cli.options import default, grouped, param_default
from neuralign.curves import CurveTrainConfig
from neuralign.pamopt import PAMConfig
from neuralign.training import TrainConfig

CLI_DIR = Path(__file__).resolve().parents[2] / "src" / "neuralign" / "cli"


def _literal_number(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp):
        return _literal_number(node.operand)
    if isinstance(node, ast.BinOp):  # e.g. 8 / 255
        return _literal_number(node.left) and _literal_number(node.right)
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    )


def test_no_numeric_default_is_written_in_the_cli() -> None:
    """A number as an option default would be a second place for a library default."""
    found = []
    for f in sorted(CLI_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "default" and _literal_number(kw.value):
                        found.append(f"{f.name}:{node.lineno}")
    assert found == []


def _defaults(cmd: click.Command) -> dict[str, object]:
    return {p.name: p.default for p in cmd.params if p.name}


@pytest.mark.parametrize(
    ("cmd", "cls", "fields"),
    [
        (train_cmd, TrainConfig, ["epochs", "batch_size", "lr", "momentum", "weight_decay",
                                  "lr_step", "lr_gamma", "augment", "seed"]),
        (curve_cmd, CurveTrainConfig, ["epochs", "lr", "momentum", "weight_decay", "schedule",
                                       "lr_step", "lr_gamma"]),
        (pam_cmd, PAMConfig, ["outer_iterations", "p_epochs", "nu", "projection",
                              "round_samples", "bends"]),
    ],
)  # fmt: skip
def test_command_defaults_are_the_dataclass_defaults(
    cmd: click.Command, cls: type, fields: list[str]
) -> None:
    got = _defaults(cmd)
    want = {f.name: f.default for f in dataclasses.fields(cls)}
    assert {f: got[f] for f in fields} == {f: want[f] for f in fields}


def test_pam_curve_steps_default_to_curve_training_defaults() -> None:
    got = _defaults(pam_cmd)
    c = CurveTrainConfig()
    assert (got["epochs"], got["lr"], got["schedule"]) == (c.epochs, c.lr, c.schedule)


def test_default_reads_factories_and_refuses_unknown_fields() -> None:
    assert default(PAMConfig, "curve") == CurveTrainConfig()  # a default_factory
    with pytest.raises(KeyError):
        default(PAMConfig, "no_such_field")

    def f(a: int, b: str = "x") -> None: ...

    assert param_default(f, "b") == "x"
    with pytest.raises(KeyError):
        param_default(f, "a")


def test_grouped_passes_the_options_as_one_argument() -> None:
    @dataclasses.dataclass(frozen=True)
    class Pair:
        x: int
        y: str

    seen = []

    @click.command()
    @grouped("pair", ["x", "y"], Pair)
    @click.option("--x", type=int, default=1)
    @click.option("--y", default="a")
    @click.option("--z", type=int, default=0)
    def toy(pair: Pair, z: int) -> None:
        seen.append((pair, z))

    res = CliRunner().invoke(toy, ["--x", "5", "--z", "2"])
    assert res.exit_code == 0, res.output
    assert seen == [(Pair(5, "a"), 2)]


def test_every_command_is_registered() -> None:
    """Importing the package registers each family module's commands (more may be added)."""
    assert set(cli.commands) >= set(
        ["align", "curve", "datasets", "eval", "eval-path", "interpolate", "models", "pam",
         "plot", "report", "run", "spec", "train"]
    )  # fmt: skip
