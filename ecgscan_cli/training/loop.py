"""The pretraining run: check → build → run folder → teacher stage → steps → last checkpoint.

One step: read a batch of (signal, report) pairs → render printout images from the signals
on the training device (``render_batch`` with the augmentation preset) → image encoder →
losses against the frozen text and signal encoders and the signal itself → AdamW.

Everything that can be refused (config, signals file, split, output, text and signal
encoders, image model) is checked before anything is written; the run folder appears with
the first checkpoint (:mod:`.run_folder`). A signal waits for the running step to finish
(:mod:`.interrupts`), so that ``last`` always holds a finished step and ``--resume``
continues bit-for-bit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError, EcgscanFailure, Terminated
from ecgscan_cli.training.checkpointer import BEST_IS_LAST, Checkpointer
from ecgscan_cli.training.config import (
    LOSS_TERMS,
    METRICS,
    RUN_CONFIG,
    TEACHER_DIR,
    TEXT_CACHE_DIR,
    TrainConfig,
    config_diff,
    lr_at,
    read_run_config,
    with_defaults,
    with_resolved_split,
)
from ecgscan_cli.training.distributed import Dist, init_distributed
from ecgscan_cli.training.interrupts import finish_step_first, quiet_worker
from ecgscan_cli.training.objective import FrozenFeatures, Objective, build_optimizer
from ecgscan_cli.training.run_folder import RunFolder
from ecgscan_cli.training.teacher import (
    TEACHER_SHARE,
    TeacherReport,
    train_signal_teacher,
)

log = logging.getLogger("ecgscan")


@dataclass
class PretrainResult:
    best: Path
    last: Path
    step: int
    val: dict                      # validation losses at the last step
    stopped_early: bool = False
    best_val: float | None = None  # validation loss of the best checkpoint
    best_step: int | None = None
    best_rule: str = "lowest validation loss"
    teacher: TeacherReport | None = None  # the built-in teacher trained by this command
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------- budget


class Budget:
    """``--max-minutes`` over the whole command (``started``: its ``time.monotonic()`` start)."""

    def __init__(self, minutes: float | None, started: float | None = None):
        self.start = started if started is not None else time.monotonic()
        self.seconds = None if minutes is None else 60.0 * minutes

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def spent(self) -> bool:
        return self.seconds is not None and self.elapsed() >= self.seconds

    def teacher_deadline(self) -> float | None:
        return None if self.seconds is None else self.start + TEACHER_SHARE * self.seconds


# --------------------------------------------------------------------------- check and build


@dataclass
class Plan:
    """What the run will read and write, checked; nothing loaded yet."""

    cfg: TrainConfig
    sf: object
    split: object
    train_idx: np.ndarray
    val_idx: np.ndarray
    pretraining: object
    run_path: Path
    resume: bool
    resume_from: Path | None = None  # RUN/last, when resuming a run that has one


def plan_run(signals_path, run_dir, cfg: TrainConfig, dist: Dist, resume: bool, overwrite: bool) -> Plan:
    """Every cheap check: config, signals file, split, output folder. Writes nothing."""
    from ecgscan_cli.checkpoint import resolve
    from ecgscan_cli.data import check_pretraining_file, split_records
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.training.config import check_config, check_config_paths

    check_config(cfg)
    cfg = check_config_paths(cfg)
    run_path = RunFolder.check(run_dir, resume=resume, overwrite=overwrite)
    if not Path(signals_path).is_file():
        raise EcgscanError(f"no such file: {signals_path}")
    sf = SignalsFile(signals_path)
    usable = check_pretraining_file(sf, cfg.model.fs, cfg.model.n_samples)  # the form the model is built for
    split = split_records(sf, usable, cfg.split, cfg.train_folds, cfg.val_folds, cfg.test_folds, cfg.val_fraction,
                          cfg.seed)
    cfg = with_resolved_split(cfg, split)
    train_idx, val_idx = split.train, split.val[: cfg.max_val]
    if len(train_idx) < cfg.batch_size * dist.world:
        raise EcgscanError(f"{len(train_idx)} training records are fewer than one batch "
                           f"({cfg.batch_size} × {dist.world} process(es)); lower --batch-size")
    resume_from = resolve(run_path / "last") if resume and (run_path / "last").exists() else None
    return Plan(cfg, sf, split, train_idx, val_idx, _pretraining_record(sf, signals_path, split, train_idx, val_idx,
                                                                          cfg), run_path, resume, resume_from)


def _pretraining_record(sf, signals_path, split, train_idx, val_idx, cfg: TrainConfig):
    """What the run reads: the built-in teacher trains on ``train_idx``, validation reads ``val_idx``."""
    from ecgscan_cli.provenance import Pretraining

    read = np.union1d(train_idx, val_idx)
    teacher = (f"{cfg.signal_encoder} (external: its own training data is not recorded)" if cfg.signal_encoder
               else "built-in (trained on the training records)")
    return Pretraining(signals=os.path.abspath(signals_path), split=split.kind, train_folds=split.train_folds,
                       val_folds=split.val_folds, test_folds=split.test_folds, n_train=len(train_idx),
                       n_val=len(val_idx), n_test=len(split.test), ids=frozenset(sf.ids[int(i)] for i in read),
                       signal_teacher=teacher)


@dataclass
class Parts:
    """The built run: frozen encoders, model, objective, optimizer, render generator."""

    cfg: TrainConfig
    text_encoder: nn.Module
    teacher: nn.Module | None  # None: the built-in teacher is trained in the teacher stage
    model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    render_gen: torch.Generator
    frozen: FrozenFeatures
    text_cached: bool  # the text encoder came from the run folder (--resume)


def build_parts(plan: Plan, dev: torch.device, dist: Dist) -> Parts:
    """Load the frozen encoders and build model, objective and optimizer (writes nothing).
    A wrong text model, signal encoder or image model is refused here, before the output
    is touched."""
    from ecgscan_cli.encoders import load_signal_encoder, load_text_encoder
    from ecgscan_cli.model import build_model

    cfg, run_path = plan.cfg, plan.run_path
    torch.manual_seed(cfg.seed)
    cache = run_path / TEXT_CACHE_DIR
    text_cached = plan.resume and (cache / "config.json").exists()
    if text_cached:  # --resume: the very encoder the run started with
        text_encoder = load_text_encoder(str(cache), dev, fallback=False)
    else:
        text_encoder = load_text_encoder(cfg.model.text_model, dev, cfg.model.text_pooling, cfg.model.text_max_length)
    # an external teacher, or the built-in one a resumed run already trained
    teacher_path = cfg.signal_encoder or (run_path / TEACHER_DIR if plan.resume else None)
    teacher = None
    if cfg.signal_encoder or (teacher_path is not None and Path(teacher_path).exists()):
        teacher = load_signal_encoder(teacher_path, dev, cfg.model.n_samples)
        with torch.no_grad():
            probe = torch.zeros(2, canonical.N_LEADS, cfg.model.n_samples, device=dev)
            cfg.model.signal_dim = int(teacher(probe).shape[1])
    if plan.resume:
        diffs = config_diff(with_defaults(read_run_config(run_path)), cfg.to_dict())
        if diffs:
            raise EcgscanError(f"--resume: the config differs from the run's ({'; '.join(diffs[:5])}); "
                               "resume with the same settings or start a new run")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, load_weights=plan.resume_from is None, text_encoder=text_encoder)
    objective = Objective(model, cfg).to(dev)
    render_gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + 500 + dist.rank)
    optimizer = build_optimizer(objective, cfg)
    frozen = FrozenFeatures(text_encoder, teacher, cfg.cache_frozen)
    return Parts(cfg, text_encoder, teacher, model, objective, optimizer, render_gen, frozen, text_cached)


# --------------------------------------------------------------------------- rendering and validation


def _render(signals, size, augment, gen, fs: float):
    from ecgscan_cli.render import render_batch

    return render_batch(signals, size=size, augment=augment, fs=fs, generator=gen)


@torch.no_grad()
def evaluate(objective: Objective, frozen: FrozenFeatures, sf, indices, cfg: TrainConfig, device, amp) -> dict:
    """Validation: every loss term (no augmentation, no query masking) and image→report R@1."""
    model = objective.model
    was_training = model.training
    objective.eval()
    gen = torch.Generator(device=device).manual_seed(12345)
    sums = {k: 0.0 for k in ("loss", *LOSS_TERMS)}
    n = 0
    zi, zt = [], []
    bs = cfg.batch_size
    for start in range(0, len(indices), bs):
        idx = [int(i) for i in indices[start:start + bs]]
        if len(idx) < 2:
            break
        signals = torch.from_numpy(sf.signals(idx)).to(device)
        reports = [sf.reports[i] for i in idx]
        images = _render(signals, model.image_size, "none", gen, cfg.model.fs)
        text_f, sig_f = frozen(idx, signals, reports)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            total, terms, z_i, z_t = objective(images, signals, text_f, sig_f)
        w = len(idx)
        sums["loss"] += float(total) * w
        for k in LOSS_TERMS:
            sums[k] += float(terms[k]) * w
        zi.append(z_i.float())
        zt.append(z_t.float())
        n += w
    objective.train(was_training)
    out = {k: v / max(n, 1) for k, v in sums.items()}
    if zi:
        sim = torch.cat(zi) @ torch.cat(zt).t()
        out["r1"] = float((sim.argmax(1) == torch.arange(sim.shape[0], device=sim.device)).float().mean())
    return out


# --------------------------------------------------------------------------- the loop


class MetricsLog:
    """``metrics.jsonl``: one JSON object a line, flushed (rank 0 only)."""

    def __init__(self, path: Path | None):
        self.file = path.open("a", encoding="utf-8") if path is not None else None

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


@dataclass
class Window:
    """Train metrics averaged over the steps since the last log line."""

    seconds: float = 0.0
    render_s: float = 0.0
    steps: int = 0
    terms: dict = field(default_factory=lambda: {k: 0.0 for k in ("loss", *LOSS_TERMS)})


class Trainer:
    """Steps until ``max_steps`` or the time budget, with logs, validation and checkpoints at
    their cadence. ``in_step`` is True while a step (and its checkpoints) is unfinished."""

    def __init__(self, plan: Plan, parts: Parts, dev: torch.device, dist: Dist, checkpointer: Checkpointer,
                 metrics: MetricsLog, budget: Budget, progress: Callable[[int], None] | None):
        self.plan, self.parts, self.cfg, self.dev, self.dist = plan, parts, parts.cfg, dev, dist
        self.ckpt, self.metrics, self.budget, self.progress = checkpointer, metrics, budget, progress
        self.amp = dev.type == "cuda" and self.cfg.amp in ("auto", "bf16")
        self.runner = parts.objective
        if dist.world > 1:
            self.runner = nn.parallel.DistributedDataParallel(parts.objective, device_ids=[dev.index]
                                                              if dev.type == "cuda" else None)
        self.step, self.in_step, self.val = 0, False, {}
        self.batches = None
        self.window = Window()

    def start(self, step: int, micro: int) -> None:
        from ecgscan_cli.data import PairDataset, make_loader

        self.step = step
        cfg = self.cfg
        loader = make_loader(PairDataset(self.plan.sf, self.plan.train_idx), cfg.batch_size, cfg.seed, self.dist.rank,
                             self.dist.world, micro, cfg.num_workers, worker_init_fn=quiet_worker)
        self.batches = iter(loader)
        if self.progress and step:  # a resumed run's bar starts where it stopped
            self.progress(step)

    def train(self) -> bool:
        """The steps; True when stopped by the time budget."""
        cfg = self.cfg
        self.parts.objective.train()
        while self.step < cfg.max_steps:
            if self.budget.spent():
                log.info("--max-minutes %.3g reached at step %d (%.0f s)", cfg.max_minutes, self.step,
                         self.budget.elapsed())
                return True
            with finish_step_first(self.step):
                self.in_step = True
                self.one_step()
                self.after_step()
                self.in_step = False
            if self.progress:
                self.progress(1)
        return False

    def finish(self) -> dict:
        """Validate and save ``last`` (and ``best`` by the rule) at the final step."""
        with finish_step_first(self.step):
            self.val = self.validate()
            self.ckpt.save_last(self.step, self.val)
        return self.val

    def one_step(self) -> None:
        cfg, dev, parts = self.cfg, self.dev, self.parts
        t0 = time.perf_counter()
        lr = lr_at(self.step, cfg)
        for g in parts.optimizer.param_groups:
            g["lr"] = lr
        render_s = 0.0
        totals = {k: 0.0 for k in ("loss", *LOSS_TERMS)}
        for a in range(cfg.accum_steps):
            signals, reports, idx = next(self.batches)
            signals = signals.to(dev, non_blocking=True)
            tr = time.perf_counter()
            images = _render(signals, parts.model.image_size, cfg.augment, parts.render_gen, cfg.model.fs)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            render_s += time.perf_counter() - tr
            text_f, sig_f = parts.frozen(idx, signals, reports)
            sync = self.dist.world == 1 or a == cfg.accum_steps - 1
            with (self.runner.no_sync() if not sync else contextlib.nullcontext()):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
                    total, terms, _, _ = self.runner(images, signals, text_f, sig_f)
                (total / cfg.accum_steps).backward()
            totals["loss"] += float(total.detach()) / cfg.accum_steps
            for k in LOSS_TERMS:
                totals[k] += float(terms[k].detach()) / cfg.accum_steps
        trainable = [p for p in parts.objective.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        if not (math.isfinite(totals["loss"]) and torch.isfinite(grad_norm)):
            from ecgscan_cli.checkpoint import resolve

            bad = ", ".join(f"{k}={v:.4g}" for k, v in totals.items())
            raise EcgscanFailure(f"loss is not finite at step {self.step} ({bad}, grad norm {float(grad_norm):.4g}); "
                                 f"lower --lr or check the data. Last checkpoint: "
                                 f"{resolve(self.plan.run_path / 'last') if self.ckpt.run.committed else None}")
        parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        w = self.window
        w.seconds += time.perf_counter() - t0
        w.render_s += render_s
        w.steps += 1
        for k, v in totals.items():
            w.terms[k] += v
        self.last_lr, self.last_grad_norm = lr, float(grad_norm)

    def after_step(self) -> None:
        cfg, step = self.cfg, self.step
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            self.log_window()
        if step % cfg.eval_every == 0 and step < cfg.max_steps:
            self.val = self.validate()
        if step % cfg.save_every == 0 and step < cfg.max_steps:
            self.ckpt.save_last(step)

    def log_window(self) -> None:
        w, cfg, objective = self.window, self.cfg, self.parts.objective
        images_per_s = w.steps * cfg.batch_size * cfg.accum_steps * self.dist.world / w.seconds
        self.metrics.write({"step": self.step, "split": "train", "lr": self.last_lr,
                            **{k: v / w.steps for k, v in w.terms.items()},
                            "tau_clip": float(1 / objective.clip.temperature.scale().detach()),
                            "tau_gram": float(1 / objective.gram.temperature.scale().detach()),
                            "grad_norm": self.last_grad_norm, "steps_per_s": w.steps / w.seconds,
                            "images_per_s": images_per_s, "render_share": w.render_s / w.seconds,
                            "elapsed_s": self.budget.elapsed()})
        self.window = Window()

    def validate(self) -> dict:
        """Validation losses at this step; ``best`` is offered the step (the rule: Checkpointer)."""
        plan, parts = self.plan, self.parts
        val = (evaluate(parts.objective, parts.frozen, plan.sf, plan.val_idx, self.cfg, self.dev, self.amp)
               if len(plan.val_idx) >= 2 else {})
        if val and self.dist.main:
            self.metrics.write({"step": self.step, "split": "val", **{f"val_{k}": v for k, v in val.items()}})
            log.info("step %d validation: loss %.4f (clip %.3f gram %.3f mse %.4f lead %.4f) R@1 %.3f", self.step,
                     val["loss"], val["clip"], val["gram"], val["mse"], val["lead"], val.get("r1", float("nan")))
        self.ckpt.offer(self.step, val)
        return val


# --------------------------------------------------------------------------- the run


def pretrain(signals_path, run_dir, cfg: TrainConfig, *, device: str = "auto", resume: bool = False,
             overwrite: bool = False, progress: Callable[[int], None] | None = None,
             teacher_progress: Callable[[int], None] | None = None, started: float | None = None) -> PretrainResult:
    """Train ECG-Scan on a signals file; checkpoints and logs in ``run_dir``.

    ``started``: the ``time.monotonic()`` at which the command started (``--max-minutes``
    counts from it; default: now). An interruption (KeyboardInterrupt, or
    :class:`~ecgscan_cli.errors.Terminated`) is re-raised after saving, carrying a one-line
    ``ecgscan_message`` that says what was saved and how to continue.
    """
    import copy

    budget = Budget(cfg.max_minutes, started)
    cfg = copy.deepcopy(cfg)
    dist, dev = init_distributed(device)
    plan = plan_run(signals_path, run_dir, cfg, dist, resume, overwrite)
    run = None
    if dist.main:
        log.info("split: %s; %d training and %d validation records; %s", plan.pretraining.describe(),
                 len(plan.train_idx), len(plan.val_idx), _held_out(plan.split))
        run = RunFolder.reserve(plan.run_path, resume=resume, overwrite=overwrite)  # the lock, before loading models
    try:
        parts = build_parts(plan, dev, dist)
        return _run(plan, parts, run, dev, dist, budget, progress, teacher_progress)
    finally:
        if run is not None:
            run.close()
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _held_out(split) -> str:
    from ecgscan_cli.folds import format_folds

    if len(split.test):
        return f"{len(split.test)} records of folds {format_folds(split.test_folds)} held out as test (never read)"
    return "no record held out as test"


def _run(plan: Plan, parts: Parts, run: RunFolder | None, dev, dist: Dist, budget: Budget, progress,
         teacher_progress) -> PretrainResult:
    """The stages, in order: run folder set up → teacher → start point → steps → summary."""
    work = dist.from_main(str(run.start()) if run is not None else None)
    run = run if run is not None else RunFolder.attach(plan.run_path, work)
    metrics, trainer, teacher = MetricsLog(None), None, None
    try:
        metrics = _set_up_folder(plan, parts, run, dist)
        if parts.teacher is None:
            teacher = _teacher_stage(plan, parts, run, dev, dist, budget, metrics, teacher_progress)
        checkpointer = Checkpointer(run, parts.model, parts.objective, parts.optimizer, parts.render_gen, dist,
                                    plan.cfg, plan.pretraining.to_meta(), has_validation=len(plan.val_idx) >= 2)
        step, micro = _start_point(plan, checkpointer, dev, dist)
        trainer = Trainer(plan, parts, dev, dist, checkpointer, metrics, budget, progress)
        trainer.start(step, micro)
        stopped_early = trainer.train()
        val = trainer.finish()
        metrics.write({"step": trainer.step, "split": "summary", "elapsed_s": budget.elapsed(),
                       "best_val_loss": checkpointer.best_val, "best_step": checkpointer.best_step,
                       "best_rule": checkpointer.rule, "stopped_early": stopped_early,
                       **({"teacher_s": teacher.seconds} if teacher else {})})
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP (Terminated)
        e.ecgscan_message = _save_on_interrupt(e, run, trainer, dist, plan)
        raise
    except BaseException:
        if dist.main:
            run.discard()  # nothing if a checkpoint was saved: then the run folder stays
        raise
    finally:
        metrics.close()
    dist.barrier()
    return PretrainResult(best=plan.run_path / "best", last=plan.run_path / "last", step=trainer.step, val=val,
                          stopped_early=stopped_early, best_val=checkpointer.best_val,
                          best_step=_best_step(plan.run_path, checkpointer.best_step, dist),
                          best_rule=checkpointer.rule, teacher=teacher, elapsed_s=budget.elapsed())


def _set_up_folder(plan: Plan, parts: Parts, run: RunFolder, dist: Dist) -> MetricsLog:
    """The run folder's fixed files: config, ids of the records read, the frozen text encoder;
    on --resume, the metrics logged after the checkpoint resumed from are dropped."""
    from ecgscan_cli.atomic import atomic_output
    from ecgscan_cli.checkpoint import read_meta
    from ecgscan_cli.provenance import IDS_FILE, write_ids

    if dist.main:
        run.write_config(plan.cfg.to_dict())
        write_ids(run.work / IDS_FILE, [plan.sf.ids[int(i)] for i in np.union1d(plan.train_idx, plan.val_idx)])
        if not parts.text_cached:
            with atomic_output(run.work / TEXT_CACHE_DIR, overwrite=True, directory=True) as tmp:
                parts.text_encoder.save(tmp)
        if plan.resume:
            run.forget_metrics_after(int(read_meta(plan.resume_from)["step"]) if plan.resume_from else 0)
    dist.barrier()
    return MetricsLog(run.work / METRICS if dist.main else None)


def _start_point(plan: Plan, checkpointer: Checkpointer, dev, dist: Dist) -> tuple[int, int]:
    """(step, micro-batches): the run's last checkpoint, or step 0 with fresh random streams."""
    if checkpointer.rule == BEST_IS_LAST and dist.main:
        log.warning("no validation records: best/ will be the last checkpoint")
    if plan.resume_from is not None:
        step, micro = checkpointer.restore(plan.resume_from, dev)
        log.info("resuming at step %d from %s", step, plan.resume_from)
        return step, micro
    torch.manual_seed(plan.cfg.seed * 1000 + dist.rank)
    if plan.resume:
        log.info("%s has no last/ checkpoint: training starts at step 0", plan.run_path)
    return 0, 0


def _best_step(run_path: Path, known: int | None, dist: Dist) -> int | None:
    from ecgscan_cli.checkpoint import read_meta, resolve

    if dist.main and resolve(run_path / "best"):
        return read_meta(run_path / "best").get("step")
    return known


def _teacher_stage(plan: Plan, parts: Parts, run: RunFolder, dev, dist: Dist, budget: Budget, metrics: MetricsLog,
                   teacher_progress) -> TeacherReport | None:
    """Train the built-in signal teacher into ``RUN/teacher`` (rank 0) and load it everywhere."""
    from ecgscan_cli.encoders import load_signal_encoder

    report = _train_teacher(plan, parts, run, dev, budget, metrics, teacher_progress) if dist.main else None
    dist.barrier()
    parts.teacher = parts.frozen.signal_encoder = load_signal_encoder(run.work / TEACHER_DIR, dev,
                                                                      plan.cfg.model.n_samples)
    return report


def _train_teacher(plan: Plan, parts: Parts, run: RunFolder, dev, budget: Budget, metrics: MetricsLog,
                   teacher_progress) -> TeacherReport:
    cfg = plan.cfg
    deadline = budget.teacher_deadline()
    share = ""
    if deadline is not None:
        share = (f"; it ends by the time {TEACHER_SHARE:.0%} of --max-minutes has passed, "
                 f"{TEACHER_SHARE * budget.seconds:.0f} s after the start")
    log.info("no --signal-encoder: training the built-in signal teacher (%d steps%s)", cfg.teacher_steps, share)
    report = train_signal_teacher(plan.sf, plan.train_idx, parts.frozen, cfg, dev, run.work / TEACHER_DIR,
                                  teacher_progress, deadline=deadline)
    report.budget_s = None if deadline is None else TEACHER_SHARE * budget.seconds
    if report.cut_by_budget:
        log.warning("signal teacher: stopped by its share of --max-minutes after %d of %d steps (%.0f s); final "
                    "contrastive loss %.3f", report.steps, report.planned, report.seconds, report.loss)
    else:
        log.info("signal teacher: %d steps in %.0f s, final contrastive loss %.3f", report.steps, report.seconds,
                 report.loss)
    metrics.write(report.record())
    return report


def _save_on_interrupt(e: KeyboardInterrupt, run: RunFolder, trainer: Trainer | None, dist: Dist, plan: Plan) -> str:
    """Save ``last`` if the state is that of a finished step and not saved yet; keep the run
    folder (even before its first checkpoint) so that --resume continues; say so in one line."""
    how = f"stopped by {_signal_name(e)}" if isinstance(e, Terminated) else "interrupted"
    where = plan.run_path
    ckpt = trainer.ckpt if trainer is not None else None
    if dist.world == 1 and trainer is not None and not trainer.in_step and trainer.step > 0 \
            and trainer.step != ckpt.saved_step:
        try:
            ckpt.save_last(trainer.step)   # a finished step: resumes bit-for-bit
        except BaseException:
            run.discard()  # nothing if an earlier checkpoint made the run folder real
            raise
    if dist.main:
        if not run.committed and not (run.work / RUN_CONFIG).is_file():
            run.discard()  # stopped while the run folder was being set up: nothing worth keeping
            return f"{how} before the run folder was set up; nothing was written"
        run.commit()
    if trainer is None:
        return (f"{how} before the first training step; {where} keeps the run's setup: continue with --resume "
                "(it starts at step 0)")
    saved = ckpt.saved_step
    if trainer.in_step:
        state = (f"{where}/last holds step {saved}" if saved is not None
                 else f"{where} has no checkpoint yet: --resume starts at step 0")
        return f"{how} during step {trainer.step + 1} (not saved: it was unfinished); {state}; continue with --resume"
    if saved is None:
        return f"{how} before the first training step; continue with --resume (it starts at step 0)"
    return f"{how} at step {saved}; {where}/last holds it: continue with --resume"


def _signal_name(e: Terminated) -> str:
    import signal

    try:
        return signal.Signals(e.signum).name
    except ValueError:
        return f"signal {e.signum}"
