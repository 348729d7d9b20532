"""How well the digitiser reads pages: render held-out records, digitise, score.

Each condition renders the records as 200-dpi pages (``clean``: as printed; the others:
then augmented with that preset, as in ``ecgscan render --augment``), digitises them and
scores them against the signals they were rendered from, masked to what the page shows
(each 3×4 lead 2.5 s, lead II 10 s; how the PhysioNet 2024 references of printed ECGs are
stored), with the reconstruction SNR of
:mod:`ecgscan_cli.snr`: ``aligned`` (±0.5 s shift and per-lead offset allowed, NaN samples
ignored, × coverage) and ``physionet2024`` (the 2024 challenge scorer: no alignment,
samples not shown count as zeros).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ecgscan_cli.errors import EcgscanError

CONDITIONS = ("clean", "paper", "heavy", "photo")
EVAL_METHODS = ("net", "classical", "exact")


@dataclass
class PageScore:
    record: str
    condition: str
    aligned_db: float          # mean over leads
    physionet2024_db: float    # mean over leads
    seconds: float
    error: str = ""
    reading: str = ""           # which maps won (digitize_image's ``reading``)
    dpi: float = 200.0


def render_condition(signal: np.ndarray, fs: float, condition: str, seed: int, dpi: float = 200.0,
                     targets: bool = False, options=None):
    """A page of ``signal`` as printed (``clean``) or augmented with the preset ``condition``.

    ``targets``: also return its exact trace and grid maps ([2, H, W], moved by the same
    geometric augmentations; :func:`~ecgscan_cli.render.augment.augment_with_targets`).
    ``options``: the printout's :class:`~ecgscan_cli.render.layout.LayoutOptions` (default:
    letter, 3×4 + lead II, 25 mm/s, 10 mm/mV, red grid)."""
    from ecgscan_cli.render.page import render_page

    page = render_page(signal, fs, options=options, dpi=dpi, return_meta=False)
    maps = None
    if targets:
        from ecgscan_cli.render.targets import page_targets

        maps = page_targets(signal, fs, options=options, dpi=dpi)
    if condition != "clean":
        import torch

        from ecgscan_cli.render.augment import apply_augment, augment_with_targets, draw_params, resolve_augment

        x = torch.from_numpy(np.ascontiguousarray(page)).permute(2, 0, 1)[None].float() / 255.0
        gen = torch.Generator().manual_seed(seed)
        if maps is None:
            x = apply_augment(x, draw_params(resolve_augment(condition), 1, x.shape[-2:], "red", gen, "cpu"))
        else:       # the same draw, its geometry applied to the maps too
            x, t = augment_with_targets(x, torch.from_numpy(maps)[None], condition, gen)
            maps = t[0].clamp(0, 1).numpy()
        page = (x[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return (page, maps) if targets else page


def score_page(reference: np.ndarray, estimate: np.ndarray | None, fs: float) -> tuple[float, float]:
    from ecgscan_cli.snr import reconstruction_snr

    aligned = reconstruction_snr(reference, estimate, fs, align=True)
    official = reconstruction_snr(reference, estimate, fs, missing="zero")
    with np.errstate(invalid="ignore"):
        return float(np.nanmean(aligned)), float(np.nanmean(official))


def evaluate_digitizer(signals_path, *, folds=(8,), conditions=CONDITIONS, limit: int | None = None,
                       method: str = "net", net=None, seed: int = 0, progress=None,
                       refine: bool = True, dpi: float = 200.0, start: int = 0,
                       layout: str = "3x4+1", speed_mm_s: float = 25.0, restorer=None) -> list[PageScore]:
    """Scores of every (record of ``folds``, condition); a page the digitiser refuses scores as
    an empty output (0 dB aligned, the scorer's zeros for physionet2024) and keeps its reason.
    ``method``: ``net`` or ``classical`` (:func:`~ecgscan_cli.digitize.image.digitize_image`),
    or ``exact``: the page's exact trace and grid maps, moved with it, read by
    :func:`~ecgscan_cli.digitize.pipeline.digitize_maps` at the image's resolution (no
    rectification) — what the steps after the maps make of perfect maps, so a condition's
    loss splits into the maps' share and the rest. ``refine``: passed to ``digitize_image``;
    ``dpi``: of the rendered pages; ``layout``: their printout (``3x4+1``, ``3x4+3``, ``6x2``);
    ``speed_mm_s``: their paper speed (25 or 50), which the digitiser is told.
    ``restorer``: run on each reading (``digitize_image``'s; ``net`` only).
    ``start``: skip the first records of ``folds`` (a record's page is the same whatever
    ``start`` and ``limit`` select: its seed is its position)."""
    from ecgscan_cli.digitize.image import digitize_image, load_digitizer
    from ecgscan_cli.digitize.pipeline import Printout, digitize_maps
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.render.layout import LayoutOptions, as_shown

    options = LayoutOptions(layout=layout, speed=float(speed_mm_s)).check()
    printout = Printout(speed_mm_s=float(speed_mm_s))
    sf = SignalsFile(signals_path)
    rows = [i for i in range(len(sf)) if sf.folds is None or int(sf.folds[i]) in set(folds)]
    rows = rows[start:None if limit is None else start + limit]
    if method not in EVAL_METHODS:
        raise EcgscanError(f"unknown evaluation method {method!r} (choose from {', '.join(EVAL_METHODS)})")
    if method == "net" and net is None:
        net = load_digitizer()
    out = []
    for k, i in enumerate(rows, start):
        full = np.nan_to_num(sf.signal(i).astype(np.float64))
        ref = as_shown(full, options, fs=sf.fs)   # the reference as the page shows it (as PhysioNet 2024 stores it)
        for condition in conditions:
            page, maps = (render_condition(full, sf.fs, condition, seed + k, dpi=dpi, targets=True, options=options)
                          if method == "exact"
                          else (render_condition(full, sf.fs, condition, seed + k, dpi=dpi, options=options), None))
            t0 = time.perf_counter()
            try:
                d = (digitize_maps(maps[0], maps[1], speed_mm_s=printout.speed_mm_s) if method == "exact"
                     else digitize_image(page, net, method=method, refine=refine, printout=printout,
                                        restorer=restorer))
                est, err, reading = d.signal, "", getattr(d, "reading", "")
            except EcgscanError as e:
                est, err, reading = None, str(e), ""
            dt = time.perf_counter() - t0
            a, p = score_page(ref, est, sf.fs)
            out.append(PageScore(sf.ids[i], condition, a, p, dt, err, reading, dpi))
            if progress:
                progress(out[-1])
    return out


def summarize_scores(scores: list[PageScore]) -> list[dict]:
    """Per condition: mean aligned and physionet2024 dB over records, pages refused, median seconds."""
    rows = []
    for condition in dict.fromkeys(s.condition for s in scores):
        sel = [s for s in scores if s.condition == condition]
        with np.errstate(invalid="ignore"):
            rows.append({
                "condition": condition, "pages": len(sel),
                "aligned_db": round(float(np.nanmean([s.aligned_db for s in sel])), 2),
                "physionet2024_db": round(float(np.nanmean([s.physionet2024_db for s in sel])), 2),
                "refused": sum(bool(s.error) for s in sel),
                "refined": sum(s.reading == "refined" for s in sel),
                "median_s": round(float(np.median([s.seconds for s in sel])), 3),
            })
    return rows
