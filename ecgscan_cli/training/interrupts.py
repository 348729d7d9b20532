"""Interruptions of a training run: the saved state must be that of a finished step.

A Ctrl-C that lands in the middle of a step finds the random generators already advanced
into it, BatchNorm statistics updated by its forward pass, maybe half of an optimizer
update applied: a checkpoint saved then does not resume bit-exactly. So while a step runs
(data, forward, backward, update, its validation and checkpoint), SIGINT, SIGTERM and
SIGHUP are *held* and delivered to their own handlers once the step has finished; a second
signal during the same step is delivered at once (the step is abandoned and not saved).

Only signals whose handler is Python code are held (SIGINT's KeyboardInterrupt, the
CLI's SIGTERM/SIGHUP → :class:`~ecgscan_cli.errors.Terminated`); an ignored signal stays
ignored and a default (fatal) one stays fatal.

DataLoader workers leave the terminal's process group and ignore SIGINT/SIGHUP: a Ctrl-C
or a ``timeout`` (which signals the whole group) reaches the main process only, which
finishes its step, saves, and then stops the workers itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

log = logging.getLogger("ecgscan")

HELD = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def finish_step_first(step: int) -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block (step ``step`` + 1 being trained) ends,
    then deliver the first one to its handler; a second one is delivered at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in HELD}
    previous = {s: h for s, h in previous.items() if callable(h)}
    pending: list[int] = []

    def hold(signum, frame):
        if pending:  # asked twice: stop now, this step is abandoned
            _restore(previous)
            previous[signum](signum, frame)
            return
        pending.append(signum)
        if signum == signal.SIGINT:
            log.warning("finishing step %d before stopping (Ctrl-C again stops at once; that step is lost)", step + 1)

    for s in previous:
        signal.signal(s, hold)
    try:
        yield
    finally:
        _restore(previous)
    if pending:
        previous[pending[0]](pending[0], None)


def _restore(previous: dict) -> None:
    for s, h in previous.items():
        signal.signal(s, h)


def quiet_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: out of the terminal's process group; SIGINT and SIGHUP
    ignored, SIGTERM fatal (how the DataLoader stops a stuck worker), no inherited handlers."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    for name, action in (("SIGINT", signal.SIG_IGN), ("SIGHUP", signal.SIG_IGN), ("SIGTERM", signal.SIG_DFL)):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), action)
