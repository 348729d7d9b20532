"""What an import reads: one :class:`Task` per record, and label rows as a multi-hot matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Task:
    """One record to read: header path without suffix (or path inside an archive), id, metadata."""

    record: str
    id: str
    report: str = ""
    fold: int = -1


def multi_hot(rows: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    """[len(rows), n_classes] uint8 with a 1 at each row's class indices."""
    out = np.zeros((len(rows), n_classes), np.uint8)
    for r, cols in enumerate(rows):
        out[r, list(cols)] = 1
    return out
