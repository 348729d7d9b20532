"""`ecgscan reconstruct`: images → decoded 12-lead signals (a signals file)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import Device, Overwrite, Quiet, Threads, command, progress_bar

log = logging.getLogger("ecgscan")


@command
def reconstruct_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint folder (or run folder) from `ecgscan pretrain`.",
                                               show_default=False)],
    images: Annotated[Path, typer.Argument(metavar="IMAGES", help="Folder of scans/photos (PNG/JPG, any size, EXIF-rotated), an "
                                                "images file, or a signals file (rendered on the fly).",
                                           show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Signals file to write (.h5).", show_default=False)],
    wfdb_dir: Annotated[Optional[Path], typer.Option("--wfdb", help="Also write WFDB records (.hea/.dat) here.")] = None,
    overlay_dir: Annotated[Optional[Path], typer.Option("--overlay", help="Write overlay plots (PNG) of the first "
                                                        "records here.")] = None,
    overlays: Annotated[int, typer.Option("--overlays", min=0, help="How many overlay plots.")] = 8,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Signals file with the ground truth "
                                                      "(matched by id) for overlays and the SNR log line.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass (lower it if memory runs out).")] = 16,
    device: Device = "auto",
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Decode 12×5000 signals (mV, 500 Hz) from ECG images; score with `ecgscan snr-check OUT --reference`."""
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)  # before any torch or BLAS work
    import numpy as np

    from ecgscan_cli.leads import LEADS
    from ecgscan_cli.reconstruct import reconstruct_to_file

    path, source, summary = reconstruct_to_file(
        checkpoint, images, output, wfdb_dir=wfdb_dir, overlay_dir=overlay_dir, reference=reference,
        max_overlays=overlays, batch_size=batch_size, device=device, overwrite=overwrite,
        progress_factory=lambda n, d: progress_bar(n, d, quiet))
    if source.skipped:
        log.warning("%d unreadable image(s) skipped", len(source.skipped))
    if "lead_snr_db" in summary:
        s = summary["lead_snr_db"]
        log.info("mean SNR vs ground truth: %.2f dB (%s)", float(np.nanmean(s)),
                 ", ".join(f"{l} {v:.1f}" for l, v in zip(LEADS, s)))
    for what, d in (("WFDB records", wfdb_dir), ("overlay plots", overlay_dir)):
        if d is not None:
            log.info("%s in %s", what, d)
    typer.echo(str(path))
