"""12-lead signals recovered from ECG images: by the digitiser (default) or a checkpoint's decoder.

Methods (``method=``):

* ``digitizer``: the trained trace-segmentation network shipped in the package
  (:mod:`ecgscan_cli.digitize`), then the page pipeline (grid → mm, calibration → mV,
  layout → leads, resampling to the canonical 500 Hz). Leads or stretches a page does not show are NaN.
* ``classical``: the same pipeline with a classical (non-learned) trace finder.
* ``decoder``: the ECG-Scan signal decoder of a pretraining checkpoint (``--checkpoint``);
  a training aid that recovers little more than the mean waveform.

The output is a signals file (``ecgscan snr-check recon.h5 --reference truth.h5`` scores
it), optionally WFDB records (``--wfdb DIR``) and overlays (``--overlays DIR``): with the
digitiser, the image with the reconstructed traces drawn where they were found, above the
12 leads; with the decoder, the 12 leads over the ground truth when it is known (images /
signals inputs, or ``--reference`` matched by id). A page the digitiser cannot read (no
ECG, no grid, unknown layout, unreadable file) is skipped with a one-line reason; the
others are still reconstructed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.leads import LEADS

log = logging.getLogger("ecgscan")

METHODS = ("digitizer", "classical", "decoder")
# Long side (px) of the page handed to the digitiser, which segments at about 1000 px
# (digitize.model.WORK_LONG_SIDE) and reads a second time at up to this size
# (digitize.refine.REFINE_LONG_SIDE: a 200-dpi letter page whole): a 20-megapixel photo is
# shrunk while decoding (memory bounded, and the decode itself is 4× faster).
DIGITIZE_MAX_SIDE = 2400
# `--max-side`: a 300-dpi letter scan (3,300 px) is read whole at 3,400 (docs/reconstruct.md);
# below the network's working size nothing is left to read finer, and past 6,000 px (a
# 550-dpi page) the time and memory grow with no resolution the pipeline was tried at
MAX_SIDE_RANGE = (1024, 6000)
# the digitiser's second readings (digitize.image.digitize_image), as logs and overlays name them
READING_NAMES = {"refined": "read at the image's resolution", "rectified": "perspective undone",
                 "rectified+refined": "perspective undone, read at the image's resolution"}
MIN_PAGE_SIDE = 64          # px: nothing smaller can show 12 leads and a grid
OVERLAY_MAX_SIDE = 1400     # px of the image kept for an overlay


def lead_snr(reference: np.ndarray, estimate: np.ndarray, fs: float = canonical.FS) -> np.ndarray:
    """Per-lead SNR (dB) of ``estimate`` against ``reference``: :func:`ecgscan_cli.snr.record_snr`
    with the default metric, so this number and ``snr-check --reference`` are the same."""
    from ecgscan_cli.snr import record_snr

    return record_snr(reference, estimate, fs)


MAX_NAME = 80   # characters of a file name made from a record id (file systems allow 255 bytes)


def _safe_name(rid: str) -> str:
    """A record id as a file name: letters, digits, ``_`` and ``-`` only, never starting
    with ``-`` (``-rf`` would read as an option to shell tools), at most :data:`MAX_NAME`
    characters (a long id keeps its start and gains a hash of the whole)."""
    import hashlib

    name = re.sub(r"[^A-Za-z0-9_-]+", "_", str(rid)).lstrip("-_").rstrip("_") or "record"
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(str(rid).encode("utf-8", "surrogatepass")).hexdigest()[:10]
        name = f"{name[:MAX_NAME - 11]}_{digest}"
    return name


def unique_names(ids) -> list[str]:
    """One distinct safe file name per id (``_2``, ``_3``... on collisions, compared without
    case for case-insensitive file systems)."""
    used: set[str] = set()
    names = []
    for rid in ids:
        base = name = _safe_name(rid)
        k = 1
        while name.lower() in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name.lower())
        names.append(name)
    return names


def write_wfdb(directory: Path, ids, signals: np.ndarray, fs: float, comments=None) -> None:
    """One WFDB record per id (format 16, 1 µV per unit like the signals file). NaN (a lead
    or stretch the page does not show) is written as WFDB's invalid sample (-32768), which
    ``wfdb.rdrecord`` reads back as NaN; values must lie within ±32.767 mV. ``comments``:
    per record, lines for its header (``Record.comments`` when read back)."""
    import wfdb

    from ecgscan_cli.formats.signals import mv_to_int16

    for j, (rid, name, sig) in enumerate(zip(ids, unique_names(ids), signals)):
        # digital samples with a fixed gain: wrsamp's own scaling from p_signal fails on an
        # all-NaN lead and would pick a different gain per record
        wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=list(LEADS), d_signal=mv_to_int16(sig, rid).T,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, fmt=["16"] * 12, write_dir=str(directory),
                    comments=list(comments[j]) if comments is not None else None)


def page_qualities(signals: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per reconstructed page: how far its limb leads break Einthoven's and Goldberger's
    relations (:func:`~ecgscan_cli.digitize.consistency.lead_relation_residual`, NaN where
    none can be checked) and the band that puts it in (good / fair / poor / unknown).

    Computed from the signals alone, so anyone can recompute it from the output; it ranks
    digitised pages, whose errors break the relations that every recorded ECG keeps."""
    from ecgscan_cli.digitize.consistency import lead_relation_residual, reading_quality

    res = np.array([lead_relation_residual(s) for s in signals], np.float64)
    quality = [reading_quality(r) for r in res]
    return np.where(np.isfinite(res), res, np.nan).astype(np.float32), quality


def overlay_plot(path: Path, rid: str, recon: np.ndarray, truth: np.ndarray | None, fs: float = canonical.FS,
                 picture: "Picture | None" = None) -> None:
    """12 panels (6×2): reconstruction (red) over ground truth (black) with per-lead SNR;
    with ``picture``, the image above them with the reconstructed traces drawn in red where
    the digitiser found each lead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(recon.shape[-1]) / fs
    snr = lead_snr(truth, recon, fs) if truth is not None else None
    if picture is None:
        fig, axes = plt.subplots(6, 2, figsize=(14, 10), sharex=True)
    else:
        h, w = picture.image.shape[:2]
        top = 14 * h / w                       # inches of the image at the figure's width
        fig = plt.figure(figsize=(14, top + 10))
        grid = fig.add_gridspec(7, 2, height_ratios=[top] + [10 / 6] * 6)
        ax_img = fig.add_subplot(grid[0, :])
        ax_img.imshow(picture.image, interpolation="antialiased")
        for _, xs, ys in picture.traces:
            ax_img.plot(xs, ys, color="red", lw=0.7, alpha=0.8)
        note = "reconstructed traces in red" if picture.traces else "trace positions not reported by the digitiser"
        ax_img.set_title(f"{picture.caption}; {note}", fontsize=8, loc="left")
        ax_img.set_axis_off()
        axes = np.array([[fig.add_subplot(grid[1 + r, c]) for c in range(2)] for r in range(6)])
    for k, ax in enumerate(axes.T.ravel()):
        if truth is not None:
            ax.plot(t, truth[k], color="black", lw=0.6, label="ground truth")
        ax.plot(t, recon[k], color="tab:red", lw=0.6, alpha=0.85, label="reconstruction")
        title = LEADS[k] + (f"  SNR {snr[k]:.1f} dB" if snr is not None and np.isfinite(snr[k]) else "")
        if not np.isfinite(recon[k]).any():
            title += "  (not shown on the page)"
        ax.set_title(title, fontsize=8, loc="left")
        ax.set_xlim(t[0], t[-1])
        ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("mV", fontsize=7)
    mean = f", mean SNR {np.nanmean(snr[np.isfinite(snr)]) if snr is not None and np.isfinite(snr).any() else float('nan'):.1f} dB" \
        if snr is not None else ""
    fig.suptitle(f"{rid}{mean}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------ the digitiser


@dataclass
class Picture:
    """What an overlay needs of a digitised page: the image (shrunk) and the traces in its pixels."""

    image: np.ndarray                   # uint8 H×W×3, long side at most OVERLAY_MAX_SIDE
    traces: list                        # [(lead index, xs, ys)] in the pixels of ``image``
    caption: str


def _rows_lead_segments(rows, fs: float = canonical.FS, n_samples: int = canonical.N_SAMPLES) -> list[dict]:
    """The per-lead placements in ``Digitized.rows``, as dicts with ``index`` (lead), ``x_start``,
    ``x_end``, ``y_baseline`` (px) and, when known, ``t_start``/``t_end`` (s) and ``px_per_mV``.

    Two forms are read: the digitiser's rows (``y``, ``x0``, ``x1``, ``px_per_mv`` and the
    ``leads`` the row shows left to right, each an equal share of its 10 s), and per-lead
    dicts in the form of ``ecgscan render``'s layout sidecars (``lead``, ``x_start``,
    ``x_end``, ``y_baseline``, optional ``t_start``/``t_end``), at the top level or under a
    row's ``leads``/``panels``/``segments``."""
    duration = n_samples / fs
    found = []
    for row in rows or []:
        if not isinstance(row, dict):
            continue
        names = row.get("leads")
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names) \
                and all(k in row for k in ("y", "x0", "x1")):
            try:
                y, x0, x1 = float(row["y"]), float(row["x0"]), float(row["x1"])
                per_mv = float(row.get("px_per_mv") or 0.0)
            except (TypeError, ValueError):
                continue
            # x1 is where the trace ends: the last sample, (n − 1)/fs after x0
            px_per_s = (x1 - x0) / ((n_samples - 1) / fs)
            share = duration / len(names)
            for j, name in enumerate(names):
                if name not in LEADS:
                    continue
                t0, t1 = j * share, (j + 1) * share
                found.append({"index": LEADS.index(name), "x_start": x0 + t0 * px_per_s,
                              "x_end": x0 + min(t1, (n_samples - 1) / fs) * px_per_s, "y_baseline": y,
                              "t_start": t0, "t_end": t1, **({"px_per_mV": per_mv} if per_mv > 0 else {})})
            continue
        inner = next((row[k] for k in ("leads", "panels", "segments") if isinstance(row.get(k), (list, tuple))), None)
        for seg in (inner if inner is not None else [row]):
            if not isinstance(seg, dict):
                continue
            seg = {**{k: v for k, v in row.items() if k not in ("leads", "panels", "segments")}, **seg}
            lead = seg.get("lead")
            index = LEADS.index(lead) if isinstance(lead, str) and lead in LEADS else lead
            if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not 0 <= int(index) < 12:
                continue
            try:
                x0, x1, y = (float(seg[k]) for k in ("x_start", "x_end", "y_baseline"))
            except (KeyError, TypeError, ValueError):
                continue
            found.append({**seg, "index": int(index), "x_start": x0, "x_end": x1, "y_baseline": y})
    return found


def trace_paths(digitized, signal: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The reconstructed traces in the pixels of the rows' coordinates: ``[(lead, xs, ys)]``.

    Each lead segment spans ``x_start``..``x_end``; its samples are those of
    ``t_start``..``t_end`` (s) when given, else the lead's shown (non-NaN) samples.
    Heights: ``y_baseline`` − mV × ``px_per_mV`` (default 10 mm/mV × the vertical px/mm)."""
    fs = float(getattr(digitized, "fs", canonical.FS) or canonical.FS)
    ppm = getattr(digitized, "px_per_mm", None) or (0.0, 0.0)
    ppm_y = float(ppm[1] if len(ppm) > 1 else ppm[0])
    out = []
    for seg in _rows_lead_segments(getattr(digitized, "rows", None), fs, signal.shape[-1]):
        x = signal[seg["index"]]
        if "t_start" in seg and "t_end" in seg:
            lo, hi = int(round(float(seg["t_start"]) * fs)), int(round(float(seg["t_end"]) * fs))
        else:
            shown = np.flatnonzero(np.isfinite(x))
            if not shown.size:
                continue
            lo, hi = int(shown[0]), int(shown[-1]) + 1
        lo, hi = max(lo, 0), min(hi, x.size)
        px_per_mv = float(seg.get("px_per_mV") or seg.get("px_per_mv") or 10.0 * ppm_y)
        if hi - lo < 2 or px_per_mv <= 0:
            continue
        xs = np.linspace(seg["x_start"], seg["x_end"], hi - lo)
        ys = seg["y_baseline"] - x[lo:hi].astype(np.float64) * px_per_mv
        out.append((seg["index"], xs, ys))
    return out


def to_page_pixels(xs: np.ndarray, ys: np.ndarray, digitized):
    """Points in the digitiser's row coordinates → pixels of the page it was given.

    The digitiser reads rows in the pixels of the maps it read (``map_shape``) after
    deskewing them by ``rotation_deg`` (``scipy.ndimage.rotate`` with the canvas grown to
    fit); ``to_image`` (3×3) takes the maps' pixels to the page's: a scale, or a homography
    where the page's perspective was undone. Both are undone here. Without them (a
    stand-in digitiser) the rows are taken to be in page pixels already."""
    if getattr(digitized, "to_image", None) is None or getattr(digitized, "map_shape", None) is None:
        return xs, ys
    from ecgscan_cli.digitize.image import rows_to_image

    p = rows_to_image(digitized) @ np.vstack([xs, ys, np.ones_like(xs)])
    return p[0] / p[2], p[1] / p[2]


def picture_of(page: np.ndarray, digitized, signal: np.ndarray) -> Picture:
    """The overlay's picture of a digitised page (shrunk to OVERLAY_MAX_SIDE, traces scaled with it)."""
    from ecgscan_cli.imageio import shrink_array

    small = shrink_array(page, OVERLAY_MAX_SIDE)
    sx, sy = small.shape[1] / page.shape[1], small.shape[0] / page.shape[0]
    traces = []
    for k, xs, ys in trace_paths(digitized, signal):
        px, py = to_page_pixels(xs, ys, digitized)
        traces.append((k, px * sx, py * sy))
    rotation = float(getattr(digitized, "rotation_deg", 0.0)) + float(getattr(digitized, "tilt_deg", 0.0))
    caption = f"layout {getattr(digitized, 'layout', '?')}, rotation {rotation:.1f}°"
    reading = getattr(digitized, "reading", "working")
    if reading in READING_NAMES:
        caption += ", " + READING_NAMES[reading]
    if getattr(digitized, "grid_found", True) is False:
        caption += ", no grid found (scale from the calibration pulses / row length)"
    return Picture(small, traces, caption)


def digitize_page(page: np.ndarray, net, method: str = "digitizer", quick: bool = False, printout=None,
                  restorer=None, max_side: int = DIGITIZE_MAX_SIDE):
    """One page → ``(signal [12, N_SAMPLES] float32 mV at canonical.FS, NaN where not shown, Digitized)``.

    ``quick``: only the network's reading at the working resolution (no perspective-undone
    or image-resolution reading competing; see :func:`ecgscan_cli.digitize.image.digitize_image`);
    ``printout``: the paper speed and fallback gain (:class:`ecgscan_cli.digitize.pipeline.Printout`);
    ``restorer``: run on the reading (:mod:`ecgscan_cli.digitize.restore`; the digitiser only);
    ``max_side``: the long side (px) of the image-resolution reading, at most.

    Raises :class:`EcgscanError` (a one-line reason) when the page cannot be read: too
    small, no grid, unknown layout, no trace found."""
    from ecgscan_cli.digitize.image import digitize_image

    h, w = page.shape[:2]
    if min(h, w) < MIN_PAGE_SIDE:
        raise EcgscanError(f"image of {w}×{h} px is too small to show an ECG (at least {MIN_PAGE_SIDE} px a side)")
    d = digitize_image(np.ascontiguousarray(page, np.uint8), net, method="net" if method == "digitizer" else "classical",
                       refine=not quick, printout=printout, restorer=restorer, refine_side=max_side)
    sig = np.asarray(d.signal, np.float32)
    fs = float(d.fs)
    if sig.ndim != 2 or sig.shape[0] != canonical.N_LEADS or abs(fs - canonical.FS) > 1e-6:
        raise EcgscanError(f"the digitiser returned a {sig.shape} signal at {fs:g} Hz; "
                           f"expected {canonical.N_LEADS} leads at {canonical.FS:g} Hz")
    sig = np.where(np.isfinite(sig), sig, np.nan).astype(np.float32)   # ±inf is no measurement either
    n = canonical.N_SAMPLES
    if sig.shape[1] != n:      # the canonical 10 s, like every ecgscan signal
        fixed = np.full((canonical.N_LEADS, n), np.nan, np.float32)
        fixed[:, : min(n, sig.shape[1])] = sig[:, :n]
        sig = fixed
    if not np.isfinite(sig).any():
        raise EcgscanError("no ECG trace found")
    return sig, d


def digitize_source(source, method: str = "digitizer", net=None, progress=None, keep_pictures: int = 0,
                    quick: bool = False, readings: dict | None = None, printout=None, restorer=None,
                    max_side: int = DIGITIZE_MAX_SIDE):
    """Digitise every page of ``source`` → (row indices, ids, signals [n, 12, N_SAMPLES], pictures).

    ``readings``: a dict counting which reading won per page (``working``, ``refined``,
    ``rectified``, ``rectified+refined``), the pages read turned (``turned 90°``, ``180°``,
    ``270°``: counter-clockwise), those levelled first (``levelled first``: rows tilted
    beyond 15°) and the pages per layout (``layout 3x4+1``, ``layout 6x2``...),
    filled in place; ``quick`` and ``restorer``: see :func:`digitize_page`; ``max_side``: the
    long side (px) each image is decoded to, at most, and read at.

    ``net``: TraceNet from :func:`ecgscan_cli.digitize.image.load_digitizer` (the shipped
    weights when None and ``method`` is ``digitizer``). Pages that cannot be read are
    recorded in ``source.skipped`` (one-line reasons, also logged) and left out.
    ``pictures`` maps the position of the first ``keep_pictures`` reconstructions to their
    :class:`Picture`."""
    if method == "digitizer" and net is None:
        from ecgscan_cli.digitize.image import load_digitizer

        net = load_digitizer()
    rows, ids, sigs, pictures = [], [], [], {}
    for i, rid, page in source.pages(max_side):
        try:
            sig, d = digitize_page(page, net, method, quick, printout, restorer, max_side)
        except EcgscanError as e:
            source.skip(i, f"{source.name(i)}: {e}")
            continue
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:   # one strange photo must not cost the other pages
            if os.environ.get("ECGSCAN_DEBUG"):
                raise
            source.skip(i, f"{source.name(i)}: the digitiser failed ({type(e).__name__}: {e})")
            continue
        finally:
            if progress is not None:
                progress(1)
        if readings is not None:
            name = getattr(d, "reading", "working")
            readings[name] = readings.get(name, 0) + 1
            layout = f"layout {getattr(d, 'layout', '') or 'unknown'}"
            readings[layout] = readings.get(layout, 0) + 1
            if getattr(d, "orientation", 0):
                turn = f"turned {d.orientation}°"
                readings[turn] = readings.get(turn, 0) + 1
            if getattr(d, "tilt_deg", 0.0):
                readings["levelled first"] = readings.get("levelled first", 0) + 1
        if len(pictures) < keep_pictures:
            pictures[len(ids)] = _picture_or_page(page, d, sig, source.name(i))
        rows.append(i)
        ids.append(rid)
        sigs.append(sig)
    sig = np.stack(sigs) if sigs else np.zeros((0, canonical.N_LEADS, canonical.N_SAMPLES), np.float32)
    return rows, ids, sig, pictures


def _picture_or_page(page, digitized, signal, name: str) -> Picture:
    """:func:`picture_of`, or the page alone when the rows cannot be drawn: an overlay never
    costs a record its reconstruction."""
    try:
        return picture_of(page, digitized, signal)
    except Exception as e:
        if os.environ.get("ECGSCAN_DEBUG"):
            raise
        log.warning("overlay of %s: traces not drawn (%s: %s)", name, type(e).__name__, e)
        from ecgscan_cli.imageio import shrink_array

        return Picture(shrink_array(page, OVERLAY_MAX_SIDE), [], "trace positions could not be drawn")


# ------------------------------------------------------------------ the ECG-Scan decoder


def reconstruct(model, source, batch_size: int = 16, device="cpu", progress=None):
    """Decode every readable record → (row indices, ids, signals [n, 12, T] float32 mV)."""
    import torch

    rows, ids, chunks = [], [], []
    with torch.inference_mode():
        for idx, bid, imgs in source.batches(batch_size, model.image_size, device=device):
            chunks.append(model.reconstruct(imgs.to(device)).float().cpu().numpy())
            rows.extend(idx)
            ids.extend(bid)
            if progress is not None:
                progress(len(idx))
    empty = np.zeros((0, canonical.N_LEADS, model.cfg.n_samples), np.float32)
    sig = np.concatenate(chunks) if chunks else empty
    return rows, ids, sig


# ------------------------------------------------------------------ the command


def resolve_method(method: str | None, checkpoint=None, weights=None) -> str:
    """The method to run: ``decoder`` when a checkpoint is given, else ``digitizer``;
    contradictory choices are refused in one line."""
    if method is not None and method not in METHODS:
        raise EcgscanError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    if method is None:
        method = "decoder" if checkpoint is not None else "digitizer"
    if method == "decoder" and checkpoint is None:
        raise EcgscanError("--method decoder needs a checkpoint: --checkpoint RUN/best (from `ecgscan pretrain`)")
    if method != "decoder" and checkpoint is not None:
        raise EcgscanError(f"--checkpoint is for --method decoder; --method {method} does not use it")
    if weights is not None and method != "digitizer":
        raise EcgscanError(f"--weights is for --method digitizer; --method {method} does not use it")
    return method


def reconstruct_to_file(checkpoint, input_path, out, *, method: str | None = None, weights=None, wfdb_dir=None,
                        overlay_dir=None, reference=None, max_overlays: int = 8, batch_size: int = 16,
                        device="auto", overwrite: bool = False, progress_factory=None, quick: bool = False,
                        speed_mm_s: float = 25.0, gain_mm_mv: float = 10.0, restore: bool = True,
                        restorer=None, max_side: int = DIGITIZE_MAX_SIDE):
    """Write the reconstruction signals file (+ WFDB / overlays). Returns (path, source, summary dict).

    ``quick``: the digitiser reads each page once (see :func:`digitize_page`); the summary's
    ``readings`` counts which reading won on how many pages. ``speed_mm_s`` (25 or 50) and
    ``gain_mm_mv`` (5, 10 or 20: used where no calibration pulse shows the gain): the
    printouts' settings, for the digitisers.

    ``method`` defaults to ``decoder`` when ``checkpoint`` is given, else ``digitizer``
    (``weights``: a safetensors file, default the weights shipped in the package). ``restore``:
    the digitiser's readings go through the restorer (:mod:`ecgscan_cli.digitize.restore`;
    ``restorer``: its weights, default the shipped ones). ``max_side``: the digitisers decode
    each image to at most this long side and read it at that resolution (a 300-dpi scan is
    read whole at 3,400 px; :data:`MAX_SIDE_RANGE`)."""
    from ecgscan_cli.atomic import atomic_output, check_output_path
    from ecgscan_cli.digitize.consistency import FAIR_BELOW, GOOD_BELOW, QUALITIES
    from ecgscan_cli.digitize.pipeline import Printout
    from ecgscan_cli.embed import resolve_device
    from ecgscan_cli.formats.signals import MAX_MV, SignalsFile, SignalsWriter
    from ecgscan_cli.imageio import open_source

    method = resolve_method(method, checkpoint, weights)
    if restorer is not None and not restore:
        raise EcgscanError("--restorer names weights for the restorer; --no-restore switches it off: give one")
    if restorer is not None and method != "digitizer":
        raise EcgscanError(f"--restorer is for --method digitizer; --method {method} does not use it")
    restore = restore and method == "digitizer"
    if quick and method == "decoder":
        raise EcgscanError("--quick is the digitiser's (one reading per page); the decoder reads each image once anyway")
    if not MAX_SIDE_RANGE[0] <= max_side <= MAX_SIDE_RANGE[1]:
        raise EcgscanError(f"--max-side {max_side}: give {MAX_SIDE_RANGE[0]}-{MAX_SIDE_RANGE[1]} px")
    if max_side != DIGITIZE_MAX_SIDE and method == "decoder":
        raise EcgscanError("--max-side is the digitisers'; the decoder reads every image at its own input size")
    printout = printout_settings(speed_mm_s, gain_mm_mv, method)
    check_output_path(out, overwrite, kind="signals")
    for d, kind in ((wfdb_dir, "wfdb"), (overlay_dir, "overlays")):
        if d is not None:
            check_output_path(d, overwrite, kind=kind)
    if weights is not None and not (Path(weights).is_file() or (Path(weights) / "tracenet.safetensors").is_file()):
        raise EcgscanError(f"--weights {weights}: no such file (a .safetensors file or a `train-digitizer` run folder)")
    ref = SignalsFile(reference) if reference is not None else None
    source = open_source(input_path)
    if source.kind == "signals" and printout != Printout():
        source.close()
        raise EcgscanError("--speed and --gain describe printouts; a signals file is drawn at "
                           "25 mm/s and 10 mm/mV (render it with `ecgscan render --speed` and read the images)")
    try:
        ctx = progress_factory(len(source), "reconstructing") if progress_factory else contextlib.nullcontext(None)
        keep = max_overlays if overlay_dir is not None else 0
        # the digitiser's network is small and the pipeline after it is numpy code: `auto`
        # keeps it on the CPU; an explicit --device cuda[:N] is honoured
        dev = resolve_device("cpu" if method != "decoder" and str(device).strip().lower() == "auto" else device)
        engine, made_by = _load_engine(method, checkpoint, weights, dev)   # before the progress bar
        fixer = None
        if restore:
            from ecgscan_cli.digitize.restore import load_restorer

            fixer = load_restorer(restorer, device=str(dev))
            made_by += f", restored ({Path(restorer).resolve() if restorer is not None else 'restorer shipped with ecgscan'})"
        with ctx as advance:
            readings = {}
            if method == "decoder":
                rows, ids, sig = reconstruct(engine, source, batch_size, dev, advance)
                pictures = {}
            else:
                rows, ids, sig, pictures = digitize_source(source, method, engine, advance, keep, quick, readings,
                                                           printout, fixer, max_side)
        if not ids:
            first = f"; {source.skipped[0][1]}" if source.skipped else ""
            raise EcgscanError(f"{input_path}: no usable image ({len(source.skipped)} skipped{first})")
        clipped = int((np.abs(np.nan_to_num(sig)) > MAX_MV).sum())
        if clipped:
            log.warning("%d reconstructed samples beyond ±%.3f mV were clipped", clipped, MAX_MV)
            sig = np.clip(sig, -MAX_MV, MAX_MV)
        # the decoder emits its checkpoint's form; the digitisers the canonical one
        fs = float(engine.cfg.fs) if method == "decoder" else canonical.FS
        rows = np.asarray(rows, int)
        summary = {"n": len(ids), "skipped": len(source.skipped), "skipped_reasons": list(source.skipped),
                   "clipped_samples": clipped, "method": method, "restored": restore, "readings": readings}
        residual = quality = None
        if method != "decoder":   # the decoder's output keeps the relations whatever the image shows
            residual, quality = page_qualities(sig)
            summary["quality"] = {q: quality.count(q) for q in QUALITIES if q in quality}
            summary["poor"] = [source.name(r) for r, q in zip(rows, quality) if q == "poor"]
        # Every output is written under a temporary name and all are renamed together at the
        # end: a failure in any of them (a bad id, a full disk) leaves none behind, so the
        # rerun is not refused by a half-written set. The signals file, entered last, is
        # committed first: its final checks (unique ids) still remove the other two.
        with contextlib.ExitStack() as outputs:
            if wfdb_dir is not None:
                tmp = outputs.enter_context(atomic_output(wfdb_dir, overwrite=overwrite, directory=True, kind="wfdb"))
                notes = None if residual is None else [
                    [f"ecgscan reading quality: {q} (limb-lead residual {r:.3f})" if np.isfinite(r)
                     else f"ecgscan reading quality: {q}"] for q, r in zip(quality, residual)]
                write_wfdb(tmp, ids, sig, fs, notes)
            _write_overlays(outputs, overlay_dir, overwrite, ids, rows, sig, fs, source, ref, max_overlays, summary,
                            pictures)
            w = outputs.enter_context(SignalsWriter(
                out, fs=fs, n_samples=sig.shape[-1], classes=source.classes, overwrite=overwrite,
                source=str(input_path), expected_rows=len(ids),
                attrs={"reconstructed_by": made_by, "reconstruction_method": method}))
            for j, rid in enumerate(ids):
                r = rows[j]
                w.append(rid, sig[j], report=source.reports[r], label=source.labels[r] if source.classes else None,
                         fold=int(source.folds[r]))
            if residual is not None:
                w.add_record_values("digitizer/lead_residual", residual,
                                    {"description": "limb-lead relation residual (0 = consistent; NaN: not checkable)"})
                w.add_record_values("digitizer/quality", quality,
                                    {"bands": f"good < {GOOD_BELOW} <= fair < {FAIR_BELOW} <= poor; unknown: NaN"})
    finally:
        source.close()
    return Path(out), source, summary


def printout_settings(speed_mm_s: float, gain_mm_mv: float, method: str):
    """The :class:`~ecgscan_cli.digitize.pipeline.Printout` a reconstruction reads with,
    checked: the speeds and gains printouts use (and ``render`` draws)."""
    from ecgscan_cli.digitize.pipeline import Printout
    from ecgscan_cli.render.layout import GAINS, SPEEDS

    if float(speed_mm_s) not in SPEEDS:
        raise EcgscanError(f"--speed must be one of {', '.join(f'{v:g}' for v in SPEEDS)} mm/s, got {speed_mm_s:g}")
    if float(gain_mm_mv) not in GAINS:
        raise EcgscanError(f"--gain must be one of {', '.join(f'{v:g}' for v in GAINS)} mm/mV, got {gain_mm_mv:g}")
    printout = Printout(float(speed_mm_s), float(gain_mm_mv))
    if method == "decoder" and printout != Printout():
        raise EcgscanError("--speed and --gain are the digitiser's; the decoder reads pages drawn like its "
                           "training renders (25 mm/s, 10 mm/mV)")
    return printout


def _load_engine(method: str, checkpoint, weights, device):
    """(the model or network ``method`` runs, None for ``classical``; what made the output)."""
    if method == "decoder":
        from ecgscan_cli.embed import load_model

        return load_model(checkpoint, device), str(Path(checkpoint).resolve())
    if method == "classical":
        return None, "classical digitiser"
    from ecgscan_cli.digitize.image import load_digitizer

    net = load_digitizer(None if weights is None else str(weights), device=str(device))
    return net, f"digitizer ({Path(weights).resolve() if weights is not None else 'weights shipped with ecgscan'})"


def _write_overlays(outputs, overlay_dir, overwrite, ids, rows, sig, fs, source, ref, max_overlays, summary,
                    pictures=None):
    """The SNR summary against the ground truth and, with ``overlay_dir``, the overlay plots
    (into a temporary folder entered on ``outputs``)."""
    from ecgscan_cli.atomic import atomic_output

    pictures = pictures or {}
    truth_of = None
    if ref is not None:
        index = ref.index_of()
        truth_of = lambda j: ref.signal(index[ids[j]]) if ids[j] in index else None
    elif source.has_signals:
        truth_of = lambda j: source.signal(int(rows[j]))
    if truth_of is not None:
        snrs = []
        for j in range(len(ids)):
            t = truth_of(j)
            if t is not None and t.shape == sig[j].shape:
                snrs.append(lead_snr(t, sig[j], fs))
        if snrs:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # a lead never shown: NaN, not a warning
                summary["lead_snr_db"] = np.nanmean(np.where(np.isfinite(snrs), snrs, np.nan), axis=0)
    if overlay_dir is not None:
        tmp = outputs.enter_context(atomic_output(overlay_dir, overwrite=overwrite, directory=True, kind="overlays"))
        count = min(max_overlays, len(ids))
        for j, name in enumerate(unique_names(ids[:count])):
            t = truth_of(j) if truth_of is not None else None
            if t is not None and t.shape != sig[j].shape:
                t = None
            overlay_plot(tmp / f"{name}.png", ids[j], sig[j], t, fs, pictures.get(j))
