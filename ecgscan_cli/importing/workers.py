"""Reading records in parallel: a pool of reader processes that read, canonicalise and
compress records, with a bounded number in flight, and that stop cleanly on Ctrl-C,
hang-ups or the death of their parent.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Iterator

import numpy as np

from ecgscan_cli.errors import EcgscanError, EcgscanFailure
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


def _work_batch(jobs: list) -> list:
    return [_work(job) for job in jobs]


# Signals a terminal sends to the whole process group: the parent alone decides what they
# mean (stop, clean up, exit 130/129) and stops its workers itself.
_GROUP_SIGNALS = ("SIGINT", "SIGHUP")


def _exit_when_orphaned(parent_pid: int) -> None:
    """Worker watchdog: a parent killed outright (SIGKILL) cannot stop its workers, so they
    notice they were re-parented and exit within a quarter of a second."""
    import time

    while os.getppid() == parent_pid:
        time.sleep(0.25)
    os._exit(1)


def _worker_init(parent_pid: int | None = None) -> None:
    """Set up a reader process: ignore terminal signals, exit with the parent, tune malloc.

    Keep freed memory in the worker instead of handing it back to the OS after each record.
    With glibc's defaults a pool worker maps and unmaps its ~0.5 MB arrays on every
    record: about 500 page faults and 1 ms of system time per record, 30 % of the import.
    """
    import signal
    import threading

    signums = {getattr(signal, n) for n in _GROUP_SIGNALS if hasattr(signal, n)}
    for signum in signums:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # held back by the parent while we started: now dropped
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)
    if parent_pid is not None:
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 64 << 20)   # M_TRIM_THRESHOLD: keep up to 64 MB of free heap
        libc.mallopt(-3, 4 << 20)    # M_MMAP_THRESHOLD: arrays below 4 MB come from the heap
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


BATCH = 16


def read_results(jobs: Iterable[tuple], options: ImportOptions, workers: int, *, encode: bool = False
                 ) -> Iterator[tuple]:
    """Results of :func:`_work` for every ``(index, record, id)`` job, in job order.

    With several workers, batches of records go to a process pool with a bounded number
    in flight, so memory stays flat however slow the consumer (the HDF5 writer) is; the
    jobs themselves (records read out of an archive) are only drawn as batches go out.
    """
    jobs = ((i, record, rid, options, encode) for i, record, rid in jobs)
    if workers <= 1:
        for job in jobs:
            yield _work(job)
        return
    import itertools
    import multiprocessing
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    batches = iter(lambda: list(itertools.islice(jobs, BATCH)), [])
    others = set(multiprocessing.active_children())
    # spawned (not forked) workers: the parent may hold an open HDF5 file, and forking a
    # process with HDF5 state is unsafe; the start-up cost only matters for tiny folders
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))
    pending: deque = deque()
    finished = False
    try:
        with _terminal_signals_held():  # the workers start (and inherit the mask) in these first submits
            pending.extend(pool.submit(_work_batch, b) for b in itertools.islice(batches, 4 * workers))
        while pending:
            try:
                done = pending.popleft().result()
            except BrokenProcessPool:
                raise EcgscanFailure("a reader process stopped unexpectedly (out of memory?); "
                                     "try again with -j 1") from None
            nxt = next(batches, None)
            if nxt is not None:
                pending.append(pool.submit(_work_batch, nxt))
            yield from done
        finished = True
    finally:
        for fut in pending:
            fut.cancel()
        if finished:
            pool.shutdown(wait=True)
        else:  # interrupted, failed, or the consumer stopped early: stop the workers now
            _stop_workers(pool, others)


def _terminal_signals_held():
    """Hold back Ctrl-C and hang-ups while the worker processes start.

    The signal mask is inherited across exec, so a worker still importing never dies with
    a KeyboardInterrupt traceback; it ignores them once set up (:func:`_worker_init`). In
    the parent a signal that came meanwhile is delivered as soon as the mask is lifted."""
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def held():
        signums = {getattr(signal, n) for n in _GROUP_SIGNALS if hasattr(signal, n)}
        if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
            yield
            return
        before = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)

    return held()


STOP_GRACE_S = 3.0


def _stop_workers(pool: ProcessPoolExecutor, others: set) -> None:
    """Stop the pool's processes (not ``others``, children that existed before it).

    Queued batches are cancelled; a worker finishes the batch in hand (16 records) and
    exits. Killing it meanwhile could cut a result message in half and leave the pool's
    manager thread waiting for the rest forever (a hang at exit); only a worker still
    busy after :data:`STOP_GRACE_S` (a stuck read) is terminated.
    """
    import multiprocessing
    import time

    pool.shutdown(wait=False, cancel_futures=True)
    workers = [p for p in multiprocessing.active_children() if p not in others]
    deadline = time.monotonic() + STOP_GRACE_S
    for p in workers:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in workers:
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def auto_workers(n: int) -> int:
    """Reader processes for ``n`` records: one for small imports (process start-up would cost more)."""
    if n < 400:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))
