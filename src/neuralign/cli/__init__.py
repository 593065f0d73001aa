"""The ``neuralign`` command line: a thin layer over the library.

One module per command family (``listing``, ``training``, ``alignment``, ``paths``,
``plane``, ``curves``, ``pam``, ``merge``, ``experiment``); option groups shared by several
commands are declared once in :mod:`neuralign.cli.options`. Importing this package imports
every module of it, which registers its commands on the :func:`cli` group: a new command
family is one new file here (see docs/architecture.md). Every bad input ends in a one-line
``error: ...`` message on stderr and exit code 2, never a traceback (set ``NEURALIGN_DEBUG=1`` to see the traceback).
"""

import importlib
import pkgutil

# Importing each family module registers its commands on the group.
from neuralign.cli.alignment import align_cmd, spec_cmd
from neuralign.cli.app import _entry, cli, main
from neuralign.cli.curves import curve_cmd
from neuralign.cli.experiment import report_cmd, run_cmd
from neuralign.cli.listing import datasets_cmd, models_cmd
from neuralign.cli.merge import merge_cmd
from neuralign.cli.options import dataset_options
from neuralign.cli.pam import pam_cmd
from neuralign.cli.paths import eval_path_cmd, interpolate_cmd, plot_cmd
from neuralign.cli.plane import plane_cmd
from neuralign.cli.training import eval_cmd, train_cmd

_SUPPORT = {"__main__", "app", "common", "options"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _SUPPORT:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "_entry",
    "align_cmd",
    "cli",
    "curve_cmd",
    "dataset_options",
    "datasets_cmd",
    "eval_cmd",
    "eval_path_cmd",
    "interpolate_cmd",
    "main",
    "merge_cmd",
    "models_cmd",
    "pam_cmd",
    "plane_cmd",
    "plot_cmd",
    "report_cmd",
    "run_cmd",
    "spec_cmd",
    "train_cmd",
]
