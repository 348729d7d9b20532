"""rich consoles: results go to stdout, everything else to stderr."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def stdout_console():
    from rich.console import Console

    return Console(soft_wrap=True)
