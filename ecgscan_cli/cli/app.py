"""The ``ecgscan`` Typer application: one module per command, registered here."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ecgscan_cli import __version__
from ecgscan_cli.cli import benchmark, demo, digitizer, embed, imports, pretrain, probe, reconstruct, render, snr, synth, zeroshot

app = typer.Typer(
    name="ecgscan",
    help="Learn clinically useful representations of ECG images (ECG-Scan): "
    "import and synthesise ECGs, render printouts, pretrain, probe, zero-shot, reconstruct.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ecgscan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """ecgscan: ECG images to clinically useful representations."""


# Order here is the order in --help.
app.command("import", short_help="WFDB / PTB-XL folders to a signals file.")(imports.import_command)
app.command("synth", short_help="Synthetic labelled 12-lead ECGs to a signals file.")(synth.synth_command)
app.command("snr-check", short_help="Lead-SNR table, or reconstruction SNR vs a reference.")(snr.snr_check_command)
app.command("render", short_help="ECG printout images to an images file or PNG/JPG pages.")(render.render_command)
app.command("pretrain", short_help="Pretrain the ECG-Scan image encoder.")(pretrain.pretrain_command)
app.command("embed", short_help="Image embeddings from a checkpoint.")(embed.embed_command)
app.command("probe", short_help="Linear probe: macro AUROC at 1/10/100 % of labels.")(probe.probe_command)
app.command("zeroshot", short_help="Zero-shot AUROC from class prompts.")(zeroshot.zeroshot_command)
app.command("reconstruct", short_help="12-lead signals from ECG images (digitiser; --checkpoint: decoder).")(reconstruct.reconstruct_command)
app.command("train-digitizer", short_help="Train the digitiser behind reconstruct.")(
    digitizer.train_digitizer_command)
app.command("train-restorer", short_help="Train the restorer of the digitiser's readings.")(
    digitizer.train_restorer_command)
app.command("benchmark", short_help="The paper's comparison table on the held-out folds.")(benchmark.benchmark_command)
app.command("demo", short_help="The whole chain on synthetic data, with a report.")(demo.demo_command)


def main() -> None:
    """The ``ecgscan`` entry point.

    Usage errors (unknown option or command, missing argument, bad value) are printed as
    one line on stderr with exit code 2, like every other ecgscan error, instead of
    Click's usage block. They are recognised by their documented ``format_message`` and
    ``exit_code`` (Typer's own exception classes moved between releases).
    """
    from ecgscan_cli.cli.common import empty_path_argument

    empty = empty_path_argument(app, sys.argv[1:])
    if empty:  # `snr-check ""` is refused, not read as the current folder
        typer.echo(f"ecgscan: error: {empty}", err=True)
        sys.exit(2)
    try:
        code = app(prog_name="ecgscan", standalone_mode=False)
    except typer.Abort:
        typer.echo("ecgscan: aborted", err=True)
        sys.exit(1)
    except Exception as e:
        if not (hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)):
            raise
        message = e.format_message().strip()
        if "\n" in message:  # `ecgscan` alone: the help text, on stdout as before
            typer.echo(message)
        else:
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx is not None else "ecgscan"
            typer.echo(f"ecgscan: error: {message.rstrip('.')} (see '{where} --help')", err=True)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
