"""`neuralign spec` and `neuralign align`: permutation symmetry and alignment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from neuralign.alignment import align
from neuralign.cli.app import cli
from neuralign.cli.common import DataSource, echo_table, pair_and_train
from neuralign.cli.options import (
    attack_options,
    default,
    device_option,
    json_option,
    option_type,
    out_option,
    pair_options,
    param_default,
    progress_option,
    sgd_option,
)
from neuralign.experiment import AlignConfig, ExperimentConfig, RobustConfig


def _example_input(model: Any, dataset: str | None, data_dir: str | None) -> Any:
    """Two real inputs when a dataset is named, else a shape guessed from the architecture."""
    import torch

    if dataset:
        data = DataSource(dataset, data_dir, False).load("test")
        return data.images[:2].float().div(255)
    from neuralign.models import model_spec

    kw = model_spec(model)["kwargs"]
    c = int(kw.get("in_channels", 3))
    size = int(kw.get("image_size", 28 if c == 1 else 32))
    return torch.rand(2, c, size, size)


@cli.command("spec")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--dataset",
    default=None,
    help="Take the example input from this dataset "
    "(default: a random input of the architecture's input shape).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option(
    "--arch", default=None, help="Architecture, for foreign checkpoints without metadata."
)
@out_option("Also write the spec as JSON.")
@click.option("--all-members", is_flag=True, help="List every member of every group.")
def spec_cmd(
    checkpoint: str,
    dataset: str | None,
    data_dir: str | None,
    arch: str | None,
    out: str | None,
    all_members: bool,
) -> None:
    """Discover and verify the permutation groups of a checkpoint's network."""
    import time

    from neuralign.io import load_model
    from neuralign.perm import coverage, discover_spec, format_spec_table

    model = load_model(checkpoint, arch=arch)
    x = _example_input(model, dataset, data_dir)
    t0 = time.perf_counter()
    spec = discover_spec(model, x)
    dt = time.perf_counter() - t0
    click.echo(format_spec_table(spec, max_members=None if all_members else 6))
    click.echo(str(coverage(spec, model)))
    click.echo(
        f"{len(spec.groups)} groups, verified: a random permutation leaves the outputs "
        f"unchanged in train and eval mode ({dt:.2f}s)"
    )
    if out:
        spec.save(out)
        click.echo(f"spec written to {out}")


def _print_alignment(res: Any) -> None:
    rows = []
    for r in res.table():
        b, a = r["before"], r["after"]
        rows.append(
            [
                r["group"],
                r["size"],
                "" if b is None else f"{b:.3f}",
                "" if a is None else f"{a:.3f}",
            ]
        )
    echo_table(rows, ["group", "units", "corr before", "corr after"])


@cli.command("align")
@pair_options
@click.option(
    "--method",
    type=click.Choice(["correlation", "weight"]),
    default=param_default(align, "method"),
    show_default=True,
    help="correlation: the paper's Algorithm 1; weight: weight matching.",
)
@click.option(
    "--subset-fraction",
    type=option_type(AlignConfig, "subset_fraction"),
    default=default(AlignConfig, "subset_fraction"),
    show_default=True,
    help="Class-balanced fraction of the training set used.",
)
@click.option("--pre-activation", is_flag=True, help="Correlate pre-activation values (ablation).")
@sgd_option(ExperimentConfig, "seed")
@out_option(
    "Aligned model B (.safetensors, added when missing; another suffix is refused); the "
    "permutation goes next to it (.perm.json).",
    required=True,
)
@click.option(
    "--plot",
    "plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the layer-wise mean-correlation figure (PNG).",
)
@click.option(
    "--align-on",
    type=click.Choice(["clean", "adversarial"]),
    default=default(RobustConfig, "align_on"),
    show_default=True,
    help="Alignment inputs: clean images, or L∞ PGD examples crafted against MODEL_A "
    "(fed to both models; for robust endpoints).",
)
@attack_options
@device_option
@progress_option
@json_option
def align_cmd(
    model_a: str,
    model_b: str,
    data: DataSource,
    method: str,
    subset_fraction: float,
    pre_activation: bool,
    seed: int,
    out: str,
    plot: str | None,
    align_on: str,
    attack: dict[str, Any],
    device: str,
    progress: bool,
    as_json: bool,
) -> None:
    """Permute MODEL_B's hidden units to match MODEL_A's; write the aligned model."""
    from neuralign.alignment.plot import plot_correlation
    from neuralign.attacks import PGD, alignment_batches
    from neuralign.data import alignment_subset
    from neuralign.io import read_metadata, save_checkpoint
    from neuralign.io.outputs import check_not_input, checkpoint_out_path

    out = str(checkpoint_out_path(out))
    perm_path = Path(out).with_suffix(".perm.json")
    for path, option in ((out, "--out"), (perm_path, "--out (its .perm.json)"), (plot, "--plot")):
        if path is not None:
            check_not_input(path, [model_a, model_b], option)
    dev, a, b, train = pair_and_train(model_a, model_b, data, device)
    batches = alignment_batches(
        alignment_subset(train, fraction=subset_fraction, seed=seed),
        batch_size=default(AlignConfig, "batch_size"),
        device=dev,
        attack=PGD(**attack) if align_on == "adversarial" else None,
        reference=a,
        seed=seed,
    )
    res = align(
        a,
        b,
        batches,
        method=method,
        pre_activation=pre_activation,
        seed=seed,
        progress=progress,
    )
    if not as_json:
        _print_alignment(res)
    meta = read_metadata(model_b)
    meta.pop("arch", None)
    meta.update({"aligned_to": str(model_a), "alignment_method": method, "align_on": align_on})
    save_checkpoint(out, res.aligned_b, meta)
    res.permutation.save(perm_path)
    if plot:
        groups = [g for g in res.spec.groups if g in res.correlation_before]
        plot_correlation(groups, res.correlation_before, res.correlation_after, plot)
    if as_json:
        summary: dict[str, Any] = {"method": method, "out": out, "permutation": str(perm_path)}
        summary["plot"] = plot
        summary.update({"num_images": res.num_images, "seconds": res.seconds})
        click.echo(json.dumps({**summary, "groups": res.table(), "objective": res.objective}))
        return
    click.echo(
        f"{method} alignment on {res.num_images} images in {res.seconds:.1f}s -> {out} "
        f"(permutation: {perm_path})"
    )
    if plot:
        click.echo(f"figure written to {plot}")
