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
    kw: dict[str, Any] = {
        "type": option_type(cls, name),
        "default": default(cls, name),
        "show_default": True,
    }
    kw.update(extra)
    return click.option("--" + name.replace("_", "-"), **kw)


_DATASET_OPTS = [
    click.option(
        "--dataset",
        "dataset",
        default=default(DataConfig, "dataset"),
        show_default=True,
        help="Dataset name (see `neuralign datasets`).",
    ),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Folder holding the dataset files (default: the dataset's standard place).",
    ),
    click.option(
        "--download/--no-download",
        default=default(DataConfig, "download"),
        show_default=True,
        help="Download the dataset (with checksum verification) if it is missing.",
    ),
]


def dataset_options(f: Any) -> Any:
    """Attach --dataset/--data-dir/--download; the command takes ``data: DataSource``."""
    f = grouped("data", ["dataset", "data_dir", "download"], DataSource)(f)
    return _attach(f, _DATASET_OPTS)


def device_option(f: Any) -> Any:
    """Attach --device."""
    return click.option(
        "--device",
        default=default(ExperimentConfig, "device"),
        show_default=True,
        callback=device_check,
        help="cpu, cuda, cuda:N, mps or auto.",
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
        click.option(
            "--eps",
            type=option_type(RobustConfig, "eps"),
            default=default(RobustConfig, "eps"),
            show_default="8/255",
            help="PGD radius (L∞, [0, 1] pixel units).",
        ),
        click.option(
            "--alpha",
            type=option_type(RobustConfig, "alpha"),
            default=default(RobustConfig, "alpha"),
            show_default="2/255",
            help="PGD step size.",
        ),
        click.option(
            "--steps",
            type=option_type(RobustConfig, "steps"),
            default=default(RobustConfig, "steps"),
            show_default=True,
            help="PGD steps.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def path_options(f: Any) -> Any:
    """Attach --points/--bn-mode/--bn-subset/--test-subset/--batch-size (path evaluation).

    The command takes ``path: PathArgs``.
    """
    f = grouped("path", ["points", "bn_mode", "bn_subset", "test_subset", "batch_size"], PathArgs)(
        f
    )
    opts = [
        click.option(
            "--points",
            type=option_type(EvalConfig, "points"),
            default=default(EvalConfig, "points"),
            show_default=True,
            help="Equally spaced values of t in [0, 1].",
        ),
        click.option(
            "--bn-mode",
            type=click.Choice(list(BN_MODES)),
            default=default(EvalConfig, "bn_mode"),
            show_default=True,
            help="BatchNorm statistics at each t: recomputed on a class-balanced "
            "training subset, on the full augmented training set, or not at all.",
        ),
        click.option(
            "--bn-subset",
            type=option_type(EvalConfig, "bn_subset"),
            default=default(EvalConfig, "bn_subset"),
            show_default=True,
            help="Images of the BN subset (train-subset mode).",
        ),
        click.option(
            "--test-subset",
            type=option_type(DataConfig, "test_subset"),
            default=default(DataConfig, "test_subset"),
            show_default=True,
            help="Evaluate on a class-balanced test subset of this size (0 = all).",
        ),
        sgd_option(EvalConfig, "batch_size"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


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
        click.option(
            "--schedule",
            type=click.Choice(["step", "cosine", "constant"]),
            default=default(CurveTrainConfig, "schedule"),
            show_default=True,
        ),
        sgd_option(CurveTrainConfig, "lr_step"),
        sgd_option(CurveTrainConfig, "lr_gamma"),
        click.option(
            "--augment/--no-augment", default=default(DataConfig, "augment"), show_default=True
        ),
        click.option(
            "--train-subset",
            type=option_type(DataConfig, "train_subset"),
            default=None,
            help="Train on a class-balanced subset of this many images.",
        ),
        sgd_option(ExperimentConfig, "seed"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def json_option(f: Any) -> Any:
    """Attach --json: print the command's results as one JSON object instead of text."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        default=False,
        help="Print the results as one JSON object on standard output (instead of text).",
    )(f)
