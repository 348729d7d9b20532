"""`ecgscan imports` (placeholder until implemented)."""

from __future__ import annotations

from ecgscan_cli.cli.common import Quiet, command, fail


@command
def import_command(quiet: Quiet = False) -> None:
    """Not implemented yet."""
    fail("not implemented yet", 1)
