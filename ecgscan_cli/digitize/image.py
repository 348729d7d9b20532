"""From an image to a 12-lead signal: TraceNet maps, then the pipeline.

``digitize_image`` resizes the page image to the working resolution (long side
:data:`~ecgscan_cli.digitize.model.WORK_LONG_SIDE`), lets TraceNet (or, with
``method="classical"``, the training-free colour rules of
:mod:`ecgscan_cli.digitize.classical`) mark trace and grid pixels, and hands the two
maps to :func:`ecgscan_cli.digitize.pipeline.digitize_maps`; where the image is sharper
than the working resolution, a second reading at its own resolution
(:mod:`ecgscan_cli.digitize.refine`) competes, judged by the limb-lead relations. A page
turned by a quarter or half turn is read upright, and one whose rows tilt beyond the
deskew's ±15° is levelled first.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ecgscan_cli.errors import EcgscanError

METHODS = ("net", "classical")
_DOUBTFUL_RESIDUAL = 1.0
_POLARITY_GAIN_MV = 2.0
# a rectified reading within this factor of the working one's residual replaces it (_perspective_undone)
_RECTIFIED_TRUST = 2.0
# the image-resolution reading's stroke width (mm) over the one it refines (_finer_standing):
# sharp pages read 0.52-0.93 (pens of 0.3-1 mm), blurred ones ~1.4
_FINER_WIDER = 1.1       # above: blurred beyond the working resolution, the finer reading dropped
_FINER_SHARP = 0.9       # at most: a sharp image, the finer reading kept ...
_FINER_FORGIVEN = 10.0   # ... unless its lead-relation residual is this many times the other's (and not good)


def shipped_weights() -> Path:
    """The TraceNet weights that ship in the package (see ``weights/README.md`` beside them)."""
    return Path(str(resources.files("ecgscan_cli.digitize") / "weights" / "tracenet.safetensors"))


def weights_path(weights: str | Path | None) -> Path:
    """The weights file ``weights`` names: a .safetensors file, a train-digitizer run folder
    (its ``tracenet.safetensors``), or None for the shipped ones."""
    path = shipped_weights() if weights is None else Path(weights)
    return path / "tracenet.safetensors" if path.is_dir() else path


def load_digitizer(weights: str | Path | None = None, device="cpu"):
    """TraceNet from ``weights`` (a .safetensors file or a train-digitizer run folder) or the
    shipped ones, folded for inference (:class:`~.model.FoldedTraceNet`)."""
    from ecgscan_cli.digitize.model import FoldedTraceNet, load_tracenet

    path = weights_path(weights)
    if weights is None and not path.is_file():
        raise EcgscanError("this installation has no digitiser weights (ecgscan_cli/digitize/weights); "
                           "pass --weights RUN/tracenet.safetensors from `ecgscan train-digitizer`")
    import torch

    # channels-last convolutions run the U-Net ~1.7× faster on a CPU core (measured:
    # 0.38 vs 0.67 s a 1024×800 page, same maps to 1e-5), and the folded copy ~15 % more;
    # inference only, so training (and --resume's bit-for-bit continuation) keeps TraceNet
    return FoldedTraceNet(load_tracenet(path, device)).to(memory_format=torch.channels_last)


def working_size(h: int, w: int, long_side: int | None = None) -> tuple[int, int]:
    from ecgscan_cli.digitize.model import WORK_LONG_SIDE

    s = (long_side or WORK_LONG_SIDE) / max(h, w)
    return max(int(round(h * s)), 16), max(int(round(w * s)), 16)


def to_working(image: np.ndarray, long_side: int | None = None) -> np.ndarray:
    """``image`` (uint8 H×W×3) resized to the working resolution (area-averaged when shrinking)."""
    from PIL import Image

    h, w = image.shape[:2]
    wh, ww = working_size(h, w, long_side)
    if (wh, ww) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((ww, wh), Image.Resampling.BOX if wh < h else
                                                    Image.Resampling.BILINEAR))


def predict_maps(net, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TraceNet's (trace, grid) probabilities [H, W] float32 for a working-resolution ``image``."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    m = net.multiple
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0  # a writable copy
    # edge pixels repeated (a white margin beside a photo's desk would read as a line)
    x = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate")
    x = x.to(next(net.parameters()).device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        p = torch.sigmoid(net(x))[0, :, :h, :w].float().cpu().numpy()
    return np.ascontiguousarray(p[0]), np.ascontiguousarray(p[1])


def check_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise EcgscanError(f"expected an RGB image, got an array of shape {a.shape}")
    if min(a.shape[:2]) < 64:
        raise EcgscanError(f"image of {a.shape[1]}×{a.shape[0]} px is too small to hold an ECG")
    if a.dtype != np.uint8:
        raise EcgscanError(f"expected 8-bit pixels, got {a.dtype}")
    return a[..., :3]


def digitize_image(image: np.ndarray, net=None, *, method: str = "net", refine: bool = True, printout=None,
                   restorer=None, refine_side: int | None = None):
    """The 12-lead signal on a page image (uint8 H×W×3 RGB, any size).

    Returns a :class:`~ecgscan_cli.digitize.pipeline.Digitized` whose ``rows`` are in the
    pixels of the maps it was read from (``map_shape``; ``to_image`` maps them to the
    image's) and ``reading`` says which maps won: ``working`` (TraceNet's, at the working
    resolution), ``rectified`` (the same with the page's perspective undone,
    :mod:`.rectify`), ``refined`` or ``rectified+refined`` (:mod:`.refine`: at the image's
    resolution, ``method="net"`` only). With ``refine`` the others are tried and the one
    that breaks the limb-lead relations least is kept (:mod:`.consistency`); the
    image-resolution one is dropped, kept or made to compete by how sharp the image is
    (:func:`_finer_standing`). ``refine_side``:
    the long side (px) the image-resolution reading is made at, at most (default
    :data:`~.refine.REFINE_LONG_SIDE`, a 200-dpi letter page whole; a larger image is
    shrunk to it).

    A page turned by a quarter or half turn (a landscape printout photographed in
    portrait, a scan fed upside down) is read upright: rows running up and down the image
    turn it by 90°; a page seen sideways, or an upright one whose reading is doubtful
    (:func:`_doubtful`), is compared with its half turn and turned over where that clearly
    reads better (:func:`_clearly_better`) (``orientation``: degrees counter-clockwise the
    image was turned). Rows tilted beyond ±15° (a phone turned 20–45°) are levelled on the
    image before the maps are made (``tilt_deg``: degrees, as ``rotation_deg``).
    ``printout``: a :class:`~ecgscan_cli.digitize.pipeline.Printout` (paper speed, gain where
    no pulse shows it; default 25 mm/s, 10 mm/mV). Raises
    :class:`~ecgscan_cli.digitize.pipeline.DigitizeError` (one line) when the page cannot be read.

    ``restorer``: a :class:`~ecgscan_cli.digitize.restore.Restorer` (:func:`~ecgscan_cli.digitize.restore.load_restorer`)
    run on the reading kept (``method="net"`` only: it learnt what TraceNet's readings lose),
    unless the reading is already sharp (:func:`~ecgscan_cli.digitize.restore.already_sharp`).
    """
    if method not in METHODS:
        raise EcgscanError(f"unknown digitiser method {method!r} (choose from {', '.join(METHODS)})")
    from ecgscan_cli.digitize.refine import REFINE_LONG_SIDE

    fine = (REFINE_LONG_SIDE if refine_side is None else int(refine_side)) if refine else 0
    result = _read_image(image, net, method, fine, printout)
    if restorer is not None and method == "net":
        from ecgscan_cli.digitize.restore import already_sharp, page_features, restore_reading

        if not already_sharp(result.signal):
            result.signal = restore_reading(result.signal, restorer, result.fs,
                                            page_features(result.line_mm, result.px_per_mm[1]))
    return result


def _read_image(image: np.ndarray, net, method: str, fine: int, printout):
    """:func:`digitize_image` before the restorer; ``fine``: the second readings' long side
    (px), 0 for none."""
    from ecgscan_cli.digitize.geometry import rows_run_sideways, steep_tilt

    image = check_image(image)
    if method == "net" and net is None:
        net = load_digitizer()
    maps = _maps(image, net, method)
    quarter = 0
    if rows_run_sideways(maps[0]):
        quarter = 1
        maps = _maps(np.rot90(image, quarter), net, method)
    # rows tilted beyond the deskew's ±15° (a phone turned 20-45°): the image is levelled,
    # cropped to its ink, and read again; the deskew takes the rest
    tilt, box, levelled = steep_tilt(maps[0]), None, None
    if tilt:
        turned = np.rot90(image, quarter)
        box = _ink_box(maps[0], turned.shape[:2], tilt)
        levelled = _levelled(turned, tilt, box)        # made once: 0.3-0.4 s for a 2,400-px image
        maps = _maps(levelled[0], net, method)
    first, as_is = _read_turned(image, quarter, maps, method, fine, printout=printout, tilt=tilt, box=box,
                                levelled=levelled)
    # a page seen sideways is as likely turned one way as the other; an upright one is
    # turned over only when its reading is doubtful and the half turn clearly better
    if quarter == 0 and not _doubtful(first):
        return first
    # few pulses at the rows' starts, or leads that break the limb relations: the page may
    # be upside down. The half turn of the same maps (no second network pass) is read
    # roughly and kept only where it clearly does better (against the page's own working
    # reading, ``as_is``); then it is read in full.
    half = _reading("working", np.rot90(image, quarter + 2), np.rot90(maps[0], 2).copy(),
                    np.rot90(maps[1], 2).copy(), printout=printout, faint_pulses=method == "net")
    if _clearly_better(half, as_is, strict=quarter == 0):
        flipped, _ = _read_turned(image, quarter + 2, None, method, fine, net, printout=printout, tilt=tilt,
                                  box=_box_turned_over(box, np.rot90(image, quarter).shape[:2], tilt))
        if not isinstance(flipped, Exception):
            return flipped
    if isinstance(first, Exception):
        raise first
    return first


def _doubtful(result) -> bool:
    """A reading that may be of a page upside down: refused, pulses on fewer than half its
    rows, or leads far from the limb relations (upright pages read ≤ 1.3 but for blurred
    photos, upside-down ones 1.6–4; 48 fold-8 pages)."""
    if isinstance(result, Exception):
        return True
    if 2 * _pulses(result) < len(result.rows):
        return True
    return _residual(result) > _DOUBTFUL_RESIDUAL


def _clearly_better(half, as_is, strict: bool = False) -> bool:
    """Whether the half turn of a doubtful page reads as the upright one: its leads point
    the way most hearts' do (:func:`.consistency.upright_polarity` higher by more than
    2 mV) and it has no fewer pulses at the rows' starts or keeps the limb relations better
    (``strict``: two more pulses and better relations).
    On 96 fold-8 pages (12 records, four conditions, each upright and upside down) the
    polarity's change was ≥ 3.3 mV where the page was upside down, < 0 where it was not."""
    from ecgscan_cli.digitize.consistency import upright_polarity

    if isinstance(half, Exception):
        return False
    if isinstance(as_is, Exception):
        return _pulses(half) >= 2 and upright_polarity(half.signal) > _POLARITY_GAIN_MV
    gain = upright_polarity(half.signal) - upright_polarity(as_is.signal)
    if not gain > _POLARITY_GAIN_MV:
        return False
    more = _pulses(half) - _pulses(as_is)
    better = _residual(half) < _residual(as_is)
    # ``strict`` (a page that came upright): every cue must agree, as some hearts point
    # the other way (5 % of PTB-XL by this measure)
    return (more >= 2 and better) if strict else (more >= 0 or better)


def _maps(image: np.ndarray, net, method: str) -> tuple[np.ndarray, np.ndarray]:
    work = to_working(np.ascontiguousarray(image))
    if method == "classical":
        from ecgscan_cli.digitize.classical import classical_maps

        return classical_maps(work)
    return predict_maps(net, work)


def _pulses(result) -> int:
    return -1 if isinstance(result, Exception) else sum(bool(r.get("calibration")) for r in result.rows)


def _read_turned(image: np.ndarray, quarter: int, maps, method: str, fine: int, net=None, printout=None,
                 tilt: float = 0.0, box=None, levelled=None):
    """(the best reading of ``image`` turned ``quarter`` × 90° counter-clockwise and levelled
    by ``tilt`` degrees, cropped to ``box`` (:func:`_levelled`), or the error; its working
    reading): the best one's ``to_image`` maps back to the unturned image's pixels.
    ``levelled``: what :func:`_levelled` already made of the turned image, if it did."""
    quarter %= 4
    turned, to_turned = levelled if levelled is not None else _levelled(np.rot90(image, quarter), tilt, box)
    if maps is None:
        maps = _maps(turned, net, method)
    result, working = _read_page(turned, *maps, method, fine, printout)
    if not isinstance(result, Exception):
        result.orientation = 90 * quarter
        result.tilt_deg = float(tilt)
        result.to_image = _unturn(quarter, image.shape[:2]) @ to_turned @ result.to_image
    return result, working


def _levelled(image: np.ndarray, tilt: float, box=None) -> tuple[np.ndarray, np.ndarray]:
    """(``image`` turned so that lines tilted by ``tilt`` degrees run level, on a canvas
    grown to fit, or its ``box`` (x0, y0, x1, y1 of that canvas: :func:`_ink_box`); 3×3
    homography from its pixels to ``image``'s). The corners it adds take the colour of the
    image's border (a white wedge on a photo's desk would show the network straight edges
    at the rows' angle)."""
    from ecgscan_cli.digitize.geometry import centred, rotation_to_source
    from ecgscan_cli.digitize.rectify import warp

    image = np.ascontiguousarray(image)
    if not tilt:
        return image, np.eye(3)
    to_source, (h, w) = rotation_to_source(tilt, image.shape[:2])
    if box is not None:
        x0, y0, x1, y1 = box
        to_source = to_source @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
        h, w = y1 - y0, x1 - x0
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    fill = tuple(int(v) for v in np.median(border, axis=0))
    return warp(image, centred(to_source), (h, w), cubic=True, fill=fill), to_source


def _unturn(quarter: int, shape: tuple[int, int]) -> np.ndarray:
    """3×3: pixels (x, y) of ``np.rot90(image, quarter)`` → pixels of ``image`` (of ``shape``)."""
    h, w = shape
    return {0: np.eye(3),
            1: np.array([[0.0, -1.0, w], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
            2: np.array([[-1.0, 0.0, w], [0.0, -1.0, h], [0.0, 0.0, 1.0]]),
            3: np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, h], [0.0, 0.0, 1.0]])}[quarter % 4]


def _read_page(image: np.ndarray, trace: np.ndarray, grid: np.ndarray, method: str, fine: int, printout=None):
    """(the reading of an upright page the lead relations prefer, or the error of the
    first; the working reading, or its error) from the page's working maps; second
    readings where ``fine`` (the image-resolution reading's long side, px) is not 0."""
    net_maps = method == "net"      # faint pulses are TraceNet's evidence, not the colour rules'
    working = _reading("working", image, trace, grid, printout=printout, faint_pulses=net_maps)
    readings = [working]
    if fine:
        # the page's geometry first (perspective undone or not), then the image's own
        # resolution on that geometry; each step keeps what the lead relations prefer
        from ecgscan_cli.digitize.rectify import rectified_maps

        rect = rectified_maps(trace, grid)
        if rect is not None:     # rows made level and parallel: nothing left to deskew
            rectified = _reading("rectified", image, rect[0], rect[1], _scale_to(image, trace) @ rect[2],
                                 straight=True, printout=printout, faint_pulses=net_maps)
            readings = [rectified] if _perspective_undone(working, rectified) else [working, rectified]
        base = _best(readings)
        if net_maps and base is not None:
            finer = _refined_reading(image, trace, grid, base, rect, fine, printout)
            standing = _finer_standing(finer, base)
            if standing == "kept":
                readings = [finer]
            elif standing == "competes":
                readings.append(finer)
    best = _best(readings)
    return (next(r for r in [working, *readings] if isinstance(r, Exception)) if best is None else best), working


def _finer_standing(finer, base) -> str:
    """How the image-resolution reading ``finer`` stands against ``base``, the reading it
    refines, judged by the stroke width each saw (``line_mm``) and by the lead relations:

    * ``dropped``: its stroke is more than :data:`_FINER_WIDER` times as wide as the base's
      (or it failed): the image is blurred beyond what the working resolution resolves, and
      its colours hold nothing finer (their score spreads with the blur);
    * ``kept``: its stroke is at most :data:`_FINER_SHARP` times as wide: the image is
      sharper than the working maps and the finer reading resolves its strokes; it is kept
      unless it breaks the lead relations badly (a residual beyond the ``good`` band and
      :data:`_FINER_FORGIVEN` times the base's: a row lost or misplaced), as on clean pages
      both readings keep the relations so well that which keeps them better says little;
    * ``competes``: in between, or where a width is unknown, the layouts differ or it found
      no calibration pulse where the base found some (its rows' time 0 then comes from
      their first ink, which a rotated page's finer reading misplaces; one pulse sets every
      row's): the lead relations decide (:func:`_best`).

    Sharp pages' finer strokes are 0.52–0.59 of the working one's with a 0.3 mm pen,
    0.76–0.84 with 0.6 mm and 0.90–0.93 with 1 mm; blurred heavy and photo pages' about
    1.4. Fold-7 pages, measured per reading with the truth (docs/digitize.md)."""
    from ecgscan_cli.digitize.consistency import GOOD_BELOW

    if finer is None or isinstance(finer, Exception):
        return "dropped"
    wide, thin = finer.line_mm, base.line_mm
    if wide is None or thin is None or not (np.isfinite(wide) and np.isfinite(thin) and thin > 0):
        return "competes"
    if wide > _FINER_WIDER * thin:
        return "dropped"
    timed = _pulses(finer) > 0 or _pulses(base) == 0
    if wide <= _FINER_SHARP * thin and finer.layout == base.layout and timed:
        worse = _residual(finer) > max(GOOD_BELOW, _FINER_FORGIVEN * _residual(base))
        return "competes" if worse else "kept"
    return "competes"


def _perspective_undone(working, rectified) -> bool:
    """Whether the rectified reading replaces the working one outright: both read the same
    layout and it keeps the limb relations at least half as well. A page is rectified only
    where its rows converge (:mod:`.rectify`); deskewed alone, such a page's columns stay
    slanted and its rows' time axes unequal, which the relations, read within a column,
    hardly see (a fold-7 photo page: working 0.666 vs rectified 0.677, -0.65 vs 5.99 dB)."""
    if isinstance(working, Exception) or isinstance(rectified, Exception) or working.layout != rectified.layout:
        return False
    return _residual(rectified) < _RECTIFIED_TRUST * _residual(working)


def _refined_reading(image: np.ndarray, trace: np.ndarray, grid: np.ndarray, base, rect, long_side: int,
                     printout=None):
    """The image-resolution reading (:mod:`.refine`, at most ``long_side`` px) on ``base``'s
    geometry, or None.

    The base reading's rectification and deskew are folded into one homography that the
    image is resampled through once, so the finer maps come out level (no second deskew
    of maps four times the size: most of this reading's cost otherwise)."""
    from ecgscan_cli.digitize.geometry import rotation_to_source
    from ecgscan_cli.digitize.rectify import warp
    from ecgscan_cli.digitize.refine import refine_maps

    rectified = base.reading == "rectified"
    rotated, shape = rotation_to_source(base.rotation_deg, base.map_shape)   # identity when level
    to_maps = (rect[2] if rectified else np.eye(3)) @ rotated   # level canvas px → the network's maps' px
    level_made = rectified or abs(base.rotation_deg) > 1e-6
    if level_made:
        t = warp(trace, to_maps, shape)
        maps = refine_maps(image, t, warp(grid, to_maps, shape), long_side, to_maps=to_maps, maps_shape=trace.shape)
    else:                                                   # straight already: a plain resize
        t = trace
        maps = refine_maps(image, trace, grid, long_side)
    if maps is None:
        return None
    finer = np.diag([t.shape[1] / maps[0].shape[1], t.shape[0] / maps[0].shape[0], 1.0])
    # faint pulses are a TraceNet map's evidence (its probabilities on a blurred pulse's
    # edges); on these colour-score maps they let a blurred page's poorer finer reading
    # compete, and the lead relations then kept it on some (docs/digitize.md)
    return _reading("rectified+refined" if rectified else "refined", image, *maps,
                    _scale_to(image, trace) @ to_maps @ finer, straight=level_made, printout=printout,
                    faint_pulses=False)


_INK_MARGIN = 0.06       # of the ink's extent, kept around it when a levelled canvas is cropped


def _ink_box(trace: np.ndarray, shape: tuple[int, int], tilt: float) -> tuple[int, int, int, int]:
    """The part (x0, y0, x1, y1) of the canvas that :func:`_levelled` turns an image of
    ``shape`` onto which holds the ink of its trace map ``trace`` (and a margin): the canvas,
    grown to fit the turned image, would otherwise leave the page smaller at the network's
    working resolution (a page turned 40° spans 0.7 of it)."""
    from ecgscan_cli.digitize.geometry import rotation_to_source

    to_source, (h, w) = rotation_to_source(tilt, shape)
    ys, xs = np.nonzero(trace > 0.3)
    if ys.size < 2:
        return 0, 0, w, h
    sx, sy = shape[1] / trace.shape[1], shape[0] / trace.shape[0]
    corners = np.array([[xs.min() * sx, xs.max() * sx + sx, xs.max() * sx + sx, xs.min() * sx],
                        [ys.min() * sy, ys.min() * sy, ys.max() * sy + sy, ys.max() * sy + sy], [1.0] * 4])
    p = np.linalg.inv(to_source) @ corners
    px, py = p[0] / p[2], p[1] / p[2]
    mx, my = _INK_MARGIN * np.ptp(px), _INK_MARGIN * np.ptp(py)
    x0, x1 = int(max(px.min() - mx, 0)), int(min(np.ceil(px.max() + mx), w))
    y0, y1 = int(max(py.min() - my, 0)), int(min(np.ceil(py.max() + my), h))
    return (x0, y0, x1, y1) if x1 - x0 >= 64 and y1 - y0 >= 64 else (0, 0, w, h)


def _box_turned_over(box, shape: tuple[int, int], tilt: float):
    """``box`` of :func:`_levelled`'s canvas for an image of ``shape``, as it lies on the
    canvas of the same image turned by a half turn (the canvas turns with it)."""
    from ecgscan_cli.digitize.geometry import rotation_to_source

    if box is None:
        return None
    _, (h, w) = rotation_to_source(tilt, shape)
    x0, y0, x1, y1 = box
    return w - x1, h - y1, w - x0, h - y0


def _scale_to(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """3×3: pixels of ``maps`` (a resized copy of ``image``) → pixels of ``image``."""
    return np.diag([image.shape[1] / maps.shape[1], image.shape[0] / maps.shape[0], 1.0])


def _reading(name: str, image: np.ndarray, trace: np.ndarray, grid: np.ndarray, to_image=None,
             straight: bool = False, printout=None, faint_pulses: bool = True):
    """A :class:`Digitized` from one pair of maps (or the :class:`DigitizeError` it raised).

    ``to_image``: 3×3 homography from the maps' pixels to the image's (default: the scale
    between them); kept on the result for drawing the reading over the image."""
    from ecgscan_cli.digitize.pipeline import DigitizeError, Printout, digitize_maps

    p = printout or Printout()
    try:
        result = digitize_maps(trace, grid, straight=straight, speed_mm_s=p.speed_mm_s, gain_mm_mv=p.gain_mm_mv,
                               faint_pulses=faint_pulses)
    except DigitizeError as e:
        return e
    result.reading = name
    result.map_shape = tuple(trace.shape)
    result.to_image = _scale_to(image, trace) if to_image is None else to_image
    return result


def rows_to_image(result) -> np.ndarray:
    """3×3 homography: a reading's row coordinates (the pixels of its maps after the deskew
    by ``rotation_deg``, the canvas grown to fit) → the pixels of the image it was given."""
    from ecgscan_cli.digitize.geometry import rotation_to_source

    rotated, _ = rotation_to_source(float(getattr(result, "rotation_deg", 0.0) or 0.0), tuple(result.map_shape))
    return np.asarray(result.to_image, np.float64) @ rotated


def _row_in_image(result, k: int) -> tuple[float, float]:
    """Image pixels (x, y) of the middle of ``result``'s row ``k`` on its baseline."""
    row = result.rows[k]
    p = rows_to_image(result) @ np.array([(row["x0"] + row["x1"]) / 2, row["y"], 1.0])
    return float(p[0] / p[2]), float(p[1] / p[2])


def _lost_first_row(plain, four) -> bool:
    """Whether a three-row reading's first row is a four-row reading's second (it lost the
    first row, not the rhythm strip below: then its rows took the wrong leads)."""
    y = _row_in_image(plain, 0)[1]
    first, second = _row_in_image(four, 0)[1], _row_in_image(four, 1)[1]
    return abs(y - second) < abs(y - first)


def _best(readings: list):
    """The reading that breaks the limb-lead relations least (the only one, if one); a
    plain 3x4 reading that lost a 3x4 + rhythm strip page's first row is not one."""
    done = [r for r in readings if r is not None and not isinstance(r, Exception)]
    four = [r for r in done if r.layout == "3x4+1" and "refined" not in r.reading]
    if four:
        # maps that smear one row (the page's perspective not yet undone, shading) read a
        # 3x4 + rhythm strip page as a plain 3x4; where the row lost was the first, every row
        # has the wrong leads, and the relations, poor either way on such pages, do not
        # always tell: a fourth row read on the page's other working-resolution maps says so
        # (the finer maps mark a header's text as ink: their fourth row may be one)
        done = [r for r in done if r.layout != "3x4" or not _lost_first_row(r, four[0])]
    if len(done) <= 1:
        return done[0] if done else None
    return min(done, key=_residual)


def _residual(result) -> float:
    """``result``'s :func:`~.consistency.lead_relation_residual`, computed once and kept on it."""
    from ecgscan_cli.digitize.consistency import lead_relation_residual

    if result.lead_residual is None:
        result.lead_residual = lead_relation_residual(result.signal)
    return result.lead_residual
