"""`ecgscan train-digitizer`: train TraceNet on online renders of real signals.

The run folder holds ``run.json`` (config and command line), ``metrics.jsonl`` (one line
per logged step and per validation), ``last/`` (weights + optimizer + random states:
``--resume`` continues bit-for-bit from the last finished step) and ``tracenet.safetensors``,
the weights with the best validation trace F1 (without validation records: the last), with
their provenance in the file's metadata. Train, validation and held-out folds are
disjoint: by default folds 1–6 train, 7 validates, 8+ are never read (they are the
digitiser's test set).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan.digitize")


DEFAULT_MIX = {"none": 0.15, "paper": 0.35, "heavy": 0.5}   # augmentation presets drawn per batch


@dataclass
class DigitizerTrainConfig:
    signals: str
    train_folds: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    val_folds: tuple[int, ...] = (7,)
    steps: int = 6000
    batch_size: int = 8
    crops_per_page: int = 2
    crop: int = 256
    dpi: tuple[float, float] = (45.0, 130.0)     # page resolutions drawn (working-resolution px)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    trace_pos_weight: float = 8.0
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    augment_at: str = "page"                      # augment whole pages, then crop (data.PairConfig)
    init: str | None = None                       # start from these TraceNet weights (fine-tuning)
    # None: the --init weights' widths, else TraceNetConfig's; with --init, wider ones grow
    # those weights (model.widen_tracenet) so fine-tuning starts from what they learned
    widths: tuple[int, ...] | None = None
    val_batches: int = 6
    eval_every: int = 250
    log_every: int = 25
    seed: int = 0
    max_minutes: float | None = None

    def check(self) -> "DigitizerTrainConfig":
        for name in ("steps", "batch_size", "crops_per_page", "eval_every", "log_every", "val_batches"):
            if int(getattr(self, name)) < 1:
                raise EcgscanError(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if self.batch_size % self.crops_per_page:
            raise EcgscanError("batch-size must be a multiple of crops-per-page")
        if not (32 <= self.crop <= 1024) or self.crop % 16:
            raise EcgscanError(f"crop must be a multiple of 16 in 32–1024, got {self.crop}")
        if not (0 < self.lr < 1):
            raise EcgscanError(f"lr must be in (0, 1), got {self.lr}")
        if set(self.train_folds) & set(self.val_folds):
            raise EcgscanError("train and validation folds overlap")
        if self.max_minutes is not None and not (self.max_minutes > 0):
            raise EcgscanError("max-minutes must be > 0")
        if not (10 <= self.dpi[0] <= self.dpi[1] <= 600):
            raise EcgscanError(f"dpi range must lie in 10–600, got {self.dpi}")
        from ecgscan_cli.digitize.data import AUGMENT_AT
        from ecgscan_cli.render.augment import resolve_augment

        if self.augment_at not in AUGMENT_AT:
            raise EcgscanError(f"augment-at must be one of {', '.join(AUGMENT_AT)}, got {self.augment_at!r}")

        for name in self.mix:  # an unknown preset fails here, not at its first batch
            resolve_augment(name)
        return self


def initial_weights(init: str) -> Path:
    """The weights file that ``--init`` names: ``shipped``, a .safetensors file or a run folder."""
    from ecgscan_cli.digitize.image import weights_path

    path = weights_path(None if init == "shipped" else init)
    if not path.is_file():
        raise EcgscanError(f"--init: no digitiser weights at {path}")
    return path


def _records(sf, folds) -> list[int]:
    if sf.folds is None:
        raise EcgscanError(f"{sf.path}: no folds in the signals file; the digitiser needs held-out folds")
    return [i for i in range(len(sf)) if int(sf.folds[i]) in set(folds)]


def _fresh_run_folder(out: Path, overwrite: bool) -> None:
    """An empty run folder marked as ecgscan's (so that --overwrite replaces only a digitiser run)."""
    import shutil

    from ecgscan_cli.atomic import MARKER, check_output_path

    check_output_path(out, overwrite, kind="digitizer")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"kind": "digitizer"}))


def _loss(logits, targets, pos_weight):
    import torch
    import torch.nn.functional as F

    pw = torch.tensor([pos_weight, 2.0]).view(1, 2, 1, 1)
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw)
    p = torch.sigmoid(logits[:, 0])
    t = targets[:, 0]
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return bce + 0.5 * dice


def _f1(logits, targets) -> float:
    pred = logits[:, 0] > 0
    truth = targets[:, 0] > 0.5
    tp = (pred & truth).sum().item()
    return 2 * tp / max(pred.sum().item() + truth.sum().item(), 1)


# Validation crops do not follow --mix: "best" must stay comparable when a resumed run changes it.
VAL_MIX = {"none": 0.25, "paper": 0.25, "heavy": 0.25, "photo": 0.25}


class _Pages:
    """Random pages from some records of a signals file, ``crops_per_page`` crops each."""

    def __init__(self, sf, rows, cfg: DigitizerTrainConfig, mix: dict | None = None):
        from ecgscan_cli.digitize.data import PairConfig

        self.sf, self.rows, self.cfg = sf, rows, cfg
        self.pair = PairConfig(crop=cfg.crop, dpi=tuple(cfg.dpi), mix=dict(mix or cfg.mix), augment_at=cfg.augment_at)

    def batch(self, rng, gen):
        from ecgscan_cli.digitize.data import training_batch

        pages = self.cfg.batch_size // self.cfg.crops_per_page
        picks = rng.choice(len(self.rows), size=pages)
        sigs = [np.nan_to_num(self.sf.signal(self.rows[k]).astype(np.float64)) for k in picks]
        return training_batch(sigs, float(self.sf.fs), self.pair, rng, gen, self.cfg.crops_per_page)


def _save_state(folder: Path, net, opt, step: int, rng, gen, best: float, provenance: dict | None = None) -> None:
    import torch

    from ecgscan_cli.atomic import atomic_output
    from ecgscan_cli.digitize.model import save_tracenet

    with atomic_output(folder, overwrite=True, directory=True, kind="digitizer") as tmp:
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        save_tracenet(net, tmp / "tracenet.safetensors", provenance)
        torch.save({"optimizer": opt.state_dict(), "torch_rng": gen.get_state(),
                    "torch_global_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "best_f1": best,
                                                    "numpy_rng": rng.bit_generator.state}))


def train_digitizer(cfg: DigitizerTrainConfig, out: str | Path, *, resume: bool = False,
                    overwrite: bool = False, progress=None) -> dict:
    """Train (or resume) a digitiser run in ``out``; returns the final summary."""
    import torch

    from ecgscan_cli.digitize.model import (
        TraceNet, TraceNetConfig, load_tracenet, save_tracenet, tracenet_provenance, widen_tracenet,
    )
    from ecgscan_cli.formats.signals import SignalsFile

    cfg.check()
    out = Path(out)
    sf = SignalsFile(cfg.signals)
    train_rows, val_rows = _records(sf, cfg.train_folds), _records(sf, cfg.val_folds)
    if not train_rows:
        raise EcgscanError(f"no records in train folds {list(cfg.train_folds)} of {cfg.signals}")
    started = time.monotonic()
    if resume:
        state_file = out / "last" / "state.json"
        if not state_file.is_file():
            raise EcgscanError(f"{out}: nothing to resume (no last/state.json)")
        try:
            state = json.loads(state_file.read_text())
        except ValueError:
            raise EcgscanError(f"{state_file}: not valid JSON; the run cannot be resumed") from None
        net = load_tracenet(out / "last" / "tracenet.safetensors").train()
    else:
        # weights to start from are read before the run folder exists: a bad --init leaves nothing
        init = initial_weights(cfg.init) if cfg.init is not None else None
        torch.manual_seed(cfg.seed)
        if init is not None:
            net = load_tracenet(init).train()
            if cfg.widths is not None and tuple(cfg.widths) != tuple(net.config.widths):
                net = widen_tracenet(net, cfg.widths)
            cfg.widths = tuple(net.config.widths)
        else:
            net = TraceNet(TraceNetConfig(**({} if cfg.widths is None else {"widths": tuple(cfg.widths)})))
            cfg.widths = tuple(net.config.widths)
        _fresh_run_folder(out, overwrite)
        state = None
        run = {"config": asdict(cfg), "command": sys.argv, "train_records": len(train_rows),
               "val_records": len(val_rows)}
        if init is not None:
            run["init"] = {"path": str(init), "provenance": tracenet_provenance(init)}
        (out / "run.json").write_text(json.dumps(run, indent=1))
        (out / "metrics.jsonl").write_text("")
    # channels-last convolutions: a training step ~1.5× faster on a CPU core (measured,
    # batch 8 × 256²), the same layout whether a run starts fresh or resumes
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, best = 0, -1.0
    if state is not None:
        saved = torch.load(out / "last" / "optimizer.pt", weights_only=True)
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["torch_rng"])
        torch.set_rng_state(saved["torch_global_rng"])
        rng.bit_generator.state = state["numpy_rng"]
        step, best = int(state["step"]), float(state["best_f1"])
    # a fixed validation set: the same crops every time (own seed, not the training stream)
    val = []
    if val_rows:
        vrng, vgen = np.random.default_rng(12345), torch.Generator().manual_seed(12345)
        pages = _Pages(sf, val_rows, cfg, VAL_MIX)
        val = [pages.batch(vrng, vgen)[:2] for _ in range(cfg.val_batches)]
    train = _Pages(sf, train_rows, cfg)
    deadline = None if cfg.max_minutes is None else started + 60 * cfg.max_minutes
    run = _Run(cfg, net, opt, rng, gen, out, step, best)
    try:
        stopped = run.loop(train, val, deadline, progress)
    except BaseException:
        # signals are held until the running step has finished (finish_step_first), so the
        # state here is that of a finished step: save it for --resume
        if run.step > run.saved_step:
            _save_state(out / "last", net, opt, run.step, rng, gen, run.best, _provenance(cfg, run.step, None))
        raise
    finally:
        run.metrics.close()
    if run.step > run.saved_step:
        _save_state(out / "last", net, opt, run.step, rng, gen, run.best, _provenance(cfg, run.step, None))
    if not (out / "tracenet.safetensors").exists():
        save_tracenet(net, out / "tracenet.safetensors", _provenance(cfg, run.step, None))
    return {"run": str(out), "steps": run.step, "stopped_by": stopped,
            "best_val_trace_f1": run.best if run.best >= 0 else None,
            "minutes": round((time.monotonic() - started) / 60, 2), "weights": str(out / "tracenet.safetensors")}


class _Run:
    """The training loop's state: one method per job (step, validate-and-save, loop)."""

    def __init__(self, cfg, net, opt, rng, gen, out: Path, step: int, best: float):
        self.cfg, self.net, self.opt, self.rng, self.gen, self.out = cfg, net, opt, rng, gen, out
        self.step = self.saved_step = step
        self.best = best
        self.metrics = (out / "metrics.jsonl").open("a")
        self.losses: list[float] = []
        self.t_log = time.monotonic()

    def lr(self) -> float:
        c = self.cfg
        return c.lr * 0.5 * (1 + math.cos(math.pi * min(self.step, c.steps) / c.steps))

    def train_step(self, train: _Pages) -> None:
        self.net.train()
        images, targets, _ = train.batch(self.rng, self.gen)
        for g in self.opt.param_groups:
            g["lr"] = self.lr()
        loss = _loss(self.net(images), targets, self.cfg.trace_pos_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        self.losses.append(loss.item())

    def log(self, progress) -> None:
        now = time.monotonic()
        rec = {"step": self.step, "loss": float(np.mean(self.losses)), "lr": self.lr(),
               "steps_per_s": len(self.losses) / max(now - self.t_log, 1e-9)}
        self.t_log, self.losses = now, []
        self._write(rec)
        if progress:
            progress(rec)

    def validate_and_save(self, val) -> None:
        """Best = highest validation trace F1 (no validation records: the last step)."""
        from ecgscan_cli.digitize.model import save_tracenet

        f1 = _validate(self.net, val)
        if f1 is not None:
            self._write({"step": self.step, "val_trace_f1": f1})
            log.info("step %d: validation trace F1 %.4f", self.step, f1)
        if f1 is None or f1 > self.best:
            self.best = f1 if f1 is not None else self.best
            tmp = self.out / ".tracenet.partial.safetensors"
            save_tracenet(self.net, tmp, _provenance(self.cfg, self.step, f1))
            tmp.replace(self.out / "tracenet.safetensors")
        _save_state(self.out / "last", self.net, self.opt, self.step, self.rng, self.gen, self.best,
                    _provenance(self.cfg, self.step, f1))
        self.saved_step = self.step

    def loop(self, train: _Pages, val, deadline, progress) -> str:
        from ecgscan_cli.training.interrupts import finish_step_first

        c = self.cfg
        while self.step < c.steps:
            if deadline is not None and time.monotonic() > deadline:
                return "max-minutes"
            with finish_step_first(self.step):
                self.train_step(train)
                if self.step % c.log_every == 0:
                    self.log(progress)
                if self.step % c.eval_every == 0 or self.step == c.steps:
                    self.validate_and_save(val)
        return "steps"

    def _write(self, rec: dict) -> None:
        self.metrics.write(json.dumps(rec) + "\n")
        self.metrics.flush()


def _validate(net, val) -> float | None:
    import torch

    if not val:
        return None
    net.eval()
    with torch.inference_mode():
        f1 = [_f1(net(x), y) for x, y in val]
    net.train()
    return float(np.mean(f1))


def _provenance(cfg: DigitizerTrainConfig, step: int, f1) -> dict:
    out = {"trained_by": "ecgscan train-digitizer", "command": " ".join(sys.argv), "step": step,
           "val_trace_f1": f1, "signals": str(cfg.signals), "train_folds": list(cfg.train_folds),
           "val_folds": list(cfg.val_folds), "augment_mix": cfg.mix, "augment_at": cfg.augment_at}
    if cfg.init is not None:
        # the chain back to the first run: the weights this run started from, and theirs
        out["init"] = {"weights": cfg.init, "provenance": _init_provenance(cfg.init)}
    return out


def _init_provenance(init: str) -> dict | None:
    from ecgscan_cli.digitize.model import tracenet_provenance

    try:
        return tracenet_provenance(initial_weights(init))
    except (EcgscanError, OSError):   # moved or deleted since the run started: run.json has it
        return None
