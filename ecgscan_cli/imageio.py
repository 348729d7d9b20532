"""One input abstraction for embed / zeroshot / reconstruct: images at model size.

An input is one of

* a folder of scans or photos (PNG, JPEG, TIFF, BMP, WebP; searched recursively): any
  size, aspect and mode; EXIF orientation applied, grayscale / palette / 16-bit / RGBA
  turned into RGB on white, then letterboxed into the model's square input like the
  training renders are (whole page, centred, white padding); files that cannot be read
  are reported and skipped (``ImageSource.skipped``), and so are documents that are not
  raster images (PDF, SVG...: :data:`UNSUPPORTED_SUFFIXES`, with how to convert them;
  HEIC/HEIF phone photos are read where the optional pillow-heif is installed);
* an images file (``ecgscan render -o images.h5``): stored images, letterboxed when
  their size differs from the model's;
* a signals file (``ecgscan import`` / ``synth``): rendered on the fly with
  ``render_batch(augment="none")`` at the model's size.

``ImageSource.batches(batch_size, size)`` yields ``(indices, ids, images)`` with images a
float32 tensor ``[B, 3, size, size]`` in [0, 1]; ``ImageSource.pages(max_side)`` yields
whole pages (uint8 RGB, long side at most ``max_side``) for the digitiser.

Every image is refused above :data:`MAX_PIXELS` from its header alone (a decompression
bomb is a few kB of PNG that decodes to gigabytes), and ``load_image(path, max_side)``
shrinks while decoding (JPEG DCT scaling via ``Image.draft``), so a 20-megapixel photo
never exists at full size in memory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
# Files people put beside their scans that are not raster images: named and skipped with
# a hint, rather than silently ignored (the user would wonder where their pages went).
UNSUPPORTED_SUFFIXES = {
    ".pdf": "a PDF is not read; convert its pages to PNG first (e.g. `pdftoppm -r 200 -png FILE.pdf page`)",
    ".svg": "an SVG is not read; rasterise it to PNG first (e.g. `rsvg-convert -d 200 -p 200 FILE.svg -o page.png`)",
    ".svgz": "an SVG is not read; rasterise it to PNG first",
    ".heic": "HEIC photos need the optional pillow-heif package (pip install 'ecgscan[heic]'); "
             "or export them as JPEG",
    ".heif": "HEIF photos need the optional pillow-heif package (pip install 'ecgscan[heic]'); "
             "or export them as JPEG",
    ".eps": "PostScript is not read; convert it to PNG first",
    ".ps": "PostScript is not read; convert it to PNG first",
}
# What phones save by default (iPhones since 2017): read where pillow-heif is installed
HEIF_SUFFIXES = (".heic", ".heif")
MAX_PIXELS = 100_000_000   # larger images are refused from their header (a 100-MP photo is already rare)


def load_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Read an image file as uint8 ``H×W×3`` RGB, upright (EXIF), transparency on white.

    Images over :data:`MAX_PIXELS` are refused before decoding. With ``max_side``, the
    image is shrunk (aspect kept) so that its long side is at most ``max_side``, JPEGs
    already while decoding, so memory stays bounded whatever the photo's resolution.

    Raises :class:`EcgscanError` when the file is not a readable image.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.suffix.lower() in HEIF_SUFFIXES:
        heif_readable()
    if not path.is_file():   # never opened: a FIFO named x.png would block forever
        raise EcgscanError(f"{path}: cannot read image: not a regular file")
    try:
        with warnings.catch_warnings():
            # PIL warns from ~89 MP; MAX_PIXELS below is the limit that applies here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise EcgscanError(f"{path}: refusing image: {w}×{h} pixels is over the limit of "
                                       f"{MAX_PIXELS // 1_000_000} megapixels")
                if max_side is not None and im.format == "JPEG" and max(w, h) > max_side:
                    s = max_side / max(w, h)
                    im.draft("RGB", (max(1, int(w * s)), max(1, int(h * s))))   # DCT scaling: 1/2, 1/4, 1/8
                im.load()
                if max_side is not None:
                    im = _shrink(im, max_side)
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # broken EXIF block: keep the pixels as stored
                    pass
                return to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise EcgscanError(f"{path}: cannot read image: {_one_line(e)}") from None
    except (Image.DecompressionBombError, MemoryError) as e:
        raise EcgscanError(f"{path}: refusing image: {_one_line(e) or 'out of memory'}") from None


_HEIF: bool | None = None     # heif_readable's answer, once known


def heif_readable() -> bool:
    """Whether HEIC/HEIF photos can be read (the optional pillow-heif package, registered
    with PIL once). libheif applies the photo's rotation itself and resets its EXIF
    orientation, so the image comes out upright like a JPEG does."""
    global _HEIF
    if _HEIF is None:
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
            _HEIF = True
        except Exception:     # not installed, or a build that does not load here
            _HEIF = False
    return _HEIF


def _is_image(suffix: str) -> bool:
    s = suffix.lower()
    return s in IMAGE_SUFFIXES or (s in HEIF_SUFFIXES and heif_readable())


def _not_read(suffix: str) -> bool:
    """A document people keep beside their scans that is not read (with a hint how to convert it)."""
    return suffix.lower() in UNSUPPORTED_SUFFIXES and not _is_image(suffix)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _shrink(im, max_side: int):
    """A PIL image with its long side at most ``max_side`` (integer box reduction first, cheap,
    then an antialiased resize to the exact size)."""
    from PIL import Image

    w, h = im.size
    if max(w, h) <= max_side:
        return im
    if im.mode.startswith("I;16"):
        im = im.convert("I")      # to_rgb later stretches its range to 8 bits
    elif im.mode not in ("RGB", "RGBA", "L", "LA", "I", "F"):
        im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
    s = max_side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    factor = int(1 / s) // 2   # reduce() keeps at least twice the target: the resize still antialiases
    if factor >= 2:
        im = im.reduce(factor)
    return im.resize(size, Image.Resampling.LANCZOS)


def shrink_array(image: np.ndarray, max_side: int) -> np.ndarray:
    """uint8 ``H×W×3`` with its long side at most ``max_side`` (aspect kept)."""
    if max(image.shape[:2]) <= max_side:
        return image
    from PIL import Image

    return np.asarray(_shrink(Image.fromarray(image), max_side), np.uint8)


def to_rgb(im) -> np.ndarray:
    """A PIL image of any mode → uint8 ``H×W×3`` (alpha composited on white)."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = np.nanmin(a), np.nanmax(a)
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        g = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "PA"):
        im = im.convert("RGBA")
    if im.mode == "RGBA" or im.mode == "RGBa":
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im.convert("RGBA"))
    if im.mode != "RGB":
        im = im.convert("RGB")
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise EcgscanError(f"unexpected image shape {arr.shape}")
    return arr


def list_images(folder: str | os.PathLike, specials: list | None = None,
                unsupported: list | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden names skipped), sorted. Entries with an
    image suffix that are not regular files (FIFOs, devices, sockets, broken links) are
    never opened; they are appended to ``specials`` when given. Files with a suffix of
    :data:`UNSUPPORTED_SUFFIXES` (PDF, SVG...) are appended to ``unsupported`` when given."""
    folder = Path(folder)
    files = []
    for p in folder.rglob("*"):
        if p.name.startswith("."):
            continue
        if _not_read(p.suffix):
            if unsupported is not None and not p.is_dir():
                unsupported.append(p)
            continue
        if not _is_image(p.suffix):
            continue
        if p.is_file():
            files.append(p)
        elif specials is not None and not p.is_dir():
            specials.append(p)
    return sorted(files)


def _sidecar_id(image: Path) -> str | None:
    """The ``id`` of the JSON sidecar ``ecgscan render`` writes next to each page, if any."""
    import json

    sidecar = image.with_suffix(".json")
    try:
        if sidecar.is_file() and sidecar.stat().st_size < 10_000_000:
            rid = json.loads(sidecar.read_text(encoding="utf-8")).get("id")
            return rid if isinstance(rid, str) and rid else None
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _folder_ids(folder: Path, files: list[Path]) -> list[str]:
    # rendered pages carry their record id in a sidecar: use it, so that
    # `snr-check --reference` matches the reconstruction to the source records
    sidecar_ids = [_sidecar_id(p) for p in files]
    if all(sidecar_ids) and len(set(sidecar_ids)) == len(sidecar_ids):
        return sidecar_ids
    stems = [str(p.relative_to(folder).with_suffix("")) for p in files]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p.relative_to(folder)) for p in files]


@dataclass
class ImageSource:
    """Records to encode, whatever the input kind. Metadata may be empty (folders)."""

    path: Path
    kind: str                          # "folder" | "images" | "signals"
    ids: list[str]
    labels: np.ndarray                 # [N, C] uint8
    classes: list[str]
    folds: np.ndarray                  # [N] int
    reports: list[str]
    label_set: str = ""
    extra_label_sets: dict = field(default_factory=dict)   # name -> (classes, labels)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (name, reason)
    _files: list[Path] = field(default_factory=list, repr=False)
    _reader: object = field(default=None, repr=False)
    fs: float = canonical.FS

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_signals(self) -> bool:
        if self.kind == "signals":
            return True
        if self.kind == "images":
            return bool(getattr(self._reader, "has_signals", False))
        return False

    def signal(self, i: int) -> np.ndarray:
        """Ground-truth signal of record ``i`` (float32 mV [12, T]) when the input has one."""
        if not self.has_signals:
            raise EcgscanError(f"{self.path} holds no signals")
        return np.asarray(self._reader.signal(int(i)), np.float32)

    def batches(self, batch_size: int, size: int, device="cpu") -> Iterator[tuple[list[int], list[str], "object"]]:
        """Yield ``(indices, ids, images [B,3,size,size] float32 in [0,1])``.

        For folders, unreadable files are skipped (recorded in ``skipped`` and logged), so a
        batch may be shorter than ``batch_size``.
        """
        import torch

        batch_size = max(1, int(batch_size))
        n = len(self.ids)
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            if self.kind == "signals":
                from ecgscan_cli.render import render_batch

                sig = torch.from_numpy(self._reader.signals(idx)).to(device)
                imgs = render_batch(sig, size=size, augment="none", fs=self.fs)
                yield idx, [self.ids[i] for i in idx], imgs.float()
                continue
            arrays, ok = [], []
            for i in idx:
                try:
                    if self.kind == "folder":
                        arr = load_image(self._files[i])
                    else:
                        arr = np.asarray(self._reader.image(i), np.uint8)
                        if arr.ndim == 2:
                            arr = np.repeat(arr[:, :, None], 3, axis=2)
                        if arr.ndim != 3 or arr.shape[2] != 3:
                            raise EcgscanError(f"record {self.ids[i]!r}: image shape {arr.shape}")
                except EcgscanError as e:
                    self.skip(i, str(e))
                    continue
                arrays.append(prepare(arr, size))
                ok.append(i)
            if not ok:
                continue
            t = torch.from_numpy(np.stack(arrays)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
            yield ok, [self.ids[i] for i in ok], t

    def pages(self, max_side: int) -> Iterator[tuple[int, str, np.ndarray]]:
        """Yield ``(index, id, image)`` for every record: the whole page, uint8 ``H×W×3`` RGB,
        long side at most ``max_side``. Folders: the files, shrunk while decoding. Images
        files: the stored images. Signals files: clean pages rendered at 200 dpi with the
        default layout (``ecgscan render``'s). Records that cannot be read are recorded in
        ``skipped`` with a one-line reason and not yielded."""
        for i in range(len(self.ids)):
            try:
                yield i, self.ids[i], self._page(i, max_side)
            except EcgscanError as e:
                self.skip(i, str(e))

    def _page(self, i: int, max_side: int) -> np.ndarray:
        if self.kind == "folder":
            return load_image(self._files[i], max_side)
        if self.kind == "signals":
            from ecgscan_cli.render.files import RenderJob, render_record

            sig = np.asarray(self._reader.signal(i), np.float32)
            page, _ = render_record(RenderJob(str(self.path)), sig, self.ids[i], i, self.fs)
            return shrink_array(page, max_side)
        from ecgscan_cli.formats.images import stored_image_to_rgb8

        arr = np.asarray(self._reader.image(i))
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
            raise EcgscanError(f"record {self.ids[i]!r}: image shape {arr.shape}")
        arr = stored_image_to_rgb8(arr, f"record {self.ids[i]!r}")
        return shrink_array(arr, max_side)

    def name(self, i: int) -> str:
        """How record ``i`` is named in messages: its file for folders, else its id."""
        return str(self._files[i]) if self.kind == "folder" else self.ids[i]

    def skip(self, i: int, reason: str) -> None:
        """Record (and log on stderr) that record ``i`` is left out, with a one-line reason."""
        reason = " ".join(str(reason).split())
        self.skipped.append((self.name(i), reason))
        log.warning("skipped %s", reason)

    def close(self) -> None:
        if self._reader is not None and hasattr(self._reader, "close"):
            self._reader.close()


def prepare(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 H×W×3 → uint8 size×size×3, letterboxed like the training renders."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    from ecgscan_cli.render import letterbox

    return letterbox(image, size)


def _extra_label_sets(path: Path, n: int) -> dict:
    """``/label_sets/<name>`` datasets of an ecgscan HDF5 file of ``n`` records, when present."""
    import h5py

    from ecgscan_cli.formats.common import read_classes, read_int_rows

    out = {}
    try:
        with h5py.File(path, "r") as f:
            if "label_sets" in f:
                for name in f["label_sets"]:
                    labels = read_int_rows(f, f"label_sets/{name}", n, path, columns=True)
                    classes = read_classes(f["label_sets"][name])
                    if len(classes) != labels.shape[1]:
                        raise EcgscanError(f"{path}: label set {name!r} has {labels.shape[1]} columns but "
                                           f"{len(classes)} class names")
                    out[name] = (classes, labels.astype(np.uint8))
            name = f["label"].attrs.get("label_set", "") if "label" in f else ""
            name = name or f.attrs.get("label_set", "")
    except OSError:
        return {}, ""
    return out, (name.decode() if isinstance(name, bytes) else str(name))


def open_source(path: str | os.PathLike) -> ImageSource:
    """Open a folder of images, an images file or a signals file as an :class:`ImageSource`."""
    from ecgscan_cli.formats.common import file_kind

    path = Path(path)
    if not path.exists():
        raise EcgscanError(f"no such file or folder: {path}")
    if path.is_dir():
        specials: list[Path] = []
        unsupported: list[Path] = []
        files = list_images(path, specials, unsupported)
        skipped = [(str(p), f"{p}: not a regular file (FIFO, device, socket or broken link); skipped")
                   for p in sorted(specials)]
        skipped += [(str(p), f"{p}: {UNSUPPORTED_SUFFIXES[p.suffix.lower()]}") for p in sorted(unsupported)]
        for _, reason in skipped:
            log.warning("skipped %s", reason)
        if not files:
            looked = IMAGE_SUFFIXES + (HEIF_SUFFIXES if heif_readable() else ())
            raise EcgscanError(f"{path}: no usable image (looked for {', '.join(looked)}"
                               + (f"; {len(skipped)} other file(s) skipped, e.g. {skipped[0][1]})" if skipped else ")"))
        n = len(files)
        return ImageSource(path=path, kind="folder", ids=_folder_ids(path, files),
                           labels=np.zeros((n, 0), np.uint8), classes=[], folds=np.full(n, -1),
                           reports=[""] * n, skipped=skipped, _files=files)
    if not path.is_file():
        raise EcgscanError(f"{path} is not a regular file (FIFO, device or socket); not read")
    if _not_read(path.suffix):
        raise EcgscanError(f"{path}: {UNSUPPORTED_SUFFIXES[path.suffix.lower()]}")
    if _is_image(path.suffix):
        load_image(path, max_side=256)  # a single image: clear error if unreadable (shrunk: memory bounded)
        return ImageSource(path=path, kind="folder", ids=[path.stem], labels=np.zeros((1, 0), np.uint8),
                           classes=[], folds=np.full(1, -1), reports=[""], _files=[path])
    kind = file_kind(path)
    if kind == "signals":
        from ecgscan_cli.formats.signals import SignalsFile

        reader = SignalsFile(path)
    elif kind == "images":
        try:
            from ecgscan_cli.formats.images import ImagesFile
        except ImportError:
            raise EcgscanError("images files are not supported by this installation") from None
        reader = ImagesFile(path)
    elif kind is None:
        raise EcgscanError(f"{path} is not an image folder, an image, or an ecgscan images/signals file")
    else:
        raise EcgscanError(f"{path} is an ecgscan {kind} file; expected images (a folder, an images file "
                           "or a signals file)")
    n = len(reader)
    extra, ls_name = _extra_label_sets(path, n)
    labels = np.asarray(getattr(reader, "labels", np.zeros((n, 0))), np.uint8).reshape(n, -1)
    return ImageSource(path=path, kind=kind, ids=list(reader.ids), labels=labels,
                       classes=list(getattr(reader, "classes", [])),
                       folds=np.asarray(getattr(reader, "folds", np.full(n, -1)), int),
                       reports=list(getattr(reader, "reports", [""] * n)), label_set=ls_name,
                       extra_label_sets=extra, _reader=reader, fs=float(getattr(reader, "fs", canonical.FS)))
