"""The dataset registry: one :class:`DatasetSpec` row per dataset.

A row holds every fact about one dataset — its name and aliases, shape and number of
classes, the training-split statistics, the class names, the official download sources, the
folders it is looked for in, and the family loader that reads it. The built-in rows are in
:mod:`neuralign.data.catalog`; the family readers in their own modules (``idx``, ``cifar``,
``tinyimagenet``, ``small``, ``synthetic``, ``folder``). Adding a dataset is one row (plus a
reader module when it is a new file format)::

    register_dataset(DatasetSpec(name="kmnist", description="...", shape=(1, 28, 28),
                                 num_classes=10, loader=functools.partial(idx.load_idx, ...)))

A loader is called as ``loader(spec, name, split, data_dir, download)`` and returns a
:class:`~neuralign.data.datasets.Dataset`; ``name`` is the caller's full name (options such as
``synthetic:size=16`` or ``folder:PATH`` included, unchanged in case).

Nothing is downloaded unless ``download=True`` is passed; every downloaded file is checked
against a published checksum.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from neuralign.data.datasets import SPLITS, Dataset, DatasetInfo, Stats, search_roots
from neuralign.errors import DataError

__all__ = [
    "DatasetSpec",
    "Remote",
    "dataset_spec",
    "is_dataset",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remote:
    """One official file: where it is downloaded from and its published checksum.

    Attributes:
        url: Download URL (``file://`` works too).
        checksum: ``"md5:<hex>"``, ``"sha256:<hex>"`` or a bare hex digest.
        filename: Name under which the file is stored.
    """

    url: str
    checksum: str
    filename: str


class Loader(Protocol):
    """Reads one split of the dataset a row describes."""

    def __call__(
        self,
        spec: DatasetSpec,
        name: str,
        split: str,
        data_dir: str | os.PathLike[str] | None,
        download: bool,
    ) -> Dataset: ...


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the registry knows about one dataset.

    Attributes:
        name: Registry name (lower case), passed to :func:`load_dataset`.
        description: One line, shown by ``neuralign datasets``.
        shape: Per-sample shape ``(C, H, W)`` (of the default options for option datasets).
        num_classes: Number of classes (idem).
        loader: The family loader, ``loader(spec, name, split, data_dir, download)``.
        aliases: Other spellings accepted by :func:`load_dataset`.
        stats: Per-channel mean/std of the training split in [0, 1] units; ``None`` when the
            loader computes them from the data (generated and user datasets).
        classes: Class names, ``classes[label]``, when the files carry none.
        sources: Official files for ``download=True`` (empty: not downloadable).
        source: Where the data come from, for display (URL, package, "generated").
        search: Sub-folders of each search root where the files are looked for (display).
        prefix: The name takes options after a colon (``synthetic:size=16``, ``folder:PATH``).
        matches: Optional predicate claiming names that are not ``name[:...]`` (for example
            a bare path to a ``.npz`` file).
    """

    name: str
    description: str
    shape: tuple[int, int, int]
    num_classes: int
    loader: Loader
    aliases: tuple[str, ...] = ()
    stats: Stats | None = None
    classes: tuple[str, ...] | None = None
    sources: tuple[Remote, ...] = ()
    source: str = ""
    search: tuple[str, ...] = ()
    prefix: bool = False
    matches: Callable[[str], bool] | None = None

    def info(self) -> DatasetInfo:
        """The public description of this row."""
        searched = tuple(str(r / s) for r in search_roots(None) for s in self.search)
        return DatasetInfo(
            self.name,
            self.description,
            self.shape,
            self.num_classes,
            self.source,
            searched,
            bool(self.sources),
        )


_REGISTRY: dict[str, DatasetSpec] = {}
_ALIASES: dict[str, str] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a row to the registry.

    Args:
        spec: The dataset's row.
        replace: Allow replacing an existing row of the same name.

    Returns:
        ``spec``.

    Raises:
        DataError: If the name or an alias is taken and ``replace`` is false.
    """
    key = spec.name.lower()
    names = [key, *(a.lower() for a in spec.aliases)]
    for n in names:
        owner = _ALIASES.get(n)
        if owner is not None and (owner != key or not replace):
            raise DataError(f"a dataset named {n!r} is already registered; choose another name")
    _REGISTRY[key] = spec
    for n in (key, *spec.aliases):
        _ALIASES[n.lower()] = key
    return spec


def _lookup(name: str) -> DatasetSpec | None:
    key = name.strip().lower()
    if key in _ALIASES:
        return _REGISTRY[_ALIASES[key]]
    head = key.partition(":")[0]
    row = _REGISTRY.get(_ALIASES.get(head, ""))
    if row is not None and row.prefix:
        return row
    for row in _REGISTRY.values():
        if row.matches is not None and row.matches(name.strip()):
            return row
    return None


def dataset_spec(name: str) -> DatasetSpec:
    """The registry row that reads ``name`` (an alias, ``name:options`` or a claimed path).

    Raises:
        DataError: If no row reads ``name``.
    """
    row = _lookup(name) if isinstance(name, str) else None
    if row is None:
        known = ", ".join(_REGISTRY)
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}")
    return row


def is_dataset(name: str) -> bool:
    """True if some registry row reads ``name`` (without reading any file)."""
    return isinstance(name, str) and _lookup(name) is not None


def list_datasets() -> list[DatasetInfo]:
    """Describe every dataset :func:`load_dataset` knows.

    Returns:
        One :class:`~neuralign.data.datasets.DatasetInfo` per row, in registration order.
    """
    return [row.info() for row in _REGISTRY.values()]


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> Dataset:
    """Load one split of a dataset into memory.

    Args:
        name: A name from :func:`list_datasets` (``"synthetic:size=16,..."`` for options,
            ``"folder:PATH"`` or a path for your own images, see :mod:`neuralign.data.folder`).
        split: ``"train"`` or ``"test"`` (Tiny ImageNet's ``"test"`` is its labelled
            validation set).
        data_dir: Directory holding the files (or their parent folder); default: the download
            root (:func:`~neuralign.data.datasets.default_data_root`) and ``/usr/share/datasets``.
        download: Fetch and checksum-verify the official files if they are not found.

    Returns:
        The :class:`~neuralign.data.datasets.Dataset`.

    Raises:
        DataError: Unknown name or split, files missing, corrupt or unsafe.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    row = dataset_spec(name)
    if download and not row.sources:
        logger.info("%s needs no download; ignoring download=True", row.name)
    full = name.strip() if row.prefix or row.matches is not None else row.name
    ds = row.loader(row, full, split, data_dir, download)
    logger.info("loaded %s/%s: %d samples of shape %s", ds.name, split, len(ds), ds.shape)
    return ds
