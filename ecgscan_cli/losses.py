"""The four ECG-Scan losses, each a small module whose forward reads like its formula.

Total = λ1·CLIP(image, text) + λ2·GRAM(image, text, signal) + λ3·MSE + λ4·LeadConsistency.
Embeddings passed in are L2-normalised ``[B, D]``; signals ``[B, 12, T]`` mV, NaN = gap
(gaps are left out of the reconstruction losses).

Under DDP the two contrastive losses (built with ``all_ranks=True``) score every local
anchor against the pairs of all ranks, as open_clip does (see ``gather_features``).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ecgscan_cli.leads import derived_limb_leads


class LearnableTemperature(nn.Module):
    """τ = exp(-s), s learnable (CLIP's logit scale), clamped to τ ≥ 1/100."""

    def __init__(self, init_tau: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_tau)))
        self.max_log_scale = math.log(max_scale)

    def scale(self) -> torch.Tensor:
        """1/τ."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``factor``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def gather_features(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each ``[B, D]`` tensor over all ranks, in rank order: ``[world·B, D]``.

    Unchanged (the very same tensors) when torch.distributed is not initialised or has
    one process. Otherwise a collective: every rank must call it in step, with the same
    batch size (the training sampler drops incomplete batches, so it does).

    Like open_clip's ``gather_features(local_loss=False, gather_with_grad=False)``: the
    other ranks' rows are constants and this rank's own tensor is put back in its slot,
    so gradient flows into the local features only. Each rank then computes the loss of
    the whole global batch, and its local features get their complete full-batch
    gradient ∂L/∂f (every term that involves them is on this rank). DDP *averages*
    parameter gradients over ranks, which would leave the encoders with 1/world of the
    full-batch gradient (open_clip accepts that) while the local-mean MSE / lead terms
    and the temperatures (identical on every rank) keep theirs. So, unlike open_clip, the
    local rows' gradient is multiplied by the world size here: after DDP's average every
    parameter gets exactly the gradient of single-process training on the concatenated
    batch (``tests/test_losses_ddp.py``). The loss value is not scaled.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    world, rank = dist.get_world_size(), dist.get_rank()
    gathered = []
    for t in tensors:
        parts = [torch.empty_like(t, memory_format=torch.contiguous_format) for _ in range(world)]
        dist.all_gather(parts, t.detach().contiguous())
        parts[rank] = _ScaleGradient.apply(t, float(world))
        gathered.append(torch.cat(parts))
    return tuple(gathered)


def symmetric_cross_entropy(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean of CE over rows (anchor → pairs) and over columns; targets on the diagonal."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target, label_smoothing=label_smoothing)
            + F.cross_entropy(logits.t(), target, label_smoothing=label_smoothing)) / 2


class CLIPLoss(nn.Module):
    """logits_ij = (i_i · t_j) / τ; symmetric cross-entropy with label smoothing.

    ``all_ranks``: in training mode under torch.distributed, i and t run over the batches
    of all ranks (``gather_features``); every rank must then call forward in step. In eval
    mode (validation, where every rank scores the same records) the loss stays local, like
    SyncBatchNorm's statistics.
    """

    def __init__(self, label_smoothing: float = 0.1, init_tau: float = 0.07, all_ranks: bool = False):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.all_ranks = all_ranks
        self.temperature = LearnableTemperature(init_tau)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.all_ranks and self.training:
            image, text = gather_features(image, text)
        logits = self.temperature.scale() * image.float() @ text.float().t()
        return symmetric_cross_entropy(logits, self.label_smoothing)


def gram_volume(anchor: torch.Tensor, b: torch.Tensor, c: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Volume of the parallelotope spanned by (anchor_i, b_j, c_j) for every i, j: ``[B, B]``.

    G_ij = [[a·a, a·b, a·c], [b·a, b·b, b·c], [c·a, c·b, c·c]];  vol_ij = sqrt(|det G_ij| + eps).
    Closed-form 3×3 determinant on broadcast dot products (float32, no Python loops).
    """
    a, b, c = anchor.float(), b.float(), c.float()
    aa = (a * a).sum(-1)[:, None]           # [B,1]  a_i·a_i
    bb = (b * b).sum(-1)[None, :]           # [1,B]  b_j·b_j
    cc = (c * c).sum(-1)[None, :]           # [1,B]  c_j·c_j
    ab = a @ b.t()                          # [B,B]  a_i·b_j
    ac = a @ c.t()                          # [B,B]  a_i·c_j
    bc = (b * c).sum(-1)[None, :]           # [1,B]  b_j·c_j
    det = (aa * (bb * cc - bc * bc)
           - ab * (ab * cc - bc * ac)
           + ac * (ab * bc - bb * ac))
    return torch.sqrt(det.abs() + eps)


class GramianVolumeLoss(nn.Module):
    """GRAM: logits_ij = -vol(i_i, t_j, s_j) / τ; bidirectional CE with label smoothing.

    Rows: image anchor i against (text, signal) pairs j; columns: pair j against images i.
    ``all_ranks``: as in ``CLIPLoss`` (image, text and signal gathered over the ranks).
    """

    def __init__(self, label_smoothing: float = 0.1, init_tau: float = 0.07, eps: float = 1e-6,
                 all_ranks: bool = False):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.eps = eps
        self.all_ranks = all_ranks
        self.temperature = LearnableTemperature(init_tau)

    def forward(self, image: torch.Tensor, text: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        if self.all_ranks and self.training:
            image, text, signal = gather_features(image, text, signal)
        logits = -gram_volume(image, text, signal, self.eps) * self.temperature.scale()
        return symmetric_cross_entropy(logits, self.label_smoothing)


def _present(target: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(target)


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of (pred − target)² over the samples present in ``target`` (NaN = gap)."""
    ok = _present(target)
    diff = torch.where(ok, pred.float() - torch.nan_to_num(target.float()), torch.zeros((), device=pred.device))
    return (diff * diff).sum() / ok.sum().clamp_min(1)


class ReconstructionMSELoss(nn.Module):
    """MSE(x̂, x) against the full 10 s 12-lead signal."""

    def forward(self, reconstruction: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        return masked_mse(reconstruction, signal)


class LeadConsistencyLoss(nn.Module):
    """α·MSE(III, II−I) + β·MSE((aVR, aVL, aVF), Goldberger(I, II)), leads I/II from x̂.

    The recorded (ground-truth) limb leads are compared with those *derived* from the
    reconstructed leads I and II, so the decoder is pushed towards physically consistent
    limb leads.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0):
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, reconstruction: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        refined = derived_limb_leads(reconstruction.float())       # [B,4,T]: III, aVR, aVL, aVF
        einthoven = masked_mse(refined[:, 0:1], signal[:, 2:3])
        goldberger = masked_mse(refined[:, 1:4], signal[:, 3:6])
        return self.alpha * einthoven + self.beta * goldberger
