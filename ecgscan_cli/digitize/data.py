"""Training pairs for the digitiser: online renders of real signals with exact targets.

Every sample is a fresh printout of a random record with random page options (paper,
grid style, speed, gain, line width) at a random resolution, a crop of it, augmented
(one augmentation preset per batch, drawn from ``mix``) with the targets warped by the
same geometry (:func:`ecgscan_cli.render.augment.warp_targets`). The resolution range
covers what :data:`~ecgscan_cli.digitize.model.WORK_LONG_SIDE` makes of a full page
(about 90 dpi) down to a page filling half of a phone photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ecgscan_cli.render.layout import LayoutOptions
from ecgscan_cli.render.layout import GRID_STYLES
from ecgscan_cli.render.page import render_page
from ecgscan_cli.render.targets import page_targets

GRIDS = tuple(GRID_STYLES)
GRID_WEIGHTS = np.array([0.4 if g == "red" else 0.6 / (len(GRIDS) - 1) for g in GRIDS])


@dataclass(frozen=True)
class PairConfig:
    crop: int = 256                       # training crop (px)
    dpi: tuple[float, float] = (45.0, 130.0)
    mix: dict = field(default_factory=lambda: {"none": 0.15, "paper": 0.35, "heavy": 0.5})


def random_options(rng: np.random.Generator) -> LayoutOptions:
    return LayoutOptions(
        paper=str(rng.choice(["letter", "a4"])),
        speed=25.0 if rng.random() < 0.9 else 50.0,
        gain=float(rng.choice([10.0, 5.0, 20.0], p=[0.85, 0.05, 0.10])),
        grid=str(rng.choice(GRIDS, p=GRID_WEIGHTS)),
        header=bool(rng.random() < 0.8),
        labels=bool(rng.random() < 0.9),
        line_width_mm=float(rng.uniform(0.15, 0.5)),
    )


def page_crop(signal: np.ndarray, fs: float, rng: np.random.Generator, size: int, dpi: float,
              options: LayoutOptions) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``² crop of a rendered page (uint8 H×W×3) and of its targets ([2,H,W] float32).

    Crops are centred on the trace area most of the time (that is where the errors are),
    on any part of the page otherwise; a page smaller than the crop is padded white."""
    page = render_page(signal, fs, options, dpi=dpi, return_meta=False)
    tgt = page_targets(signal, fs, options, dpi=dpi)
    h, w = page.shape[:2]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        page = np.pad(page, ((0, ph), (0, pw), (0, 0)), constant_values=255)
        tgt = np.pad(tgt, ((0, 0), (0, ph), (0, pw)))
        h, w = page.shape[:2]
    if rng.random() < 0.8:
        ys, xs = np.nonzero(tgt[0, ::8, ::8] > 0.3)
        k = rng.integers(len(ys)) if len(ys) else None
        cy, cx = (ys[k] * 8, xs[k] * 8) if k is not None else (h // 2, w // 2)
        cy += int(rng.integers(-size // 3, size // 3 + 1))
        cx += int(rng.integers(-size // 3, size // 3 + 1))
    else:
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0 = int(np.clip(cy - size // 2, 0, h - size))
    x0 = int(np.clip(cx - size // 2, 0, w - size))
    return page[y0:y0 + size, x0:x0 + size], tgt[:, y0:y0 + size, x0:x0 + size]


def training_batch(signals: list[np.ndarray], fs: float, config: PairConfig, rng: np.random.Generator,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images [B,3,S,S] in [0,1], targets [B,2,S,S] and the augmentation preset used."""
    from ecgscan_cli.render.augment import augment_with_targets

    s = config.crop
    imgs, tgts = [], []
    for sig in signals:
        img, tgt = page_crop(sig, fs, rng, s, float(rng.uniform(*config.dpi)), random_options(rng))
        imgs.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        tgts.append(torch.from_numpy(np.ascontiguousarray(tgt)))
    images = torch.stack(imgs).float() / 255.0
    targets = torch.stack(tgts)
    names = list(config.mix)
    preset = str(rng.choice(names, p=np.array([config.mix[n] for n in names]) / sum(config.mix.values())))
    if preset != "none":
        images, targets = augment_with_targets(images, targets, preset, generator)
    return images, targets.clamp_(0, 1), preset
