"""12-lead signals decoded from ECG images by a checkpoint's signal decoder.

The output is a signals file (``ecgscan snr-check recon.h5 --reference truth.h5`` scores
it), optionally WFDB records (``--wfdb DIR``) and overlay plots of the reconstruction over
the ground truth when it is known (images/signals inputs, or ``--reference`` matched by id).
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import numpy as np

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.leads import LEADS

log = logging.getLogger("ecgscan")


def lead_snr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Per-lead SNR (dB) = 10·log10(mean x² / mean (x − x̂)²) over samples present in both."""
    x = np.asarray(reference, np.float64)
    y = np.asarray(estimate, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    p = np.where(ok, x * x, 0).sum(-1)
    e = np.where(ok, (x - y) ** 2, 0).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10 * np.log10(p / e)


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


def write_wfdb(directory: Path, ids, signals: np.ndarray, fs: float) -> None:
    import wfdb

    for name, sig in zip(unique_names(ids), signals):
        wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=list(LEADS),
                    p_signal=np.nan_to_num(sig.T.astype(np.float64)), fmt=["16"] * 12, write_dir=str(directory))


def overlay_plot(path: Path, rid: str, recon: np.ndarray, truth: np.ndarray | None, fs: float = 500.0,
                 image: np.ndarray | None = None) -> None:
    """12 panels (6×2): reconstruction (red) over ground truth (black) with per-lead SNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(recon.shape[-1]) / fs
    snr = lead_snr(truth, recon) if truth is not None else None
    fig, axes = plt.subplots(6, 2, figsize=(14, 10), sharex=True)
    for k, ax in enumerate(axes.T.ravel()):
        if truth is not None:
            ax.plot(t, truth[k], color="black", lw=0.6, label="ground truth")
        ax.plot(t, recon[k], color="tab:red", lw=0.6, alpha=0.85, label="reconstruction")
        title = LEADS[k] + (f"  SNR {snr[k]:.1f} dB" if snr is not None else "")
        ax.set_title(title, fontsize=8, loc="left")
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
    sig = np.concatenate(chunks) if chunks else np.zeros((0, 12, 5000), np.float32)
    return rows, ids, sig


def reconstruct_to_file(checkpoint, input_path, out, *, wfdb_dir=None, overlay_dir=None, reference=None,
                        max_overlays: int = 8, batch_size: int = 16, device="auto", overwrite: bool = False,
                        progress_factory=None):
    """Write the reconstruction signals file (+ WFDB / overlays). Returns (path, source, summary dict)."""
    from ecgscan_cli.atomic import atomic_output, check_output_path
    from ecgscan_cli.embed import load_model, resolve_device
    from ecgscan_cli.formats.signals import MAX_MV, SignalsFile, SignalsWriter
    from ecgscan_cli.imageio import open_source

    check_output_path(out, overwrite, kind="signals")
    for d, kind in ((wfdb_dir, "wfdb"), (overlay_dir, "overlays")):
        if d is not None:
            check_output_path(d, overwrite, kind=kind)
    ref = SignalsFile(reference) if reference is not None else None
    source = open_source(input_path)
    dev = resolve_device(device)
    model = load_model(checkpoint, dev)
    ctx = progress_factory(len(source), "reconstructing") if progress_factory else contextlib.nullcontext(None)
    with ctx as advance:
        rows, ids, sig = reconstruct(model, source, batch_size, dev, advance)
    if not ids:
        raise EcgscanError(f"{input_path}: no readable image ({len(source.skipped)} skipped)")
    clipped = int((np.abs(sig) > MAX_MV).sum())
    if clipped:
        log.warning("%d reconstructed samples beyond ±%.3f mV were clipped", clipped, MAX_MV)
        sig = np.clip(sig, -MAX_MV, MAX_MV)
    fs = 500.0 * sig.shape[-1] / 5000.0  # the decoder always spans 10 s
    rows = np.asarray(rows, int)
    summary = {"n": len(ids), "skipped": len(source.skipped), "clipped_samples": clipped}
    # Every output is written under a temporary name and all are renamed together at the
    # end: a failure in any of them (a bad id, a full disk) leaves none behind, so the
    # rerun is not refused by a half-written set. The signals file, entered last, is
    # committed first: its final checks (unique ids) still remove the other two.
    with contextlib.ExitStack() as outputs:
        if wfdb_dir is not None:
            tmp = outputs.enter_context(atomic_output(wfdb_dir, overwrite=overwrite, directory=True, kind="wfdb"))
            write_wfdb(tmp, ids, sig, fs)
        _write_overlays(outputs, overlay_dir, overwrite, ids, rows, sig, fs, source, ref, max_overlays, summary)
        w = outputs.enter_context(SignalsWriter(
            out, fs=fs, n_samples=sig.shape[-1], classes=source.classes, overwrite=overwrite,
            source=str(input_path), expected_rows=len(ids),
            attrs={"reconstructed_by": str(Path(checkpoint).resolve())}))
        for j, rid in enumerate(ids):
            r = rows[j]
            w.append(rid, sig[j], report=source.reports[r], label=source.labels[r] if source.classes else None,
                     fold=int(source.folds[r]))
    source.close()
    return Path(out), source, summary


def _write_overlays(outputs, overlay_dir, overwrite, ids, rows, sig, fs, source, ref, max_overlays, summary):
    """The SNR summary against the ground truth and, with ``overlay_dir``, the overlay plots
    (into a temporary folder entered on ``outputs``)."""
    from ecgscan_cli.atomic import atomic_output

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
                snrs.append(lead_snr(t, sig[j]))
        if snrs:
            summary["lead_snr_db"] = np.nanmean(np.where(np.isfinite(snrs), snrs, np.nan), axis=0)
    if overlay_dir is not None:
        tmp = outputs.enter_context(atomic_output(overlay_dir, overwrite=overwrite, directory=True, kind="overlays"))
        count = min(max_overlays, len(ids))
        for j, name in enumerate(unique_names(ids[:count])):
            t = truth_of(j) if truth_of is not None else None
            if t is not None and t.shape != sig[j].shape:
                t = None
            overlay_plot(tmp / f"{name}.png", ids[j], sig[j], t, fs)
