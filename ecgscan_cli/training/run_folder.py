"""The run folder of ``ecgscan pretrain -o RUN``: create, overwrite, resume.

* A new run is written in a hidden temporary folder next to ``RUN``
  (``.RUN.partial-PID-HOST-RAND``: unique, removed by a later command once its process is
  gone) and becomes ``RUN`` with its first checkpoint. A run that fails before that leaves
  nothing; with ``--overwrite`` the previous run stays untouched until then, and is then
  replaced in one rename.
* An interrupted run (Ctrl-C, SIGTERM, SIGHUP) is swapped in whatever its stage, so that
  ``--resume`` continues it (a run with no ``last/`` checkpoint starts again from step 0,
  reusing its text encoder and finished signal teacher).
* One process at a time: ``RUN``'s lock (``.RUN.lock`` next to it, an ``flock`` the
  kernel releases when the process ends, however it ends) refuses a second ``pretrain``
  into the same folder in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ecgscan_cli.errors import EcgscanError

LOCK_SUFFIX = ".lock"


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``.NAME.lock`` next to the run folder."""

    def __init__(self, run: Path):
        self.run = run
        self.path = run.with_name(f".{run.name}{LOCK_SUFFIX}")
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        for _attempt in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                holder = self._holder()
                raise EcgscanError(f"{self.run} is in use by another "
                                   f"ecgscan pretrain{f' (process {holder})' if holder else ''}; wait for it to end "
                                   "or choose another --output") from None
            # the previous holder may have removed the file between our open and our lock
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self.fd = fd
                return
            os.close(fd)
        raise EcgscanError(f"could not lock {self.path}: other processes keep replacing it")

    def _holder(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            return str(int(self.path.read_text().strip()))
        return ""

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it: a waiting opener sees another inode and retries
        os.close(self.fd)
        self.fd = None


class RunFolder:
    """Where a run's files go: ``work`` (the temporary folder until :meth:`commit`, then
    ``path``). :meth:`reserve` checks and locks (writing nothing in ``path``); :meth:`start`
    creates the temporary folder of a new run; always :meth:`close`."""

    def __init__(self, path: Path, resume: bool, overwrite: bool, lock: RunLock | None, work: Path | None = None):
        self.path, self.resume, self.overwrite, self.lock = path, resume, overwrite, lock
        self.work: Path | None = work if work is not None else (path if resume else None)
        self.committed = resume

    # ---- checks that write nothing (run first, before any model is loaded)
    @staticmethod
    def check_new(path: str | os.PathLike, overwrite: bool) -> Path:
        from ecgscan_cli.atomic import check_output_path

        path = Path(path)
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            overwrite = True  # an empty folder: nothing to lose
        try:
            return check_output_path(path, overwrite, kind="run")
        except EcgscanError as e:
            if "use --overwrite" in str(e):
                raise EcgscanError(f"output exists: {path} (use --overwrite to replace it, --resume to continue "
                                   "it)") from None
            raise

    @staticmethod
    def check_resume(path: str | os.PathLike) -> Path:
        from ecgscan_cli.training.config import read_run_config

        path = Path(path)
        read_run_config(path)  # an ecgscan run folder with a readable run.json
        if not os.access(path, os.W_OK):
            raise EcgscanError(f"--resume: {path} is not writable")
        return path

    @classmethod
    def check(cls, path: str | os.PathLike, *, resume: bool, overwrite: bool) -> Path:
        return cls.check_resume(path) if resume else cls.check_new(path, overwrite)

    # ---- opening
    @classmethod
    def reserve(cls, path: str | os.PathLike, *, resume: bool, overwrite: bool) -> "RunFolder":
        """Check ``path`` and lock it for this process (nothing is written in it yet)."""
        path = cls.check(path, resume=resume, overwrite=overwrite)
        lock = RunLock(path)
        lock.acquire()
        try:
            cls.check(path, resume=resume, overwrite=overwrite)  # again, under the lock
        except BaseException:
            lock.release()
            raise
        return cls(path, resume, overwrite or path.exists(), lock)

    @classmethod
    def attach(cls, path: str | os.PathLike, work: str | os.PathLike) -> "RunFolder":
        """Another DDP rank's view of rank 0's run folder (no lock, never commits)."""
        folder = cls(Path(path), True, False, None, Path(work))
        return folder

    def start(self) -> Path:
        """Create the temporary folder of a new run (a resumed run works in place)."""
        if self.work is None:
            from ecgscan_cli.atomic import temporary_name

            work = temporary_name(self.path)
            work.mkdir()
            self.work = work
        return self.work

    # ---- life
    def commit(self) -> None:
        """Make the run ``path`` (once): the temporary folder replaces what was there."""
        if self.committed or self.work is None:
            return
        from ecgscan_cli.atomic import swap_in

        swap_in(self.work, self.path, overwrite=self.overwrite)
        self.work, self.committed = self.path, True

    def discard(self) -> None:
        """Remove an uncommitted run (a failure before the first checkpoint leaves nothing)."""
        if not self.committed and self.work is not None:
            import shutil

            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()

    # ---- files
    def write_config(self, config: dict) -> None:
        from ecgscan_cli.atomic import atomic_output
        from ecgscan_cli.training.config import RUN_CONFIG

        with atomic_output(self.work / RUN_CONFIG, overwrite=True) as tmp:
            tmp.write_text(json.dumps(config, indent=2))

    def forget_metrics_after(self, step: int) -> None:
        """On --resume: drop metrics logged after the checkpoint resumed from (by a run that
        was stopped after logging them), so that each step is logged once."""
        from ecgscan_cli.atomic import atomic_output
        from ecgscan_cli.training.config import METRICS

        path = self.work / METRICS
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if isinstance(record, dict) and record.get("split") != "summary" \
                    and (not isinstance(record.get("step"), int) or record["step"] <= step):
                kept.append(line)
        if len(kept) != len(lines):
            with atomic_output(path, overwrite=True) as tmp:
                tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
