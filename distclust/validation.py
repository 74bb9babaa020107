"""Checking user-given values: a mapping against a dataclass (unknown keys with close-match hints,
types coerced from YAML) and ``require`` for range checks. The one place every spec section, model
``Params`` and sweep spec is validated through; it imports nothing else from the package (models and
``spec`` both import it, so neither imports the other for validation).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from .errors import SpecError, did_you_mean


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:   # Optional[X] and X | None
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:   # Optional[X] and X | None
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except SpecError as e:  # try the next alternative
                errors.append(e)
        raise SpecError(f"'{where}' is {value!r}, expected {_type_name(tp)}", where,
                        f"set '{where}' to a value of type {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise SpecError(f"'{where}' must be null", where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"'{where}' is {value!r}, expected {_type_name(tp)}", where,
                            f"write '{where}' as a YAML list, e.g. [500, 500, 2000]")
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, tp):
        return value
    raise SpecError(f"'{where}' is {value!r} ({type(value).__name__}), expected {_type_name(tp)}",
                    where, f"set '{where}' to a {_type_name(tp)}")


def build(cls: type, raw: Mapping[str, Any] | None, section: str, ignore: tuple[str, ...] = ()):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad types."""
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise SpecError(f"section '{section}' must be a mapping", section)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in raw.items():
        if key in ignore:
            continue
        if key not in names:
            raise SpecError(
                f"unknown key '{section}.{key}'.{did_you_mean(key, names)}",
                section,
                f"allowed keys in '{section}' are: {', '.join(sorted(names))}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(section)
    return obj


def require(cond: bool, where: str, what: str, fix: str) -> None:
    """Raise a SpecError naming ``where`` unless ``cond`` holds."""
    if not cond:
        raise SpecError(what, where, fix)
