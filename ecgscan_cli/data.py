"""Training data: signal–report pairs from a signals file, split, sharded, resumable.

Records are read one at a time in DataLoader workers (``SignalsFile`` reopens its HDF5
handle per process). The order is a function of (seed, epoch) only, so a run can resume
at any batch: :class:`ResumableBatchSampler` skips the batches already consumed.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats.signals import SignalsFile

log = logging.getLogger("ecgscan")

EXPECTED_FS = 500.0
EXPECTED_SAMPLES = 5000


def check_pretraining_file(sf: SignalsFile) -> np.ndarray:
    """Validate rate/shape/reports; return the indices of usable records (with a report)."""
    if abs(sf.fs - EXPECTED_FS) > 1e-6:
        raise EcgscanError(f"{sf.path}: sampled at {sf.fs:g} Hz; pretraining needs {EXPECTED_FS:g} Hz "
                           "(re-import with resampling)")
    if sf.n_samples != EXPECTED_SAMPLES:
        raise EcgscanError(f"{sf.path}: records have {sf.n_samples} samples; pretraining needs "
                           f"{EXPECTED_SAMPLES} (10 s at 500 Hz)")
    has_report = np.array([bool(r and r.strip()) for r in sf.reports], bool)
    if not has_report.any():
        raise EcgscanError(f"{sf.path}: no record has a report; pretraining aligns images with reports "
                           "(import reports or use `ecgscan synth`)")
    if not has_report.all():
        log.warning("%s: %d of %d records have no report and are left out", sf.path, (~has_report).sum(), sf.n)
    return np.flatnonzero(has_report)


def split_indices(sf: SignalsFile, usable: np.ndarray, split: str = "random", val_fraction: float = 0.1,
                  val_folds=(10,), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) record indices: a seeded 9:1 split, or by folds."""
    if split == "folds":
        folds = np.asarray(sf.folds)[usable]
        if (folds < 0).all():
            raise EcgscanError(f"{sf.path}: --split folds, but the file has no folds")
        val = np.isin(folds, list(val_folds))
        if not val.any():
            present = ", ".join(str(f) for f in sorted(set(folds.tolist())) if f >= 0)
            raise EcgscanError(f"{sf.path}: no record in the validation folds {list(val_folds)} "
                               f"(the file has folds {present}); pass --val-folds")
        train_idx, val_idx = usable[~val & (folds >= 0)], usable[val]
    elif split == "random":
        perm = np.random.default_rng(seed).permutation(usable)
        n_val = max(1, int(round(len(perm) * val_fraction))) if len(perm) > 1 else 0
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    else:
        raise EcgscanError(f"split must be 'random' or 'folds', not {split!r}")
    if len(train_idx) == 0:
        raise EcgscanError(f"{sf.path}: no training records left after the {split} split")
    return train_idx, val_idx


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


def make_loader(dataset, batch_size: int, seed: int, rank: int, world: int, start: int, num_workers: int):
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, rank, world, start)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                                       persistent_workers=num_workers > 0,
                                       # own generator: creating the iterator must not draw from the
                                       # global RNG (that would break bit-exact --resume)
                                       generator=torch.Generator().manual_seed(seed + 1000 * rank + start),
                                       prefetch_factor=4 if num_workers > 0 else None)
