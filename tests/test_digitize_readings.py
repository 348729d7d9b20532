"""The digitiser's second readings and how one is chosen without the truth.

* :mod:`ecgscan_cli.digitize.consistency`: the limb-lead relations as a score;
* :mod:`ecgscan_cli.digitize.rectify`: the rows' quadrilateral of a page seen in perspective;
* :mod:`ecgscan_cli.digitize.refine`: a trace map at the image's own resolution;
* :func:`ecgscan_cli.digitize.image.digitize_image` keeping the reading the relations prefer,
  and the overlay drawing any reading back onto the image.

Signals are synthetic (always present) or real PTB-XL records (skipped when absent); scores
are the aligned reconstruction SNR against the reference masked to what the page shows.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from PIL import Image

from ecgscan_cli.digitize import rectify
from ecgscan_cli.digitize.consistency import lead_relation_residual, reading_quality
from ecgscan_cli.digitize.pipeline import digitize_maps
from ecgscan_cli.leads import LEAD_INDEX
from ecgscan_cli.render.layout import as_shown, page_geometry
from ecgscan_cli.render.page import render_page
from ecgscan_cli.render.targets import page_targets
from ecgscan_cli.snr import reconstruction_snr
from ecgscan_cli.synth import synthesize


@pytest.fixture(scope="module")
def truth():
    return synthesize(2, seed=11).signals.astype(np.float64)


def aligned_db(reference, estimate) -> float:
    return float(np.nanmean(reconstruction_snr(as_shown(reference), estimate, 500.0, align=True)))


# ---------------------------------------------------------------- consistency

def test_lead_relations_hold_on_a_consistent_page_and_break_with_reading_errors(truth):
    shown = as_shown(truth[0])
    assert lead_relation_residual(shown) < 1e-4          # (synth stores whole microvolts)
    noisy = shown.copy()
    rng = np.random.default_rng(0)
    noisy[LEAD_INDEX["III"]] += rng.normal(0, 0.05, noisy.shape[1])
    late = shown.copy()
    late[LEAD_INDEX["aVF"]] = np.roll(late[LEAD_INDEX["aVF"]], 6)      # 12 ms late: a misread time axis
    worse = shown.copy()
    worse[LEAD_INDEX["III"]] += rng.normal(0, 0.2, worse.shape[1])
    r_noisy, r_late, r_worse = (lead_relation_residual(x) for x in (noisy, late, worse))
    assert 0.001 < r_noisy < r_worse and r_late > 0.001
    assert r_worse / r_noisy == pytest.approx(16, rel=0.35)              # residual power ∝ error power
    # an offset of a whole lead is not a reading error the score should rank (baselines differ)
    offset = shown.copy()
    offset[LEAD_INDEX["aVL"]] += 0.3
    assert lead_relation_residual(offset) < 1e-4
    assert lead_relation_residual(np.full_like(shown, np.nan)) == float("inf")


def test_reading_quality_bands_the_residual_and_knows_when_it_cannot_tell():
    assert [reading_quality(r) for r in (0.0, 0.199, 0.2, 0.599, 0.6, 5.0)] == \
        ["good", "good", "fair", "fair", "poor", "poor"]
    assert reading_quality(float("inf")) == reading_quality(float("nan")) == "unknown"


# ---------------------------------------------------------------- rectification

def _perspective(a: np.ndarray, to_source: np.ndarray) -> np.ndarray:
    return rectify.warp(a, to_source, a.shape[:2])


def test_rows_quadrilateral_of_a_page_seen_in_perspective(truth):
    dpi = 100.0
    maps = page_targets(truth[0], dpi=dpi)
    h, w = maps.shape[1:]
    # a camera tilted about both axes: the far (right, top) side shrinks
    dst = np.array([[0.06 * w, 0.10 * h], [0.93 * w, 0.03 * h], [0.97 * w, 0.97 * h], [0.02 * w, 0.90 * h]])
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    to_source = rectify.homography(dst, src)                      # output px → page px
    trace = _perspective(maps[0], to_source)
    grid = _perspective(maps[1], to_source)
    # where the rows' quadrilateral truly is: first/last rows' baselines from the calibration
    # pulse's start (5 mm + its width before the trace) to the trace's end
    geo = page_geometry(None)
    ppm = dpi / 25.4
    speed = geo.options.speed
    x0, x1 = (geo.trace_x0_mm - 5.0 - 0.2 * speed) * ppm, (geo.trace_x0_mm + 10.0 * speed) * ppm
    y0, y1 = geo.baselines_mm[0] * ppm, geo.baselines_mm[-1] * ppm
    to_out = np.linalg.inv(to_source)
    true = []
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        p = to_out @ np.array([x, y, 1.0])
        true.append(p[:2] / p[2])
    found = rectify.page_quad(trace)
    assert found is not None
    # within 2 % of the page width (the rows' lines run through their QRS-weighted ink)
    assert np.abs(found - np.array(true)).max() < 0.02 * w, (found, true)
    assert rectify.quad_skew(found) > 0.05
    # read with the perspective undone, the page gives back its signal; as it is, it does not
    before = aligned_db(truth[0], digitize_maps(trace, grid).signal) if _reads(trace, grid) else 0.0
    rt, rg, _ = rectify.rectified_maps(trace, grid)
    after = aligned_db(truth[0], digitize_maps(rt, rg).signal)
    assert after > 8.0 and after > before + 3.0, (before, after)


def _reads(trace, grid) -> bool:
    from ecgscan_cli.digitize.pipeline import DigitizeError

    try:
        digitize_maps(trace, grid)
        return True
    except DigitizeError:
        return False


def test_a_straight_page_is_left_as_it_is():
    """Baseline wander tilts a row's fitted line a little; straight pages stay unrectified."""
    signals = synthesize(10, seed=21).signals.astype(np.float64)
    left = [rectify.rectified_maps(*page_targets(s, dpi=100.0)) is None for s in signals]
    assert sum(left) >= 8, left
    assert rectify.page_quad(np.zeros((300, 400), np.float32)) is None


def test_homography_maps_the_four_points():
    src = np.array([[10, 20], [300, 15], [320, 240], [5, 230]], np.float64)
    dst = np.array([[0, 0], [310, 0], [310, 220], [0, 220]], np.float64)
    H = rectify.homography(src, dst)
    p = H @ np.c_[src, np.ones(4)].T
    assert np.allclose((p[:2] / p[2]).T, dst, atol=1e-6)


# ---------------------------------------------------------------- readings in digitize_image

@pytest.fixture
def exact_network(monkeypatch):
    """digitize_image with TraceNet replaced by the page's exact targets at the working size."""
    import ecgscan_cli.digitize.image as image_mod

    state = {}

    def predict(net, work):
        h, w = work.shape[:2]
        return tuple(np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.BILINEAR), np.float32)
                     for m in state["maps"])

    monkeypatch.setattr(image_mod, "predict_maps", predict)
    return state


def test_the_image_resolution_reading_wins_on_a_sharp_200dpi_page(truth, exact_network):
    from ecgscan_cli.digitize.image import digitize_image

    page, _ = render_page(truth[0], dpi=200)
    exact_network["maps"] = page_targets(truth[0], dpi=200)
    quick = digitize_image(page, "NET", refine=False)
    full = digitize_image(page, "NET")
    assert quick.reading == "working" and full.reading == "refined"
    assert full.map_shape == page.shape[:2]                       # read at the page's own 200 dpi
    q, f = aligned_db(truth[0], quick.signal), aligned_db(truth[0], full.signal)
    assert f > 18.0 and f > q + 4.0, (q, f)
    assert full.lead_residual < lead_relation_residual(quick.signal)


def test_the_image_resolution_reading_is_made_at_refine_side_at_most(truth, exact_network, monkeypatch):
    """A 300-dpi page (3,300 px) is read finer at 2,400 px by default, whole at refine_side=3400,
    and not finer at all where refine_side leaves nothing to gain over the working maps."""
    from ecgscan_cli.digitize import refine
    from ecgscan_cli.digitize.image import digitize_image

    sides = []
    real = refine.refine_maps
    monkeypatch.setattr(refine, "refine_maps", lambda *a, **k: sides.append(a[3]) or real(*a, **k))
    page, _ = render_page(truth[0], dpi=300)
    exact_network["maps"] = page_targets(truth[0], dpi=300)
    digitize_image(page, "NET")
    assert set(sides) == {refine.REFINE_LONG_SIDE} and refine.REFINE_LONG_SIDE == 2400
    sides.clear()
    whole = digitize_image(page, "NET", refine_side=3400)
    assert set(sides) == {3400} and whole.reading == "refined" and whole.map_shape == page.shape[:2]
    sides.clear()
    working = digitize_image(page, "NET", refine_side=1100)     # 1.07× the working maps: none made
    assert set(sides) == {1100} and working.reading == "working"
    assert aligned_db(truth[0], whole.signal) > aligned_db(truth[0], working.signal) + 2.0
    sides.clear()
    digitize_image(page, "NET", refine=False, refine_side=3400)
    assert sides == []


def test_refined_reading_on_real_records(ptbxl_record, exact_network):
    """Same on real PTB-XL records (their QRS are sharper than the synthetic ones)."""
    from ecgscan_cli.digitize.image import digitize_image

    gains = []
    for rid in ("00001", "00148"):
        sig = ptbxl_record(rid)
        page, _ = render_page(sig, dpi=200)
        exact_network["maps"] = page_targets(sig, dpi=200)
        q = aligned_db(sig, digitize_image(page, "NET", refine=False).signal)
        f = aligned_db(sig, digitize_image(page, "NET").signal)
        gains.append(f - q)
    assert min(gains) > 3.0, gains


def test_a_blurred_pages_refined_map_weighs_the_stroke_above_its_blur(ptbxl_record, monkeypatch):
    """Blur spreads a stroke's ink over its neighbours; scoring each pixel's colour squared
    (refine._SCORE_POWER) makes that spread weigh less than the stroke in the runs and edges
    the vectoriser reads. A 200-dpi page blurred by σ = 2.5 px, exact working maps."""
    from scipy.ndimage import gaussian_filter

    from ecgscan_cli.digitize import refine
    from ecgscan_cli.digitize.image import to_working

    for rid in ("00012", "00148"):
        sig = ptbxl_record(rid)
        page, _ = render_page(sig, dpi=200)
        blurred = np.clip(gaussian_filter(page.astype(np.float64), (2.5, 2.5, 0)) + 0.5, 0, 255).astype(np.uint8)
        h, w = to_working(blurred).shape[:2]
        maps = [np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.BILINEAR), np.float32)
                for m in page_targets(sig, dpi=200)]
        scores = {}
        for power in (1.0, refine._SCORE_POWER):
            monkeypatch.setattr(refine, "_SCORE_POWER", power)
            fine = refine.refine_maps(blurred, *maps)
            # read as digitize_image reads a refined map (faint pulses are TraceNet's evidence only)
            scores[power] = aligned_db(sig, digitize_maps(*fine, straight=True, faint_pulses=False).signal)
        assert refine._SCORE_POWER == 2.0 and scores[2.0] > scores[1.0] + 0.5, (rid, scores)


@pytest.fixture
def finer_judged(monkeypatch):
    """Every (finer reading, base reading, standing) ``image._finer_standing`` judges, in order."""
    import ecgscan_cli.digitize.image as image_mod

    seen = []
    judge = image_mod._finer_standing
    monkeypatch.setattr(image_mod, "_finer_standing",
                        lambda finer, base: seen.append((finer, base, judge(finer, base))) or seen[-1][2])
    return seen


def test_a_reading_finer_than_a_blurred_image_is_dropped_and_one_of_a_sharp_image_kept(ptbxl_record, exact_network,
                                                                                        finer_judged):
    """Blur beyond the working resolution widens the stroke the image-resolution reading
    sees past the working one's, and that reading reads worse: it is dropped. A sharp
    page's finer stroke is clearly thinner, and its reading is kept
    (image._finer_standing)."""
    from scipy.ndimage import gaussian_filter

    import ecgscan_cli.digitize.image as image_mod

    for rid in ("00001", "00148"):
        sig = ptbxl_record(rid)
        page, _ = render_page(sig, dpi=200)
        exact_network["maps"] = page_targets(sig, dpi=200)
        for sigma in (0.0, 3.0):
            img = page if sigma == 0 else np.clip(gaussian_filter(page.astype(np.float64), (sigma, sigma, 0)) + 0.5,
                                                  0, 255).astype(np.uint8)
            finer_judged.clear()
            kept = image_mod.digitize_image(img, "NET")
            (finer, base, standing), = finer_judged
            ratio = finer.line_mm / base.line_mm
            gain = aligned_db(sig, finer.signal) - aligned_db(sig, base.signal)
            if sigma == 0:      # measured 0.82-0.87, +12 to +16 dB
                assert ratio < 0.9 and gain > 8.0 and standing == "kept" and kept.reading == "refined", (rid, ratio, gain)
            else:               # measured 1.33-2.16, -3.7 to -4.3 dB
                assert ratio > 1.2 and gain < -1.0 and standing == "dropped" and kept.reading == "working", \
                    (rid, ratio, gain)


def test_a_finer_reading_that_lost_the_pulses_of_a_rotated_page_does_not_win_outright(exact_network, finer_judged):
    """A 200-dpi page turned by 5°: its finer reading, made through the deskew, sees a
    thinner stroke but finds no calibration pulse (the twice-resampled thin pulse scores
    0.13-0.15 against 0.56 upright), so its rows' time 0 comes from their first ink and its
    leads break the relations (residual 1.43 against 0.22): it competes and loses."""
    import ecgscan_cli.digitize.image as image_mod

    truth = synthesize(1, seed=3).signals[0].astype(np.float64)
    page, _ = render_page(truth, dpi=200)
    turned = np.asarray(Image.fromarray(page).rotate(5.0, resample=Image.Resampling.BILINEAR, expand=True,
                                                     fillcolor=(255, 255, 255))).copy()
    exact_network["maps"] = [np.asarray(Image.fromarray(m).rotate(5.0, resample=Image.Resampling.BILINEAR, expand=True))
                             for m in page_targets(truth, dpi=200)]
    kept = image_mod.digitize_image(turned, "NET")
    (finer, base, standing), = finer_judged
    assert finer.line_mm < 0.9 * base.line_mm and image_mod._pulses(finer) == 0 < image_mod._pulses(base)
    assert standing == "competes" and kept is base
    assert aligned_db(truth, base.signal) > aligned_db(truth, finer.signal) + 2.0


def test_how_a_finer_reading_stands_by_its_stroke_and_the_lead_relations():
    from ecgscan_cli.digitize.image import _finer_standing

    def reading(line_mm, residual=0.01, layout="3x4+1", pulses=4):
        rows = [{"calibration": k < pulses} for k in range(4)]
        return types.SimpleNamespace(line_mm=line_mm, lead_residual=residual, layout=layout, rows=rows)

    base = reading(1.0, 0.01)
    assert _finer_standing(reading(1.4), base) == "dropped"                   # blurred beyond the working maps
    assert _finer_standing(None, base) == "dropped"
    assert _finer_standing(reading(0.93), base) == "competes"                 # a sharp 1 mm pen: the relations decide
    assert _finer_standing(reading(0.55, 0.15), base) == "kept"               # 15x the residual, but good
    assert _finer_standing(reading(0.55, 0.5), reading(1.0, 0.1)) == "kept"   # 5x
    assert _finer_standing(reading(0.55, 0.5), base) == "competes"            # 50x and poor: a row lost?
    assert _finer_standing(reading(0.55, layout="3x4"), base) == "competes"   # another layout read
    assert _finer_standing(reading(0.55, pulses=0), base) == "competes"       # time 0 from the first ink
    assert _finer_standing(reading(0.55, pulses=1), base) == "kept"                 # one pulse times every row
    assert _finer_standing(reading(0.55, pulses=0), reading(1.0, pulses=0)) == "kept"
    assert _finer_standing(reading(None), base) == "competes"


def test_the_paper_colour_is_read_at_the_gated_pixels_as_a_full_size_resize_gives_it():
    """refine._at samples the 1/4-scale paper map where PIL's bilinear upscale puts it, so
    scoring only the gated pixels gives the map a full-image computation gives."""
    from scipy.ndimage import maximum_filter

    from ecgscan_cli.digitize import refine

    rng = np.random.default_rng(3)
    for h, w in ((37, 53), (1, 9), (463, 600)):
        small = rng.random((h, w, 3)).astype(np.float32)
        shape = (4 * h + 2, 4 * w - 1)
        full = np.stack([refine._resize(small[..., k], shape) for k in range(3)], -1)   # PIL's bilinear
        ys, xs = np.nonzero(rng.random(shape) < 0.2)
        assert np.abs(refine._at(small, shape, ys, xs) - full[ys, xs]).max() < 1e-5, (h, w)

    # a shaded page with red grid lines and a dark trace: the finer map, computed in full
    h, w = 400, 520
    yy, xx = np.mgrid[:h, :w]
    rgb = np.full((h, w, 3), 235.0) * (0.75 + 0.25 * xx / w)[..., None]
    grid_lines = (yy % 20 < 2) | (xx % 20 < 2)
    rgb[grid_lines] *= np.array([1.0, 0.6, 0.6])
    trace_px = np.abs(yy - (200 + 60 * np.sin(xx / 30.0))) < 2.5
    rgb[trace_px] = 40.0
    image = rgb.astype(np.uint8)
    trace, grid = (refine._resize(m.astype(np.float32), (160, 208)) for m in (trace_px, grid_lines))
    fine, grid_up = refine.refine_maps(image, trace, grid)
    trace_up, grid_full = refine._resize(trace, (h, w)), refine._resize(grid, (h, w))
    paper = np.clip(refine._resize(refine._paper(image), (h, w)), 0.05, 1.0)
    dark = 1.0 - np.clip(image.astype(np.float32) / 255.0 / paper, 0.0, 1.0)
    v = refine._ink_direction(dark.reshape(-1, 3), trace_up.ravel(), grid_full.ravel()).astype(np.float32)
    gate = np.clip((maximum_filter(trace_up, size=5) - 0.1) / 0.3, 0.0, 1.0)
    expected = np.clip(dark @ v, 0.0, 1.0) ** 2 * gate
    assert np.array_equal(grid_up, grid_full)
    assert np.abs(fine - expected).max() < 1e-4
    assert fine[trace_px].mean() > 0.8 and fine[grid_lines & ~trace_px].max() < 0.1


def test_overlay_points_of_a_rectified_reading_land_on_the_image():
    """to_page_pixels undoes the deskew in the reading's own map, then its homography."""
    from ecgscan_cli.reconstruct import to_page_pixels

    H = np.array([[2.1, 0.05, 30.0], [-0.04, 2.0, 12.0], [1e-5, 2e-5, 1.0]])
    d = types.SimpleNamespace(rotation_deg=0.0, map_shape=(400, 600), to_image=H)
    xs, ys = np.array([10.0, 300.0, 590.0]), np.array([5.0, 200.0, 390.0])
    px, py = to_page_pixels(xs, ys, d)
    p = H @ np.vstack([xs, ys, np.ones(3)])
    assert np.allclose(px, p[0] / p[2]) and np.allclose(py, p[1] / p[2])


@pytest.mark.parametrize("rid, seed", [("00071", 3), ("00138", 11)])
def test_a_blurred_photo_whose_grid_pitch_was_misread_keeps_its_rows_10_s_long(ptbxl_record, rid, seed):
    """Two `photo` pages of the digitiser benchmark (fold 8, the shipped weights) on which
    the grid's 5 mm lines were taken for 15 and 20 mm ones: the rows read as 84 and 63 mm,
    each lead's 2.5 s squeezed into a quarter of its time. The rows' length now overrules it."""
    from ecgscan_cli.digitize.evaluate import render_condition
    from ecgscan_cli.digitize.image import digitize_image

    sig = ptbxl_record(rid)
    d = digitize_image(render_condition(sig, 500.0, "photo", seed))
    lengths_mm = [(r["x1"] - r["x0"]) / d.px_per_mm[0] for r in d.rows]
    assert d.layout == "3x4+1" and all(225 < v < 275 for v in lengths_mm), lengths_mm


def test_faint_pulses_count_where_the_rows_agree_on_them():
    from ecgscan_cli.digitize.layout import Pulse, agreeing_pulses

    ppm, h10 = 3.6, 36.0                   # px/mm; a 10 mm/mV pulse's height
    faint = [Pulse(60.0 + k, 78.0 + k, 150.0, h10, 0.15) for k in range(4)]      # rows start together
    assert agreeing_pulses(faint, ppm, h10) == faint
    strong = Pulse(61.0, 79.0, 150.0, h10, 0.6)
    taller = Pulse(60.0, 78.0, 150.0, 2 * h10, 0.15)                              # another gain
    far = Pulse(60.0 + 10 * ppm, 78.0 + 10 * ppm, 150.0, h10, 0.15)              # 10 mm right
    assert agreeing_pulses([strong, strong, strong, faint[0]], ppm, h10)[3] is faint[0]
    assert agreeing_pulses([strong, strong, strong, taller], ppm, h10)[3] is None
    assert agreeing_pulses([strong, strong, strong, far], ppm, h10)[3] is None
    # faint pulses never set the gain: at another height than the clear ones or the caller's
    # (no clear pulse), they do not count
    assert agreeing_pulses([taller] * 4, ppm, h10) == [None] * 4
    strong5 = Pulse(61.0, 79.0, 150.0, h10 / 2, 0.6)
    assert agreeing_pulses([strong5, strong5, faint[2], faint[3]], ppm, h10)[2:] == [None, None]
    # a faint match on too few rows is no evidence: two of four is not more than half
    assert agreeing_pulses([faint[0], faint[1], None, None], ppm, h10) == [None] * 4
    assert agreeing_pulses([strong, None, None, faint[0]], ppm, h10) == [strong, None, None, None]
    assert agreeing_pulses([strong, None], ppm, h10) == [strong, None]          # no faint one: as given


def test_a_blurred_pages_faint_pulses_set_time_zero(ptbxl_record):
    """A `heavy` page of the digitiser benchmark (fold 8, shipped weights) blurred so much
    that TraceNet marks the pulses' edges at 0.1-0.2: no pulse passed on any row, each
    row's first ink (the pulse's foot) was taken for time 0, so lead I began with the
    1 mV pulse and every lead came 0.4 s late. The four rows' faint pulses agree."""
    from ecgscan_cli.digitize.evaluate import render_condition
    from ecgscan_cli.digitize.image import digitize_image

    d = digitize_image(render_condition(ptbxl_record("00071"), 500.0, "heavy", 3), refine=False)
    assert all(r["calibration"] for r in d.rows)
    lengths_mm = [(r["x1"] - r["x0"]) / d.px_per_mm[0] for r in d.rows]
    assert all(244 < v < 256 for v in lengths_mm), lengths_mm          # 10 s, not 10 s + the pulse
    assert np.nanmax(d.signal[0, :100]) < 0.5                            # no pulse in lead I


def _traced_row(ppm: float, top_mm: float = 5.0, top_mv: float = 1.0, rise_mm: float = 0.7, start: float = 100.0):
    """A row's raw trace as the tracker gives it (x: the maps' columns; mV): 2 mm of foot,
    a pulse whose blurred rising edge the tracker climbs over ``rise_mm``, a top
    ``top_mm`` long, a fall with no points in it, 2 mm of foot, then a wavy trace."""
    xs, mv = [], []
    x = start
    for length_mm, level in ((2.0, 0.1), (rise_mm, None), (top_mm, top_mv), (0.7, "gap"), (3.0, 0.05)):
        n = int(round(length_mm * ppm))
        for i in range(n):
            if level == "gap":
                pass
            elif level is None:
                xs.append(x), mv.append(0.1 + (top_mv - 0.1) * (i + 1) / (n + 1))
            else:
                xs.append(x), mv.append(level + 0.02 * np.sin(i))
            x += 1.0
    trace_x = x + np.arange(int(40 * ppm))
    xs += list(trace_x)
    mv += list(0.05 + 0.4 * np.sin((trace_x - x) / (3 * ppm)) ** 8)
    return np.array(xs), np.array(mv)


def test_a_pulse_the_trace_shows_is_found_by_its_falling_edge():
    from ecgscan_cli.digitize.layout import pulse_in_trace

    ppm = 3.0
    for rise_mm in (0.7, 3.0):              # a sharp edge, one the tracker climbed slowly
        x, mv = _traced_row(ppm, rise_mm=rise_mm)
        fall_true = 100.0 + round(2.0 * ppm) + round(rise_mm * ppm) + round(5.0 * ppm) + 1.0
        fall, height = pulse_in_trace(x, mv, ppm, 25.0)
        assert abs(fall - fall_true) < 0.5 * ppm and 0.9 < height < 1.1, (fall, fall_true, height)
    x, mv = _traced_row(ppm, top_mm=6.5, top_mv=0.5)        # blur widens it; 5 mm/mV
    assert pulse_in_trace(x, mv, ppm, 25.0) is not None
    # not a pulse: a flat stretch far longer than 200 ms, a top too low to be 1 mV at any
    # standard gain, a rounded top (a wave), nothing at the start
    assert pulse_in_trace(*_traced_row(ppm, top_mm=10.0), ppm, 25.0) is None
    assert pulse_in_trace(*_traced_row(ppm, top_mv=0.2), ppm, 25.0) is None
    x, mv = _traced_row(ppm)
    top = (mv > 0.5) & (x < 130)
    wave = mv.copy()
    wave[top] = 0.1 + 0.9 * np.sin(np.linspace(0.2, np.pi - 0.2, top.sum()))
    assert pulse_in_trace(x, wave, ppm, 25.0) is None
    assert pulse_in_trace(x[x > 140], mv[x > 140], ppm, 25.0) is None


def test_rows_whose_traces_show_their_pulses_start_after_them():
    from ecgscan_cli.digitize.layout import Row, time_from_traced_pulses

    ppm = 3.0

    def rows(starts):
        return [Row(50.0 + 60 * k, 30.0, x0, x0 + 260 * ppm, 0, 400, False, ppm) for k, x0 in enumerate(starts)]

    traced = [_traced_row(ppm, start=s) for s in (100.0, 103.0, 98.0)] + [(np.arange(100.0, 900.0), np.zeros(800))]
    page = rows([100.5, 103.5, 98.5, 100.5])
    assert time_from_traced_pulses("3x4+1", page, traced, ppm, 25.0)
    moved = [r.x0 - s for r, s in zip(page, (100.5, 103.5, 98.5, 100.5))]
    assert all(abs(m - 10 * ppm) < 0.7 * ppm for m in moved), moved    # 2 + 5 + 3 mm: time 0
    assert page[0].panels[0][0] == "I" and page[0].panels[0][1] == page[0].x0
    assert abs(page[0].ppm_x - ppm) < 0.01 * ppm         # the row's own length now 10 s at the grid's pitch
    # a row starting elsewhere (its first ink the trace: the pulse hidden) stays
    page = rows([100.5, 103.5, 98.5, 130.5])
    time_from_traced_pulses("3x4+1", page, traced, ppm, 25.0)
    assert page[3].x0 == 130.5
    # rows whose trace begins well after their start (pulse and first mm lost) say nothing:
    # two pulses on a four-row page then suffice, and those rows move with them
    late = (np.arange(100.0 + 20 * ppm, 900.0), np.zeros(800 - int(20 * ppm)))
    page = rows([100.5, 103.5, 100.5, 100.5])
    assert time_from_traced_pulses("3x4+1", page, traced[:2] + [late, late], ppm, 25.0)
    assert all(abs(r.x0 - 100.5 - 10 * ppm) < ppm for r in page[2:]), [r.x0 for r in page]
    # no majority, pulses of different heights, or a pulse already found on the maps: as read
    for t, calibrated in ((traced[:2] + traced[3:] * 2, False),
                          ([traced[0], _traced_row(ppm, top_mv=2.0, start=103.0)] + traced[2:], False),
                          (traced, True)):
        page = rows([100.5, 103.5, 98.5, 100.5])
        page[3].calibration = calibrated
        assert not time_from_traced_pulses("3x4+1", page, t, ppm, 25.0)
        assert [r.x0 for r in page] == [100.5, 103.5, 98.5, 100.5]


def test_rows_whose_pulse_the_maps_miss_start_after_the_pulse_their_trace_shows():
    """On a page where some rows' pulses were found, a row whose pulse the maps miss starts
    3 mm after the pulse its own trace shows (its first ink where the page's left edge
    slants), not where the other rows start; a traced 'pulse' of the wrong height at the
    page's gain, a row with nothing traced and a row timed by its own pulse stay."""
    from ecgscan_cli.digitize.layout import Row, time_from_own_traced_pulses

    ppm = 3.0
    starts = (100.0, 124.0, 76.0, 100.0)          # the left edge slants: rows start 8 mm apart
    page = [Row(50.0 + 60 * k, 30.0, 130.5, 130.5 + 250 * ppm, 0, 400, k == 0, ppm, first_ink=s)
            for k, s in enumerate(starts)]
    traced = [None, _traced_row(ppm, start=124.0), _traced_row(ppm, start=76.0),
              _traced_row(ppm, start=100.0, top_mv=2.0)]
    assert time_from_own_traced_pulses("3x4+1", page, traced, ppm, 25.0) == 2
    for row, start in zip(page[1:3], starts[1:3]):
        fall = start + round(2.0 * ppm) + round(0.7 * ppm) + round(5.0 * ppm) + 1.0   # foot, rise, top
        assert abs(row.x0 - (fall + 3.0 * ppm)) < 0.5 * ppm, (row.x0, start)
        assert row.panels[0][1] == row.x0
    assert page[0].x0 == 130.5 and page[3].x0 == 130.5


def test_a_photos_rows_without_a_pulse_on_the_maps_are_timed_by_their_traces(ptbxl_record):
    """A fold-7 `photo` page of the digitiser benchmark (shipped weights, a validation
    record) whose maps show only the rhythm strip's pulse: the other rows took its start,
    and the page's left edge, still slanted after rectification, put their leads 0.11 to
    0.2 s off (best shifts -56 to -98 samples); the second and third rows' traces show
    their pulses."""
    from ecgscan_cli.digitize.evaluate import render_condition
    from ecgscan_cli.digitize.image import digitize_image
    from ecgscan_cli.snr import best_alignment

    signal = ptbxl_record("00335")
    d = digitize_image(render_condition(signal, 500.0, "photo", 27))
    assert [r["calibration"] for r in d.rows] == [False, False, False, True]
    lags = np.array([s for s, _ in best_alignment(as_shown(signal), d.signal.astype(np.float64), 500.0, 0.5, 1.0)])
    rows_2_3 = [LEAD_INDEX[n] for n in ("aVL", "V2", "V5", "III", "aVF", "V3", "V6")]
    assert np.all(np.abs(lags[rows_2_3]) < 20), lags


def test_a_blurred_photos_traced_pulses_set_time_zero(ptbxl_record):
    """A `photo` page of the digitiser benchmark (fold 8, shipped weights) whose pulses no
    map shows clearly enough, not even faintly: the reading took the pulse's foot for time
    0, so the leads came 0.3-0.5 s late (best shifts -0.29 to -0.5 s) and lead I began with
    the 1 mV pulse. Its traces show the pulses."""
    from ecgscan_cli.digitize.evaluate import render_condition
    from ecgscan_cli.digitize.image import digitize_image
    from ecgscan_cli.snr import best_alignment

    signal = ptbxl_record("00259")
    d = digitize_image(render_condition(signal, 500.0, "photo", 17))
    lags = np.array([s for s, _ in best_alignment(as_shown(signal), d.signal.astype(np.float64), 500.0, 0.5, 1.0)])
    assert np.median(np.abs(lags)) < 25, lags                              # under 50 ms
    assert np.nanmax(d.signal[0, :100]) < 0.6                             # no pulse in lead I


# ---------------------------------------------------------------- page orientation

def test_rows_running_up_and_down_are_seen(truth):
    from ecgscan_cli.digitize.geometry import rows_run_sideways

    trace, _ = page_targets(truth[0], dpi=93)
    tilted = np.asarray(Image.fromarray((trace * 255).astype(np.uint8)).rotate(12, expand=True), np.float32) / 255
    assert not rows_run_sideways(trace) and not rows_run_sideways(tilted)
    for k in (1, 3):
        assert rows_run_sideways(np.rot90(trace, k)) and rows_run_sideways(np.rot90(tilted, k))
    assert not rows_run_sideways(np.zeros((100, 100), np.float32))


@pytest.mark.parametrize("quarter", [0, 1, 2, 3])
def test_unturn_maps_a_turned_images_pixels_back(quarter):
    from ecgscan_cli.digitize.image import _unturn

    image = np.arange(5 * 7).reshape(5, 7)
    turned = np.rot90(image, quarter)
    ys, xs = np.mgrid[0:turned.shape[0], 0:turned.shape[1]]
    p = _unturn(quarter, image.shape) @ np.vstack([xs.ravel() + 0.5, ys.ravel() + 0.5, np.ones(xs.size)])
    back = image[np.floor(p[1]).astype(int), np.floor(p[0]).astype(int)]      # pixel centres land inside
    assert np.array_equal(back, turned.ravel())


@pytest.mark.parametrize("quarter", [1, 2, 3])
def test_a_page_turned_by_quarter_or_half_turns_is_read_upright(ptbxl_record, quarter):
    """A landscape printout photographed in portrait (rows running up and down) or scanned
    upside down: read as well as upright, with the turn reported and the overlay's
    homography back on the image as given (shipped weights, a real fold-8 record)."""
    from ecgscan_cli.digitize.evaluate import render_condition
    from ecgscan_cli.digitize.image import digitize_image
    from ecgscan_cli.reconstruct import to_page_pixels

    sig = ptbxl_record("00012")
    page = render_condition(sig, 500.0, "paper", 0)
    upright = digitize_image(page)
    turned_image = np.ascontiguousarray(np.rot90(page, quarter))
    turned = digitize_image(turned_image)
    assert upright.orientation == 0 and turned.orientation == (4 - quarter) % 4 * 90
    assert aligned_db(sig, turned.signal) == pytest.approx(aligned_db(sig, upright.signal), abs=0.5)
    # the first row's start lies at the same place of the page either way
    r0, t0 = upright.rows[0], turned.rows[0]
    px, py = to_page_pixels(np.array([r0["x0"]]), np.array([r0["y"]]), upright)
    tx, ty = to_page_pixels(np.array([t0["x0"]]), np.array([t0["y"]]), turned)
    h, w = page.shape[:2]
    expect = {1: (py[0], w - px[0]), 2: (w - px[0], h - py[0]), 3: (h - py[0], px[0])}[quarter]
    assert abs(tx[0] - expect[0]) < 6 and abs(ty[0] - expect[1]) < 6, ((tx, ty), expect)


def test_rows_tilted_beyond_the_deskews_reach_are_levelled_first(ptbxl_record, truth):
    """A page photographed with the phone turned 30° (or -40°): the rows tilt beyond the
    deskew's ±15° and were refused ("unknown layout: 14 trace rows"). The image is levelled
    and read again; the overlay's homography still lands on the page as given. Within the
    deskew's reach nothing is levelled."""
    from ecgscan_cli.digitize.evaluate import render_condition
    from ecgscan_cli.digitize.geometry import steep_tilt
    from ecgscan_cli.digitize.image import digitize_image
    from ecgscan_cli.reconstruct import to_page_pixels

    trace, _ = page_targets(truth[0], dpi=93)
    for angle in (10, -14, 25, -40):
        tilted = np.asarray(Image.fromarray((trace * 255).astype(np.uint8)).rotate(angle, expand=True), np.float32) / 255
        found = steep_tilt(tilted)
        assert (found == 0.0) if abs(angle) <= 15 else abs(found + angle) < 0.6, (angle, found)  # rows fall left: -angle

    sig = ptbxl_record("00012")
    page = render_condition(sig, 500.0, "clean", 0)
    upright = digitize_image(page)
    for angle in (30, -40):
        turned = Image.fromarray(page).rotate(angle, expand=True, fillcolor=(255, 255, 255),
                                              resample=Image.Resampling.BICUBIC)
        d = digitize_image(np.asarray(turned))
        assert d.layout == "3x4+1" and aligned_db(sig, d.signal) > 14, (angle, aligned_db(sig, d.signal))
        # the first row's start lies where the upright page's does, turned
        r0, t0 = upright.rows[0], d.rows[0]
        px, py = to_page_pixels(np.array([r0["x0"]]), np.array([r0["y"]]), upright)
        tx, ty = to_page_pixels(np.array([t0["x0"]]), np.array([t0["y"]]), d)
        h, w = page.shape[:2]
        c, s_ = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        W, H = turned.size
        ex = c * (px[0] - w / 2) + s_ * (py[0] - h / 2) + W / 2        # PIL turns counter-clockwise
        ey = -s_ * (px[0] - w / 2) + c * (py[0] - h / 2) + H / 2
        assert abs(tx[0] - ex) < 8 and abs(ty[0] - ey) < 8, ((tx, ty), (ex, ey))


def test_a_plain_3x4_reading_that_lost_the_first_row_is_not_kept():
    """Maps that smear one row read a 3x4 + rhythm strip page as a plain 3x4 one; where the
    row lost was the first, every lead is wrong, and the lead relations, poor either way,
    may prefer it. Where it lost the rhythm strip its leads are right and it competes; a
    fourth row the finer maps alone read may be a header's text, and decides nothing."""
    from ecgscan_cli.digitize.image import _best

    def reading(layout, name, residual, ys, scale=1.0):
        rows = [{"x0": 10.0, "x1": 90.0, "y": y} for y in ys]
        return types.SimpleNamespace(layout=layout, reading=name, lead_residual=residual, rows=rows,
                                     rotation_deg=0.0, map_shape=(500, 100), to_image=np.diag([scale, scale, 1.0]))

    four = reading("3x4+1", "rectified", 2.0, [100, 200, 300, 400])
    lost_first = reading("3x4", "working", 1.0, [100, 150, 200], scale=2.0)    # image rows 200, 300, 400
    lost_strip = reading("3x4", "working", 1.0, [50, 100, 150], scale=2.0)     # image rows 100, 200, 300
    assert _best([lost_first, four]) is four
    assert _best([lost_strip, four]) is lost_strip                              # the relations decide
    finer = reading("3x4+1", "rectified+refined", 1.5, [100, 200, 300, 400])
    assert _best([lost_first, finer]) is lost_first
    assert _best([lost_first, four, finer]) is finer                            # among the rest


def test_a_rectified_reading_replaces_the_working_one_unless_the_relations_clearly_differ():
    from ecgscan_cli.digitize.image import _perspective_undone

    def reading(layout, residual):
        return types.SimpleNamespace(layout=layout, lead_residual=residual)

    assert _perspective_undone(reading("3x4+1", 0.666), reading("3x4+1", 0.677))
    assert _perspective_undone(reading("3x4+1", 3.0), reading("3x4+1", 0.5))
    assert not _perspective_undone(reading("3x4+1", 1.0), reading("3x4+1", 2.2))     # the working one is clearly better
    assert not _perspective_undone(reading("3x4+1", 1.0), reading("3x4", 0.5))       # layouts differ: the contest decides
    assert not _perspective_undone(ValueError("no ECG trace found"), reading("3x4+1", 0.5))


@pytest.mark.parametrize("rid,seed,db_was", [("00346", 1028, -0.65), ("00088", 6, 0.29)])
def test_photos_whose_working_reading_misled_are_read_through_their_rectified_geometry(ptbxl_record, rid, seed,
                                                                                       db_was):
    """Two fold-7 photo pages: a working reading that kept the limb relations as well as the
    rectified one (0.666 vs 0.677) but read its rows' time wrong; and a page whose working
    maps lost the first row (a plain 3x4 reading: every lead wrong)."""
    from ecgscan_cli.digitize.evaluate import render_condition
    from ecgscan_cli.digitize.image import digitize_image

    signal = ptbxl_record(rid)
    d = digitize_image(render_condition(signal, 500.0, "photo", seed))
    assert d.layout == "3x4+1" and d.reading != "working"
    assert aligned_db(signal, d.signal) > db_was + 4.0
