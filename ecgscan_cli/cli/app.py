"""The ``ecgscan`` Typer application: one module per command, registered here."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ecgscan_cli import __version__
from ecgscan_cli.cli import demo, embed, imports, pretrain, probe, reconstruct, render, snr, synth, zeroshot

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
app.command("import")(imports.import_command)
app.command("synth")(synth.synth_command)
app.command("snr-check")(snr.snr_check_command)
app.command("render")(render.render_command)
app.command("pretrain")(pretrain.pretrain_command)
app.command("embed")(embed.embed_command)
app.command("probe")(probe.probe_command)
app.command("zeroshot")(zeroshot.zeroshot_command)
app.command("reconstruct")(reconstruct.reconstruct_command)
app.command("demo")(demo.demo_command)


def main() -> None:
    app(prog_name="ecgscan")
