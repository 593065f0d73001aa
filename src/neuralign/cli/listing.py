"""`neuralign datasets` and `neuralign models`: what can be read and built."""

from __future__ import annotations

import click

from neuralign.cli.app import cli
from neuralign.cli.common import echo_table


@cli.command("datasets")
def datasets_cmd() -> None:
    """List the datasets neuralign can read, and where each is looked for."""
    from neuralign.data import list_datasets

    rows = []
    for info in list_datasets():
        shape = "x".join(map(str, info.shape)) if info.num_classes else "any"
        rows.append([info.name, info.num_classes or "any", shape, info.source])
    echo_table(rows, ["name", "classes", "shape", "source"])


@cli.command("models")
def models_cmd() -> None:
    """List the registered architectures."""
    from neuralign.models import list_models

    for name in list_models():
        click.echo(name)
