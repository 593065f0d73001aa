"""Experiment configuration: one TOML (or YAML) file describes a whole experiment.

Every field has a default and a comment; :func:`load_config` validates names, types and
ranges and names the offending field in its error (``curves.bends: must be >= 2, got 1``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuralign.alignment import align
from neuralign.curves import curve_families
from neuralign.curves.config import CurveTrainConfig
from neuralign.errors import ConfigError
from neuralign.optim.schedules import SCHEDULES
from neuralign.pamopt.config import PAMConfig
from neuralign.paths import evaluate_path
from neuralign.ranges import (
    MAX_BATCH,
    MAX_BENDS,
    MAX_EPOCHS,
    MAX_IMAGES,
    MAX_SEED,
    check_ranges,
    ranged,
)
from neuralign.training import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Upper bounds of the experiment's own fields where time or memory grows with the value
#: (docs/reliability.md, "Ranges"): endpoints trained, points per path, plane grid points
#: per side, PGD steps.
MAX_SEEDS = 64
MAX_POINTS = 1001
MAX_GRID = 201
MAX_PGD_STEPS = 1000
#: A config is a few kilobytes; a larger file is the wrong file (read whole, so bounded).
MAX_CONFIG_BYTES = 1 << 20

# Defaults that the library already declares are read from it, never written twice.
_TRAIN = TrainConfig()


def _arg_default(func: Any, name: str) -> Any:
    return inspect.signature(func).parameters[name].default


@dataclass
class DataConfig:
    """Which data, and how much of it."""

    dataset: str = "fashion-mnist"  # registry name (see `neuralign datasets`)
    data_dir: str = ""  # folder with the dataset files ("" = the dataset's standard place)
    download: bool = False  # download (checksum-verified) when missing
    train_subset: int = ranged(
        0, 0, MAX_IMAGES
    )  # class-balanced training subset size; 0 = the full training set
    test_subset: int = ranged(
        0, 0, MAX_IMAGES
    )  # class-balanced test subset size; 0 = the full test set
    augment: bool = _TRAIN.augment  # crop/flip/rotation augmentation (endpoints and curves)
    batch_size: int = ranged(
        _TRAIN.batch_size, 1, MAX_BATCH
    )  # minibatch size of endpoint and curve training


@dataclass
class ModelConfig:
    """The architecture of both endpoints."""

    arch: str = "tinyten"  # registry name (see `neuralign models`)
    width: float = ranged(
        0.0, 0, 64
    )  # width multiplier for models that have one; 0 = the model's default
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra create_model arguments


@dataclass
class EndpointConfig:
    """Endpoint training (docs/method.md, Endpoint training): SGD with momentum, lr × gamma every lr_step epochs."""

    seeds: list[int] = ranged(
        default_factory=lambda: [0, 1], lo=0, hi=MAX_SEED, min_items=2, max_items=MAX_SEEDS
    )  # consecutive seeds form pairs
    epochs: int = ranged(_TRAIN.epochs, 1, MAX_EPOCHS)  # training epochs per endpoint
    lr: float = ranged(_TRAIN.lr, 0, lo_open=True)  # initial learning rate
    momentum: float = ranged(_TRAIN.momentum, 0, 1, hi_open=True)  # SGD momentum
    weight_decay: float = ranged(_TRAIN.weight_decay, 0, 1)  # L2 weight decay
    schedule: str = _TRAIN.schedule  # step | cosine | constant | robust
    lr_step: int = ranged(_TRAIN.lr_step, 1, MAX_EPOCHS)  # epochs between step decays
    lr_gamma: float = ranged(_TRAIN.lr_gamma, 0, 1, lo_open=True)  # step decay factor


@dataclass
class AlignConfig:
    """Alignment data (Tatro et al. 2020; docs/method.md, Alignment)."""

    subset_fraction: float = ranged(
        _arg_default(align, "subset_fraction"), 0, 1, lo_open=True
    )  # of the train set (paper: 20%)
    subset_size: int = ranged(
        0, 0, MAX_IMAGES
    )  # if > 0: this many images instead of subset_fraction
    pre_activation: bool = _arg_default(align, "pre_activation")  # pre-activations (ablation)
    batch_size: int = ranged(
        _arg_default(align, "batch_size"), 1, MAX_BATCH
    )  # batch size of the statistics pass


@dataclass(frozen=True)
class CurveConfig(CurveTrainConfig):
    """Which paths to build; curve training is :class:`~neuralign.curves.CurveTrainConfig`'s
    fields (epochs, lr, momentum, nesterov, weight_decay, schedule, lr_step, lr_gamma,
    aux_weight), with its defaults (the paper's)."""

    kinds: list[str] = field(default_factory=lambda: ["line", "bezier"])  # line|bezier|polychain
    variants: list[str] = field(
        default_factory=lambda: ["unaligned", "correlation"]
    )  # unaligned | correlation | weight | pam-unaligned | pam-aligned (see [pam])
    bends: int = ranged(
        PAMConfig.bends, 3, MAX_BENDS
    )  # control points incl. endpoints (3 = quadratic Bezier)

    @property
    def training(self) -> CurveTrainConfig:
        """The curve-training settings, as :func:`~neuralign.curves.train_curve` takes them."""
        return CurveTrainConfig.of(self)


@dataclass
class EvalConfig:
    """Evaluation along paths (docs/method.md, Evaluating a path)."""

    points: int = ranged(
        _arg_default(evaluate_path, "ts"), 2, MAX_POINTS
    )  # equally spaced t in [0, 1]
    bn_mode: str = _arg_default(
        evaluate_path, "bn_mode"
    )  # train-subset | train-full-augmented | none
    bn_subset: int = ranged(
        5000, 1, MAX_IMAGES
    )  # images of the class-balanced BN subset (train-subset mode)
    train_metrics: bool = False  # also measure training loss/accuracy at every t
    plane: bool = True  # evaluate the plane through θ₁, P∘θ₂ and the Bezier midpoint
    plane_grid: int = ranged(
        21, 3, MAX_GRID
    )  # grid points per side of the plane figure (as Garipov et al. 2018)
    plane_test_subset: int = ranged(
        2000, 0, MAX_IMAGES
    )  # class-balanced test images per plane grid point (0 = all)
    batch_size: int = ranged(
        256, 1, MAX_BATCH
    )  # evaluation batch size (small batches are faster on CPU caches)


@dataclass
class RobustConfig:
    """Adversarial robustness along paths (Tatro et al. 2020; docs/method.md, Robustness)."""

    enabled: bool = False  # robust endpoints, robust curves and clean+robust path evaluation
    eps: float = ranged(
        8 / 255, 0, 1, hi_open=True
    )  # L∞ PGD radius in [0, 1] pixel units (CIFAR 8/255, TinyImageNet 4/255)
    alpha: float = ranged(2 / 255, 0, 1)  # PGD step size
    steps: int = ranged(5, 0, MAX_PGD_STEPS)  # PGD steps (training and evaluation)
    bn_source: str = "adversarial"  # adversarial | clean: inputs of the per-t BN recomputation
    train_mode: str = (
        "train"  # train | eval | batch-stats: model mode when PGD crafts training data
    )
    schedule: str = "robust"  # lr schedule of robust endpoints and curves ("" = their own)
    align_on: str = "clean"  # clean | adversarial: alignment data (PGD crafted against A)
    test_subset: int = ranged(
        0, 0, MAX_IMAGES
    )  # class-balanced test images for the robust series (0 = eval's)
    # The robust track: with enabled = false, robust rows for the first `pairs` pairs, run
    # as a robust sub-experiment in <run>/robust/ (see robust_track_config).
    pairs: int = ranged(0, 0, MAX_SEEDS // 2)  # pairs of the robust track (0 = no track)
    variants: list[str] = field(
        default_factory=lambda: ["unaligned", "correlation"]
    )  # variants of the robust track (unaligned, correlation, weight)
    train_subset: int = ranged(
        0, 0, MAX_IMAGES
    )  # robust track: class-balanced training images (0 = data.train_subset)
    endpoint_epochs: int = ranged(
        0, 0, MAX_EPOCHS
    )  # robust track: epochs per robust endpoint (0 = endpoints.epochs)
    curve_epochs: int = ranged(
        0, 0, MAX_EPOCHS
    )  # robust track: epochs per robust curve (0 = curves.epochs)
    points: int = ranged(0, 0, MAX_POINTS)  # robust track: points per path (0 = eval.points)


#: Variants a robust track can hold (PAM has no adversarial P-step).
ROBUST_TRACK_VARIANTS = ("unaligned", "correlation", "weight")


#: Fields of :class:`~neuralign.pamopt.PAMConfig` an experiment takes from elsewhere: the
#: curve steps and ``bends`` from ``[curves]``, ``seed`` from the top level.
PAM_FROM_ELSEWHERE = ("curve", "bends", "seed")


@dataclass
class ExperimentConfig:
    """A whole experiment: endpoints → alignment → curves → paths → report."""

    name: str = "experiment"  # shown in the report; default run folder runs/<name> (plain name)
    device: str = "auto"  # cpu | cuda | cuda:N | mps | auto
    seed: int = ranged(0, 0, MAX_SEED)  # seed of subsets, curve t-sampling and weight matching
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    endpoints: EndpointConfig = field(default_factory=EndpointConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    curves: CurveConfig = field(default_factory=CurveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pam: PAMConfig = field(default_factory=PAMConfig)  # [pam]: see PAM_FROM_ELSEWHERE
    robust: RobustConfig = field(default_factory=RobustConfig)

    def __post_init__(self) -> None:
        # One source for every setting: PAM's curve steps are the [curves] ones.
        self.pam = dataclasses.replace(
            self.pam,
            curve=self.curves.training,
            bends=self.curves.bends,
            seed=self.seed,
        )

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Endpoint pairs: consecutive seeds ``(s0, s1), (s2, s3), ...``."""
        s = self.endpoints.seeds
        return [(s[i], s[i + 1]) for i in range(0, len(s) - 1, 2)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON/TOML serialisable)."""
        d = dataclasses.asdict(self)
        d["pam"] = {k: v for k, v in self.pam.to_dict().items() if k not in PAM_FROM_ELSEWHERE}
        return d

    def to_toml(self) -> str:
        """TOML text that :func:`parse_config` reads back to an equal config."""
        return dump_toml(self.to_dict())

    def fingerprint(self) -> str:
        """Canonical JSON of the fields that change results (used to guard run folders)."""
        d = self.to_dict()
        d.pop("name", None)
        d.pop("device", None)
        return json.dumps(d, sort_keys=True)


KINDS = curve_families()  # line, bezier, polychain and any registered curve family
VARIANTS = ("unaligned", "correlation", "weight", "pam-unaligned", "pam-aligned")
PAM_VARIANTS = ("pam-unaligned", "pam-aligned")
BN_MODES = ("train-subset", "train-full-augmented", "none")


def _check_type(path: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_type(path, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {tp}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_check_type(f"{path}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_check_type(f"{path}[{i}]", v, inner) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    return value


def _build(cls: Any, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(f"{path}: unknown field; known fields: {', '.join(names)}")
        kwargs[key] = _check_type(path, value, hints[key])
    return cls(**kwargs)


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check ranges and choices; raise :class:`ConfigError` naming the first bad field."""
    from neuralign.data import is_dataset, list_datasets
    from neuralign.device import check_device_name
    from neuralign.io.outputs import safe_component
    from neuralign.models import is_reference, list_models

    # the default run folder is runs/<name>: one plain path component (docs/reliability.md)
    safe_component(cfg.name, "name")
    check_ranges(cfg)
    for where in ("data", "model", "endpoints", "align", "eval", "robust"):
        check_ranges(getattr(cfg, where), where)
    names = [d.name for d in list_datasets()]
    _require(
        is_dataset(cfg.data.dataset),
        f"data.dataset: unknown dataset {cfg.data.dataset!r}; choose one of {', '.join(names)}",
    )
    _require(
        cfg.model.arch in list_models() or is_reference(cfg.model.arch),
        f"model.arch: unknown architecture "
        f"{cfg.model.arch!r}; choose one of {', '.join(list_models())}",
    )
    e = cfg.endpoints
    _require(
        len(set(e.seeds)) == len(e.seeds), f"endpoints.seeds: seeds must differ, got {e.seeds}"
    )
    _require(
        e.schedule in SCHEDULES,
        f"endpoints.schedule: must be one of {', '.join(SCHEDULES)}, got {e.schedule!r}",
    )
    c = cfg.curves
    _require(len(c.kinds) > 0, "curves.kinds: list at least one of line, bezier, polychain")
    for k in c.kinds:
        _require(k in KINDS, f"curves.kinds: unknown kind {k!r}; choose from {', '.join(KINDS)}")
    _require(len(c.variants) > 0, "curves.variants: list at least one variant")
    for v in c.variants:
        _require(
            v in VARIANTS,
            f"curves.variants: unknown variant {v!r}; choose from {', '.join(VARIANTS)}",
        )
    c.validate("curves")  # CurveTrainConfig's ranges and the bends range
    check_ranges(c, "curves")
    pam_variants = [x for x in c.variants if x in PAM_VARIANTS]
    _require(
        not pam_variants or "bezier" in c.kinds,
        f"curves.kinds: the variants {', '.join(pam_variants)} train a Bezier curve; "
        "add 'bezier' to curves.kinds",
    )
    cfg.pam.validate("pam")
    ev = cfg.eval
    _require(
        ev.bn_mode in BN_MODES,
        f"eval.bn_mode: must be one of {', '.join(BN_MODES)}, got {ev.bn_mode!r}",
    )
    r = cfg.robust
    _require(
        r.bn_source in ("clean", "adversarial"),
        f"robust.bn_source: must be clean or adversarial, got {r.bn_source!r}",
    )
    _require(
        r.train_mode in ("train", "eval", "batch-stats"),
        f"robust.train_mode: must be train, eval or batch-stats, got {r.train_mode!r}",
    )
    _require(
        r.schedule in ("", *SCHEDULES),
        f"robust.schedule: must be empty or one of {', '.join(SCHEDULES)}, got {r.schedule!r}",
    )
    _require(
        r.align_on in ("clean", "adversarial"),
        f"robust.align_on: must be clean or adversarial, got {r.align_on!r}",
    )
    if r.pairs:
        _require(
            not r.enabled,
            "robust.pairs: the robust track adds robust rows to a clean run; with "
            "robust.enabled = true every pair is robust already (set pairs = 0)",
        )
        _require(
            r.pairs <= len(cfg.pairs),
            f"robust.pairs: the run has {len(cfg.pairs)} pair(s), got {r.pairs}",
        )
        _require(len(r.variants) > 0, "robust.variants: list at least one variant")
        for v in r.variants:
            _require(
                v in ROBUST_TRACK_VARIANTS,
                f"robust.variants: the robust track takes {', '.join(ROBUST_TRACK_VARIANTS)}, "
                f"got {v!r}",
            )
        _require(
            r.points == 0 or r.points >= 2,
            f"robust.points: must be 0 (eval.points) or >= 2, got {r.points}",
        )
    check_device_name(cfg.device, "device")
    return cfg


def robust_track_config(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The robust sub-experiment of ``cfg`` (``robust.pairs > 0``), else ``None``.

    It is ``cfg`` with ``robust.enabled = true`` (adversarially trained endpoints, robust
    curves, clean + PGD evaluation, the robust schedule) on the first ``robust.pairs``
    pairs' seeds, the variants ``robust.variants``, and the robust track's sizes
    (``robust.train_subset``, ``endpoint_epochs``, ``curve_epochs``, ``points``) where set;
    no plane. ``neuralign run`` runs it in ``<run>/robust/`` and the report adds its rows.
    """
    r = cfg.robust
    if not r.pairs:
        return None
    d = cfg.to_dict()
    d["name"] = f"{cfg.name}-robust"
    d["endpoints"]["seeds"] = list(cfg.endpoints.seeds[: 2 * r.pairs])
    if r.endpoint_epochs:
        d["endpoints"]["epochs"] = r.endpoint_epochs
    if r.curve_epochs:
        d["curves"]["epochs"] = r.curve_epochs
    if r.points:
        d["eval"]["points"] = r.points
    if r.train_subset:
        d["data"]["train_subset"] = r.train_subset
    d["curves"]["variants"] = list(r.variants)
    d["eval"]["plane"] = False
    d["robust"]["enabled"] = True
    d["robust"]["pairs"] = 0
    return parse_config(d)


def parse_config(raw: Any) -> ExperimentConfig:
    """Build and validate a config from a parsed TOML/YAML document."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a table of settings, got {type(raw).__name__}")
    pam = raw.get("pam")
    taken = [k for k in PAM_FROM_ELSEWHERE if k in pam] if isinstance(pam, dict) else []
    for key in taken[:1]:
        where = "the top-level seed" if key == "seed" else f"[curves] ({key})"
        raise ConfigError(f"pam.{key}: PAM takes this from {where}; set it there")
    cfg = _build(ExperimentConfig, raw, "")
    return validate(cfg)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a ``.toml`` (or ``.yaml``/``.yml`` with PyYAML installed) experiment config."""
    from neuralign.io.files import regular_file

    p = regular_file(path, "config file", ConfigError, max_bytes=MAX_CONFIG_BYTES)
    text = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ConfigError(
                f"{p}: YAML configs need PyYAML (pip install pyyaml); or use TOML"
            ) from exc
        try:
            raw = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
            raise ConfigError(f"{p}: invalid YAML: {_one_line(exc)}") from None
        raw = {} if raw is None else raw
    else:
        try:
            raw = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        # a structure the schema walk did not foresee (a deeply nested or odd document)
        raise ConfigError(f"{p}: not a neuralign config ({type(exc).__name__}: {exc})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_toml(d: dict[str, Any]) -> str:
    """Write a two-level dict (scalars + tables of scalars) as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def demo_config() -> ExperimentConfig:
    """The embedded demo experiment (``neuralign run`` with no argument)."""
    from importlib import resources

    text = resources.files("neuralign").joinpath("configs/demo.toml").read_text(encoding="utf-8")
    return parse_config(tomllib.loads(text))
