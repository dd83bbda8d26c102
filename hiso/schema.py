"""Build and validate plain dataclasses from nested dicts (YAML), naming the offending key.

Constraints live in field metadata so that a config class reads as its own documentation:
``field(default=0.1, metadata={"gt": 0})``. Cross-field checks go in a ``check(self, path)``
method that raises :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, get_args, get_origin

from .errors import UserError

#: largest seed a config may give: seeds are mixed modulo 2**64 (``directions.derive``), so a
#: larger one would silently alias a smaller one; below 2**63 they also fit every generator a
#: seed reaches directly (``torch.Generator.manual_seed``, NumPy's SeedSequence)
SEED_MAX = 2**63 - 1

_BOUNDS = {
    "gt": (lambda v, b: v > b, ">"),
    "ge": (lambda v, b: v >= b, ">="),
    "lt": (lambda v, b: v < b, "<"),
    "le": (lambda v, b: v <= b, "<="),
}


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise UserError(f"{key}: {value!r} is not {_type_name(tp)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UserError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" as a string; accept numeric strings.
            try:
                value = float(value)
            except ValueError:
                raise UserError(f"{key}: expected a number, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            raise UserError(f"{key}: {value} is too large for a float") from None
        if not math.isfinite(value):
            # no setting means "unbounded" by infinity: a non-finite value is a typo or overflow
            raise UserError(f"{key}: must be a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def build(cls: type, data: Any, path: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``; every error names ``path.key``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise UserError(f"{_join(path, key)}: unknown key (known keys: {known})")
    kwargs = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{key}: required key is missing")
            continue
        value = _coerce(data[name], hints[name], key)
        for bound, (ok, sym) in _BOUNDS.items():
            if bound in f.metadata and value is not None and not ok(value, f.metadata[bound]):
                raise UserError(f"{key}: must be {sym} {f.metadata[bound]}, got {value!r}")
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) to plain dict/list/scalars, suitable for YAML and hashing."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
