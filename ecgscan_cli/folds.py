"""The one fold syntax: ``1-6,8`` (ranges and commas), ``none`` for the empty set.

Every command that takes folds (pretrain, probe, benchmark, train-digitizer), the demo's
printed commands, run.json and checkpoints go through :func:`parse_folds` and
:func:`format_folds`, so what one prints another reads back unchanged. Stored configs
hold lists of integers; older ones may hold a fold string, a single integer or a list of
fold strings, and those read the same way.
"""

from __future__ import annotations

from typing import Sequence

from ecgscan_cli.errors import EcgscanError

NONE = "none"  # the empty set, where one is meaningful (e.g. --test-folds none)
SYNTAX = "ranges and commas such as '1-6,8', or 'none'"


def parse_folds(text: str | int | Sequence[int | str] | None, what: str = "folds") -> list[int]:
    """``'1-6,8'`` → ``[1, 2, 3, 4, 5, 6, 8]``; ``'none'``, ``''`` or None → ``[]``.

    Parameters
    ----------
    text
        A fold string, one fold number, or a sequence of numbers or fold strings (stored
        configs). Folds are integers >= 0.
    what
        Names the value in the error (e.g. ``"--val-folds"``).

    Raises
    ------
    EcgscanError
        One line naming ``what``, the text and the syntax.
    """
    if text is None:
        return []
    if isinstance(text, bool):
        raise EcgscanError(f"bad fold list {text!r} for {what}: use {SYNTAX}")
    if isinstance(text, int):
        return _checked([text], text, what)
    if not isinstance(text, str):
        try:
            items = list(text)
        except TypeError:
            raise EcgscanError(f"bad fold list {text!r} for {what}: use {SYNTAX}") from None
        out: list[int] = []
        for item in items:
            if isinstance(item, float) and item.is_integer():
                item = int(item)
            if not isinstance(item, (int, str)) or isinstance(item, bool):
                raise EcgscanError(f"bad fold list {text!r} for {what}: use {SYNTAX}")
            out += parse_folds(item, what)
        return out
    body = text.replace(" ", "")
    if body.lower() in (NONE, ""):
        return []
    out = []
    for part in body.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise EcgscanError(f"bad fold list {text!r} for {what}: use {SYNTAX}")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise EcgscanError(f"bad fold list {text!r} for {what}: the range {part} runs backwards")
        out.extend(range(a, b + 1))
    return _checked(out, text, what)


def _checked(folds: list[int], text, what: str) -> list[int]:
    if any(f < 0 for f in folds):  # -1 marks a record of no fold in a file; it is never a choice
        raise EcgscanError(f"bad fold list {text!r} for {what}: folds are numbers >= 0")
    return folds


def format_folds(folds: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` → ``'1-3,5'`` (sorted, runs joined); ``[]`` → ``'none'``.

    ``parse_folds(format_folds(x)) == sorted(set(x))`` for any folds ``x``.
    """
    vals = sorted({int(f) for f in folds})
    if not vals:
        return NONE
    parts, i = [], 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ",".join(parts)
