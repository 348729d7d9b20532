"""`ecgscan embed`: images (folder, images file, or signals rendered on the fly) → embeddings file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ecgscan_cli.cli.common import Device, Overwrite, Quiet, Threads, Seed, command, progress_bar

log = logging.getLogger("ecgscan")


@command
def embed_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint folder (or run folder) from `ecgscan pretrain`.",
                                               show_default=False)],
    input: Annotated[Path, typer.Argument(metavar="INPUT", help="Folder of PNG/JPG scans or photos, an images file, or a signals "
                                               "file (rendered on the fly).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Embeddings file to write (.h5).",
                                         show_default=False)],
    encoder: Annotated[str, typer.Option("--encoder", help="trained (the checkpoint), random (same architecture, "
                                         "untrained) or imagenet (same architecture with the image tower's "
                                         "pretrained weights, no ECG training).")] = "trained",
    features: Annotated[str, typer.Option("--features", help="projected (L2-normalised contrastive embedding) or "
                                          "backbone (the image tower's pooled output: for probing baselines).")
                        ] = "projected",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass (lower it if memory runs out).")] = 32,
    device: Device = "auto",
    seed: Seed = 0,
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Embed images with the checkpoint's image encoder (L2-normalised, contrastive space).

    Warns when the checkpoint's pretraining read some of the embedded records; the
    embeddings file keeps their ids so that `ecgscan probe` can refuse such a test split.
    """
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)  # before any torch or BLAS work
    from ecgscan_cli.embed import embed_to_file

    path, source = embed_to_file(checkpoint, input, output, encoder=encoder, features=features,
                                 batch_size=batch_size, device=device,
                                 overwrite=overwrite, seed=seed,
                                 progress_factory=lambda n, d: progress_bar(n, d, quiet))
    if source.skipped:
        log.warning("%d unreadable image(s) skipped", len(source.skipped))
    typer.echo(str(path))
