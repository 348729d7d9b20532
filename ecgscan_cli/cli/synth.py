"""`ecgscan synth`: write synthetic labelled 12-lead ECGs to a signals file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecgscan_cli.cli.common import Overwrite, Quiet, Threads, Seed, command, progress_bar


@command
def synth_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Signals file to write (.h5).", dir_okay=False)],
    n: Annotated[int, typer.Option("-n", "--n-records", min=1, max=10_000_000,
                                   help="Number of records (at most 10 million: ~20 KB each).")] = 1000,
    seed: Seed = 0,
    noise: Annotated[float, typer.Option("--noise", min=0.0, max=100.0,
                                         help="Scale of baseline wander, muscle noise and hum (0 = clean, "
                                              "at most 100).")] = 1.0,
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Synthesise labelled 12-lead ECGs (3-D cardiac dipole, 500 Hz, 10 s) into a signals file.

    Conditions: NSR, AFIB, SBRAD, STACH (one rhythm each), WQRS (wide QRS) and STE
    (ST elevation); each record gets a short English report. Prints the output path.
    """
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)  # before any torch or BLAS work
    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.synth import write_synth

    check_output_path(output, overwrite, kind="signals")
    with progress_bar(n, "synthesising", quiet=quiet) as advance:
        path = write_synth(output, n, seed=seed, overwrite=overwrite, noise=noise, progress=advance)
    typer.echo(str(path))
