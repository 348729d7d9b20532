"""How many CPU threads a command should use.

torch (and the BLAS under numpy) start one thread per core by default. On a machine that
is busy with anything else those threads wait for each other: on a loaded 2-core machine
`pretrain` ran ~20x slower with two threads than with one. The default here counts the
cores this process may use (``os.sched_getaffinity``) and subtracts the ones already busy
(the 1-minute load average), keeping at least one.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

BLAS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cpus() -> float:
    """CPUs other processes keep busy: the 1-minute load average (0 where unknown)."""
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def default_threads(cpus: int | None = None, load: float | None = None) -> int:
    """Threads for one process: the available CPUs minus the busy ones (rounded), at least 1."""
    cpus = available_cpus() if cpus is None else cpus
    load = busy_cpus() if load is None else load
    return max(1, min(cpus, int(cpus - load + 0.5)))


def resolve_threads(threads: int = 0) -> int:
    """``threads``, or for 0 an explicit ``OMP_NUM_THREADS`` or else :func:`default_threads`."""
    if threads < 0:
        from ecgscan_cli.errors import EcgscanError

        raise EcgscanError(f"--threads must be 0 (automatic) or more, got {threads}")
    if threads == 0:
        preset = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(preset) if preset.isdigit() and int(preset) > 0 else default_threads()
    return threads


def set_threads(threads: int = 0) -> int:
    """Use ``threads`` CPU threads (0 = automatic, see :func:`resolve_threads`) from now on,
    for the whole process: the environment variables reach torch and BLAS libraries not
    loaded yet (torch reads ``OMP_NUM_THREADS`` when it starts) and worker processes;
    threadpoolctl limits the BLAS already loaded (numpy's); torch, if already imported, is
    set directly. Does not import torch. Returns the count applied."""
    import sys

    from threadpoolctl import threadpool_limits

    threads = resolve_threads(threads)
    for name in BLAS_ENV:
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def limited_threads(threads: int = 0) -> Iterator[int]:
    """Within the block, BLAS (numpy's OpenBLAS/MKL, through threadpoolctl) and torch (when
    already imported) use ``threads`` threads (0 = :func:`default_threads`, or an explicit
    ``OMP_NUM_THREADS``); the previous settings come back afterwards."""
    import sys

    from threadpoolctl import threadpool_limits

    threads = resolve_threads(threads)
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else None
    try:
        with threadpool_limits(limits=threads):
            if torch is not None:
                torch.set_num_threads(threads)
            yield threads
    finally:
        if torch is not None and previous is not None:
            torch.set_num_threads(previous)
