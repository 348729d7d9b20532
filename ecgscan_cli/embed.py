"""Image embeddings from a checkpoint, or from baselines of the same architecture.

Encoders: ``trained`` (the checkpoint), ``random`` (untrained, seeded init), ``imagenet``
(the image tower's pretrained weights, ``image_pretrained``, with no ECG training).
Features: ``projected`` (the L2-normalised contrastive embedding z_I) or ``backbone``
(the tower's pooled output h_I, what a linear probe of an untrained/ImageNet tower should see).
A trained encoder's embeddings carry the ids of the records its pretraining read.

>>> model, desc = load_encoder("run/best", "trained")
>>> path, source = embed_to_file("run/best", "images.h5", "emb.h5", features="projected")
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ecgscan_cli.device import resolve_device
from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan")

ENCODERS = ("trained", "random", "imagenet")
FEATURES = ("projected", "backbone")


def load_model(checkpoint, device="cpu"):
    """Old name of :func:`ecgscan_cli.checkpoint.load_checkpoint`, kept while reconstruct.py imports it from here."""
    from ecgscan_cli.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint, device)


def load_encoder(checkpoint, encoder: str = "trained", device="cpu", seed: int = 0):
    """The image encoder to embed with, and a sentence saying what it is.

    Parameters
    ----------
    checkpoint : str or path
        Checkpoint (or run) folder from ``ecgscan pretrain``.
    encoder : {"trained", "random", "imagenet"}
        ``trained``: the checkpoint; ``random``: its architecture freshly initialised
        (seeded); ``imagenet``: the same with the image tower's pretrained weights
        (``image_pretrained``). All share the checkpoint's frozen text encoder.
    device : str or torch.device
        Where the model goes.
    seed : int
        Seed of the fresh initialisation (``random``, ``imagenet``).

    Returns
    -------
    (ECGScanModel, str)
        The model in eval mode, and its description.
    """
    import torch

    if encoder not in ENCODERS:
        raise EcgscanError(f"--encoder must be one of {', '.join(ENCODERS)}, not {encoder!r}")
    from ecgscan_cli.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint, device)
    cfg = model.cfg
    if encoder == "imagenet" and not cfg.image_pretrained:
        raise EcgscanError(f"--encoder imagenet: the checkpoint's image model {cfg.image_model} has no pretrained "
                           "image weights (image_pretrained is null); use --encoder random")
    if encoder in ("random", "imagenet"):
        from ecgscan_cli.model import build_model

        state = torch.random.get_rng_state()
        torch.manual_seed(int(seed))  # the layers pretrained weights do not cover (projections, stem)
        try:
            model = build_model(cfg, load_weights=encoder == "imagenet",
                                text_encoder=model.text_encoder).to(device).eval()
        finally:
            torch.random.set_rng_state(state)
        desc = (f"untrained {cfg.image_model} (random init, seed {seed}), architecture of {checkpoint}"
                if encoder == "random" else
                f"{cfg.image_model} with its pretrained image weights {cfg.image_pretrained!r} and no ECG training "
                f"(other layers random, seed {seed}), architecture of {checkpoint}")
    else:
        desc = f"{cfg.image_model} ECG-Scan encoder from {checkpoint}"
    return model, desc


def embed_source(model, source, batch_size: int = 32, device="cpu", progress: Callable[[int], None] | None = None,
                 features: str = "projected"):
    """Encode every readable record of an image source.

    Parameters
    ----------
    model : ECGScanModel
        From :func:`load_encoder` or :func:`ecgscan_cli.checkpoint.load_checkpoint`.
    source : ImageSource
        From :func:`ecgscan_cli.imageio.open_source` (folder, images file or signals file).
    batch_size : int
        Images per forward pass.
    device : str or torch.device
        The model's device.
    progress : callable, optional
        Called with the number of records done after each batch.
    features : {"projected", "backbone"}
        The L2-normalised contrastive embedding z_I, or the tower's pooled output h_I.

    Returns
    -------
    (list of int, list of str, array [n, D] float32)
        Row indices in ``source``, record ids and embeddings of the readable records.
    """
    import torch

    if features not in FEATURES:
        raise EcgscanError(f"--features must be one of {', '.join(FEATURES)}, not {features!r}")
    encode = model.encode_image if features == "projected" else model.image_features
    rows, ids, chunks = [], [], []
    with torch.inference_mode():
        for idx, bid, imgs in source.batches(batch_size, model.image_size, device=device):
            z = encode(imgs.to(device))
            chunks.append(z.float().cpu().numpy())
            rows.extend(idx)
            ids.extend(bid)
            if progress is not None:
                progress(len(idx))
    if chunks:
        emb = np.concatenate(chunks)
    else:  # nothing readable: an empty array of the right width
        dim = model.embed_dim if features == "projected" else getattr(model.visual, "output_dim", 0)
        emb = np.zeros((0, int(dim)), np.float32)
    return rows, ids, emb


def pretraining_record(checkpoint) -> dict:
    """The checkpoint's ``pretraining`` entry (signals, split, train/val/test folds, counts)
    with ``ids``, the set of record ids pretraining read; {} when the checkpoint records none."""
    from ecgscan_cli.provenance import from_checkpoint

    p = from_checkpoint(checkpoint)
    return {} if p is None else {**p.to_meta(), "ids": set(p.ids)}


def embed_to_file(checkpoint, input_path, out, *, encoder: str = "trained", features: str = "projected",
                  batch_size: int = 32, device="auto", overwrite: bool = False, seed: int = 0,
                  progress_factory=None, allow_overlap: bool = False) -> tuple[Path, object]:
    """Embed a folder, images file or signals file into an embeddings file.

    Logs a warning when a trained encoder's pretraining read some of the embedded records,
    unless ``allow_overlap`` (a caller that checks its own test split). The file records the
    pretraining ids either way.

    Parameters
    ----------
    checkpoint : str or path
        Checkpoint (or run) folder.
    input_path : str or path
        Images to embed (signals are rendered on the fly).
    out : str or path
        The embeddings file to write (atomically).
    encoder : {"trained", "random", "imagenet"}
        See :func:`load_encoder`.
    features : {"projected", "backbone"}
        See :func:`embed_source`.
    batch_size : int
        Images per forward pass.
    device : str or torch.device
        ``auto``, ``cpu``, ``cuda[:N]``.
    overwrite : bool
        Replace an existing embeddings file.
    seed : int
        Seed of a fresh encoder's initialisation.
    progress_factory : callable, optional
        ``progress_factory(total, description)``: a context manager yielding ``advance(n)``.
    allow_overlap : bool
        Do not warn about records pretraining read.

    Returns
    -------
    (Path, ImageSource)
        The file written, and the source (``source.skipped`` lists unreadable files).
    """
    import contextlib

    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.formats.embeddings import write_embeddings
    from ecgscan_cli.imageio import open_source
    from ecgscan_cli.provenance import from_checkpoint

    check_output_path(out, overwrite, kind="embeddings")
    if features not in FEATURES:
        raise EcgscanError(f"--features must be one of {', '.join(FEATURES)}, not {features!r}")
    dev = resolve_device(device)
    source = open_source(input_path)
    model, desc = load_encoder(checkpoint, encoder, dev, seed)
    pretraining = from_checkpoint(checkpoint) if encoder == "trained" else None
    ctx = progress_factory(len(source), "embedding") if progress_factory else contextlib.nullcontext(None)
    with ctx as advance:
        rows, ids, emb = embed_source(model, source, batch_size, dev, advance, features)
    if not ids:
        raise EcgscanError(f"{input_path}: no readable image ({len(source.skipped)} skipped)")
    if pretraining is not None and not allow_overlap:
        seen = pretraining.seen(ids)
        if seen:
            log.warning("%s", pretraining.overlap_message(seen, len(ids)))
    rows = np.asarray(rows, int)
    extra = {name: (cls, lab[rows]) for name, (cls, lab) in source.extra_label_sets.items()}
    path = write_embeddings(out, emb, ids, source.labels[rows], source.classes, source.folds[rows],
                            label_set=source.label_set, extra_label_sets=extra or None, encoder=encoder,
                            encoder_description=desc, checkpoint=str(os.path.abspath(checkpoint)),
                            source=str(input_path), overwrite=overwrite, features=features,
                            pretraining=pretraining)
    source.close()
    return path, source
