"""The ``neuralign`` command group and the entry point that turns errors into exit codes.

Every bad input ends in a one-line ``error: ...`` message on stderr and exit code 2, never
a traceback (set ``NEURALIGN_DEBUG=1`` to see the traceback).
"""

from __future__ import annotations

import errno
import logging
import os
import sys

import click

from neuralign.errors import NeuralignError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="neuralign")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
@click.option(
    "--trust-code",
    is_flag=True,
    help="Let checkpoints that name your own model factory (file.py:factory, "
    "package.module:factory) import and run it.",
)
def cli(verbose: bool, trust_code: bool) -> None:
    """neuralign: neuron alignment and mode connectivity (Tatro et al., NeurIPS 2020).

    Train endpoint networks, discover their permutation symmetry, align them, fit curves
    between them and evaluate paths with BatchNorm statistics recomputed.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from neuralign.models.reference import trust_all_references

    trust_all_references(trust_code)
    _init_distributed()


def _init_distributed() -> None:
    """Under torchrun (``WORLD_SIZE`` > 1) join the process group once; rank 0 alone prints.

    Other ranks keep stderr (errors, warnings) but their standard output is discarded, so
    every command's results and messages appear once.
    """
    from neuralign import distributed as dist_

    if dist_.env_world_size() > 1:
        dist_.init_from_env()
        if not dist_.is_main():
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 on any bad input, with a one-line message)."""
    debug = os.environ.get("NEURALIGN_DEBUG") == "1"
    try:
        cli.main(args=argv, prog_name="neuralign", standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `neuralign`: show the help
            click.echo(exc.ctx.get_help() if exc.ctx else cli.get_help(click.Context(cli)))
            return 0
        msg = exc.format_message().splitlines()[0] if exc.format_message() else str(exc)
        cmd = exc.ctx.command_path if exc.ctx else "neuralign"
        click.echo(f"error: {msg} (see `{cmd} --help`)", err=True)
        return 2
    except (click.Abort, KeyboardInterrupt):
        # click turns Ctrl-C (SIGINT) into Abort. Every write is atomic and training saves
        # after each epoch, so the outputs on disk are consistent and a re-run resumes.
        click.echo(
            "interrupted: finished work is saved; re-run the same command to resume", err=True
        )
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {_one_line(exc.format_message())}", err=True)
        return 2
    except NeuralignError as exc:
        # Every bad input our code detects is a NeuralignError (DataError, ConfigError and
        # CheckpointError are also ValueErrors). Other exceptions are bugs: they keep their
        # traceback (exit 1) so that they can be reported.
        if debug:
            raise
        click.echo(f"error: {_one_line(str(exc))}", err=True)
        return 2
    except OSError as exc:  # the environment: missing or unreadable files, full disk
        if debug:
            raise
        if exc.errno == errno.ENOSPC:
            msg = f"disk full ({exc}); free some space and re-run: finished work is kept"
        else:
            msg = str(exc)
        click.echo(f"error: {_one_line(msg)}", err=True)
        return 2
    return 0


def _one_line(text: str) -> str:
    """Collapse a message onto one line (messages may quote multi-line library errors)."""
    return " ".join(text.split())


def _entry() -> None:
    sys.exit(main())
