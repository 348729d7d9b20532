"""Training data: signal–report pairs from a signals file, split, sharded, resumable.

Records are read one at a time in DataLoader workers (``SignalsFile`` reopens its HDF5
handle per process). The order is a function of (seed, epoch) only, so a run can resume
at any batch: :class:`ResumableBatchSampler` skips the batches already consumed.

The split (:func:`split_records`) holds a test fold out of pretraining whenever the file
has folds, so that the encoder is later evaluated on records it never read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats.signals import SignalsFile

log = logging.getLogger("ecgscan")

def check_pretraining_file(sf: SignalsFile, fs: float = canonical.FS,
                           n_samples: int = canonical.N_SAMPLES) -> np.ndarray:
    """The file holds records of the rate and length the model is built for (``fs``,
    ``n_samples``: its config's) and reports; return the indices of usable records (with a report)."""
    if abs(sf.fs - fs) > 1e-6:
        raise EcgscanError(f"{sf.path}: sampled at {sf.fs:g} Hz; pretraining needs {fs:g} Hz "
                           "(re-import with resampling)")
    if sf.n_samples != n_samples:
        raise EcgscanError(f"{sf.path}: records have {sf.n_samples} samples; pretraining needs "
                           f"{n_samples} ({n_samples / fs:g} s at {fs:g} Hz)")
    has_report = np.array([bool(r and r.strip()) for r in sf.reports], bool)
    if not has_report.any():
        raise EcgscanError(f"{sf.path}: no record has a report; pretraining aligns images with reports "
                           "(import reports or use `ecgscan synth`)")
    if not has_report.all():
        log.warning("%s: %d of %d records have no report and are left out", sf.path, (~has_report).sum(), sf.n)
    return np.flatnonzero(has_report)


SPLITS = ("auto", "folds", "random")


def resolve_fold_split(present, train=None, val=None, test=None, where: str = "the file"
                       ) -> tuple[list[int], list[int], list[int]]:
    """(train, validation, test) folds. Unset (None) lists are filled from the highest free
    fold down: test = the highest fold not named elsewhere, validation = the next one,
    train = every fold left (PTB-XL 1-10 → 1-8 / 9 / 10; folds 1-8 → 1-6 / 7 / 8).
    An explicitly empty test list holds out nothing."""
    from ecgscan_cli.folds import format_folds

    present = sorted({int(f) for f in present if int(f) >= 0})
    given = {"train": train, "validation": val, "test": test}
    for name, folds in given.items():
        absent = sorted(set(folds or []) - set(present))
        if absent:
            raise EcgscanError(f"{where} has no {name} fold {format_folds(absent)} "
                               f"(it has folds {format_folds(present)})")
    names = list(given)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = set(given[a] or []) & set(given[b] or [])
            if both:
                raise EcgscanError(f"folds {format_folds(both)} are in both the {a} and {b} folds")
    taken = {f for folds in given.values() for f in (folds or [])}
    free = [f for f in present if f not in taken]
    hint = "name them with --train-folds/--val-folds/--test-folds (--test-folds none holds out nothing)"
    if test is None:
        if not free:
            raise EcgscanError(f"{where}: no fold left to hold out as test (folds {format_folds(present)}); {hint}")
        test = [free.pop()]
    if val is None:
        if not free:
            raise EcgscanError(f"{where}: no fold left for validation (folds {format_folds(present)}); {hint}")
        val = [free.pop()]
    if train is None:
        train = free
    if not val:
        raise EcgscanError("pretraining needs validation folds (val_folds is empty)")
    if not train:
        raise EcgscanError(f"{where}: no fold left for training (folds {format_folds(present)}); {hint}")
    return sorted(train), sorted(val), sorted(test)


@dataclass
class DataSplit:
    """Record indices of a pretraining split; ``test`` are held out (never read)."""

    kind: str                    # "folds" | "random"
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_folds: list[int] = field(default_factory=list)
    val_folds: list[int] = field(default_factory=list)
    test_folds: list[int] = field(default_factory=list)


def split_records(sf: SignalsFile, usable: np.ndarray, split: str = "auto", train_folds=None, val_folds=None,
                  test_folds=None, val_fraction: float = 0.1, seed: int = 0) -> DataSplit:
    """The pretraining split: by folds (``auto`` when the file has folds), else a seeded 9:1 split."""
    if split not in SPLITS:
        raise EcgscanError(f"split must be {', '.join(SPLITS)}, not {split!r}")
    file_folds = np.asarray(sf.folds, int)
    named = any(f is not None for f in (train_folds, val_folds, test_folds))
    has_folds = bool((file_folds >= 0).any())
    if split == "auto":
        if named and not has_folds:
            raise EcgscanError(f"{sf.path}: folds were named but the file has no folds")
        split = "folds" if has_folds else "random"
    if split == "random":
        if named:
            log.warning("split random: train_folds/val_folds/test_folds are ignored")
        perm = np.random.default_rng(seed).permutation(usable)
        n_val = max(1, int(round(len(perm) * val_fraction))) if len(perm) > 1 else 0
        out = DataSplit("random", np.sort(perm[n_val:]), np.sort(perm[:n_val]), np.zeros(0, int))
    else:
        if not has_folds:
            raise EcgscanError(f"{sf.path}: split folds, but the file has no folds")
        tr, va, te = resolve_fold_split(file_folds, train_folds, val_folds, test_folds, where=str(sf.path))
        folds = file_folds[usable]
        out = DataSplit("folds", usable[np.isin(folds, tr)], usable[np.isin(folds, va)],
                        np.flatnonzero(np.isin(file_folds, te)), tr, va, te)
        if not len(out.val):
            raise EcgscanError(f"{sf.path}: no record with a report in the validation folds {va}")
        unfolded = int((folds < 0).sum())
        if unfolded:
            log.warning("%s: %d records without a fold are left out of a split by folds", sf.path, unfolded)
    if len(out.train) == 0:
        raise EcgscanError(f"{sf.path}: no training records left after the {out.kind} split")
    return out


class PairDataset(torch.utils.data.Dataset):
    """Item: (signal float32 [12, T] mV with NaN gaps, report str, record index in the file)."""

    def __init__(self, sf: SignalsFile, indices):
        self.sf, self.indices = sf, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = int(self.indices[k])
        return torch.from_numpy(self.sf.signal(i)), self.sf.reports[i], i


def collate(items):
    signals, reports, idx = zip(*items)
    return torch.stack(signals), list(reports), list(idx)


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Endless batches of dataset positions for one rank; epoch e uses permutation(seed, e).

    Each rank takes every ``world``-th element of the epoch's permutation (per-rank
    shards), then batches of ``batch_size`` (incomplete tail dropped). ``start`` batches
    (counted from the beginning of training) are skipped, for --resume.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.batch_size, self.seed, self.rank, self.world, self.start = n, batch_size, seed, rank, world, start
        self.per_epoch = (n // world) // batch_size
        if self.per_epoch == 0:
            raise EcgscanError(f"{n} training records are fewer than one batch of {batch_size} per process "
                               f"({world} process(es)); lower --batch-size")

    def __iter__(self):
        epoch, skip = divmod(self.start, self.per_epoch)
        while True:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            perm = torch.randperm(self.n, generator=g)
            shard = perm[: (self.n // self.world) * self.world][self.rank::self.world]
            for b in range(skip, self.per_epoch):
                yield shard[b * self.batch_size:(b + 1) * self.batch_size].tolist()
            skip = 0
            epoch += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for len()
        return 2 ** 62


def make_loader(dataset, batch_size: int, seed: int, rank: int, world: int, start: int, num_workers: int,
                worker_init_fn=None):
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, rank, world, start)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                                       persistent_workers=num_workers > 0, worker_init_fn=worker_init_fn,
                                       # own generator: creating the iterator must not draw from the
                                       # global RNG (that would break bit-exact --resume)
                                       generator=torch.Generator().manual_seed(seed + 1000 * rank + start),
                                       prefetch_factor=4 if num_workers > 0 else None)
