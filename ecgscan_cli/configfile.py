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


def check_field_types(obj, prefix: str = "") -> None:
    """Every field of the dataclass ``obj`` holds a value of its annotated type (int, float,
    str, bool, ``X | None``, ``list[X]``, ``tuple[X, ...]``), or one-line :class:`EcgscanError`.

    A config file or a checkpoint's JSON can hold anything (``embed_dim: "big"``); this
    catches it before the value reaches a constructor and fails there with a traceback.
    Integral floats in int fields (YAML ``1e3``) are converted to int in place.
    """
    import dataclasses
    import math
    import typing

    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), hints[f.name]
        ok, converted = _conforms(value, kind)
        if not ok:
            raise EcgscanError(f"bad config: {prefix}{f.name} must be {type_name(kind)}, not {value!r}")
        if converted is not value:
            setattr(obj, f.name, converted)
        if isinstance(converted, float) and not math.isfinite(converted):
            raise EcgscanError(f"bad config: {prefix}{f.name} must be a finite number, not {value!r}")


def _conforms(value, kind) -> tuple[bool, object]:
    import types
    import typing

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            ok, v = _conforms(value, a)
            if ok:
                return True, v
        return False, value
    if kind is type(None):
        return value is None, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 63:
            return True, int(value)
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if kind is str:
        return isinstance(value, str), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        item = args[0] if args else typing.Any
        out = []
        for v in value:
            ok, c = _conforms(v, item) if item is not typing.Any else (True, v)
            if not ok:
                return False, value
            out.append(c)
        return True, (out if origin is list else tuple(out))
    return True, value


def type_name(kind) -> str:
    import types
    import typing

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(args[0], 'values') if args else 'values'}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))
