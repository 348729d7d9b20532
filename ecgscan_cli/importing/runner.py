"""The import runner: a plan's records read (in parallel), canonicalised and written to a
signals file, bad records skipped and counted by reason (or stopping a ``strict`` import).

Rows follow the plan's order (the CSV's for PTB-XL) whatever the order records are read
in; workers return compressed chunks and the parent only stores them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError, printable
from ecgscan_cli.importing.plan import ImportPlan, plan_import
from ecgscan_cli.importing.twelve_lead import ImportOptions
from ecgscan_cli.importing.workers import auto_workers, read_results

log = logging.getLogger("ecgscan.import")


@dataclass
class ImportStats:
    """What an import did: records found, imported, skipped (by reason, with their ids), fixed up."""

    found: int = 0
    imported: int = 0
    skipped: Counter = field(default_factory=Counter)   # reason -> count
    resampled: int = 0
    padded: int = 0
    derived: int = 0
    cropped: int = 0          # longer than 10 s: only the first 10 s kept
    header_shorter: int = 0   # the header announces fewer samples than the signal file holds
    examples: dict = field(default_factory=dict)        # reason -> first message
    skipped_names: dict = field(default_factory=dict)   # reason -> every record id skipped for it

    def skip(self, reason: str, message: str, record_id: str) -> None:
        """Count one skipped record; the first three of a reason are logged, all are kept."""
        self.skipped[reason] += 1
        self.examples.setdefault(reason, message)
        self.skipped_names.setdefault(reason, []).append(record_id)
        if self.skipped[reason] <= 3:
            log.warning("skipped %s", printable(message))

    def skipped_lines(self) -> list[str]:
        """``reason: id id id ...`` for every skip reason, with every record id."""
        return [f"{reason} ({len(ids)}): {' '.join(printable(i) for i in ids)}"
                for reason, ids in sorted(self.skipped_names.items())]

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def rows(self) -> list[dict]:
        rows = [{"item": "records found", "count": self.found}, {"item": "imported", "count": self.imported},
                {"item": "skipped", "count": self.n_skipped}]
        rows += [{"item": f"  skipped: {r}", "count": c} for r, c in sorted(self.skipped.items())]
        rows += [{"item": f"resampled to {canonical.FS:g} Hz", "count": self.resampled},
                 {"item": f"padded to {canonical.DURATION_S:g} s", "count": self.padded},
                 {"item": "limb leads derived", "count": self.derived},
                 {"item": f"cropped to the first {canonical.DURATION_S:g} s", "count": self.cropped},
                 {"item": "header shorter than its signal file", "count": self.header_shorter}]
        return rows


def run_import(plan: ImportPlan, output: str | os.PathLike, *, derive_limb_leads: bool = False,
               pad: str = "zero", workers: int = 0, strict: bool = False, overwrite: bool = False,
               progress: Callable[[int], None] | None = None) -> tuple[Path, ImportStats]:
    """Read, canonicalise and write the records of ``plan``; bad records skipped and counted.

    Rows follow the order of ``plan.tasks`` (the CSV's for PTB-XL) whatever the order
    records are read in. Workers return compressed chunks; the writer only stores them and
    writes the metadata of all records at the end, one call per dataset.
    """
    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.formats.signals import SignalsWriter

    check_output_path(output, overwrite, kind="signals")
    if pad not in ("zero", "nan"):
        raise EcgscanError(f"pad must be zero or nan, not {pad!r}")
    tasks = plan.tasks
    options = ImportOptions(derive_limb_leads=derive_limb_leads, pad=pad)
    stats = ImportStats(found=len(tasks))
    n_workers = auto_workers(len(tasks)) if workers <= 0 else workers
    log.info("importing %d records from %s: %s, %d worker(s)", len(tasks),
             ", ".join(a.name for a in plan.archives) if plan.archives else plan.source, plan.kind, n_workers)
    writer = SignalsWriter(output, fs=canonical.FS, n_samples=canonical.N_SAMPLES, classes=plan.classes,
                           overwrite=overwrite, source=str(plan.source.resolve()), expected_rows=len(tasks),
                           label_set=plan.label_set,
                           attrs={"import_kind": plan.kind, "label_set": plan.label_set})
    kept: list[int] = []
    with writer as w:
        for i, chunk, reason, message, flags in read_results(plan.jobs(), options, n_workers, encode=True):
            if chunk is None:
                if strict:
                    raise EcgscanError(f"{message} (import stopped: --strict)")
                stats.skip(reason, message, tasks[i].id)
            else:
                w.write_encoded(i, chunk)
                kept.append(i)
                stats.imported += 1
                f = dict(flags)
                stats.resampled += bool(f.get("resampled"))
                stats.padded += bool(f.get("padded"))
                stats.derived += bool(f.get("derived"))
                stats.cropped += bool(f.get("cropped"))
                stats.header_shorter += bool(f.get("header_shorter"))
            if progress:
                progress(1)
        if stats.imported == 0:
            first = next(iter(stats.examples.values()), "")
            raise EcgscanError(f"none of the {stats.found} records could be imported (first problem: {first})")
        rows = np.sort(np.asarray(kept))
        label_sets = [(name, classes, matrix[rows]) for name, (classes, matrix) in plan.label_sets.items()]
        w.keep_rows(rows, [tasks[r].id for r in rows], [tasks[r].report for r in rows],
                    label_sets[0][2] if label_sets else None, [tasks[r].fold for r in rows])
        for name, classes, matrix in label_sets[1:]:
            w.add_label_set(name, classes, matrix)
    return Path(output), stats


def import_records(source: str | os.PathLike, output: str | os.PathLike, *, label_set: str | Sequence[str] = "auto",
                   sampling_rate: int = 500, derive_limb_leads: bool = False, pad: str = "zero",
                   min_likelihood: float = 0.0, drop_unlabelled: bool = False, workers: int = 0,
                   strict: bool = False, limit: int | None = None, overwrite: bool = False,
                   progress: Callable[[int], None] | None = None) -> tuple[Path, ImportStats]:
    """Import a PTB-XL copy (folder or archive), a WFDB folder or one ``.hea`` record into a signals file."""
    from ecgscan_cli.atomic import check_output_path

    check_output_path(output, overwrite, kind="signals")
    plan = plan_import(source, label_set=label_set, sampling_rate=sampling_rate, min_likelihood=min_likelihood,
                       drop_unlabelled=drop_unlabelled, limit=limit)
    return run_import(plan, output, derive_limb_leads=derive_limb_leads, pad=pad, workers=workers,
                      strict=strict, overwrite=overwrite, progress=progress)


def iter_signals(path: str | os.PathLike, *, derive_limb_leads: bool = False, workers: int = 0,
                 ) -> tuple[int, Iterator[tuple[str, np.ndarray]], ImportStats | None]:
    """(count, iterator of (id, [12, T] mV), stats) from a signals file or WFDB records.

    WFDB records (a folder, a PTB-XL copy at 500 Hz, one ``.hea``) go through the same
    canonical form as ``import`` (500 Hz, 10 s); bad ones are skipped and counted in
    ``stats`` (None for a signals file).
    """
    from ecgscan_cli.archives import is_archive
    from ecgscan_cli.formats.signals import SignalsFile

    path = Path(path)
    if path.is_dir() or path.suffix == ".hea" or is_archive(path):
        if path.suffix == ".hea" and not path.exists():
            raise EcgscanError(f"no such file: {path}")
        plan = plan_import(path, label_set="none")
        tasks = plan.tasks
        stats = ImportStats(found=len(tasks))
        options = ImportOptions(derive_limb_leads=derive_limb_leads)
        n_workers = auto_workers(len(tasks)) if workers <= 0 else workers

        def gen():
            for i, x, reason, message, _flags in read_results(plan.jobs(), options, n_workers):
                if x is None:
                    stats.skip(reason, message, tasks[i].id)
                    yield tasks[i].id, None
                    continue
                stats.imported += 1
                yield tasks[i].id, x

        return len(tasks), gen(), stats
    f = SignalsFile(path)

    def gen_file():
        try:
            for i in range(len(f)):
                yield f.ids[i], f.signal(i)
        finally:
            f.close()

    return len(f), gen_file(), None
