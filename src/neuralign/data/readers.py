"""The low-level file readers of every dataset family, in one namespace.

Each reader returns plain numpy arrays (``uint8`` images ``(N, C, H, W)``, ``int64`` labels)
and validates what it reads: a truncated, corrupt or malicious file raises
:class:`~neuralign.errors.DataError` with a message that names the file and the fix. The
readers live with their family (:mod:`~neuralign.data.idx`, :mod:`~neuralign.data.cifar`,
:mod:`~neuralign.data.tinyimagenet`, :mod:`~neuralign.data.small`); this module re-exports
them.
"""

from __future__ import annotations

from neuralign.data.cifar import (
    RestrictedUnpickler,
    read_cifar_binary,
    read_cifar_pickle,
    restricted_load,
)
from neuralign.data.idx import read_idx
from neuralign.data.small import read_csv_gz
from neuralign.data.tinyimagenet import read_tinyimagenet, read_tinyimagenet_words

__all__ = [
    "RestrictedUnpickler",
    "read_cifar_binary",
    "read_cifar_pickle",
    "read_csv_gz",
    "read_idx",
    "read_tinyimagenet",
    "read_tinyimagenet_words",
    "restricted_load",
]
