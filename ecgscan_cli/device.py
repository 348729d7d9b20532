"""Pick the torch device for heavy commands (``--device auto|cpu|cuda[:N]``)."""

from __future__ import annotations

from ecgscan_cli.errors import EcgscanError


def resolve_device(name: str = "auto"):
    """Return a ``torch.device``; ``auto`` means CUDA when present, else CPU."""
    import torch

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
