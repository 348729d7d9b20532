"""The digitiser after the network: maps → geometry → rows/layout → vectorised leads → 500 Hz.

Exact maps come from ``render.targets.page_targets`` (the same pixels as ``render_page``),
signals are real PTB-XL records, scores are the PhysioNet 2024 SNR (``snr.reconstruction_snr``
with the allowed shift) against the reference masked to what the page shows, as the
challenge's references are.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from ecgscan_cli.digitize import geometry, layout, vectorize
from ecgscan_cli.digitize.classical import classical_maps
from ecgscan_cli.digitize.pipeline import DigitizeError, digitize_maps
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.leads import LEAD_INDEX
from ecgscan_cli.render.layout import LayoutOptions, as_shown, page_geometry
from ecgscan_cli.render.page import draw_polylines, render_page
from ecgscan_cli.render.targets import page_targets
from ecgscan_cli.snr import reconstruction_snr

RECORDS = ("00001", "00148", "00300")


@pytest.fixture(scope="module")
def signals(ptbxl_record):
    """Three real PTB-XL records, canonical [12, 5000] mV (what `ecgscan import` stores)."""
    return [ptbxl_record(r) for r in RECORDS]


def shown(x: np.ndarray, options: LayoutOptions | None = None, fs: float = 500.0) -> np.ndarray:
    """The reference as the page shows it (NaN elsewhere), like a PhysioNet 2024 reference."""
    return as_shown(x, options, fs)


def mean_snr(x, d, options=None) -> float:
    return float(np.nanmean(reconstruction_snr(shown(x, options), d.signal, 500.0, align=True)))


def rotated(m: np.ndarray, angle: float, order: int) -> np.ndarray:
    return np.clip(ndimage.rotate(m, angle, reshape=True, order=order), 0.0, 1.0)


def draw_rows(rows, ppm: float, size_mm=(279.4, 215.9), width_px: float = 1.2) -> np.ndarray:
    """A trace map with each row [(x_mm array, y_mm array), ...] drawn; for layouts the renderer lacks."""
    h, w = int(round(size_mm[1] * ppm)), int(round(size_mm[0] * ppm))
    ink = np.zeros((h, w, 3), np.uint8)
    draw_polylines(ink, [(xm * ppm, ym * ppm) for xm, ym in rows], width_px, (255, 255, 255))
    return ink[..., 0].astype(np.float32) / 255.0


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("angle", [10.0, -10.0, 3.3, 0.0])
def test_rotation_is_found_from_the_grid_and_from_the_trace_alone(signals, angle):
    trace, grid = page_targets(signals[0], 500.0, LayoutOptions(), 100.0)
    for m in (grid, trace):
        est = geometry.estimate_rotation(rotated(m, angle, 1))
        assert abs(est + angle) < 0.05, (angle, est)   # the lines now tilt by -angle
    assert geometry.estimate_rotation(np.zeros((200, 300), np.float32)) is None


@pytest.mark.parametrize("grid_style", ["red", "coarse", "bold"])
@pytest.mark.parametrize("dpi", [100.0, 116.1, 200.0])
def test_grid_pitch_gives_px_per_mm_on_both_axes(signals, grid_style, dpi):
    _, grid = page_targets(signals[0], 500.0, LayoutOptions(grid=grid_style), dpi)
    px, py = geometry.grid_px_per_mm(grid)
    true = dpi / 25.4
    assert abs(px / true - 1) < 5e-4 and abs(py / true - 1) < 5e-4, (px, py, true)


def test_no_grid_gives_no_pitch(signals):
    _, grid = page_targets(signals[0], 500.0, LayoutOptions(grid="none"), 100.0)
    assert geometry.grid_px_per_mm(grid) == (None, None)
    assert geometry.grid_px_per_mm(None) == (None, None)


# ---------------------------------------------------------------- layout


def test_rows_calibration_pulses_and_panels_match_the_page(signals):
    dpi = 100.0
    trace, _ = page_targets(signals[0], 500.0, LayoutOptions(), dpi)
    ppm = dpi / 25.4
    name, rows = layout.read_rows(trace, (ppm, ppm), speed_mm_s=25.0, gain_mm_mv=10.0, grid_found=True)
    geo = page_geometry(LayoutOptions())
    assert name == "3x4+1" and len(rows) == 4
    for row, base_mm in zip(rows, geo.baselines_mm):
        assert row.calibration
        assert abs(row.y - base_mm * ppm) < 0.3, (row.y, base_mm * ppm)
        assert row.px_per_mv == pytest.approx(10 * ppm, rel=1e-3)
        assert abs(row.x0 - geo.trace_x0_mm * ppm) < 1.0
    assert [p[0] for p in rows[0].panels] == ["I", "aVR", "V1", "V4"]
    assert [p[0] for p in rows[3].panels] == ["II"]
    # without a grid the pulse height itself is the scale
    _, rows = layout.read_rows(trace, (ppm, ppm), speed_mm_s=25.0, gain_mm_mv=10.0, grid_found=False)
    assert all(abs(r.px_per_mv / (10 * ppm) - 1) < 0.03 for r in rows)


def test_one_printout_one_gain():
    assert layout.page_gain([10.0, 10.0, 10.0, 5.0], 10.0) == 10.0    # the odd pulse is misread
    assert layout.page_gain([5.0], 10.0) == 10.0                      # one pulse alone does not overrule
    assert layout.page_gain([5.0, 10.0], 10.0) == 10.0                # a tie goes to the caller's gain
    assert layout.page_gain([5.0, 5.0, 10.0], 10.0) == 5.0            # two agreeing pulses do
    assert layout.page_gain([20.0, 20.0], 10.0) == 20.0
    assert layout.page_gain([5.0], 5.0) == 5.0


def test_a_row_whose_pulse_reads_half_height_takes_the_pages_gain(signals):
    dpi = 100.0
    ppm = dpi / 25.4
    trace, _ = page_targets(signals[0], 500.0, LayoutOptions(), dpi)
    geo = page_geometry(LayoutOptions())
    base, x0 = geo.baselines_mm[3], geo.trace_x0_mm          # the rhythm strip's pulse
    trace = trace.copy()
    trace[int((base - 12) * ppm):int((base + 1) * ppm), int((x0 - 11) * ppm):int((x0 - 2.5) * ppm)] = 0.0
    xs = np.array([-10, -8, -8, -3, -3, -1.0]) + x0
    half = draw_rows([(xs, base - np.array([0, 0, 5, 5, 0, 0.0]))], ppm, size_mm=(300, 230))
    trace = np.maximum(trace, half[:trace.shape[0], :trace.shape[1]])
    _, rows = layout.read_rows(trace, (ppm, ppm), speed_mm_s=25.0, gain_mm_mv=10.0, grid_found=True)
    assert all(r.calibration for r in rows)                  # its pulse is still found, half as tall
    assert all(r.px_per_mv == pytest.approx(10 * ppm, rel=1e-3) for r in rows)
    assert abs(rows[3].x0 - x0 * ppm) < 1.0


def test_calibration_pulse_is_read_from_its_own_band():
    ppm = 5.0
    x = np.array([0, 2, 2, 7, 7, 9.0]) + 10
    y = np.array([50, 50, 40, 40, 50, 50.0])
    trace_x = np.linspace(20, 100, 400)
    band = draw_rows([(x, y), (trace_x, 50 + 3 * np.sin(trace_x))], ppm)[180:300]
    pulse = layout.find_calibration(band, ppm, 25.0)
    assert abs(pulse.rise - 60) <= 0.6 and abs(pulse.fall - 85) <= 0.6
    assert abs(pulse.foot - (250 - 180)) < 0.2 and abs(pulse.height - 50) < 0.3


def test_no_pulse_is_made_up_from_a_trace():
    ppm = 5.0
    # a flat trace with 1 mV spikes: tall strokes and flat stretches, but no 200 ms top
    xs, ys = [10.0], [50.0]
    for c in np.arange(15, 100, 12.0):
        xs += [c, c + 0.5, c + 1.0]
        ys += [50.0, 40.0, 50.0]
    band = draw_rows([(np.array(xs + [110.0]), np.array(ys + [50.0]))], ppm)[180:300]
    assert layout.find_calibration(band, ppm, 25.0, heights_px=[5 * ppm, 10 * ppm, 20 * ppm]) is None
    # the same band with a pulse in front: found
    pulse = draw_rows([(np.array([0, 2, 2, 7, 7, 9.0]), np.array([50, 50, 40, 40, 50, 50.0]))], ppm)[180:300]
    found = layout.find_calibration(np.maximum(band, pulse), ppm, 25.0, heights_px=[5 * ppm, 10 * ppm, 20 * ppm])
    assert found is not None and abs(found.fall - 35) <= 0.6


@pytest.mark.parametrize("maps", ["classical", "soft"])
def test_pulses_and_time_zero_at_the_working_resolution(signals, maps):
    """About 93 dpi (a letter page at long side 1024 px): the pulse's one-pixel lines fade
    or break in classical maps and blur into the trace in a soft map; the pulses must still
    be found and every row must start at the page's time 0."""
    from ecgscan_cli.digitize.image import to_working

    x = signals[0]
    if maps == "classical":
        trace, grid = classical_maps(to_working(render_page(x, 500.0, dpi=200.0, return_meta=False), 1024))
    else:
        trace, grid = page_targets(x, 500.0, LayoutOptions(), 93.0)
        trace = np.clip(ndimage.gaussian_filter(trace, 1.0) * 2.5, 0.0, 1.0)   # ~3 px wide, like TraceNet's
    d = digitize_maps(trace, grid)
    geo = page_geometry(LayoutOptions())
    ppm = d.px_per_mm[0]
    assert d.layout == "3x4+1"
    assert sum(r["calibration"] for r in d.rows) >= 3
    for r, base_mm in zip(d.rows, geo.baselines_mm):
        assert abs(r["x0"] - geo.trace_x0_mm * ppm) < 1.0, r
        assert abs(r["y"] - base_mm * d.px_per_mm[1]) < 1.0, r
    # (the scores are low: steep strokes fade in these maps; the floors guard what was measured)
    assert mean_snr(x, d) >= (6.0 if maps == "classical" else 4.5)


def test_blurred_pulses_at_the_images_resolution(signals):
    """A 200-dpi map of a blurred page (σ 3 px, a `paper` preset's blur): each line of the
    pulse spreads ~0.6 mm into its inside, which must still count as hollow; otherwise the
    rows lose their own time 0 and take the others' (a keystoned page's rows do not start
    together: up to 4 mm apart)."""
    trace, grid = page_targets(signals[0], 500.0, LayoutOptions(), 200.0)
    trace = np.clip(ndimage.gaussian_filter(trace, 3.0) * 4.0, 0.0, 1.0)
    d = digitize_maps(trace, grid)
    geo = page_geometry(LayoutOptions())
    assert d.layout == "3x4+1" and all(r["calibration"] for r in d.rows), [r["calibration"] for r in d.rows]
    for r in d.rows:
        assert abs(r["x0"] - geo.trace_x0_mm * d.px_per_mm[0]) < 1.5, r


# ---------------------------------------------------------------- vectorize


def test_tracking_follows_its_own_trace_past_a_neighbours_spike():
    ppm = 4.0
    xm = np.linspace(0, 100, 2000)
    own = 60 + 4 * np.sin(xm / 5.0)                            # mm, the row's trace
    spike_x = np.array([48, 49, 50, 51, 52.0])                 # a neighbour's QRS reaching in
    spike_y = np.array([90, 90, 64, 90, 90.0])
    band = draw_rows([(xm, own), (spike_x, spike_y)], ppm, size_mm=(110, 110))
    top, bottom = vectorize.track_row(band, 60 * ppm, 0, int(100 * ppm) - 1, max_jump=12.0)
    xs, ys = vectorize.centreline(top, bottom, 0)
    truth = np.interp(xs, xm * ppm, own * ppm)
    assert np.nanmax(np.abs(ys - truth)) < 1.0
    assert np.sqrt(np.nanmean((ys - truth) ** 2)) < 0.2


def test_tracking_leaves_a_blur_filled_spike_by_its_stroke_not_by_a_fragment_of_its_tip():
    band = np.zeros((100, 60), np.float32)
    band[69:72, :20] = 1.0                                     # the baseline
    for c in range(20, 26):
        band[20 + 2 * abs(c - 22):72, c] = 1.0                 # the spike, its inside filled by blur
    band[22:25, 26] = 1.0
    band[30:34, 26] = 1.0                                      # fragments of its blurred tip
    band[60:80, 26] = 1.0                                      # the stroke down to the S wave
    band[74:82, 27] = 1.0
    band[70:76, 28] = 1.0
    band[69:72, 29:] = 1.0
    top, bottom = vectorize.track_row(band, 70.0, 0, 60, max_jump=12.0)
    assert np.isfinite(top).all()                              # no column lost after the spike
    assert top[26] >= 58 and bottom[26] >= 78                  # column 26: the stroke, not the tip's fragment
    assert 72 <= top[27] and bottom[27] <= 84


def test_centreline_keeps_peaks_a_column_mean_blunts():
    ppm = 3.0
    xm = np.linspace(0, 60, 3000)
    y = 60 - 15 * np.exp(-((xm - 30.3) / 0.6) ** 2)          # a narrow 15 mm spike
    band = draw_rows([(xm, y)], ppm, size_mm=(70, 90))
    top, bottom = vectorize.track_row(band, 60 * ppm, 1, int(60 * ppm) - 1, max_jump=12.0)
    xs, ys = vectorize.centreline(top, bottom, 1)
    assert abs(ys.min() - 45 * ppm) < 1.0                   # the tip is kept (within a pixel)
    centre = (top + bottom) / 2
    assert np.nanmin(centre) > 45 * ppm + 3                 # which a column's centre does not


def test_a_blur_filled_spike_reads_as_one_spike_not_a_zigzag():
    from scipy.ndimage import gaussian_filter

    ppm = 8.0                                                  # 200 dpi
    xm = np.linspace(0, 60, 6000)
    y = 60 - 10 * np.exp(-((xm - 30.0) / 0.5) ** 2)           # a 10 mm spike about 1 mm wide
    band = draw_rows([(xm, y)], ppm, size_mm=(60, 90), width_px=2.0)
    band = np.clip(gaussian_filter(band, 3.0) * 3.0, 0, 1)    # blur fills the spike's inside
    top, bottom = vectorize.track_row(band, 60 * ppm, 1, int(60 * ppm) - 1, max_jump=24.0)
    assert np.nanmax(bottom - top) > 5 * np.nanpercentile(bottom - top, 20)   # the columns are filled
    xs, ys = vectorize.centreline(top, bottom, 1)
    spike = (xs > 29 * ppm) & (xs < 31 * ppm)
    rise, fall = spike & (xs < 30 * ppm), spike & (xs > 30 * ppm)
    # up to the tip and back down, without turning back by a millimetre on the way (visiting
    # both ends of every filled column turned back by the spike's height)
    for part, sign in ((rise, 1), (fall, -1)):
        steps = sign * np.diff(ys[part])
        assert steps.max() < 1.0 * ppm, steps.max()
    truth = np.interp(xs, xm * ppm, y * ppm)
    assert np.sqrt(np.mean((ys[spike] - truth[spike]) ** 2)) < 1.6 * ppm
    assert ys.min() < 51.5 * ppm                               # the tip within 1.5 mm


def test_spread_sideways_tells_overlapping_tall_spans_from_strokes_meeting_end_to_end():
    lo = [100.0, 90.0, 80.0, 70.0, 60.0, 50.0, 40.0]
    assert not vectorize._spread_sideways(lo, [v + 10.0 for v in lo])      # end to end
    assert vectorize._spread_sideways(lo, [v + 15.0 for v in lo])          # a third overlapping
    assert not vectorize._spread_sideways(lo[:3], [v + 15.0 for v in lo[:3]])   # too few to judge
    flat = [100.0] * 7
    assert not vectorize._spread_sideways(flat, [v + 2.0 for v in flat])   # not steep


def test_a_page_resampled_sideways_reads_better_than_before(signals, monkeypatch):
    """The exact maps of three real records' pages at 200 dpi, every pixel column averaged
    with the next: read with the sideways-spread path against the reading before it."""
    gains = []
    for x in signals:
        trace, grid = page_targets(x, 500.0, LayoutOptions(), 200.0)
        as_drawn = digitize_maps(trace, grid).signal
        with monkeypatch.context() as m:    # strokes in whole columns: nothing is spread sideways
            m.setattr(vectorize, "_SIDEWAYS", np.inf)
            assert np.array_equal(digitize_maps(trace, grid).signal, as_drawn, equal_nan=True)
        trace[:, :-1] = 0.5 * (trace[:, :-1] + trace[:, 1:])
        grid[:, :-1] = 0.5 * (grid[:, :-1] + grid[:, 1:])
        ref = shown(x)
        new = np.nanmean(reconstruction_snr(ref, digitize_maps(trace, grid).signal, 500.0, align=True))
        with monkeypatch.context() as m:
            m.setattr(vectorize, "_SIDEWAYS", np.inf)
            old = np.nanmean(reconstruction_snr(ref, digitize_maps(trace, grid).signal, 500.0, align=True))
        gains.append(new - old)
    assert np.mean(gains) > 0.4 and min(gains) > -0.3, gains


def test_to_samples_masks_what_the_window_does_not_show():
    x = np.arange(100, 200, dtype=np.float64)
    v = np.linspace(0, 1, x.size)
    s = vectorize.to_samples(x, v, x0=100.0, px_per_s=50.0, x_from=100.0, x_to=150.0, fs=500.0, n=5000)
    assert np.isnan(s[600:]).all() and np.isfinite(s[:490]).all()
    assert s[250] == pytest.approx(np.interp(100 + 250 / 500 * 50, x, v), abs=1e-6)


# ---------------------------------------------------------------- the whole pipeline


@pytest.mark.parametrize("dpi,floor", [(100.0, 18.0), (200.0, 24.0)])
def test_exact_maps_of_clean_pages(signals, dpi, floor):
    scores = []
    for x in signals:
        trace, grid = page_targets(x, 500.0, LayoutOptions(), dpi)
        d = digitize_maps(trace, grid)
        assert d.layout == "3x4+1" and d.signal.shape == (12, 5000) and d.fs == 500.0
        assert d.px_per_mm == pytest.approx((dpi / 25.4, dpi / 25.4), rel=1e-3)
        assert np.isfinite(d.signal[LEAD_INDEX["II"]]).mean() > 0.99           # rhythm strip: 10 s
        assert 0.24 < np.isfinite(d.signal[LEAD_INDEX["V1"]]).mean() < 0.26     # one 2.5 s panel
        v1 = np.isfinite(d.signal[LEAD_INDEX["V1"]])                          # its window: 5–7.5 s
        assert v1[2510:3740].all() and not v1[:2490].any() and not v1[3760:].any()
        scores.append(mean_snr(x, d))
    assert np.mean(scores) >= floor, scores


@pytest.mark.parametrize("angle", [10.0, -10.0])
def test_rotated_pages_are_deskewed(signals, angle):
    scores = []
    for x in signals[:2]:
        trace, grid = page_targets(x, 500.0, LayoutOptions(), 200.0)
        d = digitize_maps(rotated(trace, angle, 3), rotated(grid, angle, 1))
        assert abs(d.rotation_deg + angle) < 0.05
        scores.append(mean_snr(x, d))
    assert np.mean(scores) >= 15.0, scores


def keystone(m: np.ndarray) -> np.ndarray:
    """``m`` as a camera at an angle sees it: lower rows stretched 4 % more, rows fanning out
    (tilts from −0.7° to +0.7°), which no single rotation or px/mm undoes."""
    h, w = m.shape
    yo, xo = np.mgrid[0:h, 0:w].astype(np.float64)
    xs = xo * (1.0 - 0.04 * yo / h)
    ys = yo + 0.024 * (xo - w / 2) * (yo / h - 0.5)
    return np.clip(ndimage.map_coordinates(m, [ys, xs], order=1, cval=0.0), 0.0, 1.0).astype(np.float32)


def test_unevenly_stretched_pages_follow_the_grid(signals):
    """The grid's 5 mm lines tell each row's local stretch and baseline slant: without
    following them this page scores about 3 dB (measured 12.5 dB with, 18.7 unwarped)."""
    x = signals[0]
    trace, grid = page_targets(x, 500.0, LayoutOptions(), 100.0)
    d = digitize_maps(keystone(trace), keystone(grid))
    assert d.layout == "3x4+1" and all(r["calibration"] for r in d.rows)
    assert mean_snr(x, d) >= 11.0
    shift = geometry.grid_shift(keystone(grid), 600, 760, 100 / 25.4)
    assert shift is not None and np.ptp(shift[100:1000]) > 10.0          # 4 % of 900 px is 36 px
    assert np.ptp(geometry.grid_shift(grid, 600, 760, 100 / 25.4)[100:1000]) < 2.0


def test_the_grid_hidden_under_a_blurred_trace_does_not_move_its_lines(signals):
    """A blurred page's trace is thick and hides the grid around every QRS; read as gaps
    in the grid, those columns wobbled a straight page's line phase by 0.15-0.5 mm (enough
    to bend the rows, past FOLLOW_MM). Read only where the grid can show (``seen``), the
    phase stays within 0.1 mm of the unhidden page's, and the band's displacement field
    within 0.3 mm."""
    from scipy.ndimage import maximum_filter

    from ecgscan_cli.digitize import warp_field
    from ecgscan_cli.digitize.pipeline import FOLLOW_MM, WARPED_MM, _grid_seen

    ppm = 100 / 25.4
    trace, grid = page_targets(signals[0], 500.0, LayoutOptions(), 100.0)
    thick = np.where(maximum_filter(trace, size=9) > 0.3, 1.0, trace)      # a stroke ~2 mm wide
    hidden = np.where(thick > 0.3, 0.0, grid)                               # no grid under it
    seen = _grid_seen(thick)
    assert np.array_equal(seen, maximum_filter(thick, size=3) < 0.15)      # off the ink and the pixel beside it
    h, w = (grid.shape[0] // 3) * 3, (grid.shape[1] // 3) * 3
    np.testing.assert_allclose(warp_field._block_mean(grid, 3),
                               grid[:h, :w].reshape(h // 3, 3, w // 3, 3).mean(axis=(1, 3)), atol=1e-6)
    unmasked = []
    for y in layout.find_row_baselines(trace, 8 * ppm)[:3]:
        top, bottom = int(y - 15 * ppm), int(y + 15 * ppm)
        for read in (geometry.grid_shift, geometry.grid_lift):
            assert np.ptp(read(grid, top, bottom, ppm)[100:1000]) / ppm < 0.05       # the straight page
            unmasked.append(np.ptp(read(hidden, top, bottom, ppm)[100:1000]) / ppm)
            assert np.ptp(read(hidden, top, bottom, ppm, seen)[100:1000]) / ppm < 0.1, read.__name__
        # the band's displacement field, sampled along the trace where the grid is hidden
        xs = np.linspace(100, 1000, 200)
        ys = np.full_like(xs, y)
        for shown, limit in ((None, None), (seen, 0.3)):
            warp = warp_field.band_warp(hidden, top, bottom, (ppm, ppm), shown)
            moves = [np.ptp(warp._at(f, xs, ys)) / ppm for f in (warp.shift, warp.lift)]
            if limit is None:
                assert max(moves) > 2 * WARPED_MM, moves       # unmasked: 0.7-1 mm along, 4 mm across
            else:
                assert max(moves) < limit, moves
    assert max(unmasked) > FOLLOW_MM / 2, unmasked
    # where everything is seen, the weights change nothing
    everywhere = np.ones(grid.shape, bool)
    for read in (geometry.grid_shift, geometry.grid_lift):
        np.testing.assert_allclose(read(hidden, 600, 760, ppm, everywhere), read(hidden, 600, 760, ppm), atol=1e-9)


def test_a_crumpled_page_is_read_through_the_grid_displacement_over_the_whole_band(signals, monkeypatch):
    """Wrinkles shear a row differently at every height: the field read over the band
    moves each trace point with the paper around it (this page, exact maps: 4.8 dB
    with the correction along the row only, 17.6 with the field; another wrinkled PTB-XL
    page: 8.0 → 14.0, and 14.9 through the true warp)."""
    import torch

    import ecgscan_cli.digitize.pipeline as pipeline
    from ecgscan_cli.render.augment import AugmentConfig, AugSpec, augment_with_targets, resolve_augment

    x = signals[0]
    tgt = page_targets(x, 500.0, LayoutOptions(), 200.0)
    specs = {n: AugSpec(p=1.0 if n == "wrinkles" else 0.0, strength=1.0) for n in resolve_augment("paper").specs}
    img = torch.ones(1, 3, *tgt.shape[-2:])
    _, moved = augment_with_targets(img, torch.from_numpy(tgt)[None], AugmentConfig(name="w", specs=specs),
                                    torch.Generator().manual_seed(1))
    trace, grid = moved[0].clamp(0, 1).numpy()
    with_field = mean_snr(x, digitize_maps(trace, grid))
    monkeypatch.setattr(pipeline, "WARPED_MM", float("inf"))
    along_row = mean_snr(x, digitize_maps(trace, grid))
    assert with_field > along_row + 3.0 and with_field > 12.0, (along_row, with_field)


def test_a_straight_page_is_not_read_through_the_field(signals, monkeypatch):
    """The field's own noise would cost a straight page decibels: it is not even computed."""
    import ecgscan_cli.digitize.pipeline as pipeline

    def refuse(*a, **k):
        raise AssertionError("band_warp called on a straight page")

    monkeypatch.setattr(pipeline, "band_warp", refuse)
    x = signals[0]
    trace, grid = page_targets(x, 500.0, LayoutOptions(), 200.0)
    assert mean_snr(x, digitize_maps(trace, grid)) > 24.0


def test_the_field_leaves_a_straight_grid_alone_and_follows_a_keystone(signals):
    from ecgscan_cli.digitize.warp_field import band_warp

    trace, grid = page_targets(signals[0], 500.0, LayoutOptions(), 100.0)
    ppm = (100 / 25.4, 100 / 25.4)
    xs, ys = np.linspace(100, 1000, 50), np.full(50, 680.0)
    moved_x, _ = band_warp(keystone(grid), 600, 760, ppm).to_even(xs, ys, 100.0, 680.0)
    assert np.ptp(moved_x - xs) > 10.0                                   # 4 % of 900 px is 36 px
    still_x, still_y = band_warp(grid, 600, 760, ppm).to_even(xs, ys, 100.0, 680.0)
    assert still_x is xs and still_y is ys
    assert band_warp(None, 600, 760, ppm) is None and band_warp(np.zeros_like(grid), 600, 760, ppm) is None


def test_a_line_along_the_image_edge_is_neither_a_row_nor_the_page_angle(signals):
    """A network marks the image's edge (where its padding starts) as a full-width line."""
    x = signals[0]
    trace, grid = page_targets(x, 500.0, LayoutOptions(), 100.0)
    trace, grid = rotated(trace, 2.0, 1), rotated(grid, 2.0, 1)
    trace[-2:] = 1.0
    grid[-3:] = 1.0
    d = digitize_maps(trace, grid)
    assert d.layout == "3x4+1" and abs(abs(d.rotation_deg) - 2.0) < 0.1, d.rotation_deg


def test_a_row_of_fragments_takes_the_other_rows_extent(signals):
    """A faint trace that breaks into short pieces everywhere still is a row."""
    x = signals[0]
    ppm = 100.0 / 25.4
    trace, grid = page_targets(x, 500.0, LayoutOptions(), 100.0)
    geo = page_geometry(LayoutOptions())
    y = int(geo.baselines_mm[0] * ppm)
    band = trace[y - 80:y + 60]
    for c in range(0, band.shape[1], int(8 * ppm)):
        band[:, c:c + int(3 * ppm)] = 0.0           # 5 mm pieces, 3 mm apart
    d = digitize_maps(trace, grid)
    assert d.layout == "3x4+1"
    assert d.rows[0]["x0"] == pytest.approx(d.rows[1]["x0"], abs=1.0)
    assert np.isfinite(d.signal[LEAD_INDEX["V4"]]).sum() > 500


def test_classical_maps_of_red_grid_renders(signals):
    scores = []
    for x in signals:
        image, _ = render_page(x, 500.0, LayoutOptions(grid="red"), 200.0)
        trace, grid = classical_maps(image)
        d = digitize_maps(trace, grid)
        scores.append(mean_snr(x, d))
    assert np.mean(scores) >= 20.0, scores


@pytest.mark.parametrize("grid_style", ["coarse", "gray", "blue", "none"])
def test_classical_maps_of_other_grids_at_working_resolution(signals, grid_style):
    x = signals[1]
    image, _ = render_page(x, 500.0, LayoutOptions(grid=grid_style), 116.1)     # long side 1277 px
    d = digitize_maps(*classical_maps(image))
    assert d.grid_found == (grid_style != "none")      # the ink's grey fringe is not a grid
    assert mean_snr(x, d) >= 16.0                      # measured 18.3–18.5 dB


def test_classical_maps_separate_ink_from_grid():
    image = np.full((9, 9, 3), 255, np.uint8)
    image[0, 0] = (0, 0, 0)            # ink
    image[0, 1] = (128, 128, 128)      # half a pixel of ink (a thin line at ~90 dpi): partly trace, not grid
    image[4, 4] = (255, 120, 120)      # major red grid line
    image[8, 8] = (165, 165, 165)      # grey grid line
    trace, grid = classical_maps(image)
    assert trace[0, 0] == 1.0 and grid[0, 0] == 0.0
    assert 0.3 < trace[0, 1] < 0.6 and grid[0, 1] == 0.0
    assert trace[4, 4] == 0.0 and grid[4, 4] == 1.0
    assert trace[8, 8] == 0.0 and grid[8, 8] > 0.5
    assert trace[2, 6] == 0.0 and grid[2, 6] == 0.0


def test_specks_and_soft_maps_do_not_derail_it(signals):
    """What a network's maps may look like: isolated false positives, lower confidence, blur."""
    x = signals[2]
    trace, grid = page_targets(x, 500.0, LayoutOptions(), 116.1)
    specks = trace.copy()
    specks[np.random.default_rng(0).random(trace.shape) < 0.002] = 1.0       # 2500 one-pixel specks
    d = digitize_maps(specks, grid)
    assert all(r["calibration"] for r in d.rows)
    assert mean_snr(x, d) >= 17.0                                             # measured 17.8–19.4 dB
    assert mean_snr(x, digitize_maps(0.6 * trace, grid)) >= 15.0             # measured 16.6–17.2 dB
    blurred = digitize_maps(ndimage.gaussian_filter(trace, 1.0), ndimage.gaussian_filter(grid, 1.0))
    assert mean_snr(x, blurred) >= 10.0                                       # measured 11.8–17 dB


def test_without_a_grid_the_pulses_and_the_row_length_give_the_scale(signals):
    x = signals[1]
    trace, grid = page_targets(x, 500.0, LayoutOptions(grid="none"), 100.0)
    d = digitize_maps(trace, grid)
    assert all(r["calibration"] for r in d.rows)
    assert d.px_per_mm[0] == pytest.approx(100 / 25.4, rel=0.01)
    assert mean_snr(x, d) >= 15.0


def test_without_a_grid_a_50_mm_s_page_takes_its_scale_from_5_s_rows(signals):
    x = signals[1]
    options = LayoutOptions(grid="none", speed=50.0)
    trace, grid = page_targets(x, 500.0, options, 100.0)
    d = digitize_maps(trace, grid, speed_mm_s=50.0)
    assert d.px_per_mm[0] == pytest.approx(100 / 25.4, rel=0.01)
    assert mean_snr(x, d, options) >= 15.0


@pytest.mark.parametrize("options,speed", [(LayoutOptions(gain=20.0), 25.0), (LayoutOptions(gain=5.0), 25.0),
                                           (LayoutOptions(speed=50.0), 50.0), (LayoutOptions(paper="a4"), 25.0)])
def test_other_gains_speeds_and_paper(signals, options, speed):
    """The pulses tell the gain (5/10/20 mm/mV); the user tells the paper speed."""
    x = signals[1]
    trace, grid = page_targets(x, 500.0, options, 150.0)
    d = digitize_maps(trace, grid, speed_mm_s=speed)
    ppm = 150.0 / 25.4
    assert all(r["px_per_mv"] == pytest.approx(options.gain * ppm, rel=2e-3) for r in d.rows)
    shown_s = 62.5 / speed                                       # one panel
    assert np.isfinite(d.signal[LEAD_INDEX["V6"]]).sum() == pytest.approx(shown_s * 500, abs=3)
    assert mean_snr(x, d, options) >= 18.0


def test_3x4_without_rhythm_strip(signals):
    x = signals[0]
    dpi = 100.0
    trace, grid = page_targets(x, 500.0, LayoutOptions(), dpi)
    geo = page_geometry(LayoutOptions())
    cut = int((geo.baselines_mm[3] - 15) * dpi / 25.4)
    trace[cut:] = 0.0
    d = digitize_maps(trace, grid)
    assert d.layout == "3x4" and len(d.rows) == 3
    ii = d.signal[LEAD_INDEX["II"]]
    assert np.isfinite(ii[:1240]).mean() > 0.99 and np.isnan(ii[1300:]).all()   # only its 2.5 s panel


def _row_map(levels_px, w: int = 1000, h: int = 800, value: float = 1.0, cols=slice(None), shear: float = 0.0):
    """A trace map of wavy full-width rows at ``levels_px``."""
    m = np.zeros((h, w), np.float32)
    x = np.arange(w)
    for y0 in levels_px:
        y = np.round(y0 + 3 * np.sin(x / 9.0) + shear * (x - w / 2)).astype(int)
        keep = np.zeros(w, bool)
        keep[cols] = True
        m[y[keep], x[keep]] = value
    return m


def test_a_weak_row_one_spacing_beyond_three_rows_is_the_fourth():
    """Three strong rows and a fourth the projection shows weakly (tilted across 40 px, as
    on a page photographed at an angle): four rows. Not a header's short text one spacing
    above, nor a weak row at another distance."""
    rows = _row_map([300, 450, 600])
    tilted = _row_map([150], shear=40 / 1000)
    found = layout.find_row_baselines(np.maximum(rows, tilted), 30.0)
    assert found.size == 4 and abs(found[0] - 150) < 4, found
    text = _row_map([150, 153, 156], cols=slice(100, 200))      # three lines of "text", a tenth of the width
    assert layout.find_row_baselines(np.maximum(rows, text), 30.0).size == 3
    closer = _row_map([210], shear=40 / 1000)                  # 0.6 spacing above the first row
    assert layout.find_row_baselines(np.maximum(rows, closer), 30.0).size == 3
    below = _row_map([750], shear=40 / 1000)                   # below the last works as well
    assert layout.find_row_baselines(np.maximum(rows, below), 30.0).size == 4


def test_a_3x4_rhythm_page_whose_first_row_is_tilted_keeps_its_leads(signals):
    """A 3x4 + rhythm strip page whose first row the projection smears (a corner of the page
    lifted) was read as a plain 3x4 page, every row with the wrong leads."""
    x = signals[0]
    dpi = 100.0
    ppm = dpi / 25.4
    trace, grid = page_targets(x, 500.0, LayoutOptions(), dpi)
    geo = page_geometry(LayoutOptions())
    y = int(geo.baselines_mm[0] * ppm)
    top, bottom = y - int(22 * ppm), y + int(22 * ppm)
    band = trace[top:bottom].copy()
    trace[top:bottom] = 0.0
    w = trace.shape[1]
    for c in range(w):        # the row falls by 14 mm across the page
        trace[top:bottom, c] = np.roll(band[:, c], int(round(14 * ppm * c / w)))
    d = digitize_maps(trace, grid)
    assert d.layout == "3x4+1" and len(d.rows) == 4
    snr = reconstruction_snr(shown(x), d.signal, 500.0, align=True)
    later = [LEAD_INDEX[n] for n in ("II", "III", "aVL", "aVF", "V2", "V3", "V5", "V6")]
    assert np.nanmean(snr[later]) >= 15.0, snr


def test_12x1_layout_reads_each_lead_for_10_s(signals):
    x = signals[2]
    ppm = 4.0
    t = np.arange(5000) / 500.0
    rows = [(20 + t * 25.0, 12 + 16.5 * k - x[k] * 5.0) for k in range(12)]      # gain 5 mm/mV
    d = digitize_maps(draw_rows(rows, ppm), None, gain_mm_mv=5.0)
    assert d.layout == "12x1"
    snr = reconstruction_snr(x, d.signal, 500.0, align=True)
    assert np.nanmean(snr) >= 12.0, snr


@pytest.mark.parametrize("layout", ["3x4+3", "6x2"])
@pytest.mark.parametrize("dpi", [200.0, 93.0])
def test_six_row_pages_are_read_as_the_layout_whose_limb_leads_agree(signals, layout, dpi):
    """Six rows are 3×4 with three rhythm strips (V1, II, V5) or 6×2; the lead relations tell
    which (the wrong reading puts unrelated leads side by side)."""
    options = LayoutOptions(layout=layout)
    for x in signals:
        trace, grid = page_targets(x, 500.0, options, dpi)
        d = digitize_maps(trace, grid)
        assert d.layout == layout and len(d.rows) == 6
        assert mean_snr(x, d, options) >= (20.0 if dpi == 200.0 else 14.0), (layout, dpi)
        shown_ = np.isfinite(d.signal).sum(axis=1)
        if layout == "6x2":      # every lead for 5 s
            assert (np.abs(shown_ - 2500) < 40).all(), shown_
        else:                    # V1, II and V5 for 10 s, the others for 2.5 s
            long = [LEAD_INDEX[n] for n in ("V1", "II", "V5")]
            assert (shown_[long] > 4900).all() and (np.abs(np.delete(shown_, long) - 1250) < 30).all(), shown_


@pytest.mark.parametrize("layout,rhythm", [("3x4+1", "V1"), ("3x4+1", "III"), ("3x4+1", "aVR"),
                                           ("3x4+3", "II,V2,V5")])
def test_rhythm_strips_are_named_by_the_panel_they_repeat(signals, layout, rhythm):
    """Printers let users choose the rhythm strips' leads; each strip repeats its lead's
    panel sample for sample, which names it where the default lead's panel clearly does
    not match (a V5 or aVF strip that II's panel nearly matches keeps the name II)."""
    options = LayoutOptions(layout=layout, rhythm=rhythm)
    for x in signals:
        trace, grid = page_targets(x, 500.0, options, 200.0)
        d = digitize_maps(trace, grid)
        assert d.layout == layout
        assert [r["leads"][0] for r in d.rows if len(r["leads"]) == 1] == rhythm.split(",")
        assert mean_snr(x, d, options) >= 20.0


@pytest.mark.parametrize("n_rows,message", [(2, "unknown layout: 2 trace rows"),
                                            (5, "unknown layout: 5 trace rows"),
                                            (7, "unknown layout: 7 trace rows")])
def test_other_layouts_are_refused_in_one_line(signals, n_rows, message):
    x = signals[0]
    t = np.arange(2500) / 500.0
    rows = [(20 + t * 25.0, 25 + 30 * k - x[k % 12, :2500] * 10.0) for k in range(n_rows)]
    with pytest.raises(DigitizeError) as e:
        digitize_maps(draw_rows(rows, 4.0), None)
    assert str(e.value) == message and isinstance(e.value, EcgscanError)


def test_six_rows_must_be_evenly_spaced_to_be_a_six_row_page(signals):
    """Four rows 45 mm apart plus two strays (a header line, a fold) are no six-row printout."""
    x = signals[0]
    t = np.arange(5000) / 500.0
    levels = (25.0, 70.0, 115.0, 127.0, 160.0, 205.0)          # gaps 45, 45, 12, 33, 45 mm
    rows = [(20 + t * 25.0, y - x[k, :] * 10.0) for k, y in enumerate(levels)]
    with pytest.raises(DigitizeError, match="^unknown layout: 6 unevenly spaced trace rows$"):
        digitize_maps(draw_rows(rows, 4.0, size_mm=(279.4, 230.0)), None)


def test_empty_and_malformed_maps_are_refused():
    with pytest.raises(DigitizeError, match="^no ECG trace found$"):
        digitize_maps(np.zeros((990, 1280), np.float32), np.zeros((990, 1280), np.float32))
    with pytest.raises(DigitizeError, match="2-D"):
        digitize_maps(np.zeros((10, 10, 3)), None)
    with pytest.raises(DigitizeError, match="differs"):
        digitize_maps(np.zeros((100, 120)), np.zeros((100, 121)))


def test_a_working_resolution_page_takes_under_half_a_second(signals):
    trace, grid = page_targets(signals[0], 500.0, LayoutOptions(), 116.1)     # 1277 × 987
    trace = np.clip(ndimage.rotate(trace, 4.0, reshape=False, order=3), 0, 1)
    grid = np.clip(ndimage.rotate(grid, 4.0, reshape=False, order=1), 0, 1)
    digitize_maps(trace, grid)
    best = min(_timed(digitize_maps, trace, grid) for _ in range(3))
    assert best < 1.0, best          # measured ~0.25 s on one core; slack for a loaded machine


def _timed(f, *args) -> float:
    t0 = time.perf_counter()
    f(*args)
    return time.perf_counter() - t0


@pytest.mark.parametrize("ppm", [3.7, 7.9])          # the working resolution, a 200-dpi reading
def test_the_rows_corrections_are_gated_in_mm_not_pixels(ppm, monkeypatch):
    """A row whose grid lines drift by 0.4 mm is left alone and one drifting by 0.8 mm is
    followed, at any resolution: a finer reading of the same page must not follow the grid
    map's noise just because the same wobble spans more pixels there."""
    import ecgscan_cli.digitize.pipeline as pipeline
    from ecgscan_cli.digitize.layout import Row

    width = int(250 * ppm)
    grid = np.zeros((40, width + 20), np.float32)
    row = Row(y=20.0, px_per_mv=10 * ppm, x0=10.0, x1=10.0 + width, top=0, bottom=40, calibration=False, ppm_x=ppm)
    monkeypatch.setattr(pipeline, "band_warp", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "grid_lift", lambda *a, **k: None)
    x = np.linspace(row.x0, row.x1, 50)
    y = np.full_like(x, row.y)
    for drift_mm, followed in ((0.4, False), (0.8, True)):
        ramp = np.linspace(0.0, drift_mm * ppm, grid.shape[1])
        monkeypatch.setattr(pipeline, "grid_shift", lambda *a, r=ramp, **k: r)
        moved_x, _ = pipeline._follow_grid(x, y, row, grid, ppm)
        assert (np.abs(moved_x - x).max() > 0.1 * ppm) == followed, (drift_mm, ppm)


# ---------------------------------------------------------------- a misread grid pitch


def test_grid_pitch_near_a_guess_finds_the_5mm_lines_or_nothing(signals):
    dpi = 116.1
    true = dpi / 25.4
    _, grid = page_targets(signals[0], 500.0, LayoutOptions(), dpi)
    for axis in (0, 1):
        profile = grid.sum(axis=axis)
        for off in (0.9, 1.0, 1.12):       # a guess from the rows' length: a perspective's stretch off
            assert geometry.grid_pitch_near(profile, true * off) == pytest.approx(true, rel=5e-4), (axis, off)
        # no line 10 or 15 mm apart (not a harmonic of 5 mm lines), nor in a flat profile
        assert geometry.grid_pitch_near(profile, 2 * true) is None
        assert geometry.grid_pitch_near(profile, 3 * true) is None
    assert geometry.grid_pitch_near(np.ones(800), true) is None


@pytest.mark.parametrize("misread", [3.0, 4.0, 1 / 3.0])
def test_a_misread_grid_pitch_is_corrected_by_the_rows_length(signals, misread, monkeypatch):
    """A blurred photo's shading can make a sub-harmonic of the 5 mm lines pass for them
    (rows then read as 63 or 84 mm instead of 250): the rows' 10 s say so, and the grid is
    searched again near the scale they give."""
    import ecgscan_cli.digitize.pipeline as pipeline

    dpi = 116.1
    true = dpi / 25.4
    trace, grid = page_targets(signals[1], 500.0, LayoutOptions(), dpi)
    right = digitize_maps(trace, grid)
    read = geometry.grid_px_per_mm(grid)
    monkeypatch.setattr(pipeline, "grid_px_per_mm", lambda g: (read[0] * misread, read[1] * misread))
    d = digitize_maps(trace, grid)
    assert d.grid_found
    assert d.px_per_mm == pytest.approx((true, true), rel=5e-4)
    assert mean_snr(signals[1], d) == pytest.approx(mean_snr(signals[1], right), abs=0.2)
    # no line where the rows point: the grid's pitch stands (rows can be short for other
    # reasons: a photo's crop; a page too dark to read is better refused than guessed)
    monkeypatch.setattr(pipeline, "grid_pitch_near", lambda *a, **k: None)
    try:
        d = digitize_maps(trace, grid)
    except DigitizeError:
        return
    assert d.px_per_mm[0] == pytest.approx(read[0] * misread)


def test_a_pitch_that_agrees_with_the_rows_is_kept(signals, monkeypatch):
    """A page photographed at an angle, or cropped a little, has rows somewhat off 250 mm:
    the grid's pitch stands (it is the more precise)."""
    import ecgscan_cli.digitize.pipeline as pipeline

    dpi = 116.1
    trace, grid = page_targets(signals[0], 500.0, LayoutOptions(), dpi)
    read = geometry.grid_px_per_mm(grid)
    calls = []
    monkeypatch.setattr(pipeline, "grid_px_per_mm", lambda g: (read[0] * 1.2, read[1] * 1.2))
    monkeypatch.setattr(pipeline, "grid_pitch_near", lambda *a, **k: calls.append(a) or None)
    d = digitize_maps(trace, grid)
    assert not calls and d.grid_found and d.px_per_mm[0] == pytest.approx(read[0] * 1.2)


def test_the_reading_measures_the_traces_line_width_and_blur_widens_it(signals):
    """``Digitized.line_mm`` (what the restorer is told of the page): the printed line's
    width on exact maps, at any resolution, and wider once the page is blurred."""
    widths = {}
    for dpi in (100.0, 200.0):
        for line in (0.2, 0.5):
            trace, grid = page_targets(signals[0], 500.0, LayoutOptions(line_width_mm=line), dpi)
            widths[dpi, line] = digitize_maps(trace, grid).line_mm
            # one pixel's rounding either way (a pixel is 0.13-0.25 mm here)
            assert abs(widths[dpi, line] - line) < 25.4 / dpi, widths
        assert widths[dpi, 0.5] > widths[dpi, 0.2] + 0.15, widths
    trace, grid = page_targets(signals[0], 500.0, LayoutOptions(line_width_mm=0.2), 200.0)
    blurred = np.clip(ndimage.gaussian_filter(trace, 3.0) * 4.0, 0.0, 1.0)
    assert digitize_maps(blurred, grid).line_mm > widths[200.0, 0.2] + 0.3
