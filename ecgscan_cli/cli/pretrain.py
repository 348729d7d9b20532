"""`ecgscan pretrain`: train ECG-Scan on a signals file (images rendered in every step)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ecgscan_cli.cli.common import MAX_SEED, Device, Overwrite, Quiet, Threads, command, progress_bar

_O = typer.Option


@command
def pretrain_command(
    signals: Annotated[Path, typer.Argument(help="Signals file with reports (from `ecgscan import` or `ecgscan synth`).")],
    output: Annotated[Path, _O("--output", "-o", help="Run folder: checkpoints best/ and last/, run.json, metrics.jsonl.")],
    preset: Annotated[Optional[str], _O("--preset", help="tiny (CPU, tests, demo), cpu (EfficientNet-Lite0, 30-60 min on 2 cores) or paper (the paper's settings). "
                                        "Default: tiny; on --resume, the run's own config.")] = None,
    config: Annotated[Optional[Path], _O("--config", help="YAML or JSON config; overrides the preset; --set and the other flags override it.")] = None,
    resume: Annotated[bool, _O("--resume", help="Continue the run in --output from its last checkpoint (an interrupted run: from where it stopped).")] = False,
    max_steps: Annotated[Optional[int], _O("--max-steps", help="Optimizer steps (sets the schedule length).")] = None,
    max_minutes: Annotated[Optional[float], _O("--max-minutes", help="Stop (and checkpoint) after this wall time, counted for the whole command; the built-in teacher stage ends by the time a quarter of it has passed.")] = None,
    batch_size: Annotated[Optional[int], _O("--batch-size", help="Records per process and micro-batch.")] = None,
    lr: Annotated[Optional[float], _O("--lr", help="Peak learning rate (AdamW, cosine, 10% warm-up).")] = None,
    augment: Annotated[Optional[str], _O("--augment", help="Render augmentation: none|light|paper|heavy|photo|phone, or an augmentation config file (YAML/JSON, as for render).")] = None,
    split: Annotated[Optional[str], _O("--split", help="auto (default: by folds when the file has folds, else "
                                       "random), folds, or random (seeded 9:1, no test held out).")] = None,
    train_folds: Annotated[Optional[str], _O("--train-folds", help="Training folds, e.g. 1-6. Default: the folds "
                                             "left after test and validation.")] = None,
    val_folds: Annotated[Optional[str], _O("--val-folds", help="Validation folds, e.g. 7. Default: the second "
                                           "highest fold.")] = None,
    test_folds: Annotated[Optional[str], _O("--test-folds", help="Folds held out (never read), e.g. 8. Default: the "
                                            "highest fold; 'none' holds out nothing.")] = None,
    image_model: Annotated[Optional[str], _O("--image-model", help="open_clip model, e.g. ViT-B-16, ViT-L-14-336; or efficientnet-lite0.")] = None,
    image_pretrained: Annotated[Optional[str], _O("--image-pretrained", help="open_clip tag (openai...), imagenet (efficientnet-lite0) or a local weights file; 'none' for random.")] = None,
    text_model: Annotated[Optional[str], _O("--text-model", help="Frozen text encoder: hub name (cached), local folder, or minilm.")] = None,
    signal_encoder: Annotated[Optional[Path], _O("--signal-encoder", help="Frozen signal teacher: TorchScript file [B,12,5000]→[B,D] or a teacher folder. "
                                                 "Default: train the built-in one first.")] = None,
    set_: Annotated[Optional[List[str]], _O("--set", metavar="KEY=VALUE",
                                            help="Any config key, repeatable: --set model.lora_r=16 --set lambda_mse=2 "
                                                 "(keys and types: docs/pretrain.md). Order: preset, then --config, "
                                                 "then --set, then the other flags.")] = None,
    seed: Annotated[Optional[int], _O("--seed", min=0, max=MAX_SEED, help="Random seed, 0 to 4294967295 (same seed, same run on CPU).")] = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Pretrain ECG-Scan: CLIP + Gramian + reconstruction + lead-consistency losses.

    With folds in the signals file, the highest fold is held out as test (never read), the
    next is validation, the rest train (PTB-XL 1-10: 1-8 / 9 / 10); run.json and every
    checkpoint record the folds, and each checkpoint lists the ids of the records read.

    Settings apply in this order, later wins: the preset (on --resume without --preset or
    --config: the run's own run.json), the --config file, each --set KEY=VALUE (any config
    key, dotted for the model's: --set model.lora_r=16 --set eval_every=500), then the
    other flags. On --resume a setting that changes the run's trajectory is refused.

    Prints the best checkpoint folder on stdout. Multi-GPU:
    torchrun --nproc_per_node N -m ecgscan_cli pretrain SIGNALS.h5 -o RUN --preset paper
    """
    import time

    started = time.monotonic()  # --max-minutes counts the whole command
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)  # before any torch or BLAS work
    from ecgscan_cli.train import pretrain, resolve_config
    from ecgscan_cli.training.config import read_run_config

    overrides = {
        "max_steps": max_steps, "max_minutes": max_minutes, "batch_size": batch_size, "lr": lr, "augment": augment,
        "split": split, "train_folds": train_folds, "val_folds": val_folds, "test_folds": test_folds,
        "model.image_model": image_model, "model.text_model": text_model,
        "signal_encoder": str(signal_encoder) if signal_encoder else None, "seed": seed,
    }
    if image_pretrained is not None:
        overrides["model.image_pretrained"] = None if image_pretrained.lower() == "none" else image_pretrained
    if image_model is not None and image_pretrained is None:
        from ecgscan_cli.model import default_image_pretrained

        overrides["model.image_pretrained"] = default_image_pretrained(image_model)
    base = read_run_config(output) if resume and preset is None and config is None else None
    cfg = resolve_config(preset or "tiny", str(config) if config else None, overrides, base=base, sets=set_ or ())
    main = int(os.environ.get("RANK", "0")) == 0
    try:
        with progress_bar(cfg.max_steps, "pretrain", quiet=quiet or not main) as advance:
            result = pretrain(signals, output, cfg, device=device, resume=resume, overwrite=overwrite,
                              progress=advance, started=started)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP: what was saved and how to go on, in one line
        message = getattr(e, "ecgscan_message", None)
        if not message or not main:
            raise
        import signal as signals_

        typer.echo(f"ecgscan: {message}", err=True)
        raise typer.Exit(128 + getattr(e, "signum", signals_.SIGINT)) from None
    if main:
        val = result.val or {}
        if not quiet:
            from ecgscan_cli.cli.common import log

            if val:
                log.info("done: %d steps; validation loss %.4f (clip %.3f, gram %.3f, mse %.4f, lead %.4f), "
                         "image→report R@1 %.3f; best checkpoint: step %s, validation loss %.4f", result.step,
                         val["loss"], val["clip"], val["gram"], val["mse"], val["lead"], val.get("r1", float("nan")),
                         result.best_step, result.best_val if result.best_val is not None else float("nan"))
            else:
                log.info("done: %d steps; %s (best/ = last/, step %s)", result.step, result.best_rule,
                         result.best_step)
        typer.echo(str(result.best))

