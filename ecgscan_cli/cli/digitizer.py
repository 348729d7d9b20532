"""`ecgscan train-digitizer`: train the digitiser's segmentation network (TraceNet)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import Overwrite, Quiet, Seed, Threads, command
from ecgscan_cli.errors import EcgscanError


class AugmentAt(str, Enum):
    page = "page"
    crop = "crop"


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.replace("-", ",").split(",") if w.strip())
    except ValueError:
        raise EcgscanError(f"--widths: expected comma-separated channel counts like 8,16,32,48,64, got {text!r}") from None
    from ecgscan_cli.digitize.model import TraceNetConfig

    TraceNetConfig(widths=widths).check()
    return widths


def _dpi_range(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition("-")
    try:
        out = (float(lo), float(hi if sep else lo))
    except ValueError:
        raise EcgscanError(f"bad --dpi {text!r}: use e.g. '45-130'") from None
    return out


def _mix(text: str) -> dict:
    out = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise EcgscanError(f"bad --mix {text!r}: use e.g. 'paper=0.5,heavy=0.5'") from None
    if not out or any(w < 0 for w in out.values()) or sum(out.values()) <= 0:
        raise EcgscanError(f"bad --mix {text!r}: weights must be ≥ 0 and not all 0")
    return out


@command
def train_digitizer_command(
    signals: Annotated[Path, typer.Argument(help="Signals file of real ECGs with folds (ecgscan import).",
                                            exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder to create (or resume).")],
    steps: Annotated[int, typer.Option("--steps", min=1, max=10_000_000, help="Optimizer steps.")] = 6000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, max=4096,
                                            help="Crops per step (two per rendered page).")] = 8,
    crop: Annotated[int, typer.Option("--crop", min=32, max=1024, help="Crop size in pixels.")] = 256,
    lr: Annotated[float, typer.Option("--lr", min=1e-7, max=1.0, help="Peak learning rate (cosine decay).")] = 2e-3,
    train_folds: Annotated[str, typer.Option("--train-folds", help="Folds to train on, e.g. '1-6'.")] = "1-6",
    val_folds: Annotated[str, typer.Option("--val-folds", help="Folds to validate on ('none' = no validation: "
                                           "the saved weights are the last).")] = "7",
    mix: Annotated[Optional[str], typer.Option(
        "--mix", help="Augmentation presets (or augmentation config files) and their weights, drawn per batch, "
        "e.g. 'none=0.15,paper=0.35,heavy=0.5' or 'photo' [default: none=0.15,paper=0.35,heavy=0.5; with "
        "--resume: the run's own]", show_default=False)] = None,
    dpi: Annotated[str, typer.Option(
        "--dpi", help="Page resolutions drawn, MIN-MAX (dpi of the pages the crops are cut from: "
        "reconstruct reads a full page at ~90 dpi, its finer reading at up to ~200).")] = "45-130",
    augment_at: Annotated[AugmentAt, typer.Option(
        "--augment-at", help="'page': augment each whole page, then crop it (blur, folds and background "
        "at the sizes reconstruct sees); 'crop': augment the crops alone (how weights before 2026-12 were "
        "trained).")] = AugmentAt.page,
    init: Annotated[Optional[str], typer.Option(
        "--init", help="Start from these TraceNet weights (fine-tuning): 'shipped', a .safetensors file or "
        "a train-digitizer run folder. Their widths replace the default; their provenance is recorded.",
        show_default=False)] = None,
    widths: Annotated[Optional[str], typer.Option(
        "--widths", help="TraceNet's channels per level, e.g. '8,16,32,48,64' (the default). With --init: "
        "wider than the weights' (as many levels) grows them, computing the same maps at the first step.",
        show_default=False)] = None,
    eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="Validate and save every N steps.")] = 250,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", min=0.01,
                                                         help="Stop (and save) after this many minutes.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUTPUT from its last saved step "
                                         "(its run.json settings; --steps, --max-minutes and --mix may change).")]
    = False,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Train TraceNet, the segmentation network behind `ecgscan reconstruct`, on online renders.

    Each step renders pages of random records of the train folds (random paper, grid,
    speed, gain, line width and resolution), augments them with the presets of --mix,
    the exact trace and grid targets moved with the image, and crops them. --init
    fine-tunes existing weights (e.g. the shipped ones) instead of starting from random. Prints a JSON
    summary; the weights are OUTPUT/tracenet.safetensors (use them with
    `ecgscan reconstruct --weights`).
    """
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)
    from ecgscan_cli.digitize.trainer import DEFAULT_MIX, DigitizerTrainConfig, train_digitizer
    from ecgscan_cli.folds import parse_folds

    if resume:
        try:
            saved = json.loads((output / "run.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            raise EcgscanError(f"{output}: not a digitiser run folder (no readable run.json)") from None
        saved = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items()}
        saved.setdefault("augment_at", "crop")   # runs started before --augment-at augmented crops
        saved.update(steps=steps, max_minutes=max_minutes, mix=_mix(mix) if mix is not None else saved["mix"])
        cfg = DigitizerTrainConfig(**saved)
    else:
        cfg = DigitizerTrainConfig(
            signals=str(signals.resolve()), train_folds=tuple(parse_folds(train_folds, "--train-folds")),
            val_folds=tuple(parse_folds(val_folds, "--val-folds")), steps=steps, batch_size=batch_size, crop=crop, lr=lr,
            mix=_mix(mix) if mix is not None else dict(DEFAULT_MIX), augment_at=augment_at.value, init=init,
            widths=_widths(widths) if widths is not None else None,
            dpi=_dpi_range(dpi),
            eval_every=eval_every, seed=seed, max_minutes=max_minutes)

    def report(rec: dict) -> None:
        if not quiet:
            typer.echo(f"step {rec['step']}: loss {rec['loss']:.4f}, {rec['steps_per_s']:.2f} steps/s", err=True)

    summary = train_digitizer(cfg, output, resume=resume, overwrite=overwrite, progress=report)
    typer.echo(json.dumps(summary))


def _restorer_init(init: str | None) -> str | None:
    """``--init``: 'shipped' or an existing weights file or run folder (absolute), else one line."""
    from ecgscan_cli.digitize.restore import restorer_file

    if init is None or init == "shipped":
        return init
    if not restorer_file(init).is_file():
        raise EcgscanError(f"--init {init}: no restorer weights there ('shipped', a .safetensors file or a run folder)")
    return str(Path(init).resolve())


@command
def train_restorer_command(
    signals: Annotated[Path, typer.Argument(help="Signals file of real ECGs at 500 Hz with folds (ecgscan import "
                                            "-r 500).", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder to create (or resume).")],
    pages: Annotated[Optional[int], typer.Option("--pages", min=1, max=10_000_000, show_default=False,
                                                 help="Training pages to print, augment and read [default: 1200; "
                                                 "with --resume: the run's own, and more are read]")] = None,
    val_pages: Annotated[int, typer.Option("--val-pages", min=0, max=100_000,
                                           help="Validation pages (0 = none: the saved weights are the last).")] = 96,
    mix: Annotated[Optional[str], typer.Option(
        "--mix", help="Augmentation presets (or augmentation config files) and their weights, drawn per page "
        "('none' = as printed) [default: none=1,paper=1,heavy=2,photo=1,phone=1]", show_default=False)] = None,
    dpi: Annotated[str, typer.Option("--dpi", help="Page resolutions drawn, MIN-MAX.")] = "100-300",
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", help="TraceNet weights that read the pages (default: the shipped ones): the restorer "
        "learns what their readings lose.", show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, max=10_000_000, show_default=False,
                                                 help="Optimizer steps [default: 30000; with --resume: the "
                                                 "run's own]")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096,
                                            help="Stretches of reading per step.")] = 32,
    length: Annotated[int, typer.Option("--length", min=64, max=20_000,
                                        help="Samples per training stretch (500 Hz).")] = 1024,
    lr: Annotated[float, typer.Option("--lr", min=1e-7, max=1.0, help="Peak learning rate (cosine decay).")] = 1e-3,
    width: Annotated[Optional[int], typer.Option("--width", min=1, max=1024, show_default=False,
                                                 help="The restorer's channels [default: 16; with --resume: the "
                                                 "run's own, and a new one only before training has begun]")] = None,
    init: Annotated[Optional[str], typer.Option(
        "--init", help="Start from these restorer weights: 'shipped', a .safetensors file or a train-restorer "
        "run folder (grown to be told the page's features where they were not).", show_default=False)] = None,
    page_features: Annotated[bool, typer.Option(
        "--page-features/--no-page-features", help="Tell the restorer each page's line width and px/mm.")] = True,
    train_folds: Annotated[str, typer.Option("--train-folds", help="Folds to train on, e.g. '1-6'.")] = "1-6",
    val_folds: Annotated[str, typer.Option("--val-folds", help="Folds to validate on.")] = "7",
    eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="Validate and save every N steps.")] = 250,
    workers: Annotated[int, typer.Option("--workers", "-j", min=0, max=64, help="Processes reading pages, one "
                                         "thread each (0 = one per available CPU, at most 8).")] = 0,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", min=0.01,
                                                         help="Stop (and save) after this many minutes.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Go on with the run in OUTPUT where it stopped: reading "
                                         "pages or training (its run.json settings; --steps, --max-minutes and "
                                         "--pages may change).")] = False,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Train the restorer that `ecgscan reconstruct` runs on each reading (what blur and pixels take from a trace).

    First prints pages of random records of the train folds (random paper, grid, speed,
    gain, line width, resolution), augments them with the presets of --mix and reads them
    with TraceNet, as reconstruct does (the slow part: a few seconds a page; -j runs
    several). Then trains a small 1-D network to map each lead's reading to the signal
    printed, with the benchmark's loss (mean SNR in dB), validated with the benchmark's
    metric on pages of the validation folds. Prints a JSON summary; the weights are
    OUTPUT/restorer.safetensors (use them with `ecgscan reconstruct --restorer`).
    """
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)
    from ecgscan_cli.digitize.restore_train import DEFAULT_MIX, RestorerTrainConfig, load_run_config, train_restorer
    from ecgscan_cli.folds import parse_folds
    from ecgscan_cli.pool import auto_workers

    if resume:
        cfg = load_run_config(output)
        cfg.steps, cfg.max_minutes, cfg.pages = steps or cfg.steps, max_minutes, pages or cfg.pages
        if width is not None and width != cfg.width:
            if (output / "last").exists():
                raise EcgscanError(f"--width: {output} has begun training with width {cfg.width}; it cannot change")
            cfg.width = width
    else:
        if init is not None and width is not None:
            raise EcgscanError("--width: a restorer started from --init keeps its own width")
        cfg = RestorerTrainConfig(
            signals=str(signals.resolve()), train_folds=tuple(parse_folds(train_folds, "--train-folds")),
            val_folds=tuple(parse_folds(val_folds, "--val-folds")), pages=pages or 1200, val_pages=val_pages,
            mix=_mix(mix) if mix is not None else dict(DEFAULT_MIX), dpi=_dpi_range(dpi),
            weights=None if weights is None else str(weights.resolve()),
            steps=steps or RestorerTrainConfig.steps, batch_size=batch_size,
            length=length, lr=lr, width=width or 16, eval_every=eval_every, seed=seed, max_minutes=max_minutes,
            page_features=page_features, init=_restorer_init(init))
    if weights is not None:
        from ecgscan_cli.digitize.image import weights_path

        if not weights_path(weights).is_file():
            raise EcgscanError(f"--weights {weights}: no TraceNet weights there")
    n_workers = workers or auto_workers(cfg.pages + cfg.val_pages, 8)

    def report(kind: str, value) -> None:
        if quiet:
            return
        if kind == "step":
            typer.echo(f"step {value['step']}: loss {value['loss_db']:.2f} dB, {value['steps_per_s']:.2f} steps/s",
                       err=True)

    summary = train_restorer(cfg, output, resume=resume, overwrite=overwrite, workers=n_workers, progress=report)
    typer.echo(json.dumps(summary))
