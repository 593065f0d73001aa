"""Datasets as uint8 tensors, a device-resident batch loader, and batched augmentation."""

from neuralign.data.datasets import (
    Dataset,
    DatasetInfo,
    default_data_root,
    list_datasets,
    load_dataset,
    parse_synthetic_name,
)
from neuralign.data.download import download_file, extract_archive
from neuralign.data.loader import Augment, TensorLoader
from neuralign.data.readers import RestrictedUnpickler
from neuralign.data.recipes import (
    alignment_subset,
    bn_loader,
    bn_subset,
    default_augment,
    make_loader,
)
from neuralign.data.subset import balanced_subset

__all__ = [
    "Augment",
    "Dataset",
    "DatasetInfo",
    "RestrictedUnpickler",
    "TensorLoader",
    "alignment_subset",
    "balanced_subset",
    "bn_loader",
    "bn_subset",
    "default_augment",
    "default_data_root",
    "download_file",
    "extract_archive",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "parse_synthetic_name",
]
