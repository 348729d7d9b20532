"""`ecgscan reconstruct`: ECG images → 12-lead signals (a signals file), by the digitiser by default."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import Device, Overwrite, Quiet, Threads, command, fail, progress_bar

log = logging.getLogger("ecgscan")

_POOR_SHOWN = 5   # page names listed in the warning about poor readings
LAYOUT_NAMES = {"3x4+1": "3×4 + rhythm strip", "3x4+3": "3×4 + 3 rhythm strips", "3x4": "3×4",
                "6x2": "6×2", "12x1": "12×1"}
METHOD_NAMES = {"digitizer": "the digitiser", "classical": "the classical digitiser", "decoder": "the ECG-Scan decoder"}


@command
def reconstruct_command(
    input_path: Annotated[Path, typer.Argument(
        metavar="INPUT", show_default=False,
        help="Folder of scans/photos (PNG, JPEG, TIFF, BMP, WebP; searched recursively; PDFs and SVGs are "
             "skipped with a hint), one image, an images file, or a signals file (rendered at 200 dpi). "
             "The old form `reconstruct CHECKPOINT INPUT` still works (= --checkpoint CHECKPOINT).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Signals file to write (.h5).", show_default=False)],
    old_form_input: Annotated[Optional[Path], typer.Argument(hidden=True, show_default=False, metavar="OLD_FORM_INPUT")] = None,
    method: Annotated[Optional[str], typer.Option(
        "--method", metavar="digitizer|classical|decoder", show_default=False,
        help="digitizer: the trained trace network shipped with ecgscan (default); classical: the same page "
             "pipeline without the network; decoder: the ECG-Scan decoder of --checkpoint (the default when "
             "--checkpoint is given).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="Checkpoint folder (or run folder) from `ecgscan pretrain`: reconstruct with its "
                             "ECG-Scan decoder.", show_default=False)] = None,
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", help="Digitiser weights instead of the shipped ones: a .safetensors file or a run folder "
                          "from `ecgscan train-digitizer`.", show_default=False)] = None,
    restore: Annotated[bool, typer.Option(
        "--restore/--no-restore", help="Digitiser: put back what blur and pixels take from each lead's reading "
        "(QRS tips, steep strokes) with the restorer shipped with ecgscan (or --restorer); --no-restore keeps "
        "the traces as read.")] = True,
    restorer: Annotated[Optional[Path], typer.Option(
        "--restorer", help="Restorer weights instead of the shipped ones: a .safetensors file or a run folder "
                           "from `ecgscan train-restorer`.", show_default=False)] = None,
    wfdb_dir: Annotated[Optional[Path], typer.Option(
        "--wfdb", help="Also write one WFDB record (.hea/.dat) per image here; samples a page does not "
                       "show are WFDB's invalid value (read back as NaN).")] = None,
    overlays: Annotated[Optional[str], typer.Option(
        "--overlays", metavar="DIR", show_default=False,
        help="Write overlay plots (PNG) here: the image with the reconstructed traces drawn where the "
             "digitiser found them, above the 12 leads (over the ground truth when known).")] = None,
    overlay_legacy: Annotated[Optional[Path], typer.Option("--overlay", hidden=True)] = None,
    max_overlays: Annotated[int, typer.Option("--max-overlays", min=0, help="How many overlay plots (the first "
                                                                             "records).")] = 8,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Signals file with the ground truth "
                                                      "(matched by id) for overlays and the SNR log line.")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Digitiser: read each page once, with the network's maps at its working resolution "
                        "(about 2× faster; no second reading at the image's own resolution or with the "
                        "page's perspective undone).")] = False,
    max_side: Annotated[int, typer.Option(
        "--max-side", metavar="PX",
        help="Digitiser: decode each image to at most this long side and read it there (1024-6000). "
             "3400 reads a 300-dpi letter scan at its own resolution: better on blurred or faded pages, "
             "about 1.4× the time; the default shrinks it to a 218-dpi page.")] = 2400,
    speed: Annotated[float, typer.Option(
        "--speed", help="Digitiser: the printouts' paper speed, 25 or 50 mm/s (a page does not say it "
                        "in a form the digitiser reads; 50 mm/s pages read as 25 come out as noise).")] = 25.0,
    gain: Annotated[float, typer.Option(
        "--gain", help="Digitiser: the gain, 5, 10 or 20 mm/mV, used where no calibration pulse shows it "
                       "(a pulse's height wins).")] = 10.0,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass of the "
                                            "decoder (lower it if memory runs out).")] = 16,
    device: Device = "auto",
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Recover 12×5000 signals (mV, 500 Hz, NaN where a page does not show a lead) from ECG images.

    Pages that cannot be read (no ECG, no grid, unknown layout, unreadable file) are skipped
    with a one-line reason; score the result with `ecgscan snr-check OUT --reference TRUTH --align`.
    With the digitiser each page is rated good / fair / poor by how far its limb leads agree
    (stored in the output as /digitizer/quality; the poor pages are named in a warning).
    """
    from ecgscan_cli.cli.common import use_threads

    if old_form_input is not None:   # `reconstruct CHECKPOINT INPUT`, the form before the digitiser
        if checkpoint is not None:
            fail("give the checkpoint once: `reconstruct INPUT --checkpoint CHECKPOINT`")
        if not input_path.is_dir():
            fail(f"two arguments are read as the old form `reconstruct CHECKPOINT INPUT`, but {input_path} is not "
                 "a checkpoint folder; give one INPUT (a folder, an image or an .h5 file)")
        checkpoint, input_path = input_path, old_form_input
        typer.echo("ecgscan: note: `reconstruct CHECKPOINT INPUT` is the old form; "
                   "use `reconstruct INPUT --checkpoint CHECKPOINT`", err=True)
    overlay_dir = _overlay_dir(overlays, overlay_legacy)
    if overlay_dir is not None and overlays is not None and overlays.isdigit():
        max_overlays = int(overlays)   # the old `--overlays N` (count) beside `--overlay DIR`
    use_threads(threads)  # before any torch or BLAS work
    import numpy as np

    from ecgscan_cli.leads import LEADS
    from ecgscan_cli.reconstruct import READING_NAMES, reconstruct_to_file

    path, source, summary = reconstruct_to_file(
        checkpoint, input_path, output, method=method, weights=weights, wfdb_dir=wfdb_dir, overlay_dir=overlay_dir,
        reference=reference, max_overlays=max_overlays, batch_size=batch_size, device=device,
        overwrite=overwrite, progress_factory=lambda n, d: progress_bar(n, d, quiet), quick=quick,
        speed_mm_s=speed, gain_mm_mv=gain, restore=restore, restorer=restorer, max_side=max_side)
    total = summary["n"] + summary["skipped"]
    log.info("reconstructed %d of %d image(s) with %s", summary["n"], total, METHOD_NAMES[summary["method"]])
    readings = {k: v for k, v in summary.get("readings", {}).items() if k != "working"}
    turned = {k: readings.pop(k) for k in sorted(readings) if k.startswith("turned")}
    levelled = readings.pop("levelled first", 0)
    layouts = {k.split(" ", 1)[1]: readings.pop(k) for k in sorted(readings) if k.startswith("layout ")}
    if layouts:
        log.info("layouts: %s", ", ".join(f"{LAYOUT_NAMES.get(k, k)} {v}" for k, v in layouts.items()))
    if turned:
        log.info("pages read turned upright (counter-clockwise): %s",
                 ", ".join(f"{k.split()[1]} {v}" for k, v in turned.items()))
    if levelled:
        log.info("pages whose rows tilted beyond 15° (levelled before reading): %d", levelled)
    if readings:
        log.info("second readings kept (a sharp image read finer, or the limb-lead relations agreed better): %s",
                 ", ".join(f"{READING_NAMES.get(k, k)} {v}" for k, v in sorted(readings.items())))
    if summary.get("quality"):
        log.info("reading quality (limb-lead relations, /digitizer/quality in the output): %s",
                 ", ".join(f"{k} {v}" for k, v in summary["quality"].items()))
    poor = summary.get("poor", [])
    if poor:
        shown = ", ".join(poor[:_POOR_SHOWN]) + (f" and {len(poor) - _POOR_SHOWN} more" if len(poor) > _POOR_SHOWN else "")
        log.warning("%d page(s) read poorly (their limb leads disagree: check them before use): %s", len(poor), shown)
    if source.skipped:
        log.warning("%d image(s) skipped (reasons above)", len(source.skipped))
    if "lead_snr_db" in summary:
        s = summary["lead_snr_db"]
        with np.errstate(all="ignore"):
            mean = float(np.nanmean(s)) if np.isfinite(s).any() else float("nan")
        log.info("mean SNR vs ground truth: %.2f dB (%s)", mean, ", ".join(f"{l} {v:.1f}" for l, v in zip(LEADS, s)))
    for what, d in (("WFDB records", wfdb_dir), ("overlay plots", overlay_dir)):
        if d is not None:
            log.info("%s in %s", what, d)
    typer.echo(str(path))


def _overlay_dir(overlays: str | None, legacy: Path | None) -> Path | None:
    """The overlay folder from ``--overlays DIR``, or from the old ``--overlay DIR`` (whose
    ``--overlays N`` was a count: a value of digits only beside ``--overlay`` is that)."""
    if overlays is not None and overlays.strip() == "":
        fail("--overlays: empty folder name")
    if legacy is not None:
        if overlays is not None and not overlays.isdigit():
            fail("give the overlay folder once: --overlays DIR")
        return legacy
    if overlays is not None and overlays.isdigit():   # old scripts: a count without a folder wrote nothing
        typer.echo(f"ecgscan: note: --overlays {overlays} read as the old overlay count, and no folder is given: "
                   f"no overlays (the count is now --max-overlays; for a folder named {overlays}, write ./{overlays})",
                   err=True)
        return None
    return Path(overlays) if overlays is not None else None
