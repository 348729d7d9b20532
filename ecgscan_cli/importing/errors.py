"""The one error a record can cause: it is skipped (and counted by reason) or stops a --strict import."""

from __future__ import annotations

from ecgscan_cli.errors import EcgscanError


class RecordError(EcgscanError):
    """One record cannot be imported; ``reason`` is a short category for the summary."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

