"""Pick the torch device for heavy commands (``--device auto|cpu|cuda[:N]``): the one place it is resolved."""

from __future__ import annotations

from ecgscan_cli.errors import EcgscanError


def resolve_device(name="auto"):
    """The ``torch.device`` a command runs on.

    Parameters
    ----------
    name : str or torch.device or None
        ``auto`` (CUDA when present, else CPU; also for None or ""), ``cpu``, ``cuda`` or
        ``cuda:N``; a ``torch.device`` is returned as it is.

    Returns
    -------
    torch.device

    Raises
    ------
    EcgscanError
        For an unknown name, or CUDA asked for where there is none (or not that many).
    """
    import torch

    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EcgscanError(f"--device {name}: CUDA is not available on this machine")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EcgscanError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise EcgscanError(f"--device must be auto, cpu or cuda[:N], not {name!r}")
