"""What a checkpoint was pretrained on, and which evaluated records it has already seen.

``pretrain`` stores with every checkpoint the ids of every record the run read (training
and validation records; the built-in signal teacher trains on the training records) in
``pretrain_ids.txt``, and a ``pretraining`` entry in ``ecgscan_checkpoint.json`` (signals
file, split kind, folds, counts). ``embed`` copies both into the embeddings file
(``/pretrain_ids``), so that ``probe`` can refuse a test split the encoder has seen and
``embed`` / ``zeroshot`` can warn. Records are matched by id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ecgscan_cli.errors import EcgscanError

IDS_FILE = "pretrain_ids.txt"


@dataclass
class Pretraining:
    signals: str                   # the signals file pretraining read
    split: str                     # "folds" | "random"
    train_folds: list[int]         # empty for a random split
    val_folds: list[int]
    test_folds: list[int]          # held out: never read
    n_train: int
    n_val: int                     # validation records actually read (max_val)
    n_test: int
    ids: frozenset[str] = field(repr=False, default=frozenset())
    signal_teacher: str = "built-in (trained on the training records)"

    def to_meta(self) -> dict:
        return {"signals": self.signals, "split": self.split, "train_folds": list(self.train_folds),
                "val_folds": list(self.val_folds), "test_folds": list(self.test_folds), "n_train": self.n_train,
                "n_val": self.n_val, "n_test": self.n_test, "signal_teacher": self.signal_teacher,
                "ids_file": IDS_FILE, "n_ids": len(self.ids)}

    @classmethod
    def from_meta(cls, meta: dict, ids: Iterable[str]) -> "Pretraining":
        return cls(signals=str(meta.get("signals", "")), split=str(meta.get("split", "")),
                   train_folds=[int(f) for f in meta.get("train_folds") or []],
                   val_folds=[int(f) for f in meta.get("val_folds") or []],
                   test_folds=[int(f) for f in meta.get("test_folds") or []],
                   n_train=int(meta.get("n_train", 0)), n_val=int(meta.get("n_val", 0)),
                   n_test=int(meta.get("n_test", 0)), ids=frozenset(ids),
                   signal_teacher=str(meta.get("signal_teacher", "")))

    def describe(self) -> str:
        """'folds 1-6 (train), 7 (validation) of synth.h5' or 'a random split of synth.h5'."""
        from ecgscan_cli.folds import format_folds as fold_ranges

        name = Path(self.signals).name
        if self.split == "folds":
            train, val = fold_ranges(self.train_folds), fold_ranges(self.val_folds)
            return f"folds {train} (train), {val} (validation) of {name}"
        return f"a random split of {name}"

    def advice(self) -> str:
        from ecgscan_cli.folds import format_folds as fold_ranges

        if self.split == "folds" and self.test_folds:
            return f"evaluate on folds {fold_ranges(self.test_folds)}"
        return "evaluate on records pretraining did not read"

    def seen(self, ids: Iterable[str]) -> int:
        """How many of ``ids`` pretraining read."""
        return sum(1 for i in ids if str(i) in self.ids)

    def overlap_message(self, n_seen: int, n_total: int, what: str = "records") -> str:
        return f"{n_seen} of {n_total} {what} were seen in pretraining ({self.describe()}); {self.advice()}"


def write_ids(path: str | os.PathLike, ids: Iterable[str]) -> Path:
    """One id per line, written atomically."""
    from ecgscan_cli.atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        Path(tmp).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return Path(path)


def read_ids(path: str | os.PathLike) -> list[str]:
    try:
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
    except OSError as e:
        raise EcgscanError(f"cannot read the pretraining ids {path}: {e.strerror or e}") from None


def from_checkpoint(path: str | os.PathLike) -> Pretraining | None:
    """The pretraining record of a checkpoint (or run) folder; None when it has none
    (a checkpoint saved outside ``pretrain``, or by an older ecgscan)."""
    from ecgscan_cli.checkpoint import read_meta

    meta = read_meta(path)
    entry = meta.get("pretraining")
    if not entry:
        return None
    ids_path = Path(meta["path"]) / entry.get("ids_file", IDS_FILE)
    if not ids_path.is_file():
        raise EcgscanError(f"{meta['path']}: the checkpoint names {ids_path.name} but the file is missing")
    return Pretraining.from_meta(entry, read_ids(ids_path))
