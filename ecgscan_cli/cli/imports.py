"""`ecgscan import`: PTB-XL (folders or archives) and WFDB folders → one HDF5 signals file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import Overwrite, Quiet, command, progress_bar


LABEL_SET_CHOICES = ("auto", "all", "superclass", "subclass", "form", "rhythm", "dx", "none")


def complete_label_sets(incomplete: str) -> list[str]:
    """Shell completion of --labels: the names, also after a comma."""
    head, _, last = incomplete.rpartition(",")
    prefix = head + "," if head else ""
    return [prefix + c for c in LABEL_SET_CHOICES if c.startswith(last)]


class Pad(str, Enum):
    zero = "zero"
    nan = "nan"


def print_summary(rows: list[dict], title: str) -> None:
    """The import summary as a small table on stderr (stdout carries the output path)."""
    from rich.table import Table

    from ecgscan_cli.cli.console import stderr_console

    table = Table(title=title)
    table.add_column("item")
    table.add_column("count", justify="right")
    for r in rows:
        table.add_row(str(r["item"]), str(r["count"]))
    stderr_console().print(table)


@command
def import_command(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="PTB-XL root (with ptbxl_database.csv; records in records100/ "
                                                "records500/ or in archives beside the CSVs), PTB-XL archive "
                                                "(.zip, .tar.xz... with the CSVs inside or beside it), folder of "
                                                "WFDB records (.hea + .dat/.mat, searched recursively) or one .hea.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Signals file to write (.h5).", dir_okay=False)],
    labels: Annotated[str, typer.Option(
        "--labels", "-l", autocompletion=complete_label_sets,
        help="Label set: PTB-XL superclass (5), subclass (23), form (19), rhythm (12), several comma-separated "
        "or all (the first goes to /label, the others to /label_sets/NAME); dx = '# Dx:' SNOMED codes of WFDB "
        "headers; none; auto = superclass for PTB-XL, else dx.")] = "auto",
    sampling_rate: Annotated[int, typer.Option("--sampling-rate", "-r",
                                               help="PTB-XL source: records500 or records100 "
                                                    "(output is always 500 Hz).")] = 500,
    derive_limb_leads: Annotated[bool, typer.Option(
        "--derive-limb-leads", help="Rebuild missing limb leads from two others (Einthoven/Goldberger) "
        "instead of skipping the record.")] = False,
    pad: Annotated[Pad, typer.Option("--pad", help="Fill records shorter than 10 s with zeros or NaN "
                                                   "(NaN = samples not present).")] = Pad.zero,
    min_likelihood: Annotated[float, typer.Option(
        "--min-likelihood", min=0.0, max=100.0,
        help="PTB-XL: keep diagnostic SCP codes with at least this likelihood (0 = all, as the benchmark).")] = 0.0,
    drop_unlabelled: Annotated[bool, typer.Option(
        "--drop-unlabelled", help="PTB-XL: leave out records with no label in the chosen set "
        "(as the benchmark does).")] = False,
    workers: Annotated[int, typer.Option("--workers", "-j", min=0, max=64,
                                         help="Reader processes (0 = automatic: 1 for small folders; at most "
                                              "64).")] = 0,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first bad record instead of "
                                                         "skipping it.")] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Import only the first N records.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every skipped record under its reason "
                                                                 "(the log shows the first 3 of each).")] = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Import ECGs into a signals file: 12 leads in standard order, 500 Hz, 10 s, mV.

    Records that cannot be used (missing or truncated signal file, missing or unknown
    leads, unusable sampling rate, infinite or out-of-range values) are skipped and
    counted in the summary on stderr; --strict stops instead. Prints the output path.
    """
    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli.importing import plan_import, run_import

    check_output_path(output, overwrite, kind="signals")
    if sampling_rate not in (100, 500):
        raise EcgscanError(f"--sampling-rate must be 100 or 500 (PTB-XL's two versions), not {sampling_rate}")
    plan = plan_import(source, label_set=labels, sampling_rate=sampling_rate,
                       min_likelihood=min_likelihood, drop_unlabelled=drop_unlabelled, limit=limit)
    with progress_bar(len(plan.tasks), "importing", quiet=quiet) as advance:
        path, stats = run_import(plan, output, derive_limb_leads=derive_limb_leads, pad=pad.value,
                                 workers=workers, strict=strict, overwrite=overwrite, progress=advance)
    if not quiet:
        n_classes = "+".join(str(len(classes)) for classes, _ in plan.label_sets.values()) or "0"
        print_summary(stats.rows(), f"import: {plan.kind}, {n_classes} classes")
    if verbose:
        for line in stats.skipped_lines():
            typer.echo(f"skipped: {line}", err=True)
    typer.echo(str(path))
