"""The camera augmentations of a phone picture (motion blur, glare) and the ``phone`` preset:
what each does to an image, the kernels and washout they draw, that targets stay where
the trace is, and that switching them on changes no older draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgscan_cli.render import render_batch
from ecgscan_cli.render.augment import (
    CAMERA_AUGMENTS, PHOTO_AUGMENTS, AugmentConfig, augment_with_targets, draw_params, params_to_dicts,
)
from ecgscan_cli.render.augmentations.camera import GlareParams, Glare, convolve_each, line_kernels
from ecgscan_cli.render.page import render_page
from ecgscan_cli.render.targets import page_targets
from ecgscan_cli.synth import synthesize


@pytest.fixture(scope="module")
def page_and_targets():
    sig = synthesize(1, seed=3).signals[0]
    page, _ = render_page(sig, dpi=80)
    img = torch.from_numpy(page).permute(2, 0, 1)[None].float() / 255
    return img, torch.from_numpy(page_targets(sig, dpi=80))[None]


def test_camera_stage_is_the_two_new_augmentations_and_phone_is_photo_plus_them():
    assert CAMERA_AUGMENTS == ("motion_blur", "glare")
    photo, phone = AugmentConfig.preset("photo").specs, AugmentConfig.preset("phone").specs
    assert all(phone[n] == photo[n] for n in photo if n not in CAMERA_AUGMENTS)
    assert phone["motion_blur"].p == 0.35 and phone["glare"].p == 0.3
    assert all(photo[n].p == 0 for n in CAMERA_AUGMENTS)


def test_camera_params_are_drawn_after_every_other():
    """The phone preset draws exactly the photo preset's parameters, then its own."""
    a = draw_params(AugmentConfig.preset("photo"), 8, (100, 130), "red", torch.Generator().manual_seed(4), "cpu")
    b = draw_params(AugmentConfig.preset("phone"), 8, (100, 130), "red", torch.Generator().manual_seed(4), "cpu")
    for key, value in a.items():
        if isinstance(value, torch.Tensor) and key not in ("motion_blur", "motion_angle", "glare"):
            assert torch.equal(value, b[key]), key
    assert (a["motion_blur"] == 0).all() and (a["glare"] == 0).all()
    assert (b["motion_blur"] > 0).any() and (b["glare"] > 0).any()


def _moments(k):
    size = k.shape[-1]
    t = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = t[:, None], t[None, :]
    k = k.double()
    mx, my = float((k * x).sum()), float((k * y).sum())
    return mx, my, float((k * (x - mx) ** 2).sum()), float((k * (y - my) ** 2).sum())


@pytest.mark.parametrize("length", [3.0, 8.0, 15.0])
def test_line_kernel_is_a_centred_segment_of_the_drawn_length(length):
    k = line_kernels(torch.tensor([length, length, length]), torch.tensor([0.0, 90.0, 45.0]))
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(3))
    for i in range(3):
        mx, my, vx, vy = _moments(k[i])
        assert abs(mx) < 1e-6 and abs(my) < 1e-6                 # centred: the image does not move
    # a box of length L has variance L²/12; bilinear splatting adds 1/6 px² across and along
    _, _, vx, vy = _moments(k[0])
    assert vx == pytest.approx(length ** 2 / 12 + 1 / 6, rel=0.05) and vy < 0.01
    _, _, vx, vy = _moments(k[1])
    assert vy == pytest.approx(length ** 2 / 12 + 1 / 6, rel=0.05) and vx < 0.01
    _, _, vx, vy = _moments(k[2])
    assert vx == pytest.approx(vy) and vx == pytest.approx(length ** 2 / 24 + 1 / 6, rel=0.08)


def test_horizontal_smear_widens_a_vertical_line_and_keeps_a_horizontal_one():
    img = torch.ones(2, 3, 64, 64)
    img[0, :, :, 32] = 0.0          # a vertical line
    img[1, :, 20, :] = 0.0          # a horizontal line
    out = convolve_each(img, line_kernels(torch.tensor([9.0, 9.0]), torch.tensor([0.0, 0.0])))
    row = 1 - out[0, 0, 32]
    assert float(row.sum()) == pytest.approx(1.0, abs=1e-4)      # ink is kept, only spread
    assert int((row > 0.05).sum()) in (9, 10) and float(row.max()) < 0.15
    assert torch.allclose(out[1], img[1], atol=1e-5)             # smeared along itself: unchanged


def test_motion_blur_leaves_targets_and_only_smears(page_and_targets):
    img, tg = page_and_targets
    cfg = AugmentConfig.from_dict({"motion_blur": {"p": 1.0, "strength": 2.0}})
    out, moved = augment_with_targets(img.clone(), tg, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(moved, tg)
    assert float((out - img).abs().max()) > 0.2
    assert float(out.mean()) == pytest.approx(float(img.mean()), abs=2e-3)   # ink spread, not added


def test_glare_washes_its_core_towards_white_and_leaves_the_rest():
    img = torch.full((1, 3, 100, 150), 0.2)
    q = GlareParams(torch.tensor([0.8]), torch.tensor([[0.0, 0.0, 0.3, 0.2, 0.0, 0.5]]))
    out = Glare().apply(img.clone(), q, None)
    assert float(out[0, :, 50, 75].mean()) == pytest.approx(0.2 + 0.8 * 0.8, abs=0.01)   # core: 80 % washed
    assert torch.equal(out[0, :, :5, :5], img[0, :, :5, :5])                               # far away: untouched
    assert (out >= img - 1e-7).all()                                                        # only ever brighter
    # along the long axis (x, 0.3 of the short side's half) it reaches farther than along the short one
    assert float(out[0, 0, 50, 75 + 12]) > float(out[0, 0, 50 + 12, 75])


def test_glare_lowers_trace_contrast_in_its_core(page_and_targets):
    img, tg = page_and_targets
    cfg = AugmentConfig.from_dict({"glare": {"p": 1.0, "strength": 1.0}})
    P = draw_params(cfg, 1, img.shape[-2:], "red", torch.Generator().manual_seed(1), "cpu")
    out, moved = augment_with_targets(img.clone(), tg, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(moved, tg)
    washed = (out - img).mean(1)[0] > 0.5 * float(P["glare"][0]) * 0.5
    trace = tg[0, 0] > 0.5
    assert int((washed & trace).sum()) > 0 or int(washed.sum()) > 0
    lum0, lum1 = img.mean(1)[0], out.mean(1)[0]
    # the trace's darkness against the paper where the glare is strongest, before and after
    core = washed & trace
    if int(core.sum()):
        assert float((1 - lum1[core]).mean()) < 0.6 * float((1 - lum0[core]).mean())


@pytest.mark.parametrize("name", CAMERA_AUGMENTS)
def test_each_camera_augmentation_changes_the_image_and_is_reported(name):
    x = torch.from_numpy(synthesize(2, seed=1).signals)
    clean = render_batch(x, 256)
    cfg = AugmentConfig.from_dict({name: {"p": 1.0, "strength": 2.0}})
    out, params = render_batch(x, 256, cfg, generator=torch.Generator().manual_seed(0), return_params=True)
    assert (out - clean).abs().amax(dim=(1, 2, 3)).min() > 0.01, name
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, render_batch(x, 256, cfg, generator=torch.Generator().manual_seed(0)))
    other = {"motion_blur": {"glare"}, "glare": {"motion_blur", "motion_angle"}}[name]
    for d in params_to_dicts(params):
        assert d[name] > 0
        assert not (set(PHOTO_AUGMENTS) | other) & set(d)


def test_motion_blur_costs_about_the_same_whatever_its_length():
    """FFT convolution: a long smear of a big image is not a big convolution."""
    import time
    img = torch.rand(1, 3, 600, 800)
    times = {}
    for length in (3.0, 40.0):
        k = line_kernels(torch.tensor([length]), torch.tensor([30.0]))
        t = []
        for _ in range(3):
            t0 = time.perf_counter()
            convolve_each(img, k)
            t.append(time.perf_counter() - t0)
        times[length] = float(np.median(t))
    assert times[40.0] < 3 * times[3.0] + 0.05
