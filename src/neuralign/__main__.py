"""``python -m neuralign`` runs the CLI."""

from neuralign.cli import _entry

_entry()
