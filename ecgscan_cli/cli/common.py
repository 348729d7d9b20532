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
import signal
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
Threads = Annotated[int, typer.Option(
    "--threads", min=0, help="CPU threads for torch and BLAS; 0 = automatic: the CPUs this process may use "
    "minus those other jobs keep busy (load average), at least 1, or OMP_NUM_THREADS when set.")]
MAX_SEED = 2 ** 32 - 1   # what every random generator used (numpy, torch) accepts
Seed = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED,
                                   help="Random seed, 0 to 4294967295 (same seed, same result).")]


def use_threads(threads: int) -> int:
    """Apply ``--threads`` before any torch work (see :mod:`ecgscan_cli.threads`); logs the choice."""
    from ecgscan_cli.threads import set_threads

    applied = set_threads(threads)
    log.debug("using %d CPU thread(s)", applied)
    return applied


def setup_logging(quiet: bool) -> None:
    """Log to stderr through rich; --quiet keeps only errors."""
    from rich.logging import RichHandler

    from ecgscan_cli.cli.console import stderr_console

    root = logging.getLogger("ecgscan")
    root.handlers.clear()
    handler = RichHandler(console=stderr_console(), show_time=False, show_path=False, markup=False)
    handler.addFilter(_escape_control_characters)
    root.addHandler(handler)
    root.setLevel(logging.ERROR if quiet else logging.INFO)
    root.propagate = False
    import warnings

    if quiet:  # -q: no Python warnings either (library deprecations, numpy runtime warnings)
        warnings.simplefilter("ignore")


def _escape_control_characters(record: logging.LogRecord) -> bool:
    """Log filter: messages reach the terminal with control characters escaped (a file name
    may hold terminal escape sequences)."""
    from ecgscan_cli.errors import printable

    message = record.getMessage()
    safe = printable(message)
    if safe != message:
        record.msg, record.args = safe, None
    return True


def fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit with ``code``."""
    from ecgscan_cli.errors import printable

    typer.echo(f"ecgscan: error: {printable(message)}", err=True)
    raise typer.Exit(code)


def command(func: Callable) -> Callable:
    """Wrap a command body: turn EcgscanError into one line + exit code, Ctrl-C into 130.

    SIGTERM and SIGHUP are handled like Ctrl-C (exit 128 + the signal number: 143, 129).
    Set ECGSCAN_DEBUG=1 to see the traceback of an EcgscanError.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from ecgscan_cli.atomic import disk_full_error, is_disk_full

        setup_logging(bool(kwargs.get("quiet", False)))
        try:
            with terminations_as_interrupts():
                return func(*args, **kwargs)
        except EcgscanError as e:
            if os.environ.get("ECGSCAN_DEBUG"):
                raise
            fail(str(e), e.exit_code)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP (errors.Terminated)
            signum = getattr(e, "signum", signal.SIGINT)
            name = signal.Signals(signum).name
            typer.echo("ecgscan: interrupted" if signum == signal.SIGINT else f"ecgscan: stopped by {name}", err=True)
            raise typer.Exit(128 + signum)
        except OSError as e:  # full disk, permission denied... are the user's to fix
            if os.environ.get("ECGSCAN_DEBUG"):
                raise
            if is_disk_full(e):
                fail(str(disk_full_error(e.filename or "the output")), 1)
            fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e), 1)
        except Exception as e:  # a full disk reported through h5py's or safetensors' own errors
            if os.environ.get("ECGSCAN_DEBUG") or not is_disk_full(e):
                raise
            fail("no space left on device", 1)

    return wrapper


_terminating: list[int] = []   # the signal being handled (a repeat during clean-up is ignored)


def _raise_terminated(signum, frame) -> None:
    from ecgscan_cli.errors import Terminated

    if _terminating:  # a repeated signal must not cut the clean-up short
        return
    _terminating.append(signum)
    raise Terminated(signum)


def _redeliver_swallowed_interrupts(previous_hook):
    """An interrupt raised while Python runs a weakref callback or a finaliser (h5py frees its
    objects through them) is printed and swallowed as "unraisable": deliver it again to the
    main thread, so that a SIGTERM or Ctrl-C at an unlucky moment still stops the command.
    The signal is sent again from a timer thread: raised inside the hook it would be swallowed too."""
    import threading

    def send_again(signum: int) -> None:
        _terminating.clear()   # here, not in the hook: the hook may still be running
        os.kill(os.getpid(), signum)

    def hook(args) -> None:
        if isinstance(args.exc_value, KeyboardInterrupt):
            threading.Timer(0.05, send_again, (getattr(args.exc_value, "signum", signal.SIGINT),)).start()
            return
        previous_hook(args)

    return hook


@contextlib.contextmanager
def terminations_as_interrupts() -> Iterator[None]:
    """While a command runs, SIGTERM (schedulers, ``timeout``) and SIGHUP (a closed
    terminal) raise :class:`~ecgscan_cli.errors.Terminated`, a KeyboardInterrupt: every
    clean-up that Ctrl-C gets runs for them too. A signal already ignored (``nohup``)
    stays ignored; the previous handlers come back afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            saved[signum] = signal.signal(signum, _raise_terminated)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_swallowed_interrupts(previous_hook)
    _terminating.clear()
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        _terminating.clear()


def empty_path_argument(app: typer.Typer, argv: Sequence[str]) -> str | None:
    """The message for the first empty path in ``argv`` (``ecgscan COMMAND ARGS...`` without
    the program name), or None. ``Path("")`` is ``.``, so ``snr-check "$(a command that
    printed nothing)"`` would otherwise read the current folder; Typer converts before any
    command body runs, hence this check on the raw arguments. Path parameters are found from
    the commands' own type annotations."""
    import inspect
    import typing
    from pathlib import Path

    argv = list(argv)
    name = next((a for a in argv if not a.startswith("-")), None)
    func = next((c.callback for c in app.registered_commands
                 if c.name == name or (c.name is None and c.callback and c.callback.__name__ == name)), None)
    if func is None or "" not in argv and not any(a.endswith("=") for a in argv):
        return None
    path_options, value_options, positional_paths = set(), set(), []
    hints = typing.get_type_hints(getattr(func, "__wrapped__", func), include_extras=True)
    for pname in inspect.signature(func).parameters:
        hint = hints.get(pname)
        meta = getattr(hint, "__metadata__", ())
        base = typing.get_args(hint)[0] if meta else hint
        inner = [a for a in typing.get_args(base) if a is not type(None)] or [base]
        is_path = any(a is Path or Path in typing.get_args(a) for a in inner)
        # typer.Option("--name", ...) in Annotated keeps its first name as `default`
        decls = [d for m in meta for d in (*(getattr(m, "param_decls", None) or ()), getattr(m, "default", None))
                 if isinstance(d, str) and d.startswith("-")]
        if decls:
            names = {n for d in decls for n in d.split("/") if n.startswith("-")}
            if base is not bool:
                value_options |= names
                if is_path:
                    path_options |= names
        else:
            positional_paths.append(is_path)
    args = argv[argv.index(name) + 1:]
    previous = None
    for token in args:
        if token.startswith("--") and "=" in token:
            option, value = token.split("=", 1)
            if option in path_options and not value.strip():
                return f"{option}: empty path (did a command substitution print nothing?)"
        elif token.strip() == "":
            if previous in path_options:
                return f"{previous}: empty path (did a command substitution print nothing?)"
            if previous not in value_options and positional_paths and all(positional_paths):
                return "empty path argument (did a command substitution print nothing?)"
        previous = token if previous not in value_options else None
    return None


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
