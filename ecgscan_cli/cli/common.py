"""Conventions shared by every command.

* results (tables, paths) on stdout; progress and logs on stderr;
* exit 0 ok, 1 failure, 2 bad usage or bad input; user errors are one line, no traceback;
* tables as ``--format table|csv|json``;
* ``--quiet`` silences progress and logs (results are still printed).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import logging
import math
import os
import sys
from enum import Enum
from typing import Annotated, Callable, Iterator, Sequence

import typer

from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan")


class TableFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log messages on stderr.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
Format = Annotated[TableFormat, typer.Option("--format", "-f", help="How to print the table on stdout.")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, or cuda[:N].")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same result).")]


def setup_logging(quiet: bool) -> None:
    """Log to stderr through rich; --quiet keeps only errors."""
    from rich.logging import RichHandler

    from ecgscan_cli.cli.console import stderr_console

    root = logging.getLogger("ecgscan")
    root.handlers.clear()
    handler = RichHandler(console=stderr_console(), show_time=False, show_path=False, markup=False)
    root.addHandler(handler)
    root.setLevel(logging.ERROR if quiet else logging.INFO)
    root.propagate = False


def fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"ecgscan: error: {message}", err=True)
    raise typer.Exit(code)


def command(func: Callable) -> Callable:
    """Wrap a command body: turn EcgscanError into one line + exit code, Ctrl-C into 130.

    Set ECGSCAN_DEBUG=1 to see the traceback of an EcgscanError.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        setup_logging(bool(kwargs.get("quiet", False)))
        try:
            return func(*args, **kwargs)
        except EcgscanError as e:
            if os.environ.get("ECGSCAN_DEBUG"):
                raise
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            typer.echo("ecgscan: interrupted", err=True)
            raise typer.Exit(130)
        except OSError as e:  # full disk, permission denied... are the user's to fix
            if os.environ.get("ECGSCAN_DEBUG"):
                raise
            fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e), 1)

    return wrapper


def _cell(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.2f}"
    return str(value)


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item"):
        return _json_value(value.item())
    return value


def print_table(rows: Sequence[dict], columns: Sequence[str], fmt: TableFormat | str = "table",
                title: str | None = None) -> None:
    """Print ``rows`` on stdout as a rich table, CSV (full precision) or JSON (list of objects)."""
    fmt = TableFormat(fmt)
    if fmt is TableFormat.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_json_value(r.get(c, "")) if not isinstance(r.get(c), str) else r.get(c) for c in columns])
        sys.stdout.write(buf.getvalue())
    elif fmt is TableFormat.json:
        sys.stdout.write(json.dumps([{c: _json_value(r.get(c)) for c in columns} for r in rows], indent=2) + "\n")
    else:
        from rich.table import Table

        from ecgscan_cli.cli.console import stdout_console

        table = Table(title=title)
        for c in columns:
            table.add_column(c, justify="left" if rows and isinstance(rows[0].get(c), str) else "right")
        for r in rows:
            table.add_row(*[_cell(r.get(c, "")) for c in columns])
        stdout_console().print(table)


@contextlib.contextmanager
def progress_bar(total: int | None, description: str, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws a rich progress bar on stderr unless quiet or not a TTY-ish job."""
    if quiet:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ecgscan_cli.cli.console import stderr_console

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=stderr_console(), transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
