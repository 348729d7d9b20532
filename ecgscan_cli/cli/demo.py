"""`ecgscan demo`: the whole chain on synthetic data (or a PTB-XL folder), with a Markdown report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import Device, Overwrite, Quiet, Threads, Seed, command, progress_bar

log = logging.getLogger("ecgscan")


@command
def demo_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder to write.")] = Path("ecgscan-demo"),
    n: Annotated[int, typer.Option("-n", "--n-records", min=60, help="Synthetic records.")] = 600,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Pretraining steps (default: the tiny "
                                                 "preset's).")] = None,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", min=0.1, help="Cap on the pretraining "
                                                         "loop's wall time.")] = 4.0,
    data: Annotated[Optional[Path], typer.Option("--data", help="A PTB-XL folder to use instead of synthetic "
                                                 "data.")] = None,
    labels: Annotated[str, typer.Option("--labels", help="PTB-XL label set with --data.")] = "superclass",
    limit: Annotated[Optional[int], typer.Option("--limit", min=10, help="At most this many records from "
                                                 "--data.")] = None,
    probe_epochs: Annotated[int, typer.Option("--probe-epochs", min=1, help="Training epochs of each linear probe.")] = 100,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for the AUROC confidence intervals (0 = none).")] = 200,
    device: Device = "auto",
    seed: Seed = 0,
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Synthesise -> render -> pretrain -> embed -> probe -> zero-shot -> reconstruct -> SNR; print the report path."""
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)  # before any torch or BLAS work
    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.demo import DemoConfig, run_demo

    check_output_path(output, overwrite, kind="demo")
    if data is not None and not data.is_dir():
        from ecgscan_cli.errors import EcgscanError

        raise EcgscanError(f"--data {data}: not a folder")
    cfg = DemoConfig(n=n, steps=steps, max_minutes=max_minutes, data=str(data) if data else None, labels=labels, limit=limit,
                     probe_epochs=probe_epochs, bootstrap=bootstrap, device=device, seed=seed)
    res = run_demo(output, cfg, overwrite=overwrite, progress_factory=lambda k, d: progress_bar(k, d, quiet),
                   stage=lambda s: log.info("demo: %s", s))
    log.info("demo finished in %.0f s", res.timings.get("total", float("nan")))
    typer.echo(str(output))
