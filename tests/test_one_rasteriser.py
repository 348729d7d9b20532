"""One rasteriser (#13 item 1): the page renderer and the batch renderer share the trace math.

A page drawn to a file and the same page drawn in a training batch at the same size agree
within one grey level; the digitiser's targets mark the page's trace ink; the layout module
stands on its own (no import circle with the page renderer).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ecgscan_cli.render import render_batch, render_page
from ecgscan_cli.render.layout import LayoutOptions, page_geometry, page_pixel_map, page_size_px
from ecgscan_cli.render.page import page_background
from ecgscan_cli.render.raster import column_plan, coverage, ink_density, spans, trace_sampling
from ecgscan_cli.render.targets import page_targets
from ecgscan_cli.synth import synthesize


@pytest.fixture(scope="module")
def signals():
    return synthesize(3, seed=5).signals.astype(np.float32)


# sizes where the page's pixel map is the batch's: letter at 11·dpi × 8.5·dpi whole pixels
@pytest.mark.parametrize("dpi", [100.0, 72.0, 50.0])
def test_page_and_batch_agree_within_one_grey_level(signals, dpi):
    hw = page_size_px(page_geometry(LayoutOptions()), dpi)
    pages = np.stack([render_page(s, dpi=dpi, return_meta=False) for s in signals]).astype(np.float32) / 255
    batch = render_batch(torch.from_numpy(signals), hw).permute(0, 2, 3, 1).numpy()
    assert pages.shape == batch.shape == (3, *hw, 3)
    assert np.abs(pages - batch).max() <= 1.0 / 255 + 1e-6
    # not two blank pages: the traces put plenty of dark ink on both
    bg = page_background(LayoutOptions(), dpi).astype(np.float32) / 255
    assert ((bg - batch).max(axis=-1) > 0.5).sum(axis=(1, 2)).min() > 1000


def test_full_page_agrees_too(signals):
    pages = render_page(signals[0], dpi=200.0, return_meta=False).astype(np.float32) / 255
    batch = render_batch(torch.from_numpy(signals[:1]), pages.shape[:2])[0].permute(1, 2, 0).numpy()
    assert np.abs(pages - batch).max() <= 1.0 / 255


def test_targets_mark_the_page_trace_ink(signals):
    """Where the page's traces darken a pixel the trace target is positive, and vice versa
    (right of the calibration pulses, which the page draws in its background)."""
    for dpi in (100.0, 150.0):
        geo = page_geometry(LayoutOptions())
        x0 = int(page_pixel_map(geo, dpi).x(geo.trace_x0_mm)) + 1
        page = render_page(signals[1], dpi=dpi, return_meta=False).astype(np.int16)
        bg = page_background(LayoutOptions(), dpi).astype(np.int16)
        inked = (bg - page).max(axis=-1)[:, x0:] > 0
        trace = page_targets(signals[1], dpi=dpi)[0][:, x0:]
        assert inked.sum() > 5000
        assert (trace[inked] > 0).all()
        assert not inked[trace > 0.05].size or inked[trace > 0.05].all()


def test_numpy_and_torch_run_the_same_math():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(3.0, 60.0, 400))
    y = 40 + 15 * np.sin(x / 2) + rng.normal(0, 3, x.size)
    y[150:160] = np.nan                                   # a gap
    for k in (1, 3):
        plan = column_plan(x, 2, 60, k)
        lo, hi = spans(y, plan)
        dens, inked = ink_density(lo, hi, 1.7, 0.4, k)
        lo_t, hi_t = spans(torch.from_numpy(y)[None], plan.to_torch("cpu"))
        dens_t, inked_t = ink_density(lo_t, hi_t, 1.7, 0.4, k)
        assert np.array_equal(inked, inked_t[0].numpy())
        assert 0 < inked.sum() < inked.size               # the gap and the ends leave sub-columns empty
        np.testing.assert_allclose(lo[inked], lo_t[0].numpy()[inked], atol=1e-9)
        np.testing.assert_allclose(dens, dens_t[0].numpy(), atol=1e-9)
        assert (dens[inked] > 0).all() and (dens <= 1).all()
    rows = np.arange(10.0)
    cov = coverage(rows, np.full(10, 2.5), np.full(10, 5.25))
    np.testing.assert_allclose(cov, [0, 0, 0.5, 1, 1, 0.25, 0, 0, 0, 0])
    np.testing.assert_allclose(coverage(torch.from_numpy(rows), torch.full((10,), 2.5), torch.full((10,), 5.25)), cov)


def test_sampling_follows_the_pixel_scale():
    assert trace_sampling(200 / 25.4) == (1, 1.0)        # the reference page itself
    k, pen = trace_sampling(100 / 25.4)
    assert (k, pen) == (1, 0.5)
    k, pen = trace_sampling(224 / 279.4)                 # a 224-px model input
    assert k == 4 and pen == pytest.approx(224 / 2200, rel=1e-3)


def test_layout_does_not_import_the_page_renderer():
    """layout.py alone (loaded from its file, so the package's eager ``__init__`` is not in the
    way) neither imports the page renderer nor needs it to check options."""
    import ecgscan_cli.render.layout as layout

    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('ecgscan_cli.render.layout', {layout.__file__!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m); "
            "m.LayoutOptions(grid='blue').check(); m.page_geometry(m.LayoutOptions(paper='a4')); "
            "assert 'blue' in m.GRID_STYLES; "
            "bad = sorted(k for k in sys.modules if k.startswith('ecgscan_cli.render.') and k != spec.name); "
            "assert not bad, bad; assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
