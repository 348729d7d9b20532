"""Exceptions that mean "the user asked for something impossible".

The CLI turns an :class:`EcgscanError` into one line on stderr and exit code 2 (bad
usage or bad input), an :class:`EcgscanFailure` into exit code 1 (the job itself failed,
e.g. a NaN loss). Anything else is a bug and keeps its traceback.
"""


class EcgscanError(Exception):
    """Bad usage or bad input: the message is shown to the user as is."""

    exit_code = 2


class EcgscanFailure(EcgscanError):
    """A valid job that failed while running (NaN loss, disk full...)."""

    exit_code = 1
