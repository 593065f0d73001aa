"""What the commands share: the parsed option groups, loading data and checkpoints, tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class DataSource:
    """``--dataset/--data-dir/--download``: where a command reads its data."""

    dataset: str
    data_dir: str | None
    download: bool

    def load(self, split: str) -> Any:
        """The ``split`` (``train`` or ``test``) of the dataset."""
        from neuralign.data import load_dataset

        return load_dataset(
            self.dataset, split=split, data_dir=self.data_dir, download=self.download
        )


@dataclass(frozen=True)
class PathArgs:
    """``--points/--bn-mode/--bn-subset/--test-subset/--batch-size``: path evaluation."""

    points: int
    bn_mode: str
    bn_subset: int
    test_subset: int
    batch_size: int


@dataclass(frozen=True)
class TrainArgs:
    """``--batch-size/--augment/--train-subset/--seed``: the training data of a curve."""

    batch_size: int
    augment: bool
    train_subset: int | None
    seed: int

    def subset(self, train: Any) -> Any:
        """``train``, or its class-balanced ``--train-subset``."""
        from neuralign.data import balanced_subset

        if self.train_subset:
            return balanced_subset(train, n=min(self.train_subset, len(train)), seed=self.seed)
        return train

    def loader(self, train: Any, device: Any) -> Any:
        """The shuffled, optionally augmented loader of this rank's share of ``train``."""
        from neuralign.data import make_loader

        return make_loader(
            train,
            self.batch_size,
            shuffle=True,
            augment=self.augment,
            device=device,
            seed=self.seed,
            shard=True,
        )


def check_fits(model: Any, data: Any, source: str) -> None:
    """Refuse a checkpoint whose input shape or class count does not fit the dataset."""
    from neuralign.checks import check_model_fits_data

    check_model_fits_data(model, data, source)


def echo_table(rows: list[list[Any]], header: list[str]) -> None:
    """Print ``rows`` as a left-aligned text table under ``header``."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(fmt.format(*header))
    click.echo(fmt.format(*["-" * w for w in widths]))
    for r in rows:
        click.echo(fmt.format(*[str(c) for c in r]))


def load_pair(model_a: str, model_b: str, dev: Any) -> tuple[Any, Any]:
    """Load two checkpoints and check they are of one architecture (same keys and shapes)."""
    from neuralign.io import check_state_dict, load_model

    a = load_model(model_a, device=dev)
    b = load_model(model_b, device=dev)
    check_state_dict(a, b.state_dict(), f"{model_b} vs {model_a}")
    return a, b


def claim_out(
    out: str,
    command: str,
    fields: dict[str, Any],
    inputs: dict[str, str] | None = None,
) -> None:
    """Lock ``out`` and check its resume fingerprint before a command writes there.

    The lock is released when the command's click context closes. A folder this call
    created is removed again then if the command wrote nothing into it (it failed on a bad
    input first), so a refused command leaves no output folder behind. In a distributed run
    only rank 0 takes the lock (the other ranks write nothing of their own).
    """
    from pathlib import Path

    from neuralign import distributed as dist_
    from neuralign.io.resume import FINGERPRINT_NAME, claim_folder

    if not dist_.is_main():
        return
    folder = Path(out)
    created = not folder.exists()
    lock = claim_folder(
        folder,
        fields,
        command=command,
        inputs=inputs,
        notify=lambda msg: click.echo(f"note: {msg}", err=True),
    )

    def close() -> None:
        lock.release()
        if created and folder.is_dir():
            left = list(folder.iterdir())
            if all(p.name == FINGERPRINT_NAME for p in left):
                for p in left:
                    p.unlink(missing_ok=True)
                folder.rmdir()

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(close)


def schedule_fields(schedule: str, epochs: int) -> dict[str, Any]:
    """The epoch count belongs to a fingerprint only where the schedule depends on it.

    With ``step`` and ``constant`` schedules, the first N epochs of a longer run are the
    same as an N-epoch run, so resuming with more epochs continues the same run.
    """
    return {"epochs": epochs} if schedule in ("cosine", "robust") else {}


def pair_and_train(
    model_a: str, model_b: str, data: DataSource, device: str
) -> tuple[Any, Any, Any, Any]:
    """The prologue of the commands on two networks and training data (align, curve, pam).

    Returns:
        ``(device, model_a, model_b, train)``: the selected device, both checkpoints loaded
        onto it and checked to be one architecture, and the training split checked to fit.
    """
    from neuralign.device import select_device

    dev = select_device(device)
    a, b = load_pair(model_a, model_b, dev)
    train = data.load("train")
    check_fits(a, train, model_a)
    return dev, a, b, train
