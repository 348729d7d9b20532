"""Image embeddings from a checkpoint (or an untrained encoder of the same architecture).

>>> model, desc = load_encoder("run/best", "trained")
>>> path = embed_to_file("run/best", "images.h5", "emb.h5")
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan")

ENCODERS = ("trained", "random")


def load_model(checkpoint, device="cpu"):
    """``load_checkpoint`` with a clear error for anything that is not an ecgscan checkpoint."""
    from ecgscan_cli.checkpoint import is_checkpoint, load_checkpoint

    path = Path(checkpoint)
    if not path.exists():
        raise EcgscanError(f"no such checkpoint: {path}")
    if not is_checkpoint(path):
        raise EcgscanError(f"{path} is not an ecgscan checkpoint (expected a folder written by `ecgscan pretrain`, "
                           "or its run folder)")
    return load_checkpoint(path, device=device)


def load_encoder(checkpoint, encoder: str = "trained", device="cpu", seed: int = 0):
    """(model in eval mode, description). ``random``: the checkpoint's architecture, freshly
    initialised (seeded), sharing the checkpoint's frozen text encoder."""
    import torch

    if encoder not in ENCODERS:
        raise EcgscanError(f"--encoder must be one of {', '.join(ENCODERS)}, not {encoder!r}")
    model = load_model(checkpoint, device)
    cfg = model.cfg
    if encoder == "random":
        from ecgscan_cli.model import build_model

        state = torch.random.get_rng_state()
        torch.manual_seed(int(seed))
        try:
            model = build_model(cfg, load_weights=False, text_encoder=model.text_encoder).to(device).eval()
        finally:
            torch.random.set_rng_state(state)
        desc = f"untrained {cfg.image_model} (random init, seed {seed}), architecture of {checkpoint}"
    else:
        desc = f"{cfg.image_model} ECG-Scan encoder from {checkpoint}"
    return model, desc


def resolve_device(device):
    import torch

    from ecgscan_cli.device import resolve_device as _r

    return device if isinstance(device, torch.device) else _r(device)


def embed_source(model, source, batch_size: int = 32, device="cpu", progress: Callable[[int], None] | None = None):
    """Encode every readable record of ``source`` → (row indices, ids, embeddings [n, D] float32)."""
    import torch

    rows, ids, chunks = [], [], []
    with torch.inference_mode():
        for idx, bid, imgs in source.batches(batch_size, model.image_size, device=device):
            z = model.encode_image(imgs.to(device))
            chunks.append(z.float().cpu().numpy())
            rows.extend(idx)
            ids.extend(bid)
            if progress is not None:
                progress(len(idx))
    emb = np.concatenate(chunks) if chunks else np.zeros((0, model.embed_dim), np.float32)
    return rows, ids, emb


def embed_to_file(checkpoint, input_path, out, *, encoder: str = "trained", batch_size: int = 32,
                  device="auto", overwrite: bool = False, seed: int = 0, progress_factory=None) -> tuple[Path, object]:
    """Embed ``input_path`` (folder, images file or signals file) into an embeddings file.

    Returns (path, source) — ``source.skipped`` lists unreadable files.
    ``progress_factory(total, description)`` is a context manager yielding ``advance(n)``.
    """
    import contextlib

    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.formats.embeddings import write_embeddings
    from ecgscan_cli.imageio import open_source

    check_output_path(out, overwrite)
    dev = resolve_device(device)
    source = open_source(input_path)
    model, desc = load_encoder(checkpoint, encoder, dev, seed)
    ctx = progress_factory(len(source), "embedding") if progress_factory else contextlib.nullcontext(None)
    with ctx as advance:
        rows, ids, emb = embed_source(model, source, batch_size, dev, advance)
    if not ids:
        raise EcgscanError(f"{input_path}: no readable image ({len(source.skipped)} skipped)")
    rows = np.asarray(rows, int)
    extra = {name: (cls, lab[rows]) for name, (cls, lab) in source.extra_label_sets.items()}
    path = write_embeddings(out, emb, ids, source.labels[rows], source.classes, source.folds[rows],
                            label_set=source.label_set, extra_label_sets=extra or None, encoder=encoder,
                            encoder_description=desc, checkpoint=str(os.path.abspath(checkpoint)),
                            source=str(input_path), overwrite=overwrite)
    source.close()
    return path, source
