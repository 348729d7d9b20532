"""The built-in signal teacher: trained first, on the training records, when no
``--signal-encoder`` is given; saved in ``RUN/teacher`` and reused by ``--resume``.

Under ``--max-minutes`` the teacher stage gets at most :data:`TEACHER_SHARE` of the budget
(it stops early, with a log line, and the main loop has the rest).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ecgscan_cli.errors import EcgscanFailure
from ecgscan_cli.training.config import TrainConfig

log = logging.getLogger("ecgscan")

TEACHER_SHARE = 0.25  # of --max-minutes, at most, for the built-in teacher


@dataclass
class TeacherReport:
    """What the teacher stage did (``metrics.jsonl`` gets it as ``split: teacher``)."""

    steps: int            # steps trained
    planned: int          # teacher_steps
    seconds: float
    budget_s: float | None  # its share of --max-minutes, if any
    loss: float

    @property
    def cut_by_budget(self) -> bool:
        return self.steps < self.planned

    def record(self) -> dict:
        return {"step": 0, "split": "teacher", "teacher_steps": self.steps, "teacher_planned_steps": self.planned,
                "teacher_s": self.seconds, "teacher_budget_s": self.budget_s, "teacher_loss": self.loss,
                "teacher_cut_by_budget": self.cut_by_budget}


def train_signal_teacher(sf, indices, text_features, cfg: TrainConfig, device, out_dir: Path,
                         progress: Callable[[int], None] | None = None,
                         deadline: float | None = None) -> TeacherReport:
    """Train the built-in signal encoder as a signal–report contrastive (CLIP) teacher; save
    it in ``out_dir`` (atomically). ``deadline`` (``time.monotonic()``) stops it early."""
    from ecgscan_cli.atomic import atomic_output
    from ecgscan_cli.data import PairDataset, make_loader
    from ecgscan_cli.encoders import BuiltinSignalEncoder, save_signal_encoder
    from ecgscan_cli.losses import CLIPLoss
    from ecgscan_cli.training.interrupts import quiet_worker

    t0 = time.monotonic()
    torch.manual_seed(cfg.seed + 7)
    encoder = BuiltinSignalEncoder(dim=cfg.model.signal_dim, width=cfg.teacher_width).to(device)
    text_head = nn.Linear(text_features.text_encoder.dim, cfg.model.signal_dim).to(device)
    loss_fn = CLIPLoss(cfg.label_smoothing, cfg.init_tau).to(device)
    params = [*encoder.parameters(), *text_head.parameters(), *loss_fn.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.teacher_lr, weight_decay=0.01)
    batch = min(cfg.teacher_batch, len(indices))
    loader = make_loader(PairDataset(sf, indices), batch, cfg.seed + 7, 0, 1, 0, min(cfg.num_workers, 2),
                         worker_init_fn=quiet_worker)
    it = iter(loader)
    loss = torch.tensor(float("nan"))
    steps = 0
    for step in range(cfg.teacher_steps):
        if deadline is not None and step > 0 and time.monotonic() >= deadline:
            break
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
        steps += 1
        if progress:
            progress(1)
    del it  # stops its DataLoader workers now
    with atomic_output(out_dir, overwrite=True, directory=True) as tmp:
        save_signal_encoder(encoder.eval(), tmp, {"trained_steps": steps, "planned_steps": cfg.teacher_steps})
    return TeacherReport(steps, cfg.teacher_steps, time.monotonic() - t0, None, float(loss.item()))
