"""Property-based tests over the config schema and the CLI options (issue 19, "Done when").

* Config: random values of random types (and boundary values of every declared range) for
  random fields of the whole schema, written as TOML: :func:`load_config` either returns a
  config whose every ranged field is inside its range, or raises :class:`ConfigError`;
  never another exception, never a hang.
* CLI: random values for random options of the commands; the input files do not exist,
  so no command gets past validation into real work: the answer is exit 0 (help) or 2
  with a one-line ``error:`` message, never a traceback.

Default budget: ``NEURALIGN_FUZZ_EXAMPLES`` examples (40) per target, a few seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import typing
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rel_testlib import FUZZ_EXAMPLES

from neuralign.cli import cli
from neuralign.cli.app import main
from neuralign.errors import ConfigError
from neuralign.experiment import ExperimentConfig, load_config
from neuralign.experiment.config import PAM_FROM_ELSEWHERE, dump_toml
from neuralign.ranges import Range

PROP = settings(
    max_examples=max(FUZZ_EXAMPLES, 60),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

_SECTIONS = {
    f.name: f.type
    for f in dataclasses.fields(ExperimentConfig)
    if dataclasses.is_dataclass(typing.get_type_hints(ExperimentConfig)[f.name])
}
_HINTS = typing.get_type_hints(ExperimentConfig)


def _fields(cls: Any) -> list[tuple[str, Any, Range | None]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f.metadata.get("range")) for f in dataclasses.fields(cls)]


#: Every field of the schema: ``(table, name, type, range)`` (table "" = the top level).
SCHEMA: list[tuple[str, str, Any, Range | None]] = [
    ("", n, t, r) for n, t, r in _fields(ExperimentConfig) if not dataclasses.is_dataclass(t)
] + [
    (sec, n, t, r)
    for sec in _SECTIONS
    for n, t, r in _fields(_HINTS[sec])
    if not (sec == "pam" and n in PAM_FROM_ELSEWHERE)
]

_ANY_SCALAR = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
)
_ANY = st.recursive(
    _ANY_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _boundary(rng: Range | None, is_int: bool) -> st.SearchStrategy[Any]:
    """Values at and around the declared bounds (the likeliest to slip through)."""
    points: list[float] = [0, 1, -1]
    for b in (rng.lo, rng.hi) if rng else ():
        if b is not None:
            points += [b, b - 1, b + 1, b * 10 + 1, b / 2]
    if is_int:
        return st.sampled_from(sorted({int(p) for p in points if math.isfinite(p)}))
    return st.sampled_from(sorted(set(points)) + [1e308, -1e308, 5e-324])


@st.composite
def field_value(draw: st.DrawFn, tp: Any, rng: Range | None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        size = draw(st.sampled_from([0, 1, 2, 3, 70, 1200]))
        item = _boundary(rng, inner is int) if draw(st.booleans()) else _ANY_SCALAR
        return draw(st.lists(item, min_size=min(size, 3), max_size=size))
    if tp in (int, float):
        return draw(st.one_of(_boundary(rng, tp is int), _ANY))
    return draw(_ANY)


@st.composite
def config_doc(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    picks = draw(st.lists(st.sampled_from(SCHEMA), min_size=1, max_size=6, unique=True))
    for sec, name, tp, rng in picks:
        value = draw(field_value(tp, rng))
        (doc.setdefault(sec, {}) if sec else doc)[name] = value
    if draw(st.integers(0, 9)) == 0:  # an unknown field or a table where a value goes
        doc[draw(st.sampled_from(["nosuch", "eval", "seed"]))] = draw(_ANY)
    return doc


def _in_range(cfg: ExperimentConfig) -> list[str]:
    """Ranged fields of a loaded config that lie outside their range (must be none)."""
    bad = []
    for sec, name, _tp, rng in SCHEMA:
        if rng is None:
            continue
        value = getattr(getattr(cfg, sec) if sec else cfg, name)
        try:
            rng.check(value, f"{sec}.{name}")
        except ConfigError as exc:
            bad.append(str(exc))
    return bad


@PROP
@given(doc=config_doc())
def test_load_config_returns_or_raises_config_error(
    tmp_path_factory: Any, doc: dict[str, Any]
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    try:
        path.write_text(dump_toml(doc), encoding="utf-8", errors="surrogatepass")
    except TypeError:
        return  # a value dump_toml cannot write (e.g. nested tables): nothing to test
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert str(exc)  # a message naming the field or the file
        return
    assert not _in_range(cfg), _in_range(cfg)


# ------------------------------------------------------------------ the CLI

#: Commands whose inputs are missing files: option values are all that is exercised.
COMMANDS: dict[str, list[str]] = {
    "train": ["--dataset", "no-such-dataset", "--out", "{tmp}/train"],
    "eval": ["{tmp}/missing.safetensors"],
    "curve": ["{tmp}/a.safetensors", "{tmp}/b.safetensors", "--out", "{tmp}/curve"],
    "pam": ["{tmp}/a.safetensors", "{tmp}/b.safetensors", "--out", "{tmp}/pam"],
    "align": ["{tmp}/a.safetensors", "{tmp}/b.safetensors", "--out", "{tmp}/al.safetensors"],
    "interpolate": ["{tmp}/a.safetensors", "{tmp}/b.safetensors"],
    "eval-path": ["{tmp}/a.safetensors", "{tmp}/b.safetensors", "--out", "{tmp}/p.json"],
    "plane": ["{tmp}/nocurve"],
    "merge": ["{tmp}/a.safetensors", "{tmp}/b.safetensors", "--out", "{tmp}/m.safetensors"],
    "run": ["{tmp}/missing.toml", "--out", "{tmp}/run"],
}
_SKIP = {"--out", "--dataset", "--data-dir", "--help", "--arch", "--plot"}


def _value_options(command: str) -> list[click.Option]:
    return [
        p
        for p in cli.commands[command].params
        if isinstance(p, click.Option) and not p.is_flag and p.opts[0] not in _SKIP
    ]


_OPTION_TEXT = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-inf", "1e999", "0x10", "", " ", "cuda:7", "cuda", "mps", "cpu:0"]),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=10,
    ),
)


@st.composite
def cli_argv(draw: st.DrawFn) -> tuple[str, list[str]]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    opts = _value_options(command)
    argv = [command, *COMMANDS[command]]
    for opt in draw(st.lists(st.sampled_from(opts), max_size=4, unique_by=lambda o: o.name)):
        if isinstance(opt.type, click.Choice) and draw(st.booleans()):
            value = draw(st.sampled_from(list(opt.type.choices)))
        else:
            value = draw(_OPTION_TEXT)
        argv += [opt.opts[0], str(value)]
    return command, argv


@PROP
@given(case=cli_argv())
def test_cli_random_options_exit_0_or_2_with_one_line(
    tmp_path_factory: Any, case: tuple[str, list[str]]
) -> None:
    tmp = tmp_path_factory.mktemp("cli")
    _command, argv = case
    argv = [a.replace("{tmp}", str(tmp)) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    text = err.getvalue().strip()
    assert "Traceback" not in text, text
    assert rc in (0, 2), (rc, argv, text)
    if rc == 2:
        lines = [ln for ln in text.splitlines() if ln.startswith("error: ")]
        assert len(lines) == 1, (argv, text)
    written = sorted(p.name for p in Path(tmp).rglob("*"))
    assert written == [], (argv, written)  # refused before anything was written


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_of_the_property_test_has_value_options(command: str) -> None:
    assert command in cli.commands
    assert _value_options(command) or command == "run"
