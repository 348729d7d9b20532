"""`ecgscan train-restorer`: teach the :class:`~.restore.Restorer` what reading a page loses.

Two stages in one run folder, both resumable:

1. **Readings** (``readings/``): pages of random records of the train folds (and a fixed
   set of the validation folds) are printed with random page options at a random
   resolution, augmented with a preset drawn from ``mix``, and read by TraceNet
   (``digitize_image``, the reading ``reconstruct`` makes). Each page keeps the signal
   as printed (``as_shown``), its reading and what the restorer is told of the page
   (:func:`~.restore.page_features`), in chunks of ``CHUNK`` pages; a chunk's
   pages follow from the run's seed and its number alone, so an interrupted stage goes
   on where it stopped, and on several processes (``workers``) gives the same pages.
   This stage is the slow one (a few seconds a page).
2. **Training** (``last/``, ``metrics.jsonl``, ``restorer.safetensors``): random
   stretches of the readings, each aligned to its signal by the benchmark's own shift and
   offset (so the restorer learns to restore, not to move), trained with :class:`SnrDbLoss`;
   validated on the validation pages with the benchmark's metric (mean aligned dB over
   pages); the best weights are kept, with their provenance.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan.digitize")

CHUNK = 16                  # pages per readings file
FS = 500.0                  # readings and signals: the digitiser's output rate
DEFAULT_MIX = {"none": 1.0, "paper": 1.0, "heavy": 2.0, "photo": 1.0, "phone": 1.0}


@dataclass
class RestorerTrainConfig:
    signals: str
    train_folds: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    val_folds: tuple[int, ...] = (7,)
    pages: int = 1200                 # training pages read
    val_pages: int = 96
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    dpi: tuple[float, float] = (100.0, 300.0)
    weights: str | None = None        # TraceNet that reads the pages (None: the shipped one)
    steps: int = 30000                # validation still rose at 15,000 (docs/digitize.md)
    batch_size: int = 32
    length: int = 1024                # samples per training stretch
    lr: float = 1e-3
    weight_decay: float = 1e-4
    width: int = 16                   # the restorer's channels (32 read no better and cost 4× the time)
    page_features: bool = True        # told the page's line width and px/mm (heavy, photo +0.2 dB)
    init: str | None = None           # restorer weights to start from ("shipped", a file or run folder)
    eval_every: int = 250
    log_every: int = 50
    seed: int = 0
    max_minutes: float | None = None

    def check(self) -> "RestorerTrainConfig":
        from ecgscan_cli.render.augment import resolve_augment

        lo, hi = self.dpi
        if not (30 <= lo <= hi <= 1200):
            raise EcgscanError(f"dpi range must lie in 30–1200, got {lo:g}-{hi:g}")
        if set(self.train_folds) & set(self.val_folds):
            raise EcgscanError("train and validation folds overlap")
        if not self.mix or any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise EcgscanError("--mix: weights must be ≥ 0 and not all 0")
        if self.max_minutes is not None and not (self.max_minutes > 0):
            raise EcgscanError("max-minutes must be > 0")
        for name in self.mix:  # an unknown preset fails here, not after an hour of reading pages
            if name != "none":
                resolve_augment(name)
        return self


class SnrDbLoss(nn.Module):
    """−(mean over stretches of 10·log10(Σ x² / Σ (x − y)²)): the benchmark's per-lead SNR in
    dB, averaged as the benchmark averages it (a quiet lead counts as much as a loud one)."""

    def forward(self, restored: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        power = (signal * signal).sum(1)
        noise = ((signal - restored) ** 2).sum(1)
        return 10.0 * (torch.log10(noise + 1e-4) - torch.log10(power + 1e-4)).mean()


# ------------------------------------------------------------------ stage 1: readings

def page_jobs(cfg: RestorerTrainConfig, rows: list[int], n_pages: int, stream: int) -> list[tuple]:
    """``(page number, record row, preset, dpi, seed)`` of every page of one stream (0 train,
    1 validation): a page depends on the run's seed, its stream and its number only."""
    rng = np.random.default_rng([cfg.seed, stream])
    names = sorted(cfg.mix)
    p = np.array([cfg.mix[n] for n in names], np.float64)
    p /= p.sum()
    jobs = []
    for k in range(n_pages):
        jobs.append((k, int(rows[rng.integers(len(rows))]), names[rng.choice(len(names), p=p)],
                     float(rng.uniform(*cfg.dpi)), int(rng.integers(2**31))))
    return jobs


_NETS: dict = {}          # per worker process: TraceNet and the signals file, opened once
_SIGNALS: dict = {}


def read_page(job: tuple):
    """One page of :func:`page_jobs`: ``(page number, signal as printed, reading, preset,
    page features)``; the reading is None when the digitiser refused the page."""
    from ecgscan_cli.digitize.data import random_options
    from ecgscan_cli.digitize.evaluate import render_condition
    from ecgscan_cli.digitize.image import digitize_image, load_digitizer
    from ecgscan_cli.digitize.pipeline import Printout
    from ecgscan_cli.digitize.restore import page_features
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.render.layout import as_shown

    k, row, preset, dpi, seed, signals, weights = job
    if weights not in _NETS:
        _NETS[weights] = load_digitizer(weights)
    if signals not in _SIGNALS:
        _SIGNALS[signals] = SignalsFile(signals)
    signal = np.nan_to_num(_SIGNALS[signals].signal(row).astype(np.float64))
    options = random_options(np.random.default_rng(seed))
    page = render_condition(signal, FS, "clean" if preset == "none" else preset, seed, dpi=dpi, options=options)
    shown = as_shown(signal, options, fs=FS).astype(np.float32)
    try:
        read = digitize_image(page, _NETS[weights], printout=Printout(speed_mm_s=options.speed))
    except EcgscanError:
        return k, shown, None, preset, None
    return (k, shown, np.asarray(read.signal, np.float32), preset,
            page_features(read.line_mm, read.px_per_mm[1]))


def _chunk_path(folder: Path, stream: str, c: int) -> Path:
    return folder / f"{stream}-{c:04d}.npz"


def check_signals(cfg: RestorerTrainConfig) -> list[tuple[str, list[int], int]]:
    """``(stream, record rows, pages)`` for the train and validation streams, or a one-line
    refusal: signals not at the digitiser's rate, no folds, a stream without records."""
    from ecgscan_cli.formats.signals import SignalsFile

    sf = SignalsFile(cfg.signals)
    if abs(float(sf.fs) - FS) > 1e-6:
        raise EcgscanError(f"{cfg.signals}: signals at {float(sf.fs):g} Hz; the restorer learns from the "
                           f"digitiser's {FS:g} Hz (import the records at 500 Hz: ecgscan import -r 500)")
    if sf.folds is None:
        raise EcgscanError(f"{cfg.signals}: no folds in the signals file; the restorer needs held-out folds")
    folds = np.asarray(sf.folds)
    out = []
    for name, folds_of, n in (("train", cfg.train_folds, cfg.pages), ("val", cfg.val_folds, cfg.val_pages)):
        rows = [i for i in range(len(sf)) if int(folds[i]) in set(folds_of)]
        if n and not rows:
            raise EcgscanError(f"{cfg.signals}: no records in {name} folds {list(folds_of)}")
        out.append((name, rows, n))
    return out


def make_readings(cfg: RestorerTrainConfig, out: Path, workers: int = 1, progress=None, deadline=None) -> bool:
    """Stage 1: fills ``out/readings`` up to ``cfg.pages`` + ``cfg.val_pages`` pages; True when
    complete (False: stopped at ``deadline``, a ``time.monotonic()``)."""
    from ecgscan_cli.pool import ordered_map
    from ecgscan_cli.threads import set_threads

    streams = check_signals(cfg)
    folder = out / "readings"
    folder.mkdir(parents=True, exist_ok=True)
    todo = []          # (stream name, chunk number, its jobs) of every chunk not yet on disk
    for stream, (name, rows, n) in enumerate(streams):
        jobs = page_jobs(cfg, rows, n, stream)
        for c in range(math.ceil(n / CHUNK)):
            part = jobs[c * CHUNK:(c + 1) * CHUNK]
            if _chunk_path(folder, name, c).exists():
                if progress:
                    progress(len(part))
            else:
                todo.append((name, c, part))
    # one pool for the whole stage (a worker's start-up, torch and TraceNet, costs seconds)
    pages = ((name, c, len(part), job + (cfg.signals, cfg.weights)) for name, c, part in todo for job in part)
    got = []
    for name, c, size, result in ordered_map(_read_job, pages, workers, batch=1, initializer=set_threads,
                                             initargs=(1,)):
        got.append(result)
        if progress:
            progress(1)
        if len(got) == size:
            _write_chunk(_chunk_path(folder, name, c), got)
            got = []
            if deadline is not None and time.monotonic() > deadline:
                return False
    return True


def _read_job(job: tuple):
    name, c, size, page = job
    return name, c, size, read_page(page)


def _write_chunk(path: Path, got: list) -> None:
    from ecgscan_cli.atomic import temporary_name

    ok = [g for g in got if g[2] is not None]
    shape = (len(ok),) + got[0][1].shape
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, page=np.array([g[0] for g in ok], np.int64),
                     signal=np.array([g[1] for g in ok], np.float16).reshape(shape),
                     reading=np.array([g[2] for g in ok], np.float16).reshape(shape),
                     preset=np.array([g[3] for g in ok]), refused=np.int64(len(got) - len(ok)),
                     features=np.array([g[4] for g in ok], np.float32).reshape(len(ok), -1))
        tmp.replace(path)       # a chunk on disk is complete: --resume reads only the missing ones
    finally:
        tmp.unlink(missing_ok=True)


def load_readings(out: Path, stream: str, pages: int | None = None) -> tuple[np.ndarray, ...]:
    """(signals [n, 12, T], readings [n, 12, T], presets [n], page features [n, F]) of one
    stream, float64: its first ``pages`` pages (rounded up to whole chunks; None: all on
    disk). Readings made before the page's features were recorded have none (F = 0)."""
    files = sorted(glob.glob(str(out / "readings" / f"{stream}-*.npz")))
    if pages is not None:
        files = [f for f in files if int(Path(f).stem.split("-")[1]) < math.ceil(pages / CHUNK)]
    parts = [np.load(f) for f in files]
    parts = [p for p in parts if len(p["page"])]
    if not parts:
        return np.zeros((0, 12, 0)), np.zeros((0, 12, 0)), np.zeros(0, str), np.zeros((0, 0))
    told = all("features" in p for p in parts)
    return (np.concatenate([p["signal"] for p in parts]).astype(np.float64),
            np.concatenate([p["reading"] for p in parts]).astype(np.float64),
            np.concatenate([p["preset"] for p in parts]),
            np.concatenate([p["features"] for p in parts]).astype(np.float64) if told
            else np.zeros((sum(len(p["page"]) for p in parts), 0)))


# ------------------------------------------------------------------ stage 2: training

def aligned_stretches(signals: np.ndarray, readings: np.ndarray, min_len: int = 200,
                      features: np.ndarray | None = None) -> list[tuple]:
    """Every shown stretch of every lead as ``(reading, signal, page features)``, the
    reading moved by the benchmark's own best shift and offset
    (:func:`ecgscan_cli.snr.best_alignment`); features ``[n, F]`` (None: F = 0)."""
    from ecgscan_cli.digitize.restore import shown_runs
    from ecgscan_cli.snr import MAX_OFFSET_MV, MAX_SHIFT_S, best_alignment, shift_samples

    out = []
    features = np.zeros((len(signals), 0)) if features is None else features
    for x, y, f in zip(signals, readings, features):
        f = np.asarray(f, np.float32)
        for j, (s, c) in enumerate(best_alignment(x, y, FS, MAX_SHIFT_S, MAX_OFFSET_MV)):
            moved = shift_samples(y[j], s) + c
            both = np.where(np.isfinite(x[j]), moved, np.nan)
            for run in shown_runs(both, min_len):
                out.append((moved[run].astype(np.float32), x[j, run].astype(np.float32), f))
    return out


def stretch_batch(stretches: list[tuple], n: int, length: int, rng: np.random.Generator):
    """``n`` random windows of ``length`` samples (shorter stretches padded with their ends),
    each turned upside down at random (blur and pixels treat both directions alike):
    (readings, signals, their pages' features)."""
    ys, xs = np.empty((n, length), np.float32), np.empty((n, length), np.float32)
    fs = np.empty((n, len(stretches[0][2])), np.float32)
    for i in range(n):
        y, x, fs[i] = stretches[rng.integers(len(stretches))]
        a = int(rng.integers(0, len(y) - length + 1)) if len(y) > length else 0
        y, x = y[a:a + length], x[a:a + length]
        if len(y) < length:
            y, x = np.pad(y, (0, length - len(y)), mode="edge"), np.pad(x, (0, length - len(x)), mode="edge")
        sign = -1.0 if rng.random() < 0.5 else 1.0
        ys[i], xs[i] = sign * y, sign * x
    return torch.from_numpy(ys), torch.from_numpy(xs), torch.from_numpy(fs)


def validation_db(net, signals: np.ndarray, readings: np.ndarray, features: np.ndarray | None = None) -> float:
    """Mean aligned dB over the validation pages, each reading restored (the benchmark's score)."""
    from ecgscan_cli.digitize.restore import restore_reading
    from ecgscan_cli.snr import reconstruction_snr

    net.eval()
    features = [None] * len(signals) if features is None else features
    scores = [np.nanmean(reconstruction_snr(x, restore_reading(y, net, FS, f), FS, align=True))
              for x, y, f in zip(signals, readings, features)]
    net.train()
    return float(np.mean(scores)) if scores else float("nan")


def _save_state(folder: Path, net, opt, step: int, rng, best: float, provenance: dict) -> None:
    from ecgscan_cli.atomic import atomic_output
    from ecgscan_cli.digitize.restore import save_restorer

    with atomic_output(folder, overwrite=True, directory=True, kind="digitizer") as tmp:
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        save_restorer(net, tmp / "restorer.safetensors", provenance)
        torch.save({"optimizer": opt.state_dict(), "torch_global_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "best_val_db": best,
                                                    "numpy_rng": rng.bit_generator.state}))


def _provenance(cfg: RestorerTrainConfig, step: int, val_db) -> dict:
    from ecgscan_cli.digitize.image import weights_path
    from ecgscan_cli.digitize.model import tracenet_provenance

    try:
        reader = tracenet_provenance(weights_path(cfg.weights))
    except (EcgscanError, OSError):
        reader = None
    return {"trained_by": "ecgscan train-restorer", "command": " ".join(sys.argv), "step": step,
            "val_aligned_db": val_db, "signals": str(cfg.signals), "train_folds": list(cfg.train_folds),
            "val_folds": list(cfg.val_folds), "pages": cfg.pages, "augment_mix": cfg.mix, "dpi": list(cfg.dpi),
            "init": _init_provenance(cfg.init),
            "read_by": {"weights": cfg.weights or "shipped", "provenance": reader}}


def _init_provenance(init: str | None):
    """The provenance of the restorer a run started from (None: from scratch)."""
    if init is None:
        return None
    from ecgscan_cli.digitize.model import tracenet_provenance
    from ecgscan_cli.digitize.restore import restorer_file

    try:
        return {"weights": init, "provenance": tracenet_provenance(restorer_file(init))}
    except (EcgscanError, OSError):
        return {"weights": init}


def _first_restorer(cfg: RestorerTrainConfig):
    """The restorer a run begins with: new, or ``cfg.init``'s (grown to be told the page's
    features where the run uses them and it was not)."""
    from ecgscan_cli.digitize.restore import N_PAGE_FEATURES, Restorer, RestorerConfig, grown, load_restorer

    if cfg.init is None:
        return Restorer(RestorerConfig(width=cfg.width, fs=FS,
                                       page_features=N_PAGE_FEATURES if cfg.page_features else 0))
    net = load_restorer(cfg.init)
    if abs(net.config.fs - FS) > 1e-6:
        raise EcgscanError(f"--init {cfg.init}: a restorer of readings at {net.config.fs:g} Hz, not {FS:g}")
    if cfg.page_features and not net.config.page_features:
        net = grown(net)
    elif net.config.page_features and not cfg.page_features:
        raise EcgscanError(f"--init {cfg.init}: that restorer is told the page's features; drop --no-page-features")
    return net.train()


def load_run_config(out: Path) -> RestorerTrainConfig:
    try:
        raw = json.loads((out / "run.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        raise EcgscanError(f"{out}: not a train-restorer run folder (no readable run.json)") from None
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    raw.setdefault("page_features", False)      # a run begun before restorers were told the page's features
    return RestorerTrainConfig(**raw)


def train_restorer(cfg: RestorerTrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
                   workers: int = 1, progress=None) -> dict:
    """Make the readings and train (or resume either stage) in ``out``; returns a summary.

    ``resume``: go on in an existing run folder (``cfg`` as :func:`load_run_config` read it,
    perhaps with other ``steps``, ``max_minutes`` or ``pages``: more pages are read, fewer
    use the first ones). ``progress(kind, value)``: ``("pages", n)`` pages read,
    ``("step", metrics)`` when a step is logged."""
    from ecgscan_cli.digitize.restore import save_restorer
    from ecgscan_cli.digitize.trainer import _fresh_run_folder
    from ecgscan_cli.training.interrupts import finish_step_first

    out = Path(out)
    started = time.monotonic()
    cfg.check()
    torch.manual_seed(cfg.seed)
    last = out / "last"
    # a bad --init is refused before hours of reading pages; a run that has begun training
    # goes on from its own weights (its --init may have moved since)
    net = None if resume and (last / "state.json").is_file() else _first_restorer(cfg)
    deadline = None if cfg.max_minutes is None else started + 60 * cfg.max_minutes
    if resume:      # the settings it runs with now (--width may change before training begins)
        run = json.loads((out / "run.json").read_text())
        run["config"] = asdict(cfg)
        run["resumed"] = run.get("resumed", []) + [sys.argv]
        (out / "run.json").write_text(json.dumps(run, indent=1))
    else:
        check_signals(cfg)      # a bad signals file leaves no run folder behind
        _fresh_run_folder(out, overwrite)
        (out / "run.json").write_text(json.dumps({"kind": "restorer", "config": asdict(cfg), "command": sys.argv},
                                                 indent=1))
        (out / "metrics.jsonl").write_text("")
    done = make_readings(cfg, out, workers, None if progress is None else (lambda n: progress("pages", n)),
                         deadline)
    summary = {"run": str(out), "pages": 0, "steps": 0, "stopped_by": "max-minutes", "best_val_db": None}
    if not done:
        return summary | {"minutes": round((time.monotonic() - started) / 60, 2)}
    signals, readings, _, features = load_readings(out, "train", cfg.pages)
    val_signals, val_readings, _, val_features = load_readings(out, "val", cfg.val_pages)
    if cfg.page_features and (features.shape[1] == 0 or (len(val_signals) and val_features.shape[1] == 0)):
        raise EcgscanError(f"{out}: its readings were made without the page's features; read them again "
                           "(a new run folder) or train with --no-page-features")
    if not cfg.page_features:
        features, val_features = features[:, :0], val_features[:, :0]
    stretches = aligned_stretches(signals, readings, features=features)
    if not stretches:
        raise EcgscanError(f"{out}: the digitiser read none of the training pages")
    summary["pages"] = len(signals)
    rng = np.random.default_rng([cfg.seed, 2])
    step, best = 0, -math.inf
    if net is not None:
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        from ecgscan_cli.digitize.restore import load_restorer

        state = json.loads((last / "state.json").read_text())
        net = load_restorer(last / "restorer.safetensors").train()
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        saved = torch.load(last / "optimizer.pt", weights_only=True)
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_global_rng"])
        rng.bit_generator.state = state["numpy_rng"]
        step, best = int(state["step"]), float(state["best_val_db"])
    loss_fn = SnrDbLoss()
    metrics = (out / "metrics.jsonl").open("a")
    saved_step, losses, t_log = step, [], time.monotonic()
    if step == 0 and len(val_signals):
        # an untrained restorer returns the reading: the weights kept never validate worse
        best = validation_db(net, val_signals, val_readings, val_features)
        metrics.write(json.dumps({"step": 0, "val_aligned_db": best}) + "\n")
        save_restorer(net, out / "restorer.safetensors", _provenance(cfg, 0, best))
    stopped = "steps"
    try:
        while step < cfg.steps:
            if deadline is not None and time.monotonic() > deadline:
                stopped = "max-minutes"
                break
            with finish_step_first(step):
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
                y, x, f = stretch_batch(stretches, cfg.batch_size, cfg.length, rng)
                loss = loss_fn(net(y, f), x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                losses.append(loss.item())
                if step % cfg.log_every == 0:
                    now = time.monotonic()
                    rec = {"step": step, "loss_db": float(np.mean(losses)),
                           "steps_per_s": len(losses) / max(now - t_log, 1e-9)}
                    losses, t_log = [], now
                    metrics.write(json.dumps(rec) + "\n")
                    metrics.flush()
                    if progress:
                        progress("step", rec)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    val_db = validation_db(net, val_signals, val_readings, val_features) if len(val_signals) else None
                    if val_db is not None:
                        metrics.write(json.dumps({"step": step, "val_aligned_db": val_db}) + "\n")
                        metrics.flush()
                        log.info("step %d: validation %.2f dB", step, val_db)
                    if val_db is None or val_db > best:
                        best = val_db if val_db is not None else best
                        tmp = out / ".restorer.partial.safetensors"
                        save_restorer(net, tmp, _provenance(cfg, step, val_db))
                        tmp.replace(out / "restorer.safetensors")
                    _save_state(last, net, opt, step, rng, best, _provenance(cfg, step, val_db))
                    saved_step = step
    except BaseException:
        if step > saved_step:
            _save_state(last, net, opt, step, rng, best, _provenance(cfg, step, None))
        raise
    finally:
        metrics.close()
    if step > saved_step:
        _save_state(last, net, opt, step, rng, best, _provenance(cfg, step, None))
    if not (out / "restorer.safetensors").exists():
        save_restorer(net, out / "restorer.safetensors", _provenance(cfg, step, None))
    return summary | {"steps": step, "stopped_by": stopped, "best_val_db": best if math.isfinite(best) else None,
                      "minutes": round((time.monotonic() - started) / 60, 2),
                      "weights": str(out / "restorer.safetensors")}
