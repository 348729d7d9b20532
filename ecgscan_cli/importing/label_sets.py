"""The label sets an import can write, and the ``--labels`` value naming them."""

from __future__ import annotations

from typing import Sequence

from ecgscan_cli.errors import EcgscanError

LABEL_SETS = ("superclass", "subclass", "form", "rhythm", "dx", "none")
PTBXL_LABEL_SETS = ("superclass", "subclass", "form", "rhythm")   # from scp_statements.csv (see .ptbxl)


def parse_label_sets(spec: str | Sequence[str], *, ptbxl: bool, where: str = "") -> list[str]:
    """``superclass``, ``form,rhythm``, ``all``, ``auto``... → label set names (first = /label).

    ``[]`` for ``none``. ``auto`` is superclass for PTB-XL, dx otherwise; ``all`` is
    PTB-XL's four sets (dx otherwise).
    """
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if names in (["auto"], []):
        names = ["superclass"] if ptbxl else ["dx"]
    elif names == ["all"]:
        names = list(PTBXL_LABEL_SETS) if ptbxl else ["dx"]
    for n in names:
        if n not in LABEL_SETS:
            raise EcgscanError(f"unknown label set {n!r} (choose from {', '.join(LABEL_SETS)}, all, auto; "
                               "several comma-separated)")
    if len(set(names)) != len(names):
        raise EcgscanError(f"label set listed twice: {','.join(names)}")
    if "none" in names:
        if len(names) > 1:
            raise EcgscanError("label set none cannot be combined with others")
        return []
    if ptbxl and "dx" in names:
        raise EcgscanError("PTB-XL has SCP codes, not Dx codes: use superclass, subclass, form, rhythm, all or none")
    if not ptbxl:
        bad = [n for n in names if n in PTBXL_LABEL_SETS]
        if bad:
            raise EcgscanError(f"{where or 'this source'} is not a PTB-XL root (no ptbxl_database.csv): label set "
                               f"{bad[0]!r} needs one; use dx or none")
    return names
