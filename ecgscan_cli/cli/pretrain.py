"""`ecgscan pretrain`: train ECG-Scan on a signals file (images rendered in every step)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import MAX_SEED, Device, Overwrite, Quiet, Threads, command, progress_bar

_O = typer.Option


@command
def pretrain_command(
    signals: Annotated[Path, typer.Argument(help="Signals file with reports (from `ecgscan import` or `ecgscan synth`).")],
    output: Annotated[Path, _O("--output", "-o", help="Run folder: checkpoints best/ and last/, run.json, metrics.jsonl.")],
    preset: Annotated[Optional[str], _O("--preset", help="tiny (CPU, tests, demo), cpu (EfficientNet-Lite0, 30-60 min on 2 cores) or paper (the paper's settings). "
                                        "Default: tiny; on --resume, the run's own config.")] = None,
    config: Annotated[Optional[Path], _O("--config", help="YAML or JSON config; overrides the preset, flags override it.")] = None,
    resume: Annotated[bool, _O("--resume", help="Continue the run in --output from its last checkpoint (an interrupted run: from where it stopped).")] = False,
    max_steps: Annotated[Optional[int], _O("--max-steps", help="Optimizer steps (sets the schedule length).")] = None,
    max_minutes: Annotated[Optional[float], _O("--max-minutes", help="Stop (and checkpoint) after this wall time, counted for the whole command; the built-in teacher stage ends by the time a quarter of it has passed.")] = None,
    batch_size: Annotated[Optional[int], _O("--batch-size", help="Records per process and micro-batch.")] = None,
    accum_steps: Annotated[Optional[int], _O("--accum-steps", help="Gradient accumulation micro-batches.")] = None,
    lr: Annotated[Optional[float], _O("--lr", help="Peak learning rate (AdamW, cosine, 10% warm-up).")] = None,
    weight_decay: Annotated[Optional[float], _O("--weight-decay", help="AdamW weight decay (matrices only), >= 0.")] = None,
    warmup_frac: Annotated[Optional[float], _O("--warmup-frac", help="Warm-up share of --max-steps.")] = None,
    grad_clip: Annotated[Optional[float], _O("--grad-clip", help="Gradient norm clip (0: off).")] = None,
    lambda_clip: Annotated[Optional[float], _O("--lambda-clip", help="λ1: image–text CLIP loss.")] = None,
    lambda_gram: Annotated[Optional[float], _O("--lambda-gram", help="λ2: Gramian volume loss.")] = None,
    lambda_mse: Annotated[Optional[float], _O("--lambda-mse", help="λ3: reconstruction MSE.")] = None,
    lambda_lead: Annotated[Optional[float], _O("--lambda-lead", help="λ4: soft lead consistency.")] = None,
    alpha: Annotated[Optional[float], _O("--alpha", help="Einthoven weight in the lead loss.")] = None,
    beta: Annotated[Optional[float], _O("--beta", help="Goldberger weight in the lead loss.")] = None,
    augment: Annotated[Optional[str], _O("--augment", help="Render augmentation: none|light|paper|heavy|photo, or an augmentation config file (YAML/JSON, as for render).")] = None,
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
    lora_r: Annotated[Optional[int], _O("--lora-r", help="LoRA rank of the image tower's adapters, >= 1.")] = None,
    lora_alpha: Annotated[Optional[int], _O("--lora-alpha", help="LoRA scale alpha (the update is scaled by alpha/r).")] = None,
    lora_dropout: Annotated[Optional[float], _O("--lora-dropout", help="Dropout on the LoRA input, in [0, 1).")] = None,
    text_model: Annotated[Optional[str], _O("--text-model", help="Frozen text encoder: hub name (cached), local folder, or minilm.")] = None,
    signal_encoder: Annotated[Optional[Path], _O("--signal-encoder", help="Frozen signal teacher: TorchScript file [B,12,5000]→[B,D] or a teacher folder. "
                                                 "Default: train the built-in one first.")] = None,
    teacher_steps: Annotated[Optional[int], _O("--teacher-steps", help="Steps for the built-in signal teacher.")] = None,
    num_workers: Annotated[Optional[int], _O("--num-workers", help="DataLoader worker processes, >= 0 (0: read in the main process).")] = None,
    eval_every: Annotated[Optional[int], _O("--eval-every", help="Validate (and keep the best checkpoint) every N steps, >= 1.")] = None,
    save_every: Annotated[Optional[int], _O("--save-every", help="Save the last/ checkpoint (for --resume) every N steps, >= 1.")] = None,
    log_every: Annotated[Optional[int], _O("--log-every", help="Write training metrics to metrics.jsonl every N steps, >= 1.")] = None,
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
        "max_steps": max_steps, "max_minutes": max_minutes, "batch_size": batch_size, "accum_steps": accum_steps,
        "lr": lr, "weight_decay": weight_decay, "warmup_frac": warmup_frac, "grad_clip": grad_clip,
        "lambda_clip": lambda_clip, "lambda_gram": lambda_gram, "lambda_mse": lambda_mse, "lambda_lead": lambda_lead,
        "alpha": alpha, "beta": beta, "augment": _absolute_if_file(augment), "split": split,
        "train_folds": train_folds, "val_folds": val_folds, "test_folds": test_folds,
        "model.image_model": image_model, "model.lora_r": lora_r, "model.lora_alpha": lora_alpha,
        "model.lora_dropout": lora_dropout, "model.text_model": text_model,
        "signal_encoder": str(signal_encoder) if signal_encoder else None, "teacher_steps": teacher_steps,
        "num_workers": num_workers, "eval_every": eval_every, "save_every": save_every, "log_every": log_every,
        "seed": seed,
    }
    if image_pretrained is not None:
        overrides["model.image_pretrained"] = None if image_pretrained.lower() == "none" else image_pretrained
    if image_model is not None and image_pretrained is None:
        from ecgscan_cli.model import default_image_pretrained

        overrides["model.image_pretrained"] = default_image_pretrained(image_model)
    base = read_run_config(output) if resume and preset is None and config is None else None
    cfg = resolve_config(preset or "tiny", str(config) if config else None, overrides, base=base)
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


def _absolute_if_file(value: str | None) -> str | None:
    """An augmentation config file is stored absolute, so that --resume finds it from anywhere."""
    return str(Path(value).resolve()) if value and Path(value).is_file() else value
