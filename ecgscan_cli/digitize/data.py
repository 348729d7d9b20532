"""Training pairs for the digitiser: online renders of real signals with exact targets.

Every sample is a fresh printout of a random record with random page options (paper,
grid style, speed, gain, line width) at a random resolution, augmented (one augmentation
preset per batch, drawn from ``mix``) with the targets warped by the same geometry
(:func:`ecgscan_cli.render.augment.warp_targets`), and cropped. The resolution range
covers what :data:`~ecgscan_cli.digitize.model.WORK_LONG_SIDE` makes of a full page
(about 90 dpi) down to a page filling half of a phone photo.

Where the augmentation is applied matters: its pixel sizes (blur, fold widths, wrinkle
wavelengths, the background's margin) scale with the image it is given. ``augment_at =
"page"`` (the default) augments the whole page and then crops it, so a crop shows what a
crop of a page that ``reconstruct`` reads shows; ``"crop"`` augments the crop alone, as
the shipped weights before 2026-12 were trained (about a third of the blur, in mm, of the
same preset on a page; docs/digitize.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.render.layout import LAYOUTS, LayoutOptions
from ecgscan_cli.render.layout import GRID_STYLES
from ecgscan_cli.render.page import render_page
from ecgscan_cli.render.targets import page_targets

AUGMENT_AT = ("page", "crop")
GRIDS = tuple(GRID_STYLES)
GRID_WEIGHTS = np.array([0.4 if g == "red" else 0.6 / (len(GRIDS) - 1) for g in GRIDS])


@dataclass(frozen=True)
class PairConfig:
    crop: int = 256                       # training crop (px)
    dpi: tuple[float, float] = (45.0, 130.0)
    mix: dict = field(default_factory=lambda: {"none": 0.15, "paper": 0.35, "heavy": 0.5})
    augment_at: str = "page"              # "page" or "crop": see the module docstring

    def __post_init__(self):
        if self.augment_at not in AUGMENT_AT:
            raise EcgscanError(f"augment-at must be one of {', '.join(AUGMENT_AT)}, got {self.augment_at!r}")


def random_options(rng: np.random.Generator) -> LayoutOptions:
    return LayoutOptions(
        paper=str(rng.choice(["letter", "a4"])),
        speed=25.0 if rng.random() < 0.9 else 50.0,
        gain=float(rng.choice([10.0, 5.0, 20.0], p=[0.85, 0.05, 0.10])),
        grid=str(rng.choice(GRIDS, p=GRID_WEIGHTS)),
        header=bool(rng.random() < 0.8),
        labels=bool(rng.random() < 0.9),
        line_width_mm=float(rng.uniform(0.15, 0.5)),
        layout=str(rng.choice(LAYOUTS, p=[0.7, 0.15, 0.15])),   # six-row pages too (3x4+3, 6x2)
    )


def crop_origin(trace: np.ndarray, rng: np.random.Generator, size: int) -> tuple[int, int]:
    """Top-left corner of a ``size``² crop of a page whose trace target is ``trace`` [H,W].

    Crops are centred near the trace most of the time (that is where the errors are), on
    any part of the page otherwise."""
    h, w = trace.shape
    if rng.random() < 0.8:
        ys, xs = np.nonzero(trace[::8, ::8] > 0.3)
        k = rng.integers(len(ys)) if len(ys) else None
        cy, cx = (ys[k] * 8, xs[k] * 8) if k is not None else (h // 2, w // 2)
        cy += int(rng.integers(-size // 3, size // 3 + 1))
        cx += int(rng.integers(-size // 3, size // 3 + 1))
    else:
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
    return int(np.clip(cy - size // 2, 0, h - size)), int(np.clip(cx - size // 2, 0, w - size))


def _pad_to(page: np.ndarray, tgt: np.ndarray, size: int, white) -> tuple[np.ndarray, np.ndarray]:
    """A page smaller than the crop is padded with paper (targets with nothing)."""
    h, w = page.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        page = np.pad(page, ((0, ph), (0, pw), (0, 0)), constant_values=white)
        tgt = np.pad(tgt, ((0, 0), (0, ph), (0, pw)))
    return page, tgt


def page_crop(signal: np.ndarray, fs: float, rng: np.random.Generator, size: int, dpi: float,
              options: LayoutOptions) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``² crop of a rendered page (uint8 H×W×3) and of its targets ([2,H,W] float32)."""
    page = render_page(signal, fs, options, dpi=dpi, return_meta=False)
    page, tgt = _pad_to(page, page_targets(signal, fs, options, dpi=dpi), size, 255)
    y0, x0 = crop_origin(tgt[0], rng, size)
    return page[y0:y0 + size, x0:x0 + size], tgt[:, y0:y0 + size, x0:x0 + size]


def augmented_page_crops(signal: np.ndarray, fs: float, rng: np.random.Generator, size: int, dpi: float,
                         options: LayoutOptions, preset, generator: torch.Generator,
                         crops: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``crops`` crops (float32 3×S×S in 0..1, targets 2×S×S) of one page augmented whole
    with ``preset`` (a name, file or :class:`AugmentConfig`; one draw for the page, its
    targets moved with it)."""
    from ecgscan_cli.render.augment import augment_with_targets

    page = render_page(signal, fs, options, dpi=dpi, return_meta=False)
    image = torch.from_numpy(page).permute(2, 0, 1)[None].float().div_(255.0)
    targets = torch.from_numpy(page_targets(signal, fs, options, dpi=dpi))[None]
    if getattr(preset, "name", preset) != "none":
        image, targets = augment_with_targets(image, targets, preset, generator)
    page, tgt = _pad_to(image[0].permute(1, 2, 0).numpy(), targets[0].clamp_(0, 1).numpy(), size, 1.0)
    imgs, tgts = [], []
    for _ in range(crops):
        y0, x0 = crop_origin(tgt[0], rng, size)
        imgs.append(np.ascontiguousarray(page[y0:y0 + size, x0:x0 + size].transpose(2, 0, 1)))
        tgts.append(np.ascontiguousarray(tgt[:, y0:y0 + size, x0:x0 + size]))
    return imgs, tgts


def _draw_preset(config: PairConfig, rng: np.random.Generator) -> str:
    names = list(config.mix)
    return str(rng.choice(names, p=np.array([config.mix[n] for n in names]) / sum(config.mix.values())))


def training_batch(signals: list[np.ndarray], fs: float, config: PairConfig, rng: np.random.Generator,
                   generator: torch.Generator, crops_per_page: int = 1) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images [B,3,S,S] in [0,1], targets [B,2,S,S] and the augmentation preset used.

    B = ``len(signals) * crops_per_page``: with ``augment_at="page"`` each signal is one
    page cropped ``crops_per_page`` times; with ``"crop"`` each crop is its own page."""
    s = config.crop
    if config.augment_at == "page":
        from ecgscan_cli.render.augment import resolve_augment

        preset = _draw_preset(config, rng)
        augment = resolve_augment(preset)     # once per batch: a config file is not re-read per page
        imgs, tgts = [], []
        for sig in signals:
            dpi = float(rng.uniform(*config.dpi))
            i, t = augmented_page_crops(sig, fs, rng, s, dpi, random_options(rng), augment, generator, crops_per_page)
            imgs += i
            tgts += t
        return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(tgts)), preset
    from ecgscan_cli.render.augment import augment_with_targets

    imgs, tgts = [], []
    for sig in (sig for sig in signals for _ in range(crops_per_page)):
        img, tgt = page_crop(sig, fs, rng, s, float(rng.uniform(*config.dpi)), random_options(rng))
        imgs.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        tgts.append(torch.from_numpy(np.ascontiguousarray(tgt)))
    images = torch.stack(imgs).float() / 255.0
    targets = torch.stack(tgts)
    preset = _draw_preset(config, rng)
    if preset != "none":
        images, targets = augment_with_targets(images, targets, preset, generator)
    return images, targets.clamp_(0, 1), preset
