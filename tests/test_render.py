"""Renderer: calibration, faithfulness on real PTB-XL records, gaps, clipping, batch renderer, augmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.leads import LEADS, canonical_lead_name
from ecgscan_cli.render import LayoutOptions, letterbox, render_batch, render_page
from ecgscan_cli.render.augment import AugmentConfig


# ---------------------------------------------------------------- helpers

def ink_of(page: np.ndarray) -> np.ndarray:
    """Trace ink from a page on red/pink paper: black ink lowers the red channel, the grid does not."""
    return 1.0 - page[..., 0].astype(np.float64) / 255.0


def digitise(page: np.ndarray, lead: dict, meta: dict, speed_error: float = 0.0):
    """Column digitiser using only the layout metadata and the trace pixels.

    Per pixel column fully inside the panel: the ink run (rows with ink) nearest the
    previous column's estimate, its middle from the ink-weighted centre (sub-pixel edges
    from antialiasing). Returns (times of column edges t0, t1; estimate in mV).
    """
    ink = ink_of(page)
    x0, y0, x1, y1 = lead["bbox"]
    r0, r1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)), page.shape[0])
    c0, c1 = int(math.ceil(lead["x_start"])), int(math.floor(lead["x_end"]))
    ppm_y = meta.get("px_per_mm_y", meta["px_per_mm"])
    yb = lead["y_baseline"]
    prev = yb
    est = np.full(c1 - c0, np.nan)
    for j, c in enumerate(range(c0, c1)):
        col = ink[r0:r1, c]
        on = col > 0.03
        if not on.any():
            continue
        edges = np.flatnonzero(np.diff(np.r_[0, on.astype(np.int8), 0]))
        starts, ends = edges[::2], edges[1::2]
        best = None
        for s, e in zip(starts, ends):
            a = col[s:e]
            centre = r0 + s + float((a * (np.arange(e - s) + 0.5)).sum() / a.sum())
            if best is None or abs(centre - prev) < abs(best - prev):
                best = centre
        est[j] = (yb - best) / (ppm_y * meta["gain_mm_mV"])
        prev = best
    t0, t1 = column_times(lead, meta, c1 - c0, speed_error)
    return t0, t1, est


def column_times(lead, meta, n_cols, speed_error=0.0):
    """Time span [t0, t1) of each digitised pixel column, from the layout metadata only."""
    c0 = int(math.ceil(lead["x_start"]))
    cols = np.arange(c0, c0 + n_cols, dtype=np.float64)
    speed_px = meta.get("px_per_mm_x", meta["px_per_mm"]) * (1.0 + speed_error) * meta["paper_speed_mm_s"]
    t0 = lead["t_start"] + (cols - lead["x_start"]) / speed_px
    t1 = lead["t_start"] + (cols + 1 - lead["x_start"]) / speed_px
    return t0, t1


def reference_mid(signal: np.ndarray, fs: float, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Middle of the (linearly interpolated) signal's range over each [t0, t1]."""
    n = signal.size
    tt = np.arange(n) / fs
    va, vb = np.interp(t0, tt, signal), np.interp(t1, tt, signal)
    lo, hi = np.minimum(va, vb), np.maximum(va, vb)
    k0 = np.ceil(t0 * fs).astype(int)
    k1 = np.floor(t1 * fs).astype(int)
    for i in range(t0.size):
        seg = signal[max(k0[i], 0):min(k1[i], n - 1) + 1]
        if seg.size:
            lo[i] = min(lo[i], seg.min())
            hi[i] = max(hi[i], seg.max())
    return (lo + hi) / 2


def snr(ref, est):
    ok = np.isfinite(ref) & np.isfinite(est)
    return 10 * np.log10((ref[ok] ** 2).sum() / max(((ref[ok] - est[ok]) ** 2).sum(), 1e-12))


def ptbxl_records(ptbxl_dir, n):
    import wfdb

    files = sorted((ptbxl_dir / "records500").glob("*/*_hr.hea"))[:n]
    out = []
    for f in files:
        sig, fields = wfdb.rdsamp(str(f.with_suffix("")))
        order = [fields["sig_name"].index(next(s for s in fields["sig_name"] if canonical_lead_name(s) == lead))
                 for lead in LEADS]
        out.append(sig[:, order].T.astype(np.float64))
    return out


def step_signal(t_step=1.0, mv=1.0, n=5000, fs=500.0):
    x = np.zeros((12, n))
    x[:, int(t_step * fs):] = mv
    return x


# ---------------------------------------------------------------- calibration

@pytest.mark.parametrize("dpi", [100, 150, 200, 300])
def test_calibration_10mm_per_mv_25mm_per_s(dpi):
    page, meta = render_page(step_signal(), options=LayoutOptions(grid="red", labels=False), dpi=dpi)
    ppm = dpi / 25.4
    assert meta["width"] == page.shape[1] and meta["height"] == page.shape[0]
    assert meta["px_per_mm"] == pytest.approx(ppm)
    lead = next(lead for lead in meta["leads"] if lead["lead"] == "I")
    # 1 s = 25 mm wide: the panel spans its seconds at 25 mm/s, and the step at t=1 s after
    # t_start=0 rises 25 mm after x_start
    assert lead["x_end"] - lead["x_start"] == pytest.approx((lead["t_end"] - lead["t_start"]) * 25 * ppm)
    t0, t1, est = digitise(page, lead, meta)
    cols = np.arange(int(math.ceil(lead["x_start"])), int(math.floor(lead["x_end"])))
    rise = cols[np.argmax(est > 0.5)]
    assert abs((rise + 0.5) - (lead["x_start"] + 25 * ppm)) <= 1.0
    # 1 mV = 10 mm tall: levels before and after the step
    before = np.nanmedian(est[: len(est) // 4]) * meta["gain_mm_mV"] * ppm
    after = np.nanmedian(est[-len(est) // 4:]) * meta["gain_mm_mV"] * ppm
    assert after - before == pytest.approx(10 * ppm, abs=0.25)


@pytest.mark.parametrize("speed,gain", [(50.0, 10.0), (25.0, 5.0), (25.0, 20.0)])
def test_calibration_options(speed, gain):
    dpi = 200
    ppm = dpi / 25.4
    page, meta = render_page(step_signal(0.5, 0.5), options=LayoutOptions(speed=speed, gain=gain, labels=False),
                             dpi=dpi)
    assert meta["paper_speed_mm_s"] == speed and meta["gain_mm_mV"] == gain
    lead = next(lead for lead in meta["leads"] if lead["lead"] == "V1")
    assert lead["t_end"] - lead["t_start"] == pytest.approx(62.5 / speed)
    lead = next(lead for lead in meta["leads"] if lead["lead"] == "I")
    t0, t1, est = digitise(page, lead, meta)
    cols = np.arange(int(math.ceil(lead["x_start"])), int(math.floor(lead["x_end"])))
    rise = cols[np.argmax(est > 0.25)]
    assert abs((rise + 0.5) - (lead["x_start"] + 0.5 * speed * ppm)) <= 1.0
    height = (np.nanmedian(est[-20:]) - np.nanmedian(est[:20])) * gain * ppm
    assert height == pytest.approx(0.5 * gain * ppm, abs=0.25)


def test_layout_metadata_keys():
    _, meta = render_page(np.zeros((12, 5000)))
    for key in ("width", "height", "dpi", "px_per_mm", "paper_speed_mm_s", "gain_mm_mV", "leads", "augment"):
        assert key in meta
    assert len(meta["leads"]) == 13
    for lead in meta["leads"]:
        assert set(("lead", "t_start", "t_end", "x_start", "x_end", "y_baseline", "bbox")) <= set(lead)
    assert [lead["lead"] for lead in meta["leads"]][-1] == "II"
    assert meta["leads"][-1]["t_end"] == pytest.approx(10.0, abs=0.005)
    assert meta["leads"][0]["t_end"] == pytest.approx(2.5)


@pytest.mark.parametrize("layout,rows,long_leads,panel_s", [("3x4+1", 4, ["II"], 2.5),
                                                              ("3x4+3", 6, ["V1", "II", "V5"], 2.5),
                                                              ("6x2", 6, [], 5.0)])
def test_layouts_place_every_lead_with_its_seconds(layout, rows, long_leads, panel_s):
    dpi = 100
    ppm = dpi / 25.4
    page, meta = render_page(step_signal(1.0, 1.0), options=LayoutOptions(layout=layout, labels=False), dpi=dpi)
    leads = meta["leads"]
    assert len({round(lead["y_baseline"]) for lead in leads}) == rows
    assert sorted(lead["lead"] for lead in leads if lead["t_end"] - lead["t_start"] > 9.9) == sorted(long_leads)
    short = [lead for lead in leads if lead["t_end"] - lead["t_start"] < 9.9]
    assert sorted(lead["lead"] for lead in short) == sorted(LEADS)        # each lead has its panel
    for lead in leads:      # each panel spans its own seconds at 25 mm/s
        assert lead["x_end"] - lead["x_start"] == pytest.approx((lead["t_end"] - lead["t_start"]) * 25 * ppm)
    assert all(lead["t_end"] - lead["t_start"] == pytest.approx(panel_s, abs=0.005) for lead in short)
    # a 6x2 page shows the limb leads over the first 5 s and V1-V6 over the last
    if layout == "6x2":
        assert {lead["lead"] for lead in leads if lead["t_start"] == 0} == {"I", "II", "III", "aVR", "aVL", "aVF"}
    # the step at 1 s rises in the first column of every row
    first = min(leads, key=lambda lead: (lead["y_baseline"], lead["x_start"]))
    t0, t1, est = digitise(page, first, meta)
    cols = np.arange(int(math.ceil(first["x_start"])), int(math.floor(first["x_end"])))
    assert abs((cols[np.argmax(est > 0.5)] + 0.5) - (first["x_start"] + 25 * ppm)) <= 1.0
    with pytest.raises(EcgscanError, match="unknown layout '5x2'"):
        LayoutOptions(layout="5x2").check()


# ---------------------------------------------------------------- faithful (real PTB-XL)

@pytest.mark.slow
def test_faithful_digitiser_on_ptbxl(ptbxl_dir):
    records = ptbxl_records(ptbxl_dir, 5)
    scores, wrong = [], []
    for sig in records:
        page, meta = render_page(sig, dpi=200)
        for lead in meta["leads"]:
            x = sig[LEADS.index(lead["lead"])]
            t0, t1, est = digitise(page, lead, meta)
            scores.append(snr(reference_mid(x, 500.0, t0, t1), est))
            if lead["row"] < 3:  # same ink, read with a paper speed 2 % off
                t0, t1 = column_times(lead, meta, est.size, speed_error=0.02)
                wrong.append(snr(reference_mid(x, 500.0, t0, t1), est))
    med = float(np.median(scores))
    print(f"digitiser median SNR {med:.1f} dB over {len(scores)} (record, lead); 2% speed error {np.median(wrong):.1f} dB")
    assert med >= 20.0
    assert np.median(wrong) < med - 10


# ---------------------------------------------------------------- gaps, clipping, bad input

def test_nan_gap_leaves_no_ink():
    x = np.sin(np.linspace(0, 60, 5000))[None].repeat(12, 0) * 0.5
    x[:, 2000:2500] = np.nan   # 4.0–5.0 s: inside the rhythm strip and the aVR/aVL/aVF column
    page, meta = render_page(x, options=LayoutOptions(labels=False))
    strip = meta["leads"][-1]
    ppm = meta["px_per_mm"]
    ink = ink_of(page)
    r0, r1 = int(strip["bbox"][1]), int(strip["bbox"][3])
    ca = int(strip["x_start"] + 4.05 * 25 * ppm)
    cb = int(strip["x_start"] + 4.95 * 25 * ppm)
    assert ink[r0:r1, ca:cb].max() < 0.03
    c_ok = int(strip["x_start"] + 3.5 * 25 * ppm)
    assert ink[r0:r1, c_ok].max() > 0.5


def test_large_amplitude_clipped_not_wrapped():
    x = np.zeros((12, 5000))
    x[:, 1000:1100] = 30.0   # 300 mm above baseline: far beyond the page top
    page, meta = render_page(x, options=LayoutOptions(labels=False, header=False))
    ink = ink_of(page)
    lead = meta["leads"][0]
    ppm = meta["px_per_mm"]
    c = int(lead["x_start"] + 2.0 * 25 * ppm)
    cols = slice(c - 2, c + 3)
    assert ink[0, cols].max() > 0.5              # the rising stroke runs into the top edge
    assert ink[:int(lead["y_baseline"]), cols].max(axis=1).min() > 0.5   # unbroken up to there
    plateau = int(lead["x_start"] + 2.1 * 25 * ppm)
    assert ink[:, plateau].max() < 0.05          # the off-page plateau is not drawn anywhere
    assert ink[-3:, :].max() < 0.05              # nothing wraps round to the bottom


def test_drawing_lines_together_equals_one_by_one():
    # draw_polylines packs lines side by side into one pass; the pixels must be those of
    # drawing each line on its own, in order, including where lines cross (composited twice)
    # and where one leaves the page (clipped)
    from ecgscan_cli.render.page import draw_polyline, draw_polylines

    rng = np.random.default_rng(0)
    h, w = 120, 300
    x = np.linspace(2.0, 290.0, 700)
    lines = [(x, 20 + 6 * np.sin(x / 7)),                       # rows ~14-26
             (x, 60 + 5 * np.cumsum(rng.normal(0, 0.3, x.size))),  # a random walk
             (x, 60 + 45 * np.sin(x / 30)),                     # crosses the others' rows
             (x - 40, 100 + 3 * np.cos(x / 5)),                  # starts left of the page
             (x[:10], np.full(10, np.nan))]                     # nothing to draw
    lines[1][1][300:320] = np.nan
    together = np.full((h, w, 3), 255, np.uint8)
    draw_polylines(together, lines, 1.6, (10, 20, 200))
    one_by_one = np.full((h, w, 3), 255, np.uint8)
    for xs, ys in lines:
        draw_polyline(one_by_one, xs, ys, 1.6, (10, 20, 200))
    # same colour: compositing order only moves rounding, by at most one level
    assert np.abs(together.astype(int) - one_by_one.astype(int)).max() <= 1
    assert (together != 255).sum() > 2000
    # the case the packing must handle is really there: line 2 inks pixels the others ink too
    crossing = np.full((h, w, 3), 255, np.uint8)
    draw_polyline(crossing, *lines[2], 1.6)
    others = np.full((h, w, 3), 255, np.uint8)
    draw_polylines(others, [line for i, line in enumerate(lines) if i != 2], 1.6)
    overlap = (ink_of(crossing) > 0.5) & (ink_of(others) > 0.5)
    assert overlap.sum() >= 10


def test_bad_inputs_raise():
    from ecgscan_cli.errors import EcgscanError

    with pytest.raises(EcgscanError):
        render_page(np.zeros((8, 5000)))
    with pytest.raises(EcgscanError):
        render_page(np.full((12, 5000), np.inf))
    with pytest.raises(EcgscanError):
        render_page(np.zeros((12, 5000)), options=LayoutOptions(speed=30))
    with pytest.raises(EcgscanError):
        render_page(np.zeros((12, 5000)), options=LayoutOptions(grid="plaid"))
    with pytest.raises(EcgscanError):
        render_batch(torch.zeros(2, 11, 5000))
    with pytest.raises(EcgscanError):
        AugmentConfig.from_dict({"rotation": {"p": 2}})
    with pytest.raises(EcgscanError):
        AugmentConfig.from_dict({"wobble": {"p": 0.5}})
    with pytest.raises(EcgscanError):
        render_batch(torch.zeros(1, 12, 5000), augment="extreme")


# ---------------------------------------------------------------- batch renderer

def _signals(n=4, seed=0):
    from ecgscan_cli.synth import synthesize  # a broken synth must fail these tests, not be replaced

    return synthesize(n, seed=seed).signals.astype(np.float32)


@pytest.mark.parametrize("size", [224, (256, 320)])
def test_batch_matches_downscaled_page(size):
    x = _signals(2)
    out = render_batch(torch.from_numpy(x), size=size)
    oh, ow = (size, size) if isinstance(size, int) else size
    assert out.shape == (2, 3, oh, ow) and out.dtype == torch.float32
    for i in range(2):
        page, _ = render_page(x[i], dpi=200, options=LayoutOptions(header=False))
        ref = letterbox(page, size).astype(np.float32) / 255.0
        got = out[i].permute(1, 2, 0).numpy()
        err = np.abs(ref - got)
        assert err.mean() < 0.01, err.mean()
        # the trace ink itself (darkness beyond the background) agrees
        bg = letterbox(render_page(np.full((12, 5000), np.nan), dpi=200,
                                   options=LayoutOptions(header=False))[0], size).astype(np.float32) / 255.0
        ink_ref = (bg - ref)[..., 0].ravel()
        ink_got = (bg - got)[..., 0].ravel()
        assert np.corrcoef(ink_ref, ink_got)[0, 1] > 0.9
        assert ink_got.sum() == pytest.approx(ink_ref.sum(), rel=0.2)


def test_letterbox_keeps_whole_page():
    page = np.full((1700, 2200, 3), 255, np.uint8)
    page[:, :3] = 0
    page[:, -3:] = 0
    page[:3, :] = 0
    page[-3:, :] = 0
    out = letterbox(page, 224)
    assert out.shape == (224, 224, 3)
    assert out[:, 0].mean() < 200 and out[:, -1].mean() < 200          # both side borders visible
    dark_rows = np.flatnonzero(out[:, 112].mean(-1) < 200)
    assert dark_rows.min() > 5 and dark_rows.max() < 218                 # centred, padded white
    assert (out[:10] == 255).all() and (out[-10:] == 255).all()
    t = letterbox(torch.from_numpy(page).permute(2, 0, 1).float() / 255, (224, 224))
    assert t.shape == (3, 224, 224) and float(t[:, :10].min()) == 1.0
    tb = letterbox(t[None].repeat(2, 1, 1, 1), 112)
    assert tb.shape == (2, 3, 112, 112)


def test_batch_nan_only_lead_and_gaps():
    x = torch.from_numpy(_signals(2))
    x[0, 3] = float("nan")
    x[1, :, 100:600] = float("nan")
    out = render_batch(x, 224)
    assert torch.isfinite(out).all()


def test_seeded_determinism_and_presets_change_image():
    x = torch.from_numpy(_signals(3))
    clean = render_batch(x, 160, "none")
    assert torch.equal(clean, render_batch(x, 160, "none"))
    for preset in ("light", "paper", "heavy"):
        a = render_batch(x, 160, preset, generator=torch.Generator().manual_seed(3))
        b = render_batch(x, 160, preset, generator=torch.Generator().manual_seed(3))
        c = render_batch(x, 160, preset, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b), preset
        assert not torch.equal(a, c), preset
        assert (a - clean).abs().mean() > 1e-3, preset
        assert a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize("name", ["rotation", "perspective", "scale", "crop", "wrinkles", "creases", "lighting",
                                  "tint", "ink", "brightness", "contrast", "gamma", "grayscale", "binarize",
                                  "noise", "blur", "jpeg", "speckles", "grid"])
def test_each_augmentation_changes_image(name):
    x = torch.from_numpy(_signals(2))
    clean = render_batch(x, 128)
    cfg = AugmentConfig.from_dict({name: {"p": 1.0, "strength": 1.0}})
    out, params = render_batch(x, 128, cfg, generator=torch.Generator().manual_seed(0), return_params=True)
    assert (out - clean).abs().amax(dim=(1, 2, 3)).min() > 0.01, name
    assert out.shape == clean.shape


def test_augment_config_file(tmp_path):
    p = tmp_path / "aug.yaml"
    p.write_text("preset: light\nrotation: {p: 1.0, strength: 0.5}\njpeg: 0.2\n")
    cfg = AugmentConfig.from_file(p)
    assert cfg.specs["rotation"].p == 1.0 and cfg.specs["rotation"].strength == 0.5
    assert cfg.specs["jpeg"].p == 0.2
    assert cfg.specs["noise"].p == AugmentConfig.preset("light").specs["noise"].p
    j = tmp_path / "aug.json"
    j.write_text('{"blur": {"p": 0.3}}')
    assert AugmentConfig.from_file(j).specs["blur"].p == 0.3
