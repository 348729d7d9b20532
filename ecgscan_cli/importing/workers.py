"""Reading records in parallel: reader processes (:mod:`ecgscan_cli.pool`) that read,
canonicalise and compress records."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator

import numpy as np

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.importing.errors import RecordError
from ecgscan_cli.importing.twelve_lead import ImportOptions, read_canonical


def _work(args) -> tuple[int, np.ndarray | bytes | None, str | None, str | None, tuple]:
    """Worker: (index, signal or None, reason, message, flags).

    With ``encode`` the signal comes back as its stored bytes (:func:`formats.signals.encode_signal`):
    the compression then runs here, in parallel, rather than in the process writing the file.
    """
    i, record, rid, options, encode = args
    flags: Counter = Counter()
    try:
        x = read_canonical(record, record_id=rid, options=options, flags=flags)
        if encode:
            from ecgscan_cli.formats.signals import encode_signal

            try:
                x = encode_signal(x, rid)
            except EcgscanError as e:
                raise RecordError("out of range", str(e)) from None
        return i, x, None, None, tuple(flags.items())
    except RecordError as e:
        return i, None, e.reason, str(e), ()
    except Exception as e:  # anything unexpected in one file must not kill a long import
        return i, None, "unreadable signal", f"{rid}: {type(e).__name__}: {e}", ()


def read_results(jobs: Iterable[tuple], options: ImportOptions, workers: int, *, encode: bool = False
                 ) -> Iterator[tuple]:
    """Results of :func:`_work` for every ``(index, record, id)`` job, in job order, on
    ``workers`` reader processes (:func:`ecgscan_cli.pool.ordered_map`)."""
    from ecgscan_cli.pool import ordered_map

    jobs = ((i, record, rid, options, encode) for i, record, rid in jobs)
    yield from ordered_map(_work, jobs, workers,
                           broken="a reader process stopped unexpectedly (out of memory?); try again with -j 1")


def auto_workers(n: int) -> int:
    """Reader processes for ``n`` records: one for small imports (process start-up would cost more)."""
    from ecgscan_cli.pool import auto_workers as pool_workers

    return pool_workers(n, min_jobs=400)
