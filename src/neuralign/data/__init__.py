"""Datasets as uint8 tensors, a device-resident batch loader, and batched augmentation.

Datasets are rows of a registry (:mod:`neuralign.data.registry`; the built-in rows are in
:mod:`neuralign.data.catalog`), read by one module per file family.
"""

from neuralign.data import catalog as _catalog  # noqa: F401  (registers the built-in rows)
from neuralign.data.cifar import RestrictedUnpickler
from neuralign.data.datasets import Dataset, DatasetInfo, default_data_root
from neuralign.data.download import download_file, extract_archive
from neuralign.data.loader import Augment, TensorLoader
from neuralign.data.recipes import (
    BN_MODES,
    alignment_subset,
    bn_loader,
    bn_subset,
    default_augment,
    make_loader,
)
from neuralign.data.registry import (
    DatasetSpec,
    dataset_spec,
    is_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from neuralign.data.subset import balanced_subset
from neuralign.data.synthetic import parse_synthetic_name

__all__ = [
    "BN_MODES",
    "Augment",
    "Dataset",
    "DatasetInfo",
    "DatasetSpec",
    "RestrictedUnpickler",
    "TensorLoader",
    "alignment_subset",
    "balanced_subset",
    "bn_loader",
    "bn_subset",
    "dataset_spec",
    "default_augment",
    "default_data_root",
    "is_dataset",
    "download_file",
    "extract_archive",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "parse_synthetic_name",
    "register_dataset",
]
