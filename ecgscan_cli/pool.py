"""An ordered process pool for per-record work (reading records, digitising pages): a
bounded number of batches in flight, results in job order, and workers that stop cleanly
on Ctrl-C, hang-ups or the death of their parent.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator

from ecgscan_cli.errors import EcgscanFailure

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


def _worker_init(parent_pid: int | None = None, initializer: Callable | None = None, initargs: tuple = ()) -> None:
    """Set up a worker process: ignore terminal signals, exit with the parent, tune malloc,
    then run the caller's ``initializer``.

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
    if initializer is not None:
        initializer(*initargs)


def _run_batch(func: Callable, jobs: list) -> list:
    return [func(job) for job in jobs]


def ordered_map(func: Callable, jobs: Iterable, workers: int, *, batch: int = 16,
                initializer: Callable | None = None, initargs: tuple = (),
                broken: str = "a worker process stopped unexpectedly (out of memory?); try again with -j 1"
                ) -> Iterator:
    """``func(job)`` for every job, in job order, on ``workers`` spawned processes.

    ``func`` and ``initializer`` must be module-level functions (they are pickled by name).
    Batches of ``batch`` jobs go out with at most ``4 × workers`` in flight, so memory stays
    flat however slow the consumer is, and jobs are only drawn as batches go out. With
    ``workers <= 1`` everything runs here, in order, and ``initializer`` (which sets up each
    worker process, e.g. its thread count) is not run. ``broken`` is the one-line failure when
    a worker dies.
    """
    if workers <= 1:
        for job in jobs:
            yield func(job)
        return
    import itertools
    import multiprocessing
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    jobs = iter(jobs)
    batches = iter(lambda: list(itertools.islice(jobs, batch)), [])
    others = set(multiprocessing.active_children())
    # spawned (not forked) workers: the parent may hold an open HDF5 file or a started
    # torch thread pool, and forking either is unsafe; start-up only matters for tiny inputs
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(), initializer, initargs))
    pending: deque = deque()
    finished = False
    try:
        with _terminal_signals_held():  # the workers start (and inherit the mask) in these first submits
            pending.extend(pool.submit(_run_batch, func, b)
                           for b in itertools.islice(batches, 4 * workers))
        while pending:
            try:
                done = pending.popleft().result()
            except BrokenProcessPool:
                raise EcgscanFailure(broken) from None
            nxt = next(batches, None)
            if nxt is not None:
                pending.append(pool.submit(_run_batch, func, nxt))
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

    Queued batches are cancelled; a worker finishes the batch in hand (16 jobs by default) and
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


def auto_workers(n_jobs: int, min_jobs: int) -> int:
    """Processes for ``n_jobs`` jobs: one per available CPU, at most 8; one for fewer than
    ``min_jobs`` jobs (starting the processes would cost more than they save)."""
    from ecgscan_cli.threads import available_cpus

    return 1 if n_jobs < min_jobs else max(1, min(available_cpus(), 8))
