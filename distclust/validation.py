"""Checking user-given values, in one place for every spec section, model ``Params`` and sweep spec.

A field declares its own constraint where it is declared, ``n_clusters: int = param(10, ge=1)``;
``build`` turns a mapping into the dataclass (unknown keys get close-match hints, YAML types are
coerced), checks every declared constraint, then the class's ``check`` for the few rules that tie
several fields together (written with ``require``). A subclass that only changes a default keeps its
parent's constraint. Checks never change the object they check. This module imports nothing else from
the package, so models and ``spec`` both import it without importing each other.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, Sequence

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


@dataclasses.dataclass(frozen=True)
class Rule:
    """The values a field accepts: bounds (for a list, on each item), a set of choices, a shortest list.
    ``None`` always passes: an optional field's null means "the default behaviour"."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    min_items: int = 0
    fix: str | None = None           # the advice when the value is refused (default: derived from the rule)

    def _ok(self, v: Any) -> bool:
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt)
                and (self.choices is None or v in self.choices))

    def holds(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, (list, tuple)):
            return len(value) >= self.min_items and all(self._ok(v) for v in value)
        return self._ok(value)

    def allowed(self) -> str:
        """The accepted values in words: 'one of a, b', '≥ 1', 'in [0, 1)'."""
        if self.choices is not None:
            return f"one of {', '.join(map(str, self.choices))}"
        lo = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        hi = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if lo and hi:
            return f"in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
        if lo:
            return f"{'≥' if lo[0] == '[' else '>'} {lo[1]:g}"
        return f"{'≤' if hi[0] == ']' else '<'} {hi[1]:g}" if hi else "of any value"

    def advice(self, default: Any, is_list: bool) -> str:
        if self.fix:
            return self.fix
        if is_list:
            what = f"a list of values {self.allowed()}" + (f" with at least {self.min_items} item(s)"
                                                          if self.min_items else "")
        else:
            what = self.allowed() if self.choices is not None else f"a value {self.allowed()}"
        example = "" if default in (None, dataclasses.MISSING) else f", e.g. {default!r} (the default)"
        return f"use {what}{example}"


def param(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
          ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
          choices: Sequence | None = None, min_items: int = 0, fix: str | None = None) -> Any:
    """A dataclass field that declares the values it accepts (checked by ``build``)."""
    rule = Rule(ge, gt, le, lt, tuple(choices) if choices is not None else None, min_items, fix)
    return dataclasses.field(default=default, default_factory=factory, metadata={"rule": rule})


def _rules(cls: type) -> dict[str, Rule]:
    """Each field's rule, the most derived declaration winning; a redeclared default keeps the parent's."""
    rules: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        for name, f in vars(klass).get("__dataclass_fields__", {}).items():
            if "rule" in f.metadata:
                rules[name] = f.metadata["rule"]
    return rules


def check_fields(obj: Any, section: str) -> None:
    """Check every declared constraint of dataclass ``obj``; the first refused value raises a SpecError."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, rule in _rules(type(obj)).items():
        value = getattr(obj, name)
        if rule.holds(value):
            continue
        where = f"{section}.{name}"
        hint = did_you_mean(value, [str(c) for c in rule.choices]) \
            if rule.choices is not None and isinstance(value, str) else ""
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        raise SpecError(f"'{where}' is {value!r}.{hint}" if hint else f"'{where}' is {value!r}", where,
                        rule.advice(default, isinstance(value, (list, tuple))))


def validate(obj: Any, section: str) -> Any:
    """Declared constraints, then the class's cross-field ``check``; returns ``obj`` unchanged."""
    check_fields(obj, section)
    check = getattr(obj, "check", None)
    if check is not None:
        check(section)
    return obj


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
    return validate(cls(**kwargs), section)


def require(cond: bool, where: str, what: str, fix: str) -> None:
    """Raise a SpecError naming ``where`` unless ``cond`` holds."""
    if not cond:
        raise SpecError(what, where, fix)
