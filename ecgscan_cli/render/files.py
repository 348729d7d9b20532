"""Render a whole signals file to an images file or a folder of PNG/JPG pages (+ JSON sidecars).

Full pages are drawn by the numpy page renderer; with ``size`` set, images are rendered
in batches at model size by the torch batch renderer. Record ``i`` is always augmented
with the seed ``(seed, i)``, so results do not depend on ``workers`` or batching. The
output is written under a temporary name and renamed only when complete.

With a targets folder, every page also gets its per-pixel targets (:func:`record_targets`:
trace, grid and paper coverage as the R, G, B of a PNG, moved by the page's own
augmentation) under the same name, with the same JSON sidecar.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ecgscan_cli.atomic import atomic_output, check_output_path
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.leads import LEADS
from ecgscan_cli.render.augment import AugmentConfig, params_to_dicts, resolve_augment
from ecgscan_cli.render.layout import LayoutOptions

FORMATS = ("h5", "png", "jpg")


@dataclass
class RenderJob:
    signals_path: str
    fmt: str = "h5"
    options: LayoutOptions = LayoutOptions()
    augment: AugmentConfig | str = "none"
    dpi: float = 200.0
    size: int | None = None
    seed: int = 0
    jpeg_quality: int = 90


TARGET_PLANES = {"R": "trace", "G": "grid", "B": "page"}   # channels of the targets PNGs


def _check_signal(sig: np.ndarray, rid: str) -> None:
    empty = np.isnan(sig).all(axis=-1)
    if empty.any():
        names = ", ".join(LEADS[i] for i in np.flatnonzero(empty))
        raise EcgscanError(f"record {rid!r}: lead(s) {names} have no samples (all NaN); nothing to draw")


def _header(rid: str, o: LayoutOptions, fs: float) -> str:
    return f"ID: {rid}    {o.speed:g} mm/s    {o.gain:g} mm/mV    {fs:g} Hz"


def _seeded(seed: int, i: int):
    import torch

    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(i)) % (2**63 - 1))


def render_record(job: RenderJob, sig: np.ndarray, rid: str, i: int, fs: float) -> tuple[np.ndarray, dict]:
    """One full page (uint8) and its layout metadata, augmented with seed (job.seed, i)."""
    from ecgscan_cli.render.page import render_page

    _check_signal(sig, rid)
    header = _header(rid, job.options, fs) if job.options.header else None
    cfg = resolve_augment(job.augment)
    if not cfg.active:
        return render_page(sig, fs=fs, options=job.options, dpi=job.dpi, header=header)
    import torch

    from ecgscan_cli.render.augment import apply_augment, draw_params
    from ecgscan_cli.render.layout import page_geometry, page_size_px

    hw = page_size_px(page_geometry(job.options), job.dpi)
    params = draw_params(cfg, 1, hw, job.options.grid, _seeded(job.seed, i), "cpu")
    grid = params["_grids"][int(params["grid"][0])]
    ink = tuple(float(v) * 255 for v in params["ink"][0])
    page, meta = render_page(sig, fs=fs, options=job.options.with_(grid=grid), dpi=job.dpi, header=header, ink=ink)
    img = torch.from_numpy(page).permute(2, 0, 1)[None].float().div_(255.0)
    img = apply_augment(img, params)
    page = (img[0].permute(1, 2, 0).mul(255).add_(0.5)).clamp_(0, 255).to(torch.uint8).numpy()
    meta["augment"] = params_to_dicts(params)[0]
    meta["grid"] = grid
    return page, meta


def record_targets(job: RenderJob, sig: np.ndarray, i: int, fs: float) -> np.ndarray:
    """Targets of record ``i``'s page as ``render_record`` (full page) or ``render_batch``
    (``job.size``) draws it: uint8 H×W×3, R = trace ink, G = grid lines, B = paper, each the
    coverage of the pixel (0–255), moved by the same augmentation draw as the page.

    Drawn at the page's resolution by :func:`page_targets` (at model size: at about 4 page
    pixels per output pixel, then area-downscaled into the letterbox, as the batch renderer's
    background is), with the grid style the augmentation picked; outside the paper all zero.
    """
    import torch
    import torch.nn.functional as F

    from ecgscan_cli.render.augment import draw_params, warp_targets
    from ecgscan_cli.render.layout import letterbox_geometry, page_geometry, page_size_px
    from ecgscan_cli.render.targets import page_targets

    cfg = resolve_augment(job.augment)
    geo = page_geometry(job.options)
    if job.size is None:
        hw = page_size_px(geo, job.dpi)
    else:
        hw = (int(job.size), int(job.size))
    params = draw_params(cfg, 1, hw, job.options.grid, _seeded(job.seed, i), "cpu") if cfg.active else None
    grid = params["_grids"][int(params["grid"][0])] if params is not None else job.options.grid
    options = job.options.with_(grid=grid)
    if job.size is None:
        t = torch.from_numpy(page_targets(sig, fs, options, job.dpi))
        t = torch.cat([t, torch.ones_like(t[:1])])[None]
    else:
        from ecgscan_cli.render.page import static_dpi
        from ecgscan_cli.render.raster import REF_DPI

        ph, pw = page_size_px(geo, REF_DPI)
        nh, nw, top, left = letterbox_geometry(ph, pw, hw)
        dpi = static_dpi(geo, nw)          # the dpi the batch renderer's background is drawn at
        full = torch.from_numpy(page_targets(sig, fs, options, dpi))
        full = torch.cat([full, torch.ones_like(full[:1])])[None]
        small = F.interpolate(full, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        t = torch.zeros(1, 3, *hw)
        t[..., top:top + nh, left:left + nw] = small.clamp_(0, 1)
    if params is not None:
        t = warp_targets(t, params)
    return t[0].permute(1, 2, 0).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


def _targets_sidecar(sf, i: int, meta: dict) -> dict:
    return {**_sidecar(sf, i, meta), "targets": TARGET_PLANES}


def _save_targets(targets: np.ndarray, folder: Path, name: str, sf, i: int, meta: dict) -> None:
    save_image(targets, folder / f"{name}.png", "png")      # lossless whatever the pages' format
    (folder / f"{name}.json").write_text(json.dumps(_targets_sidecar(sf, i, meta), indent=1))


# ---------------------------------------------------------------- worker processes

_W: dict = {}


def _pool_worker_init(job: RenderJob, out_dir: str | None, targets_dir: str | None = None):
    import signal

    # a forked worker inherits the command's SIGTERM handler (which raises), and the pool
    # ends its workers with SIGTERM: each printed a traceback. Ctrl-C is the parent's to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_init(job, out_dir, targets_dir)


def _worker_init(job: RenderJob, out_dir: str | None, targets_dir: str | None = None):
    import torch

    from ecgscan_cli.formats.signals import SignalsFile

    torch.set_num_threads(1)
    _W["job"] = job
    _W["sf"] = SignalsFile(job.signals_path)
    _W["out_dir"] = out_dir
    _W["targets_dir"] = targets_dir
    _W["names"] = page_names(_W["sf"].ids) if (out_dir or targets_dir) is not None else None


def page_names(ids) -> list[str]:
    """File names (without suffix) of the pages: the record id, sanitised and made unique."""
    from ecgscan_cli.reconstruct import unique_names

    return unique_names(ids)


def _sidecar(sf, i: int, meta: dict) -> dict:
    return {"id": sf.ids[i], "report": sf.reports[i],
            "labels": {c: int(v) for c, v in zip(sf.classes, sf.labels[i])}, "fold": int(sf.folds[i]),
            "layout": meta}


def save_image(image: np.ndarray, path: Path, fmt: str, quality: int = 90) -> None:
    from PIL import Image

    im = Image.fromarray(image)
    if fmt == "png":
        im.save(path, format="PNG", compress_level=1)
    else:
        im.save(path, format="JPEG", quality=quality)


def _work(i: int):
    job: RenderJob = _W["job"]
    sf = _W["sf"]
    rid = sf.ids[i]
    sig = sf.signal(i)
    page, meta = render_record(job, sig, rid, i, sf.fs)
    if _W["targets_dir"] is not None:   # written here, in the worker: the costly part runs in parallel
        _save_targets(record_targets(job, sig, i, sf.fs), Path(_W["targets_dir"]), _W["names"][i], sf, i, meta)
    if _W["out_dir"] is None:
        return i, page, meta
    name = _W["names"][i]
    out = Path(_W["out_dir"])
    save_image(page, out / f"{name}.{job.fmt}", job.fmt, job.jpeg_quality)
    (out / f"{name}.json").write_text(json.dumps(_sidecar(sf, i, meta), indent=1))
    return i, None, None


def _imap(job: RenderJob, indices, workers: int, out_dir: str | None, targets_dir: str | None = None):
    if workers <= 1:
        _worker_init(job, out_dir, targets_dir)
        for i in indices:
            yield _work(i)
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ctx.Pool(workers, initializer=_pool_worker_init, initargs=(job, out_dir, targets_dir)) as pool:
        yield from pool.imap(_work, indices, chunksize=1)


# ---------------------------------------------------------------- model-size batches

def _batches(job: RenderJob, sf, indices, batch: int = 32, targets: bool = False):
    """(index, image, layout, targets or None) of each record, rendered at model size in batches."""
    import torch

    from ecgscan_cli.render.batch import render_batch
    from ecgscan_cli.render.layout import layout_metadata, model_pixel_map, page_geometry

    geo = page_geometry(job.options)
    pm = model_pixel_map(geo, job.size)
    cfg = resolve_augment(job.augment)
    for s in range(0, len(indices), batch):
        idx = indices[s:s + batch]
        sigs = np.stack([sf.signal(i) for i in idx])
        for j, i in enumerate(idx):
            _check_signal(sigs[j], sf.ids[i])
        if cfg.active:  # one generator per record: independent of batching
            outs, params = [], []
            for j, i in enumerate(idx):
                img, p = render_batch(torch.from_numpy(sigs[j:j + 1]), job.size, cfg, sf.fs, _seeded(job.seed, i),
                                      options=job.options, return_params=True)
                outs.append(img)
                params.append(params_to_dicts(p)[0])
            out = torch.cat(outs)
        else:
            out = render_batch(torch.from_numpy(sigs), job.size, cfg, sf.fs, options=job.options)
            params = [{}] * len(idx)
        arrs = out.permute(0, 2, 3, 1).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()
        for j, i in enumerate(idx):
            meta = layout_metadata(geo, pm, None, sf.n_samples, sf.fs, augment=params[j])
            if "grid" in params[j]:
                meta["grid"] = params[j]["grid"]
            yield i, arrs[j], meta, (record_targets(job, sigs[j], i, sf.fs) if targets else None)


# ---------------------------------------------------------------- entry point

IMAGE_FILE_SUFFIXES = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}
H5_SUFFIXES = (".h5", ".hdf5")


def output_format(output: str, image_format: str | None) -> str:
    """The output format (h5, png, jpg) for ``--output`` as typed and ``--image-format``.

    Without a format, a ``.h5``/``.hdf5`` name means an images file and a folder (a trailing
    ``/`` or an existing folder) means PNG pages. A format that contradicts the path is
    refused: png/jpg pages go to a folder, so ``-o out.png`` would be a folder named out.png;
    ``-o pages/`` is not a file name for an images file."""
    if not str(output).strip():
        raise EcgscanError("--output: empty path (did a command substitution print nothing?)")
    path = Path(output)
    is_folder = str(output).endswith(("/", os.sep)) or path.is_dir()
    suffix = path.suffix.lower()
    if image_format is not None:
        fmt = {"jpeg": "jpg", "hdf5": "h5"}.get(image_format.lower().lstrip("."), image_format.lower().lstrip("."))
        if fmt not in FORMATS:
            raise EcgscanError(f"unknown --image-format {image_format!r} (choose from {', '.join(FORMATS)})")
    elif suffix in H5_SUFFIXES:
        fmt = "h5"
    elif is_folder:
        fmt = "png"
    elif suffix in IMAGE_FILE_SUFFIXES:
        raise EcgscanError(f"-o {output}: render writes one page per record into a folder; give a folder "
                           f"(-o pages/ --image-format {IMAGE_FILE_SUFFIXES[suffix]}) or an .h5 file")
    else:
        raise EcgscanError(f"-o {output}: say what to write: an images file (-o {output}.h5) or a folder of "
                           f"pages (-o {output}/ or --image-format png|jpg)")
    if fmt == "h5" and is_folder:
        raise EcgscanError(f"-o {output} is a folder but the images file (h5) is one file: give a .h5 name, "
                           "or --image-format png|jpg for a folder of pages")
    if fmt != "h5" and suffix in (*H5_SUFFIXES, *IMAGE_FILE_SUFFIXES):
        raise EcgscanError(f"-o {output}: {fmt} pages are written into a folder, and {output} looks like a "
                           "file name; give a folder (e.g. -o pages/)")
    return fmt


def check_job(job: RenderJob, out, *, workers: int = 1, limit: int | None = None, overwrite: bool = False,
              targets: str | os.PathLike | None = None):
    """Validate everything before any output is written: options, output paths, every record.

    Returns the open :class:`SignalsFile` and the number of records to render.
    """
    from ecgscan_cli.formats.signals import SignalsFile

    if job.fmt not in FORMATS:
        raise EcgscanError(f"unknown output format {job.fmt!r} (choose from {', '.join(FORMATS)})")
    job.options.check()
    if job.size is not None and not (16 <= int(job.size) <= 4096):
        raise EcgscanError(f"--size must be 16–4096 pixels, got {job.size}")
    if not (20 <= float(job.dpi) <= 1200):
        raise EcgscanError(f"--dpi must be 20–1200, got {job.dpi:g}")
    if workers < 1:
        raise EcgscanError(f"--workers must be at least 1, got {workers}")
    if limit is not None and limit < 0:
        raise EcgscanError(f"--limit must be positive, got {limit}")
    job.augment = resolve_augment(job.augment)
    check_output_path(out, overwrite, kind="images" if job.fmt == "h5" else "render")
    if targets is not None:
        _check_targets_path(out, targets, overwrite)
    sf = SignalsFile(job.signals_path)
    n = len(sf) if limit is None else min(limit, len(sf))
    if n == 0:
        raise EcgscanError(f"{job.signals_path}: no records to render")
    for i in range(n):  # cheap (int16 reads): refuse NaN-only leads before writing anything
        _check_signal(sf.signal(i), sf.ids[i])
    return sf, n


def _check_targets_path(out, targets, overwrite: bool) -> None:
    if not str(targets).strip():
        raise EcgscanError("--targets: empty path (did a command substitution print nothing?)")
    a, b = Path(out).resolve(), Path(targets).resolve()
    if a == b or a in b.parents or b in a.parents:
        raise EcgscanError(f"--targets {targets}: give a folder of its own, not {out} or a folder in or around it")
    if Path(targets).suffix.lower() in (*H5_SUFFIXES, *IMAGE_FILE_SUFFIXES):
        raise EcgscanError(f"--targets {targets}: targets are written into a folder (one PNG + JSON per page), "
                           f"and {targets} looks like a file name")
    check_output_path(targets, overwrite, kind="render")


def render_file(job: RenderJob, out: str | os.PathLike, *, workers: int = 1, limit: int | None = None,
                overwrite: bool = False, progress: Callable[[int], None] | None = None,
                on_total: Callable[[int], None] | None = None, checked: tuple | None = None,
                targets: str | os.PathLike | None = None) -> Path:
    """Render ``job.signals_path`` to ``out`` (images file, or folder for png/jpg); returns ``out``.

    ``targets``: a folder that also receives every page's targets (:func:`record_targets`),
    a PNG and the page's JSON sidecar each, named like the pages. Both outputs are written
    under temporary names; an interruption or error leaves neither.
    ``checked`` is what :func:`check_job` returned, when the caller has already run it.
    """
    sf, n = checked or check_job(job, out, workers=workers, limit=limit, overwrite=overwrite, targets=targets)
    if targets is None:
        return _render_to(job, out, sf, n, workers, overwrite, progress, on_total, None)
    with atomic_output(targets, overwrite=overwrite, directory=True, kind="render") as tdir:
        # the pages are renamed into place first, the targets right after: an error or an
        # interruption before then removes both temporaries
        return _render_to(job, out, sf, n, workers, overwrite, progress, on_total, tdir)


def _render_to(job: RenderJob, out, sf, n: int, workers: int, overwrite: bool, progress, on_total,
               tdir: Path | None) -> Path:
    from ecgscan_cli.formats.images import ImagesWriter

    out = Path(out)
    if on_total:
        on_total(n)
    indices = list(range(n))
    advance = progress or (lambda k=1: None)
    if job.size is not None:
        h = w = int(job.size)
        stream = _batches(job, sf, indices, targets=tdir is not None)
    else:
        from ecgscan_cli.render.layout import page_geometry, page_size_px

        h, w = page_size_px(page_geometry(job.options), job.dpi)
        stream = None
    if job.fmt == "h5":
        with ImagesWriter(out, height=h, width=w, with_signals=True, fs=sf.fs, n_samples=sf.n_samples,
                          classes=sf.classes, overwrite=overwrite, source=str(job.signals_path),
                          attrs={"augment": json.dumps(job.augment.to_dict()), "seed": int(job.seed)},
                          expected_rows=n) as wr:
            stream = stream if stream is not None else _with_no_targets(
                _imap(job, indices, workers, None, None if tdir is None else str(tdir)))
            names = page_names(sf.ids) if tdir is not None else None
            for i, image, meta, tgt in stream:
                wr.append(sf.ids[i], image, meta, signal=sf.signal(i), report=sf.reports[i],
                          label=sf.labels[i] if sf.classes else None, fold=int(sf.folds[i]))
                if tgt is not None:
                    _save_targets(tgt, tdir, names[i], sf, i, meta)
                advance(1)
        return out
    with atomic_output(out, overwrite=overwrite, directory=True, kind="render") as tmp:
        if stream is not None:  # model-size images: encoding small images is cheap, do it here
            names = page_names(sf.ids)
            for i, image, meta, tgt in stream:
                name = names[i]
                save_image(image, tmp / f"{name}.{job.fmt}", job.fmt, job.jpeg_quality)
                (tmp / f"{name}.json").write_text(json.dumps(_sidecar(sf, i, meta), indent=1))
                if tgt is not None:
                    _save_targets(tgt, tdir, name, sf, i, meta)
                advance(1)
        else:
            for _ in _imap(job, indices, workers, str(tmp), None if tdir is None else str(tdir)):
                advance(1)
    return out


def _with_no_targets(stream):
    """Full pages for an images file: the workers wrote their targets themselves."""
    for i, page, meta in stream:
        yield i, page, meta, None
