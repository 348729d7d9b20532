"""The four losses against direct formulas on small tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecgscan_cli.leads import with_derived_limb_leads
from ecgscan_cli.losses import (CLIPLoss, GramianVolumeLoss, LeadConsistencyLoss, ReconstructionMSELoss,
                                gram_volume)


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_gram_volume_matches_determinant_by_hand():
    a, b, c = unit(5, 7, seed=1), unit(5, 7, seed=2), unit(5, 7, seed=3)
    vol = gram_volume(a, b, c, eps=0.0)
    assert vol.shape == (5, 5)
    for i in range(5):
        for j in range(5):
            m = torch.stack([a[i], b[j], c[j]])  # rows: the three vectors
            g = (m @ m.t()).numpy()
            expected = math.sqrt(abs(np.linalg.det(g)))
            assert vol[i, j].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_gram_volume_zero_for_identical_and_one_for_orthonormal():
    v = unit(3, 4)
    vol = gram_volume(v, v, v, eps=0.0)
    assert torch.allclose(vol.diagonal(), torch.zeros(3, dtype=vol.dtype), atol=1e-6)
    e = torch.eye(3)
    vol = gram_volume(e[0:1], e[1:2], e[2:3], eps=0.0)
    assert vol.item() == pytest.approx(1.0, abs=1e-6)
    # collinear text and signal: zero volume whatever the anchor
    vol = gram_volume(unit(2, 4, seed=5), v[:2], v[:2], eps=0.0)
    assert torch.allclose(vol, torch.zeros_like(vol), atol=1e-6)


def test_gram_volume_has_finite_gradient_at_zero_volume():
    v = unit(3, 4).float().requires_grad_(True)
    gram_volume(v, v, v).sum().backward()
    assert torch.isfinite(v.grad).all()


def _smoothed_ce(logits, eps):
    n = logits.shape[0]
    logp = torch.log_softmax(logits, dim=1)
    target = torch.full((n, n), eps / n, dtype=logits.dtype) + torch.eye(n, dtype=logits.dtype) * (1 - eps)
    return -(target * logp).sum(1).mean()


def test_clip_loss_is_smoothed_symmetric_cross_entropy():
    img, txt = unit(6, 8, seed=1).float(), unit(6, 8, seed=2).float()
    loss = CLIPLoss(label_smoothing=0.1, init_tau=0.05)
    logits = img @ txt.t() / 0.05
    expected = (_smoothed_ce(logits, 0.1) + _smoothed_ce(logits.t(), 0.1)) / 2
    assert loss(img, txt).item() == pytest.approx(expected.item(), rel=1e-5)
    loss(img, txt).backward()
    assert loss.temperature.log_scale.grad is not None  # learnable temperature


def test_gram_loss_uses_negative_volume_over_tau():
    i, t, s = unit(4, 6, seed=1).float(), unit(4, 6, seed=2).float(), unit(4, 6, seed=3).float()
    loss = GramianVolumeLoss(label_smoothing=0.1, init_tau=0.1, eps=1e-6)
    logits = -gram_volume(i, t, s, 1e-6) / 0.1
    expected = (_smoothed_ce(logits, 0.1) + _smoothed_ce(logits.t(), 0.1)) / 2
    assert loss(i, t, s).item() == pytest.approx(expected.item(), rel=1e-5)
    # aligned triplets (i = t = s) are the best case
    assert loss(i, i, i).item() < loss(i, t, s).item()


def test_mse_ignores_gaps():
    x = torch.randn(2, 12, 50)
    y = x + 0.5
    y[0, 3, :10] = float("nan")
    assert ReconstructionMSELoss()(x, y).item() == pytest.approx(0.25, rel=1e-6)


def test_lead_consistency_formula():
    g = torch.Generator().manual_seed(0)
    truth = with_derived_limb_leads(torch.randn(2, 12, 40, generator=g))
    assert LeadConsistencyLoss(1.0, 1.0)(truth, truth).item() == pytest.approx(0.0, abs=1e-10)
    recon = torch.randn(2, 12, 40, generator=g)
    i, ii = recon[:, 0], recon[:, 1]
    einthoven = ((ii - i) - truth[:, 2]).pow(2).mean()
    goldberger = torch.stack([-(i + ii) / 2 - truth[:, 3], i - ii / 2 - truth[:, 4], ii - i / 2 - truth[:, 5]]).pow(2).mean()
    got = LeadConsistencyLoss(alpha=0.3, beta=2.0)(recon, truth).item()
    assert got == pytest.approx((0.3 * einthoven + 2.0 * goldberger).item(), rel=1e-5)
