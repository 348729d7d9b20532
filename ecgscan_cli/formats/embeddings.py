"""The HDF5 embeddings file: one frozen-encoder embedding per record (``ecgscan embed``).

Layout (see docs/evaluate.md)::

    /embedding [N, D] float32
    /id        [N] str          (unique)
    /label     [N, C] uint8     attrs classes, label_set (name, e.g. "superclass"; may be "")
    /label_sets/<name> [N, C'] uint8  attr classes   (optional extra label sets)
    /fold      [N] int16        -1 when unknown
    /pretrain_ids [K] str       ids of the records the encoder's pretraining read (only for
                                a trained encoder whose checkpoint records them);
                                attr pretraining = JSON (signals, split, folds, counts)
    root attrs ecgscan_format="ecgscan-embeddings/1", source, ecgscan_version, command_line,
               encoder ("trained" | "random" | "imagenet"), features ("projected" | "backbone"),
               encoder_description, checkpoint, embed_dim

The probe works on the label sets (``/label`` under its ``label_set`` name, plus every
``/label_sets/<name>``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats.common import STR_DTYPE, h5_output, open_checked, read_classes, read_strings, write_header
from ecgscan_cli.formats.common import dataset

KIND = "embeddings"
DEFAULT_LABEL_SET = "label"


@dataclass
class LabelSet:
    name: str
    classes: list[str]
    labels: np.ndarray  # [N, C] uint8


def write_embeddings(
    path: str | os.PathLike,
    embeddings,
    ids: Sequence[str],
    labels=None,
    classes: Sequence[str] = (),
    folds: Sequence[int] | None = None,
    *,
    label_set: str = "",
    extra_label_sets: dict[str, tuple[Sequence[str], np.ndarray]] | None = None,
    encoder: str = "trained",
    encoder_description: str = "",
    checkpoint: str = "",
    source: str | None = None,
    overwrite: bool = False,
    features: str = "projected",
    pretraining=None,
) -> Path:
    """Write an embeddings file at once (atomically).

    ``pretraining``: the encoder's :class:`~ecgscan_cli.provenance.Pretraining` (its ids
    and description are stored), or None.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    ids = [str(i) for i in ids]
    n = len(ids)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise EcgscanError(f"embeddings have shape {emb.shape}, expected [{n}, D] for {n} ids")
    if not np.isfinite(emb).all():
        raise EcgscanError("embeddings contain NaN or infinite values")
    if len(set(ids)) != n:
        dup = next(x for x in ids if ids.count(x) > 1)
        raise EcgscanError(f"duplicate record id {dup!r}: ids must be unique within a file")
    classes = [str(c) for c in classes]
    lab = np.zeros((n, len(classes)), np.uint8) if labels is None else np.asarray(labels, np.uint8)
    if lab.ndim == 1:
        lab = lab.reshape(-1, 1) if len(classes) == 1 else lab.reshape(1, -1)
    if lab.shape != (n, len(classes)):
        raise EcgscanError(f"labels have shape {lab.shape}, expected [{n}, {len(classes)}] for classes {classes}")
    fold = np.full(n, -1, np.int16) if folds is None else np.asarray(folds, np.int16)
    if fold.shape != (n,):
        raise EcgscanError(f"folds have shape {fold.shape}, expected [{n}]")
    with h5_output(path, overwrite=overwrite, kind=KIND) as f:
        write_header(f, KIND, source, encoder=str(encoder), encoder_description=str(encoder_description),
                     checkpoint=str(checkpoint), embed_dim=int(emb.shape[1]), features=str(features))
        if pretraining is not None:
            d = f.create_dataset("pretrain_ids", data=np.array(sorted(pretraining.ids), dtype=object),
                                 dtype=STR_DTYPE)
            d.attrs["pretraining"] = json.dumps(pretraining.to_meta())
        f.create_dataset("embedding", data=emb, chunks=(min(max(n, 1), 1024), emb.shape[1]) if n else None)
        f.create_dataset("id", data=np.array(ids, dtype=object), dtype=STR_DTYPE)
        ds = f.create_dataset("label", data=lab)
        ds.attrs["classes"] = classes
        ds.attrs["label_set"] = str(label_set)
        f.create_dataset("fold", data=fold)
        if extra_label_sets:
            g = f.create_group("label_sets")
            for name, (cls, arr) in extra_label_sets.items():
                arr = np.asarray(arr, np.uint8).reshape(n, -1)
                if arr.shape[1] != len(cls):
                    raise EcgscanError(f"label set {name!r}: {arr.shape[1]} columns for {len(cls)} classes")
                d = g.create_dataset(name, data=arr)
                d.attrs["classes"] = [str(c) for c in cls]
    return Path(path)


@dataclass
class EmbeddingsFile:
    """Read a whole embeddings file into memory (N × D float32 is small).

    Parameters
    ----------
    path : str or path
        An embeddings file written by ``ecgscan embed`` or :func:`write_embeddings`.

    Attributes
    ----------
    embeddings : array [N, D] float32
    ids : list of str
    labels : array [N, C] uint8
        0/1 per class of ``classes`` (the main label set).
    label_sets : dict of str to LabelSet
        Every label set, by name (``label_set_named`` picks one).
    folds : array [N]
        Fold of each record (-1: none).
    pretraining : Pretraining or None
        The records the encoder's pretraining read (a trained encoder's file).
    """

    path: Path
    embeddings: np.ndarray = field(repr=False)
    ids: list[str] = field(repr=False)
    labels: np.ndarray = field(repr=False)
    classes: list[str]
    folds: np.ndarray = field(repr=False)
    label_set: str
    label_sets: dict[str, LabelSet] = field(repr=False)
    attrs: dict = field(repr=False)
    pretraining: object = field(repr=False)   # provenance.Pretraining | None

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open_checked(self.path, KIND) as f:
            for name in ("embedding", "id"):
                if name not in f:
                    raise EcgscanError(f"{self.path}: not a valid embeddings file (missing /{name})")
            emb = dataset(f, "embedding", self.path)
            if emb.ndim != 2 or emb.dtype.kind not in ("f", "i", "u"):
                raise EcgscanError(f"{self.path}: /embedding has shape {emb.shape}, expected [N, D]")
            self.embeddings = emb[()].astype(np.float32)
            n = self.embeddings.shape[0]
            self.ids = read_strings(f, "id", n, self.path)
            if len(self.ids) != n:
                raise EcgscanError(f"{self.path}: {len(self.ids)} ids for {n} embeddings")
            self.label_sets = {}
            if "label" in f:
                lab = dataset(f, "label", self.path)[()]
                if lab.shape[0] != n:
                    raise EcgscanError(f"{self.path}: /label has {lab.shape[0]} rows for {n} embeddings")
                self.labels = lab.astype(np.uint8).reshape(n, -1)
                self.classes = read_classes(f["label"])
                if len(self.classes) != self.labels.shape[1]:
                    raise EcgscanError(f"{self.path}: /label has {self.labels.shape[1]} columns "
                                       f"but {len(self.classes)} class names")
                name = f["label"].attrs.get("label_set", "")
                name = name.decode() if isinstance(name, bytes) else str(name)
                self.label_set = name or DEFAULT_LABEL_SET
                if self.classes:
                    self.label_sets[self.label_set] = LabelSet(self.label_set, self.classes, self.labels)
            else:
                self.labels = np.zeros((n, 0), np.uint8)
                self.classes = []
                self.label_set = DEFAULT_LABEL_SET
            if "label_sets" in f:
                for name, ds in f["label_sets"].items():
                    arr = dataset(f, f"label_sets/{name}", self.path)[()].astype(np.uint8).reshape(ds.shape[0], -1)
                    cls = read_classes(ds)
                    if arr.shape[0] != n or arr.shape[1] != len(cls):
                        raise EcgscanError(f"{self.path}: label set {name!r} has shape {arr.shape} "
                                           f"for {n} records and {len(cls)} classes")
                    self.label_sets[name] = LabelSet(name, cls, arr)
            self.folds = dataset(f, "fold", self.path)[()].astype(int) if "fold" in f else np.full(n, -1)
            if self.folds.shape != (n,):
                raise EcgscanError(f"{self.path}: /fold has shape {self.folds.shape}, expected [{n}]")
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            self.pretraining = None
            if "pretrain_ids" in f:
                from ecgscan_cli.provenance import Pretraining

                ds = dataset(f, "pretrain_ids", self.path)
                meta = ds.attrs.get("pretraining", "{}")
                try:
                    meta = json.loads(meta.decode() if isinstance(meta, bytes) else meta)
                except (ValueError, TypeError):
                    raise EcgscanError(f"{self.path}: /pretrain_ids has an unreadable 'pretraining' attribute "
                                       "(not JSON)") from None
                self.pretraining = Pretraining.from_meta(meta, read_strings(f, "pretrain_ids", ds.shape[0],
                                                                            self.path))

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def encoder(self) -> str:
        return str(self.attrs.get("encoder", ""))

    @property
    def features(self) -> str:
        """'projected' (L2-normalised z_I, the contrastive space) or 'backbone' (the tower's h_I)."""
        return str(self.attrs.get("features", "projected"))

    @property
    def name(self) -> str:
        """A short name for tables: the file stem."""
        return self.path.stem

    def label_set_named(self, name: str) -> LabelSet:
        if name not in self.label_sets:
            have = ", ".join(self.label_sets) or "none"
            raise EcgscanError(f"{self.path}: no label set {name!r} (label sets in the file: {have})")
        return self.label_sets[name]
