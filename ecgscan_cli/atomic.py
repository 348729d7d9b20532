"""Write outputs under a temporary name and rename them only when complete.

An interrupted command (Ctrl-C, crash, full disk) therefore never leaves a file or
folder that looks finished: the partial output keeps its ``.partial-*`` name and is
removed on the way out whenever Python gets the chance.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from ecgscan_cli.errors import EcgscanError


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate an output path before any work starts: folder exists, no clobbering."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise EcgscanError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise EcgscanError(f"output folder is not writable: {parent}")
    if path.exists() and not overwrite:
        raise EcgscanError(f"output exists: {path} (use --overwrite to replace it)")
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    With ``directory=True`` the temporary path is created as an empty folder.
    On any exception (KeyboardInterrupt included) the temporary output is deleted and
    an existing ``path`` is left untouched.
    """
    path = check_output_path(path, overwrite)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if path.exists():
        if not overwrite:  # appeared while we worked
            _remove(tmp)
            raise EcgscanError(f"output exists: {path} (use --overwrite to replace it)")
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
            return
    os.replace(tmp, path)
