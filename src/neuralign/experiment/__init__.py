"""Whole experiments from one config: endpoints → alignment → curves → paths → report."""

from neuralign.experiment.config import (
    AlignConfig,
    CurveConfig,
    DataConfig,
    EndpointConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    RobustConfig,
    demo_config,
    load_config,
    parse_config,
)
from neuralign.experiment.pipeline import STAGES, Experiment, run_experiment
from neuralign.experiment.report import write_report
from neuralign.experiment.rundir import RunDir

__all__ = [
    "STAGES",
    "AlignConfig",
    "CurveConfig",
    "DataConfig",
    "EndpointConfig",
    "EvalConfig",
    "Experiment",
    "ExperimentConfig",
    "ModelConfig",
    "RobustConfig",
    "RunDir",
    "demo_config",
    "load_config",
    "parse_config",
    "run_experiment",
    "write_report",
]
