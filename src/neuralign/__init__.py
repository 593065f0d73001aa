"""neuralign: neuron alignment and mode connectivity for PyTorch networks.

Implements *Optimizing Mode Connectivity via Neuron Alignment* (Tatro et al., NeurIPS 2020):
discover the permutation symmetry of a network, align two networks by activation
correlation or weight matching, fit curves between them and evaluate paths.
"""

from neuralign._version import __version__
from neuralign.alignment import AlignmentResult, align  # noqa: E402
from neuralign.attacks import PGD  # noqa: E402
from neuralign.curves import (  # noqa: E402
    Bezier,
    Curve,
    CurveTrainConfig,
    Line,
    PolyChain,
    train_curve,
)
from neuralign.data import (  # noqa: E402
    Augment,
    Dataset,
    TensorLoader,
    balanced_subset,
    list_datasets,
    load_dataset,
)
from neuralign.device import select_device  # noqa: E402
from neuralign.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    DivergedError,
    ModelMismatchError,
    NeuralignError,
    SpecVerificationError,
    UnsupportedOpError,
)
from neuralign.experiment import ExperimentConfig, load_config, run_experiment  # noqa: E402
from neuralign.io import load_checkpoint, load_model, save_checkpoint  # noqa: E402
from neuralign.merge import MergeResult, merge  # noqa: E402
from neuralign.models import create_model, list_models, model_spec  # noqa: E402
from neuralign.pamopt import PAMConfig, PAMResult, pam  # noqa: E402
from neuralign.paths import (  # noqa: E402
    PathResult,
    aggregate,
    evaluate_path,
    evaluate_plane,
    plot_paths,
    plot_plane,
    recompute_bn,
)
from neuralign.perm import (  # noqa: E402
    Permutation,
    PermutationSpec,
    apply_permutation,
    discover_spec,
    permute_model,
    verify_spec,
)
from neuralign.training import TrainConfig, TrainResult, evaluate_model, train_model  # noqa: E402

__all__ = [
    "AlignmentResult",
    "Bezier",
    "Curve",
    "CurveTrainConfig",
    "ExperimentConfig",
    "Line",
    "MergeResult",
    "PAMConfig",
    "PAMResult",
    "PathResult",
    "Permutation",
    "PermutationSpec",
    "PolyChain",
    "aggregate",
    "align",
    "apply_permutation",
    "discover_spec",
    "evaluate_path",
    "evaluate_plane",
    "load_config",
    "merge",
    "pam",
    "permute_model",
    "plot_paths",
    "plot_plane",
    "recompute_bn",
    "run_experiment",
    "train_curve",
    "verify_spec",
    "Augment",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergedError",
    "ModelMismatchError",
    "Dataset",
    "NeuralignError",
    "PGD",
    "SpecVerificationError",
    "TensorLoader",
    "TrainConfig",
    "TrainResult",
    "UnsupportedOpError",
    "__version__",
    "balanced_subset",
    "create_model",
    "evaluate_model",
    "list_datasets",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "model_spec",
    "save_checkpoint",
    "select_device",
    "train_model",
]
