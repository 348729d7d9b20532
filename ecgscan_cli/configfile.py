"""Read a user's YAML or JSON config file into a dict, with one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ecgscan_cli.errors import EcgscanError


def read_config_file(path: str | os.PathLike, what: str = "config file") -> dict:
    """``.json`` is parsed as JSON, anything else as YAML; the top level must be a mapping (or empty)."""
    path = Path(path)
    if not path.is_file():
        raise EcgscanError(f"{what} not found: {path}")
    text = path.read_text()
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        if kind == "JSON":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise EcgscanError(f"{path}: not valid {kind} ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EcgscanError(f"{path}: expected a mapping of {what} keys")
    return data
