"""PTB-XL metadata: records, reports and folds from ``ptbxl_database.csv``, and the SCP codes
mapped to the four label sets of the PTB-XL benchmark (Strodthoff et al.) through
``scp_statements.csv``: ``superclass`` (diagnostic_class, 5), ``subclass``
(diagnostic_subclass, 23), ``form`` (19) and ``rhythm`` (12).

As in the benchmark code every listed code counts whatever its likelihood
(``min_likelihood=0``); a threshold applies to diagnostic statements only (form/rhythm
statements always carry likelihood 0 in PTB-XL). Records without a label of the (first)
set keep an all-zero row (the benchmark drops them; so does ``drop_unlabelled=True``).
Where the CSVs and the records are (folder, archive) is :mod:`.ptbxl_source`'s job.
"""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.importing.label_sets import PTBXL_LABEL_SETS
from ecgscan_cli.importing.tasks import Task, multi_hot

PTBXL_RATES = (100, 500)   # PTB-XL's record folders: records100/ (filename_lr) and records500/ (filename_hr)


def read_scp_statements(root: str | os.PathLike):
    import pandas as pd

    path = Path(root) / "scp_statements.csv"
    if not path.is_file():
        raise EcgscanError(f"{root}: scp_statements.csv not found (needed for PTB-XL labels)")
    return pd.read_csv(path, index_col=0)


def ptbxl_classes(scp, label_set: str) -> list[str]:
    """Class names of a PTB-XL label set (sorted, as the benchmark's MultiLabelBinarizer)."""
    if label_set == "superclass":
        vals = scp.loc[scp.diagnostic == 1.0, "diagnostic_class"]
    elif label_set == "subclass":
        vals = scp.loc[scp.diagnostic == 1.0, "diagnostic_subclass"]
    elif label_set == "form":
        vals = scp.index[scp.form == 1.0].to_series()
    elif label_set == "rhythm":
        vals = scp.index[scp.rhythm == 1.0].to_series()
    else:
        raise EcgscanError(f"unknown PTB-XL label set {label_set!r}")
    return sorted({str(v) for v in vals if isinstance(v, str) and v})


def scp_table(scp) -> dict[str, tuple]:
    """code → (diagnostic, diagnostic_class, diagnostic_subclass, form, rhythm)."""
    def s(v):
        return v if isinstance(v, str) and v else None

    return {str(code): (row.diagnostic == 1.0, s(row.diagnostic_class), s(row.diagnostic_subclass),
                        row.form == 1.0, row.rhythm == 1.0) for code, row in scp.iterrows()}


def ptbxl_labels(scp_codes: dict, scp, label_set: str, min_likelihood: float = 0.0) -> list[str]:
    """The benchmark's aggregation of one record's ``scp_codes`` into a label set.

    ``scp`` is scp_statements.csv as a DataFrame or as :func:`scp_table`'s dict.
    """
    table = scp if isinstance(scp, dict) else scp_table(scp)
    out = set()
    for code, likelihood in scp_codes.items():
        row = table.get(code)
        if row is None:
            continue
        diagnostic, cls, subcls, form, rhythm = row
        if label_set in ("superclass", "subclass"):
            if not diagnostic:
                continue
            if min_likelihood > 0 and float(likelihood or 0) < min_likelihood:
                continue
            c = cls if label_set == "superclass" else subcls
            if c:
                out.add(c)
        elif label_set == "form" and form:
            out.add(code)
        elif label_set == "rhythm" and rhythm:
            out.add(code)
    return sorted(out)


def ptbxl_tasks(src, label_sets: Sequence[str] = ("superclass",), sampling_rate: int = 500,
                min_likelihood: float = 0.0, drop_unlabelled: bool = False) -> tuple[list[Task], dict]:
    """Tasks (record = the CSV's record path, e.g. ``records100/00000/00001_lr``) and label sets.

    ``src`` is a :class:`.ptbxl_source.PtbxlSource`; label sets map name → (classes,
    [N, C] uint8). ``drop_unlabelled`` drops records without a label in the first set.
    """
    if sampling_rate not in PTBXL_RATES:
        raise EcgscanError(f"PTB-XL comes at 100 or 500 Hz, not {sampling_rate}")
    db = src.read_database()
    where = src.where("ptbxl_database.csv")
    col = "filename_hr" if sampling_rate == 500 else "filename_lr"
    for needed in (col, "scp_codes"):
        if needed not in db.columns:
            raise EcgscanError(f"{where}: no column {needed!r}; is this PTB-XL?")
    sets: dict[str, tuple[list[str], dict[str, int]]] = {}
    scp = None
    if label_sets:
        scp_df = src.read_statements()
        scp = scp_table(scp_df)
        for name in label_sets:
            if name not in PTBXL_LABEL_SETS:
                raise EcgscanError(f"label set {name!r} is not one of PTB-XL's: {', '.join(PTBXL_LABEL_SETS)}, none")
            classes = ptbxl_classes(scp_df, name)
            sets[name] = (classes, {c: i for i, c in enumerate(classes)})
    tasks: list[Task] = []
    hot: dict[str, list[list[int]]] = {name: [] for name in sets}
    n = len(db)
    folds = db["strat_fold"] if "strat_fold" in db.columns else [-1] * n
    reports = db["report"] if "report" in db.columns else [""] * n
    for ecg_id, file_name, scp_codes, fold, report in zip(db.index, db[col], db["scp_codes"], folds, reports):
        if scp is not None:
            try:
                codes = ast.literal_eval(scp_codes) if isinstance(scp_codes, str) else {}
            except (ValueError, SyntaxError):
                codes = {}
            names = {name: ptbxl_labels(codes, scp, name, min_likelihood) for name in sets}
            if drop_unlabelled and not names[label_sets[0]]:
                continue
            for name, (_, index) in sets.items():
                hot[name].append([index[c] for c in names[name]])
        fold = int(fold) if isinstance(fold, (int, float, np.integer, np.floating)) and math.isfinite(fold) else -1
        report = report.strip() if isinstance(report, str) else ""
        tasks.append(Task(str(file_name), f"{int(ecg_id):05d}", report, fold))
    return tasks, {name: (classes, multi_hot(hot[name], len(classes))) for name, (classes, _) in sets.items()}
