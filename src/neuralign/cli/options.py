"""Click option groups shared by several commands, each declared once.

Defaults are never written here: each option reads its default from the library's config
dataclass that the command fills (:func:`default`), so a default exists in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from collections.abc import Callable, Sequence
from typing import Any

import click

from neuralign.cli.common import DataSource, PathArgs, TrainArgs
from neuralign.curves import CurveTrainConfig
from neuralign.data import BN_MODES
from neuralign.experiment import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    RobustConfig,
)
from neuralign.pamopt import PAMConfig
from neuralign.ranges import Range, field_range


def default(cls: Any, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``cls`` (also a ``default_factory``'s)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            break
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default")


class _Finite(click.FloatRange):
    """A float range that also refuses NaN and ±inf (click's FloatRange lets them through)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def range_type(rng: Range | None, integer: bool) -> click.ParamType:
    """The click type of a :class:`~neuralign.ranges.Range` (ints or finite floats)."""
    rng = rng or Range()
    kw: dict[str, Any] = {"min": rng.lo, "max": rng.hi}
    kw.update(min_open=rng.lo_open, max_open=rng.hi_open)
    if integer:
        kw["min"] = None if rng.lo is None else int(rng.lo)
        kw["max"] = None if rng.hi is None else int(rng.hi)
        return click.IntRange(**kw)
    return _Finite(**kw)


def option_type(cls: Any, name: str) -> click.ParamType:
    """The click type of field ``name`` of the config dataclass ``cls``: its declared range
    (neuralign.ranges, one place for every range), as an int or finite-float range."""
    hint = typing.get_type_hints(cls)[name]
    return range_type(field_range(cls, name), hint is int)


def device_check(ctx: Any, param: Any, value: str | None) -> str | None:
    """Click callback: refuse a device that is misspelled or absent here, before any work."""
    if value is None:
        return None
    from neuralign.device import select_device
    from neuralign.errors import ConfigError

    try:
        select_device(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("device: "), ctx, param) from None
    return value


def param_default(func: Callable[..., Any], name: str) -> Any:
    """The default of parameter ``name`` of the library function ``func``."""
    value = inspect.signature(func).parameters[name].default
    if value is inspect.Parameter.empty:
        raise KeyError(f"{func.__name__}() has no default for {name!r}")
    return value


def field_option(
    cls: Any, name: str, type: Any = None, help: str | None = None, *decls: str, **kw: Any
) -> Callable[[Any], Any]:
    """Option ``--name`` (or ``decls``) whose default is field ``name`` of the dataclass
    ``cls``, shown in ``--help``."""
    return _defaulted(name, default(cls, name), type, help, decls, kw)


def param_option(
    func: Callable[..., Any],
    name: str,
    type: Any = None,
    help: str | None = None,
    *decls: str,
    **kw: Any,
) -> Callable[[Any], Any]:
    """Option ``--name`` (or ``decls``) whose default is parameter ``name`` of the library
    function ``func``, shown in ``--help``."""
    return _defaulted(name, param_default(func, name), type, help, decls, kw)


def _defaulted(
    name: str, value: Any, type: Any, help: str | None, decls: Sequence[str], kw: dict[str, Any]
) -> Callable[[Any], Any]:
    kw.setdefault("show_default", True)
    if type is not None:
        kw["type"] = type
    flags = decls or ("--" + name.replace("_", "-"),)
    return click.option(*flags, default=value, help=help, **kw)


def grouped(param: str, names: Sequence[str], build: Callable[..., Any] = dict) -> Any:
    """Pass the parsed options ``names`` to the command as one argument ``build(**values)``.

    Put it anywhere in a command's decorator stack: it wraps the callback, so the command
    takes ``param`` instead of the loose options.
    """

    def deco(f: Any) -> Any:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[param] = build(**{n: kwargs.pop(n) for n in names})
            return f(*args, **kwargs)

        return wrapper

    return deco


def _attach(f: Any, opts: Sequence[Callable[[Any], Any]]) -> Any:
    for opt in reversed(opts):
        f = opt(f)
    return f


def sgd_option(cls: Any, name: str, **extra: Any) -> Callable[[Any], Any]:
    """One SGD hyper-parameter option (``--lr``, ``--momentum``, ...) with ``cls``'s default."""
    extra.setdefault("help", None)
    return field_option(cls, name, option_type(cls, name), extra.pop("help"), **extra)


_DATASET_OPTS = [
    field_option(
        DataConfig, "dataset", None, "Dataset name (see `neuralign datasets`).", "--dataset"
    ),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Folder holding the dataset files (default: the dataset's standard place).",
    ),
    field_option(
        DataConfig,
        "download",
        None,
        "Download the dataset (with checksum verification) if it is missing.",
        "--download/--no-download",
    ),
]


def dataset_options(f: Any) -> Any:
    """Attach --dataset/--data-dir/--download; the command takes ``data: DataSource``."""
    f = grouped("data", ["dataset", "data_dir", "download"], DataSource)(f)
    return _attach(f, _DATASET_OPTS)


def device_option(f: Any) -> Any:
    """Attach --device."""
    return field_option(
        ExperimentConfig, "device", None, "cpu, cuda, cuda:N, mps or auto.", callback=device_check
    )(f)


def progress_option(f: Any) -> Any:
    """Attach --progress/--no-progress."""
    return click.option(
        "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
    )(f)


def attack_options(f: Any) -> Any:
    """Attach --eps/--alpha/--steps (the L∞ PGD attack, docs/robustness.md; CIFAR defaults).

    The command takes ``attack``: the keyword arguments of :class:`neuralign.attacks.PGD`.
    """
    f = grouped("attack", ["eps", "alpha", "steps"])(f)
    opts = [
        field_option(RobustConfig, "eps", option_type(RobustConfig, "eps"), "PGD radius (L∞, [0, 1] pixel units).",
                     show_default="8/255"),
        field_option(RobustConfig, "alpha", option_type(RobustConfig, "alpha"), "PGD step size.", show_default="2/255"),
        field_option(RobustConfig, "steps", option_type(RobustConfig, "steps"), "PGD steps."),
    ]  # fmt: skip
    return _attach(f, opts)


def path_options(f: Any) -> Any:
    """Attach --points/--bn-mode/--bn-subset/--test-subset/--batch-size (path evaluation).

    The command takes ``path: PathArgs``.
    """
    f = grouped("path", ["points", "bn_mode", "bn_subset", "test_subset", "batch_size"], PathArgs)(
        f
    )
    opts = [
        field_option(EvalConfig, "points", option_type(EvalConfig, "points"),
                     "Equally spaced values of t in [0, 1]."),
        bn_options("BatchNorm statistics at each t: recomputed on a class-balanced "
                    "training subset, on the full augmented training set, or not at all."),
        field_option(DataConfig, "test_subset", option_type(DataConfig, "test_subset"),
                     "Evaluate on a class-balanced test subset of this size (0 = all)."),
        sgd_option(EvalConfig, "batch_size"),
    ]  # fmt: skip
    return _attach(f, opts)


def bn_options(mode_help: str) -> Callable[[Any], Any]:
    """Attach --bn-mode and --bn-subset (BatchNorm statistics along a path or plane; defaults
    from :class:`~neuralign.experiment.EvalConfig`)."""
    opts = [
        field_option(EvalConfig, "bn_mode", click.Choice(list(BN_MODES)), mode_help),
        field_option(EvalConfig, "bn_subset", option_type(EvalConfig, "bn_subset"),
                     "Images of the BN subset (train-subset mode)."),
    ]  # fmt: skip
    return lambda f: _attach(f, opts)


def pair_options(f: Any) -> Any:
    """The prologue of the commands on a pair of checkpoints: arguments MODEL_A MODEL_B and
    the dataset options (the command takes ``model_a``, ``model_b`` and ``data``)."""
    f = dataset_options(f)
    f = click.argument("model_b", type=click.Path())(f)
    return click.argument("model_a", type=click.Path())(f)


def curve_sgd_options(f: Any) -> Any:
    """Attach the curve-training SGD options shared by `curve` and `pam` (Tatro et al. 2020,
    Sec. 3; defaults from the curve-training config).

    The command takes ``training`` (the curve-training hyper-parameters) and
    ``loader: TrainArgs``.
    """
    f = grouped("training", ["lr", "momentum", "weight_decay", "schedule", "lr_step", "lr_gamma"])(
        f
    )
    f = grouped("loader", ["batch_size", "augment", "train_subset", "seed"], TrainArgs)(f)
    opts = [
        sgd_option(DataConfig, "batch_size"),
        sgd_option(CurveTrainConfig, "lr"),
        sgd_option(CurveTrainConfig, "momentum"),
        sgd_option(CurveTrainConfig, "weight_decay"),
        field_option(CurveTrainConfig, "schedule", click.Choice(["step", "cosine", "constant"])),
        sgd_option(CurveTrainConfig, "lr_step"),
        sgd_option(CurveTrainConfig, "lr_gamma"),
        field_option(DataConfig, "augment", None, None, "--augment/--no-augment"),
        click.option(
            "--train-subset",
            type=option_type(DataConfig, "train_subset"),
            default=None,
            help="Train on a class-balanced subset of this many images.",
        ),
        sgd_option(ExperimentConfig, "seed"),
    ]
    return _attach(f, opts)


def out_option(
    help: str, *, folder: bool = False, required: bool = False, dest: str | None = None
) -> Callable[[Any], Any]:
    """--out: where the command writes (a folder or a file); ``dest`` renames the parameter."""
    decls = ("--out",) if dest is None else ("--out", dest)
    kind = click.Path(file_okay=False) if folder else click.Path(dir_okay=False)
    return click.option(*decls, type=kind, default=None, required=required, help=help)


def bends_option(help: str) -> Callable[[Any], Any]:
    """--bends: control points of the curve including the endpoints."""
    return field_option(PAMConfig, "bends", option_type(PAMConfig, "bends"), help)


def json_option(f: Any) -> Any:
    """Attach --json: print the command's results as one JSON object instead of text."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        default=False,
        help="Print the results as one JSON object on standard output (instead of text).",
    )(f)
