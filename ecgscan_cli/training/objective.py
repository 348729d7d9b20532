"""What one training step optimises: the model, its four losses, the frozen features, AdamW."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecgscan_cli.training.config import TrainConfig


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
        from ecgscan_cli.losses import (
            CLIPLoss,
            GramianVolumeLoss,
            LeadConsistencyLoss,
            ReconstructionMSELoss,
        )

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
        z_signal = self.model.encode_signal_features(signal_features)
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


def build_optimizer(objective: Objective, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (CLIP's betas and eps); weight decay on matrices only, not on queries/positions."""
    decay, no_decay = [], []
    for name, p in objective.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and not name.endswith(("queries", "positions")) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-6)
