"""What to import from a source: its kind (PTB-XL folder or archive, WFDB folder, one
``.hea``), the records in reading order, and their label sets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from ecgscan_cli.archives import RecordFiles
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.importing.label_sets import parse_label_sets
from ecgscan_cli.importing.ptbxl import PTBXL_RATES, ptbxl_tasks
from ecgscan_cli.importing.ptbxl_source import find_ptbxl, locate_records
from ecgscan_cli.importing.tasks import Task
from ecgscan_cli.importing.wfdb_folder import folder_tasks, folder_tasks_single


@dataclass
class ImportPlan:
    """The records of a source in reading order, their label sets, and where to read them."""

    source: Path
    tasks: list[Task]
    label_sets: dict          # name -> (classes, [len(tasks), C] uint8); the first goes to /label
    kind: str
    archives: list[Path] = field(default_factory=list)   # read out of these (task.record = path inside)
    hint: str = ""            # added to "no record found in the archive"

    @property
    def label_set(self) -> str:
        return next(iter(self.label_sets), "none")

    @property
    def classes(self) -> list[str]:
        return list(self.label_sets[self.label_set][0]) if self.label_sets else []

    def jobs(self) -> Iterator[tuple[int, str | RecordFiles, str]]:
        """``(task index, path or RecordFiles, id)`` for every task, in reading order."""
        if not self.archives:
            for i, t in enumerate(self.tasks):
                yield i, t.record, t.id
            return
        from ecgscan_cli.archives import iter_archive_records

        for i, files in iter_archive_records(self.archives, [t.record for t in self.tasks], hint=self.hint):
            yield i, files, self.tasks[i].id


def plan_import(source: str | os.PathLike, *, label_set: str | Sequence[str] = "auto", sampling_rate: int = 500,
                min_likelihood: float = 0.0, drop_unlabelled: bool = False,
                limit: int | None = None) -> ImportPlan:
    """Find the records of a PTB-XL copy (folder, archive), a WFDB folder or one ``.hea``, with their labels.

    ``label_set``: one name, several comma-separated, ``all`` or ``auto`` (see
    :func:`parse_label_sets`).
    """
    source = Path(source)
    if not source.exists():
        raise EcgscanError(f"no such file or folder: {source}")
    ptbxl = find_ptbxl(source)
    names = parse_label_sets(label_set, ptbxl=ptbxl is not None, where=str(source))
    archives: list[Path] = []
    hint = ""
    if ptbxl is not None:
        if sampling_rate not in PTBXL_RATES:
            raise EcgscanError(f"PTB-XL comes at 100 or 500 Hz, not {sampling_rate}")
        tasks, label_sets = ptbxl_tasks(ptbxl, names, sampling_rate, min_likelihood, drop_unlabelled)
        if tasks:
            folder, archives = locate_records(ptbxl, tasks[0].record, sampling_rate)
            if folder is not None:
                for t in tasks:
                    t.record = str(folder / t.record)
        col = "filename_hr" if sampling_rate == 500 else "filename_lr"
        hint = f"; --sampling-rate {sampling_rate} reads the {col} records, e.g. {tasks[0].record}" if tasks else ""
        kind = f"PTB-XL {'archive' if archives else 'folder'} ({sampling_rate} Hz, labels {','.join(names) or 'none'})"
    elif source.is_dir():
        tasks, label_sets = folder_tasks(source, names[0] if names else "none")
        kind = f"WFDB folder (labels {names[0] if names else 'none'})"
    elif source.suffix == ".hea":
        tasks, label_sets = folder_tasks_single(source.with_suffix(""), names[0] if names else "none")
        kind = "WFDB record"
    else:
        raise EcgscanError(f"{source} is neither a folder of WFDB records, a PTB-XL archive nor a .hea file")
    if limit is not None:
        tasks = tasks[: max(0, int(limit))]
        label_sets = {k: (c, m[: len(tasks)]) for k, (c, m) in label_sets.items()}
    if not tasks:
        raise EcgscanError(f"no records to import in {source}")
    return ImportPlan(source, tasks, label_sets, kind, archives, hint)
