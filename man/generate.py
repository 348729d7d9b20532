#!/usr/bin/env python
"""Regenerate the shell completions and the man page from the Typer app.

    python man/generate.py           # rewrite completions/ecgscan.bash, completions/_ecgscan,
                                     # completions/ecgscan.fish and man/ecgscan.1
    python man/generate.py --check   # exit 1 (listing them) if any file is stale

Completions come from Typer's own completion mechanism (``_ECGSCAN_COMPLETE=source_<shell>``
in a subprocess, the same text ``ecgscan --show-completion <shell>`` prints); they ask
``ecgscan`` for candidates at completion time, so they know every command and option.
The man page is built from ``ecgscan --help`` and ``ecgscan COMMAND --help`` at a fixed
width of 80 columns, without a date, so the output depends only on the app.
tests/test_cli_docs.py fails when the files on disk differ from a fresh generation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPLETIONS = {"bash": "completions/ecgscan.bash", "zsh": "completions/_ecgscan", "fish": "completions/ecgscan.fish"}
MAN = "man/ecgscan.1"
WIDTH = 80


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_ECGSCAN")}
    env.update(COLUMNS=str(WIDTH), TERM="dumb", NO_COLOR="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def completion(shell: str) -> str:
    env = _env()
    env["_ECGSCAN_COMPLETE"] = f"source_{shell}"
    out = subprocess.run([sys.executable, "-m", "ecgscan_cli"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"completion script for {shell} failed: {out.stderr.strip()}")
    return out.stdout.strip() + "\n"


def _help(args: list[str]) -> str:
    from typer.testing import CliRunner

    from ecgscan_cli.cli.app import app

    result = CliRunner().invoke(app, [*args, "--help"], prog_name="ecgscan", terminal_width=WIDTH,
                                env={"COLUMNS": str(WIDTH), "TERM": "dumb", "NO_COLOR": "1"})
    if result.exit_code != 0:
        raise RuntimeError(f"ecgscan {' '.join(args)} --help failed: {result.output}")
    return result.stdout.rstrip() + "\n"


def _roff(text: str) -> str:
    lines = []
    for line in text.rstrip("\n").split("\n"):
        line = line.replace("\\", "\\e")
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def man_page() -> str:
    import typer.main

    from ecgscan_cli import __version__
    from ecgscan_cli.cli.app import app

    group = typer.main.get_command(app)
    out = [
        f'.TH ECGSCAN 1 "" "ecgscan {__version__}" "User Commands"',
        ".SH NAME",
        "ecgscan \\- learn clinically useful representations of ECG images (ECG-Scan)",
        ".SH SYNOPSIS",
        ".B ecgscan",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        ".nf",
        _roff(_help([])),
        ".fi",
        ".SH COMMANDS",
    ]
    for name in group.commands:  # registration order, as in --help
        out += [f'.SS "ecgscan {name}"', ".nf", _roff(_help([name])), ".fi"]
    out += [
        ".SH CONVENTIONS",
        "Results (tables, paths) go to stdout; progress bars and logs go to stderr;",
        "\\fB\\-\\-quiet\\fR silences them. Exit status: 0 success, 1 failure,",
        "2 bad usage or bad input (one line on stderr, no traceback; set",
        "ECGSCAN_DEBUG=1 for one). Outputs are",
        "written under a temporary name and renamed when complete; an existing output is",
        "refused unless \\fB\\-\\-overwrite\\fR is given.",
        ".SH FILES",
        "Signals files (HDF5): /signal [N,12,T] int16 microvolts, /id, /report, /label,",
        "/fold; see docs/import-and-snr.md.",
        ".SH SEE ALSO",
        "README.md, docs/architecture.md, docs/import-and-snr.md",
    ]
    return "\n".join(out) + "\n"


def generate() -> dict[str, str]:
    """Relative path → freshly generated text, for every generated file."""
    files = {path: completion(shell) for shell, path in COMPLETIONS.items()}
    files[MAN] = man_page()
    return files


def stale(files: dict[str, str] | None = None) -> list[str]:
    files = generate() if files is None else files
    return [p for p, text in files.items()
            if not (REPO / p).is_file() or (REPO / p).read_text(encoding="utf-8") != text]


def main(argv: list[str]) -> int:
    files = generate()
    if "--check" in argv:
        bad = stale(files)
        if bad:
            print("stale (run python man/generate.py): " + ", ".join(bad), file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        target = REPO / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
        print(path)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main(sys.argv[1:]))
