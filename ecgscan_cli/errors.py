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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C would raise KeyboardInterrupt, so the same
    clean-up runs (partial outputs removed, workers stopped); exit code 128 + ``signum``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def printable(text) -> str:
    """``text`` with control characters escaped as Python would write them (``\\x1b``,
    ``\\n``, ``\\u202e``...): a file name holding terminal escape sequences must not drive
    the user's terminal when it appears in a message on stderr."""
    import unicodedata

    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " " or (unicodedata.category(ch) == "Zs"):
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1] if ch not in "'\"" else ch)
    return "".join(out)
