"""The ECG-Scan pretraining loop.

One step: read a batch of (signal, report) pairs → render printout images from the signals
on the training device (``render_batch`` with the augmentation preset) → image encoder →
losses against the frozen text and signal encoders and the signal itself → AdamW.

* presets ``tiny`` (CPU, seconds per hundred steps) and ``paper`` (batch 80, lr 5e-4,
  50k steps) as YAML in ``ecgscan_cli/presets``; a config file overrides the preset and
  flags override the file; the resolved config is saved as ``RUN/run.json``;
* cosine schedule with linear warm-up (10 % of max_steps), gradient clipping, gradient
  accumulation, bf16 autocast on CUDA;
* ``--resume`` restores model, loss temperatures, optimizer, step, data position and RNG
  states from ``RUN/last`` and continues bit-for-bit on CPU;
* DDP under ``torchrun``: each rank reads its own shard, rank 0 logs and saves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgscan_cli.configfile import read_config_file
from ecgscan_cli.errors import EcgscanError, EcgscanFailure
from ecgscan_cli.model import ModelConfig, check_image_config

log = logging.getLogger("ecgscan")

PRESET_DIR = Path(__file__).parent / "presets"
RUN_CONFIG = "run.json"
METRICS = "metrics.jsonl"
TEACHER_DIR = "teacher"
TEXT_CACHE_DIR = "text_encoder"
LOSS_TERMS = ("clip", "gram", "mse", "lead")
FOLD_KEYS = ("train_folds", "val_folds", "test_folds")
# keys that may differ on --resume (they do not change the trajectory)
RESUME_FREE = {"max_minutes", "num_workers", "log_every", "eval_every", "save_every", "device", "signal_encoder"}


@dataclass
class TrainConfig:
    preset: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    # data
    # auto: by folds when the file has folds (test = highest fold, never read; validation =
    # the next one; train = the rest), else random (seeded 9:1). Fold lists left unset are
    # filled that way; run.json holds the resolved ones.
    split: str = "auto"  # auto | folds | random
    val_fraction: float = 0.1
    train_folds: list[int] | None = None
    val_folds: list[int] | None = None
    test_folds: list[int] | None = None
    max_val: int = 2000  # validation records used (first N of the split)
    augment: str = "paper"  # render augmentation preset: none | light | paper | heavy
    num_workers: int = 4
    cache_frozen: bool = False  # keep frozen text/signal features per record in memory
    # optimisation
    batch_size: int = 80
    accum_steps: int = 1
    lr: float = 5e-4
    min_lr_frac: float = 0.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_frac: float = 0.1
    grad_clip: float = 1.0
    max_steps: int = 50000
    max_minutes: float | None = None
    amp: str = "auto"  # auto: bf16 autocast on CUDA; none
    # losses: total = λ1·CLIP + λ2·GRAM + λ3·MSE + λ4·(α·Einthoven + β·Goldberger)
    lambda_clip: float = 1.0
    lambda_gram: float = 1.0
    lambda_mse: float = 1.0
    lambda_lead: float = 1.0
    alpha: float = 1.0
    beta: float = 1.0
    label_smoothing: float = 0.1
    init_tau: float = 0.07
    # frozen signal teacher: a TorchScript file / built-in encoder folder, or trained here
    signal_encoder: str | None = None
    teacher_steps: int = 2000
    teacher_lr: float = 1e-3
    teacher_batch: int = 64
    teacher_width: int = 64
    # bookkeeping
    seed: int = 0
    log_every: int = 50
    eval_every: int = 1000
    save_every: int = 1000

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise EcgscanError(f"unknown config keys: {', '.join(sorted(unknown))} "
                               f"(known: {', '.join(sorted(known))})")
        model = ModelConfig.from_dict(d.pop("model", {}) or {})
        return cls(model=model, **d)


def _read_config_file(path: str | os.PathLike) -> dict:
    return read_config_file(path, "config file")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if k == "model" and isinstance(v, dict):
            out["model"] = {**(base.get("model") or {}), **v}
        else:
            out[k] = v
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config(preset: str | None = "tiny", config_file: str | None = None, overrides: dict | None = None,
                   base: dict | None = None) -> TrainConfig:
    """preset (or ``base``) ← config file ← flags; ``model.*`` keys may be given flat as ``model.key``."""
    if base is not None:
        data = dict(base)
    else:
        preset = preset or "tiny"
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise EcgscanError(f"unknown preset {preset!r} (presets: {', '.join(preset_names())})")
        data = _read_config_file(path)
        data["preset"] = preset
    if config_file:
        data = _merge(data, _read_config_file(config_file))
    flat = {}
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k.startswith("model."):
            flat.setdefault("model", {})[k[6:]] = v
        else:
            flat[k] = v
    data = _merge(data, flat)
    for key in FOLD_KEYS:  # '1-6,8' (flags, config files) or a list; 'none' = no fold
        if data.get(key) is not None:
            from ecgscan_cli.probe import parse_folds

            data[key] = parse_folds([data[key]] if isinstance(data[key], int) else data[key])
    try:
        cfg = TrainConfig.from_dict(data)
    except TypeError as e:
        raise EcgscanError(f"bad config: {e}") from e
    _validate(cfg)
    return cfg


def _validate(cfg: TrainConfig) -> None:
    checks = [(cfg.batch_size >= 2, "batch_size must be >= 2 (contrastive losses need negatives)"),
              (cfg.accum_steps >= 1, "accum_steps must be >= 1"), (cfg.max_steps >= 1, "max_steps must be >= 1"),
              (cfg.lr > 0, "lr must be > 0"), (0 <= cfg.warmup_frac < 1, "warmup_frac must be in [0, 1)"),
              (cfg.augment in ("none", "light", "paper", "heavy"), "augment must be none|light|paper|heavy"),
              (cfg.amp in ("auto", "none", "bf16"), "amp must be auto|none|bf16"),
              (cfg.split in ("auto", "folds", "random"), "split must be auto|folds|random"),
              (0 < cfg.val_fraction < 1, "val_fraction must be in (0, 1)")]
    for ok, msg in checks:
        if not ok:
            raise EcgscanError(f"bad config: {msg}")
    check_image_config(cfg.model)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over warmup_frac·max_steps, then cosine decay to min_lr_frac·lr."""
    warmup = max(1, int(round(cfg.warmup_frac * cfg.max_steps)))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, cfg.max_steps - warmup))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


# --------------------------------------------------------------------------- objective


class Objective(nn.Module):
    """Model + the four losses; ``forward`` returns (total, terms, z_image, z_text).

    Under DDP (training mode) CLIP and GRAM score each rank's images against the pairs of
    all ranks, and the gradient of the local features is scaled so that DDP's average gives
    every parameter the gradient of one process on the concatenated batch (no extra scaling
    here: see ``losses.gather_features``). Every rank must therefore run forward in step.
    In eval mode the losses are local to the rank.
    """

    def __init__(self, model, cfg: TrainConfig):
        super().__init__()
        from ecgscan_cli.losses import CLIPLoss, GramianVolumeLoss, LeadConsistencyLoss, ReconstructionMSELoss

        self.model = model
        self.cfg = cfg
        self.clip = CLIPLoss(cfg.label_smoothing, cfg.init_tau, all_ranks=True)
        self.gram = GramianVolumeLoss(cfg.label_smoothing, cfg.init_tau, all_ranks=True)
        self.mse = ReconstructionMSELoss()
        self.lead = LeadConsistencyLoss(cfg.alpha, cfg.beta)

    def forward(self, images, signals, text_features, signal_features):
        c = self.cfg
        z_image, recon = self.model(images)
        z_text = F.normalize(self.model.text_proj(text_features).float(), dim=-1)
        z_signal = F.normalize(self.model.signal_proj(signal_features).float(), dim=-1)
        terms = {"clip": self.clip(z_image, z_text), "gram": self.gram(z_image, z_text, z_signal),
                 "mse": self.mse(recon, signals), "lead": self.lead(recon, signals)}
        total = (c.lambda_clip * terms["clip"] + c.lambda_gram * terms["gram"]
                 + c.lambda_mse * terms["mse"] + c.lambda_lead * terms["lead"])
        return total, terms, z_image, z_text

    def loss_state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name in ("clip", "gram") for k, v in getattr(self, name).state_dict().items()}


class FrozenFeatures:
    """Frozen text / signal features for a batch, optionally cached (text by report, signal by record)."""

    def __init__(self, text_encoder, signal_encoder, cache: bool):
        self.text_encoder, self.signal_encoder, self.cache = text_encoder, signal_encoder, cache
        self._text: dict[str, torch.Tensor] = {}
        self._signal: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def text(self, reports: list[str]) -> torch.Tensor:
        if not self.cache:
            return self.text_encoder(reports)
        # one at a time: a cached value must not depend on which batch first met it (bit-exact resume)
        for r in sorted({r for r in reports if r not in self._text}):
            self._text[r] = self.text_encoder([r])[0]
        return torch.stack([self._text[r] for r in reports])

    @torch.no_grad()
    def signal(self, idx: list[int], signals: torch.Tensor) -> torch.Tensor:
        if not self.cache:
            return self.signal_encoder(signals).float()
        for k, i in enumerate(idx):
            if i not in self._signal:
                self._signal[i] = self.signal_encoder(signals[k:k + 1]).float()[0]
        return torch.stack([self._signal[i] for i in idx])

    def __call__(self, idx: list[int], signals: torch.Tensor, reports: list[str]):
        return self.text(reports), self.signal(idx, signals)


# --------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the group (NCCL on CUDA, else gloo)."""
    from ecgscan_cli.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


# --------------------------------------------------------------------------- state


def _optimizer(objective: Objective, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in objective.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and not name.endswith(("queries", "positions")) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-6)


def _pack_state(objective, optimizer, step, micro, best, render_gen, dist: Dist) -> dict:
    tensors = {f"loss.{k}": v for k, v in objective.loss_state_dict().items()}
    sd = optimizer.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    rng = [torch.get_rng_state(), render_gen.get_state().cpu()]
    if dist.world > 1:  # every rank's RNG (in-memory exchange between our own processes)
        gathered = [None] * dist.world
        torch.distributed.all_gather_object(gathered, rng)
    else:
        gathered = [rng]
    for r, (cpu_state, gen_state) in enumerate(gathered):
        tensors[f"rng.torch.{r}"] = cpu_state
        tensors[f"rng.render.{r}"] = gen_state
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in sd["param_groups"]]
    return {"tensors": tensors, "json": {"step": step, "micro_batches": micro, "best_val": best,
                                         "world": dist.world, "param_groups": groups}}


def _unpack_state(tensors, meta, objective, optimizer, render_gen, dist: Dist, seed: int):
    objective.clip.load_state_dict({k[len("loss.clip."):]: v for k, v in tensors.items() if k.startswith("loss.clip.")})
    objective.gram.load_state_dict({k[len("loss.gram."):]: v for k, v in tensors.items() if k.startswith("loss.gram.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    r = dist.rank
    if meta.get("world", 1) == dist.world and f"rng.torch.{r}" in tensors:
        torch.set_rng_state(tensors[f"rng.torch.{r}"])
        render_gen.set_state(tensors[f"rng.render.{r}"].to(render_gen.device) if render_gen.device.type != "cpu"
                             else tensors[f"rng.render.{r}"])
    else:  # different world size: fresh, still seeded, streams
        log.warning("resuming with %d process(es) instead of %s: random streams are re-seeded", dist.world,
                    meta.get("world"))
        torch.manual_seed(seed * 1000 + r + meta["step"])
        render_gen.manual_seed(seed * 1000 + 500 + r + meta["step"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta["step"], meta["micro_batches"], meta.get("best_val")


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k in RESUME_FREE:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            diffs.append(f"{prefix}{k}: {va!r} → {vb!r}")
    return diffs


# --------------------------------------------------------------------------- teacher


def train_signal_teacher(sf, indices, text_features, cfg: TrainConfig, device, out_dir: Path,
                         progress: Callable[[int], None] | None = None) -> Path:
    """Train the built-in signal encoder as a signal–report contrastive (CLIP) teacher."""
    from ecgscan_cli.data import PairDataset, make_loader
    from ecgscan_cli.encoders import BuiltinSignalEncoder, save_signal_encoder
    from ecgscan_cli.losses import CLIPLoss

    torch.manual_seed(cfg.seed + 7)
    encoder = BuiltinSignalEncoder(dim=cfg.model.signal_dim, width=cfg.teacher_width).to(device)
    text_head = nn.Linear(text_features.text_encoder.dim, cfg.model.signal_dim).to(device)
    loss_fn = CLIPLoss(cfg.label_smoothing, cfg.init_tau).to(device)
    params = [*encoder.parameters(), *text_head.parameters(), *loss_fn.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.teacher_lr, weight_decay=0.01)
    batch = min(cfg.teacher_batch, len(indices))
    loader = make_loader(PairDataset(sf, indices), batch, cfg.seed + 7, 0, 1, 0, min(cfg.num_workers, 2))
    it = iter(loader)
    loss = torch.tensor(float("nan"))
    for step in range(cfg.teacher_steps):
        signals, reports, _idx = next(it)
        signals = signals.to(device, non_blocking=True)
        t = text_features.text(reports)
        for g in opt.param_groups:
            g["lr"] = cfg.teacher_lr * min(1.0, (step + 1) / max(1, cfg.teacher_steps // 10)) * \
                0.5 * (1 + math.cos(math.pi * step / cfg.teacher_steps))
        loss = loss_fn(F.normalize(encoder(signals), dim=-1), F.normalize(text_head(t), dim=-1))
        if not torch.isfinite(loss):
            raise EcgscanFailure(f"signal teacher: loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if progress:
            progress(1)
    log.info("signal teacher: %d steps, final contrastive loss %.3f", cfg.teacher_steps, loss.item())
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    save_signal_encoder(encoder.eval(), tmp, {"trained_steps": cfg.teacher_steps})
    os.replace(tmp, out_dir)
    return out_dir


# --------------------------------------------------------------------------- loop


@dataclass
class PretrainResult:
    best: Path
    last: Path
    step: int
    val: dict                      # validation losses at the last step
    stopped_early: bool = False
    best_val: float | None = None  # validation loss of the best checkpoint
    best_step: int | None = None


def _render(signals, size, augment, gen):
    from ecgscan_cli.render import render_batch

    return render_batch(signals, size=size, augment=augment, fs=500.0, generator=gen)


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
        images = _render(signals, model.image_size, "none", gen)
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


def _with_resolved_split(cfg: TrainConfig, split) -> TrainConfig:
    """The config with the split actually used (run.json and --resume compare this one)."""
    if split.kind == "folds":
        return dataclasses.replace(cfg, split="folds", train_folds=split.train_folds, val_folds=split.val_folds,
                                   test_folds=split.test_folds)
    return dataclasses.replace(cfg, split="random")


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


def pretrain(signals_path, run_dir, cfg: TrainConfig, *, device: str = "auto", resume: bool = False,
             overwrite: bool = False, progress: Callable[[int], None] | None = None,
             teacher_progress: Callable[[int], None] | None = None) -> PretrainResult:
    """Train ECG-Scan on a signals file; checkpoints and logs in ``run_dir``."""
    from ecgscan_cli.checkpoint import load_model_weights, load_training_state, read_meta, resolve, save_checkpoint
    from ecgscan_cli.data import PairDataset, check_pretraining_file, make_loader, split_records
    from ecgscan_cli.encoders import load_signal_encoder, load_text_encoder
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.model import build_model
    from ecgscan_cli.provenance import IDS_FILE, write_ids

    dist, dev = init_distributed(device)
    run_dir = Path(run_dir)
    sf = SignalsFile(signals_path)
    usable = check_pretraining_file(sf)
    split = split_records(sf, usable, cfg.split, cfg.train_folds, cfg.val_folds, cfg.test_folds, cfg.val_fraction,
                          cfg.seed)
    cfg = _with_resolved_split(cfg, split)
    train_idx, val_idx = split.train, split.val[: cfg.max_val]
    pretraining = _pretraining_record(sf, signals_path, split, train_idx, val_idx, cfg)
    if dist.main:
        from ecgscan_cli.probe import fold_ranges

        held = (f"{len(split.test)} records of folds {fold_ranges(split.test_folds)} held out as test (never read)"
                if len(split.test) else "no record held out as test")
        log.info("split: %s; %d training and %d validation records; %s", pretraining.describe(), len(train_idx),
                 len(val_idx), held)
    if len(train_idx) < cfg.batch_size * dist.world:
        raise EcgscanError(f"{len(train_idx)} training records are fewer than one batch "
                           f"({cfg.batch_size} × {dist.world} process(es)); lower --batch-size")

    # ---- run folder
    resume_from = None
    if resume:
        resume_from = resolve(run_dir / "last") if (run_dir / "last").exists() else None
        if resume_from is None:
            raise EcgscanError(f"--resume: {run_dir} has no last/ checkpoint to resume from")
    elif dist.main:
        if run_dir.exists() and any(run_dir.iterdir()):
            if not overwrite:
                raise EcgscanError(f"output exists: {run_dir} (use --overwrite to replace it, --resume to continue)")
            if not (run_dir / RUN_CONFIG).exists():
                raise EcgscanError(f"--overwrite: {run_dir} is not an ecgscan run folder; refusing to delete it")
            shutil.rmtree(run_dir)
        if not run_dir.parent.is_dir():
            raise EcgscanError(f"output folder does not exist: {run_dir.parent}")
        run_dir.mkdir(exist_ok=True)
        (run_dir / RUN_CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2))  # marks it as ours at once
    dist.barrier()  # rank 0 has prepared the run folder
    # Every rank looks at the run folder before rank 0 may start writing into it (after the
    # barrier); deciding after would race with rank 0's writes and deadlock the barriers below.
    text_cached = (run_dir / TEXT_CACHE_DIR / "config.json").exists()
    need_teacher = not cfg.signal_encoder and not (run_dir / TEACHER_DIR).exists()
    dist.barrier()

    # ---- frozen encoders
    torch.manual_seed(cfg.seed)
    if text_cached:  # --resume: the very encoder the run started with
        text_encoder = load_text_encoder(str(run_dir / TEXT_CACHE_DIR), dev, fallback=False)
    else:
        text_encoder = load_text_encoder(cfg.model.text_model, dev, cfg.model.text_pooling,
                                         cfg.model.text_max_length)
    if dist.main and not text_cached:
        text_encoder.save(run_dir / TEXT_CACHE_DIR)
    frozen = FrozenFeatures(text_encoder, None, cfg.cache_frozen)
    teacher_path = cfg.signal_encoder or str(run_dir / TEACHER_DIR)
    if need_teacher:
        if dist.main:
            log.info("no --signal-encoder: training the built-in signal teacher (%d steps)", cfg.teacher_steps)
            train_signal_teacher(sf, train_idx, frozen, cfg, dev, run_dir / TEACHER_DIR, teacher_progress)
        dist.barrier()
    teacher = load_signal_encoder(teacher_path, dev)
    with torch.no_grad():
        sig_dim = int(teacher(torch.zeros(2, 12, 5000, device=dev)).shape[1])
    if sig_dim != cfg.model.signal_dim:
        cfg.model.signal_dim = sig_dim
    if resume_from is not None:
        saved = json.loads((run_dir / RUN_CONFIG).read_text()) if (run_dir / RUN_CONFIG).exists() else {}
        diffs = _config_diff(saved, cfg.to_dict())
        if diffs:
            raise EcgscanError(f"--resume: the config differs from the run's ({'; '.join(diffs[:5])}); "
                               "resume with the same settings or start a new run")

    # ---- model, objective, optimizer
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, load_weights=resume_from is None, text_encoder=text_encoder)
    objective = Objective(model, cfg).to(dev)
    render_gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + 500 + dist.rank)
    optimizer = _optimizer(objective, cfg)
    step, micro, best_val = 0, 0, None
    if resume_from is not None:
        load_model_weights(model, resume_from / "model.safetensors")
        model.to(dev)
        tensors, meta = load_training_state(resume_from)
        step, micro, best_val = _unpack_state(tensors, meta, objective, optimizer, render_gen, dist, cfg.seed)
        log.info("resuming at step %d from %s", step, resume_from)
    else:
        torch.manual_seed(cfg.seed * 1000 + dist.rank)
    if dist.main:
        (run_dir / RUN_CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2))
        # every checkpoint links it: the ids of what this run reads (never a test-fold record)
        write_ids(run_dir / IDS_FILE, [sf.ids[int(i)] for i in np.union1d(train_idx, val_idx)])
    runner = objective
    if dist.world > 1:
        runner = nn.parallel.DistributedDataParallel(objective, device_ids=[dev.index] if dev.type == "cuda" else None)

    amp = dev.type == "cuda" and cfg.amp in ("auto", "bf16")
    frozen.signal_encoder = teacher
    loader = make_loader(PairDataset(sf, train_idx), cfg.batch_size, cfg.seed, dist.rank, dist.world, micro, cfg.num_workers)
    batches = iter(loader)
    metrics = (run_dir / METRICS).open("a") if dist.main else None
    last_path, best_path = run_dir / "last", run_dir / "best"

    def save(kind: str, val: dict | None):
        state = _pack_state(objective, optimizer, step, step * cfg.accum_steps, best_val, render_gen, dist)  # collective in DDP
        if not dist.main:
            return
        extra = {"val": val, "kind": kind}
        try:
            save_checkpoint(last_path if kind == "last" else best_path, model, train_config=cfg.to_dict(), step=step,
                            val_loss=None if not val else val.get("loss"), extra=extra,
                            training_state=state if kind == "last" else None,
                            text_encoder_cache=run_dir / TEXT_CACHE_DIR, pretraining=pretraining.to_meta(),
                            pretrain_ids=run_dir / IDS_FILE)
        except OSError as e:
            good = resolve(last_path) or resolve(best_path)
            raise EcgscanFailure(f"cannot save the {kind} checkpoint at step {step}: {e.strerror or e}"
                                 + (f"; the last good checkpoint is {good} (step "
                                    f"{json.loads((good / 'ecgscan_checkpoint.json').read_text())['step']})"
                                    if good else "")) from e

    def write(record: dict):
        if metrics is not None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    def validate() -> dict:
        nonlocal best_val
        val = evaluate(objective, frozen, sf, val_idx, cfg, dev, amp) if len(val_idx) >= 2 else {}
        if val and dist.main:
            write({"step": step, "split": "val", **{f"val_{k}": v for k, v in val.items()}})
            log.info("step %d validation: loss %.4f (clip %.3f gram %.3f mse %.4f lead %.4f) R@1 %.3f", step,
                     val["loss"], val["clip"], val["gram"], val["mse"], val["lead"], val.get("r1", float("nan")))
        if not val or best_val is None or val["loss"] < best_val:
            best_val = val.get("loss") if val else best_val
            save("best", val)
        return val

    t_start = time.perf_counter()
    window = {"t": 0.0, "render": 0.0, "steps": 0, "terms": {k: 0.0 for k in ("loss", *LOSS_TERMS)}}
    stopped_early, val = False, {}
    objective.train()
    try:
        while step < cfg.max_steps:
            if cfg.max_minutes is not None and (time.perf_counter() - t_start) / 60 >= cfg.max_minutes:
                stopped_early = True
                log.info("--max-minutes %.3g reached at step %d", cfg.max_minutes, step)
                break
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            render_s = 0.0
            totals = {k: 0.0 for k in ("loss", *LOSS_TERMS)}
            for a in range(cfg.accum_steps):
                signals, reports, idx = next(batches)
                micro += 1
                signals = signals.to(dev, non_blocking=True)
                tr = time.perf_counter()
                images = _render(signals, model.image_size, cfg.augment, render_gen)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                render_s += time.perf_counter() - tr
                text_f, sig_f = frozen(idx, signals, reports)
                sync = dist.world == 1 or a == cfg.accum_steps - 1
                ctx = runner.no_sync() if not sync else _nullcontext()
                with ctx:
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                        total, terms, _, _ = runner(images, signals, text_f, sig_f)
                    (total / cfg.accum_steps).backward()
                totals["loss"] += float(total.detach()) / cfg.accum_steps
                for k in LOSS_TERMS:
                    totals[k] += float(terms[k].detach()) / cfg.accum_steps
            grad_norm = torch.nn.utils.clip_grad_norm_([p for p in objective.parameters() if p.requires_grad],
                                                       cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            if not (math.isfinite(totals["loss"]) and torch.isfinite(grad_norm)):
                bad = ", ".join(f"{k}={v:.4g}" for k, v in totals.items())
                raise EcgscanFailure(f"loss is not finite at step {step} ({bad}, grad norm {float(grad_norm):.4g}); "
                                     f"lower --lr or check the data. Last checkpoint: {resolve(last_path)}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - t0
            window["t"] += dt
            window["render"] += render_s
            window["steps"] += 1
            for k, v in totals.items():
                window["terms"][k] += v
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                w = window
                images_per_s = w["steps"] * cfg.batch_size * cfg.accum_steps * dist.world / w["t"]
                write({"step": step, "split": "train", "lr": lr,
                       **{k: v / w["steps"] for k, v in w["terms"].items()},
                       "tau_clip": float(1 / objective.clip.temperature.scale().detach()),
                       "tau_gram": float(1 / objective.gram.temperature.scale().detach()),
                       "grad_norm": float(grad_norm), "steps_per_s": w["steps"] / w["t"],
                       "images_per_s": images_per_s, "render_share": w["render"] / w["t"],
                       "elapsed_s": time.perf_counter() - t_start})
                window = {"t": 0.0, "render": 0.0, "steps": 0, "terms": {k: 0.0 for k in ("loss", *LOSS_TERMS)}}
            if step % cfg.eval_every == 0 and step < cfg.max_steps:
                val = validate()
            if step % cfg.save_every == 0 and step < cfg.max_steps:
                save("last", None)
            if progress:
                progress(1)
    except KeyboardInterrupt:
        if dist.world == 1:
            save("last", None)
            log.warning("interrupted at step %d; continue with --resume", step)
        raise
    val = validate()
    save("last", val)
    if metrics is not None:
        write({"step": step, "split": "summary", "elapsed_s": time.perf_counter() - t_start,
               "best_val_loss": best_val, "stopped_early": stopped_early})
        metrics.close()
    dist.barrier()
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    best_step = None
    if dist.main and resolve(best_path):
        best_step = read_meta(best_path).get("step")
    return PretrainResult(best=best_path, last=last_path, step=step, val=val, stopped_early=stopped_early,
                          best_val=best_val, best_step=best_step)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
