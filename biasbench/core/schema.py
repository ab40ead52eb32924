"""Declared schemas: what users write (registry entries, download specs, import mappings) and metric
parameters are pydantic v2 models, each rule declared next to its field; this module turns a
validation error into one sentence naming the key.

Conventions every schema shares: :data:`STRICT` (no type coercion — ``"5"`` is not a number, ``True``
not an integer; an int is a float; unknown keys refused) and :func:`as_tuples` (values parsed from
JSON or TOML carry lists where a declaration says ``tuple``). A range is declared on the field,
``Annotated[float, Field(gt=0, le=1)]``; its error reads ``must be in (0, 1], got 1.5``
(:func:`range_text` reads the bounds back from the declaration).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Annotated, Any

import pydantic
from pydantic import ConfigDict
from pydantic.fields import FieldInfo

__all__ = [
    "STRICT",
    "as_tuples",
    "declared_at",
    "describe",
    "errors",
    "key_path",
    "range_text",
    "type_text",
    "value_at",
]

#: strict types (no string → number, no bool → int), unknown keys refused
STRICT = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)

_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_LENGTH_ERRORS = {"too_short", "too_long"}


def as_tuples(value: Any) -> Any:
    """``value`` with every list (at any depth, dict values included) turned into a tuple."""
    if isinstance(value, (list, tuple)):
        return tuple(as_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: as_tuples(v) for k, v in value.items()}
    return value


def _limits(hint: Any) -> dict[str, Any]:
    """The numeric bounds (``gt``/``ge``/``lt``/``le``) declared anywhere in the annotation ``hint``
    (through ``Optional``, tuple items and nested ``Annotated``)."""
    out: dict[str, Any] = {}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        out.update(_limits(args[0]))
        for meta in args[1:]:
            for c in meta.metadata if isinstance(meta, FieldInfo) else [meta]:
                out.update(
                    {k: getattr(c, k) for k in ("gt", "ge", "lt", "le") if getattr(c, k, None) is not None}
                )
        return out
    for a in args if origin is not None else ():
        if a is not Ellipsis:
            out.update(_limits(a))
    return out


def _num(x: Any) -> str:
    return (
        str(int(x))
        if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e15)
        else repr(x)
    )


def range_text(hint: Any) -> str | None:
    """``"in (0, 1]"``, ``"≥ 1"``, … for the bounds declared in ``hint``; None where it declares none."""
    lim = _limits(hint)
    lo = ("(", lim["gt"]) if "gt" in lim else ("[", lim["ge"]) if "ge" in lim else None
    hi = (")", lim["lt"]) if "lt" in lim else ("]", lim["le"]) if "le" in lim else None
    if lo and hi:
        return f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '≥'} {_num(lo[1])}"
    if hi:
        return f"{'<' if hi[0] == ')' else '≤'} {_num(hi[1])}"
    return None


def type_text(hint: Any) -> str:
    """An annotation as a reader writes it: ``float | None``, ``tuple[float, ...]`` (no ``Annotated``)."""
    bare = _strip(hint)
    return (
        bare.__name__
        if isinstance(bare, type)
        else str(bare).replace("typing.", "").replace("NoneType", "None")
    )


def _strip(hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _strip(args[0])
    if origin in (typing.Union, types.UnionType):
        out = _strip(args[0])
        for a in args[1:]:
            out = out | _strip(a)
        return out
    if origin is tuple and args:
        return tuple[tuple(_strip(a) if a is not Ellipsis else a for a in args)]  # type: ignore[misc]
    return hint


def key_path(loc: Iterable[str | int]) -> str:
    """A pydantic error location as the key a user wrote: ``preprocess.mean[2]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _item_hint(hint: Any, index: int | str) -> Any:
    """The declaration of item ``index`` of a tuple, or of a value of a dict, declared by ``hint``
    (through Optional/Annotated)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _item_hint(args[0], index)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if (found := _item_hint(a, index)) is not None:
                return found
        return None
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is tuple and args and isinstance(index, int):
        return args[0] if len(args) == 2 and args[1] is Ellipsis else args[min(index, len(args) - 1)]
    return None


def _model_of(hint: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(hint, type) and issubclass(hint, pydantic.BaseModel):
        return hint
    for a in typing.get_args(hint):
        if (m := _model_of(a)) is not None:
            return m
    return None


def _description(hint: Any) -> str | None:
    """The ``Field(description=…)`` of an ``Annotated`` declaration (through ``Optional``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return next((m.description for m in args[1:] if isinstance(m, FieldInfo) and m.description), None)
    if origin in (typing.Union, types.UnionType):
        return next((d for a in args if (d := _description(a)) is not None), None)
    return None


def declared_at(model: type[pydantic.BaseModel], loc: tuple[Any, ...]) -> tuple[int, Any, str | None]:
    """The innermost declaration along ``loc`` that names a key (a field, or a tuple item with its
    own ``Field(description=…)``): its depth in ``loc``, its annotation and its description (the
    words after ``must be``)."""
    depth, hint, desc = 0, None, None
    cur: Any = model
    for i, part in enumerate(loc):
        m = _model_of(cur)
        if isinstance(part, str) and m is not None and part in m.model_fields:
            fi = m.model_fields[part]
            cur = Annotated[(fi.annotation, *fi.metadata)] if fi.metadata else fi.annotation
            depth, hint, desc = i + 1, cur, fi.description or _description(fi.annotation)
        elif (item := _item_hint(cur, part)) is not None:
            cur = item
            if (d := _description(item)) is not None:
                depth, hint, desc = i + 1, item, d
        else:
            break
    return depth, hint, desc


def value_at(data: Any, loc: Iterable[Any]) -> Any:
    """The value at ``loc`` in ``data`` (None where there is none)."""
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def describe(
    error: Any,
    model: type[pydantic.BaseModel],
    data: Any,
    *,
    choices: str = "{key} {value!r} is not one of {choices}",
    key: str = "{}",
) -> str:
    """One pydantic error (an item of :func:`errors`) of ``model`` validating ``data`` as a sentence
    naming the key: ``num_classes must be a positive integer of at most 1000000, got 0`` (the field's
    ``Field(description=…)``), ``tau must be in (0, 1], got 1.5`` (its declared bounds), ``k = 'x' is
    not int | None`` (its type), ``unknown preprocess key 'size'; known keys: …``, ``missing required
    key 'id'``; ``choices``: the template for a value outside a ``Literal``; ``key``: how a key is
    written (```{}``` quotes it)."""
    kind, ctx, loc = error["type"], error.get("ctx") or {}, tuple(error["loc"])
    if not loc:
        if kind in ("model_type", "dict_type"):
            return f"must be a table ({', '.join(model.model_fields)}), got {data!r:.80}"
        return f"{error['msg'][0].lower()}{error['msg'][1:]}"
    if kind == "extra_forbidden":
        parent = _model_of(declared_at(model, loc[:-1])[1]) if loc[:-1] else model
        known = f"; known keys: {', '.join(parent.model_fields)}" if parent is not None else ""
        where = f"{key.format(key_path(loc[:-1]))} " if loc[:-1] else ""
        return f"unknown {where}key {loc[-1]!r}{known}"
    depth, hint, desc = declared_at(model, loc)
    named = loc[: depth or len(loc)]
    value = value_at(data, named)
    if kind == "missing" and len(named) == len(loc):
        return (
            f"{key.format(key_path(named))} must be {desc}, but it is missing"
            if desc
            else f"missing required key {key_path(named)!r}"
        )
    if kind == "finite_number":
        while named and isinstance(named[-1], int):
            named = named[:-1]
        return f"{key.format(key_path(named))} must be finite (no nan or inf), got {value_at(data, named)!r}"
    key = key.format(key_path(named))
    if desc is not None:
        return f"{key} must be {desc}, got {value!r}"
    if kind in _BOUND_ERRORS and (bounds := range_text(hint) if hint is not None else None):
        return f"{key} must be {bounds}{'' if len(named) == len(loc) else ' (each item)'}, got {value!r}"
    if kind in _LENGTH_ERRORS:
        n = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        most = "at least" if kind == "too_short" else "at most"
        return f"{key} must have {most} {n} item{'s' * (n != 1)}, got {value!r}"
    if kind == "literal_error":
        return choices.format(key=key, value=value, choices=ctx.get("expected", ""))
    if hint is not None and (kind.endswith("_type") or kind == "is_instance_of"):
        return f"{key} = {value!r} is not {type_text(hint)}"
    return f"{key} = {value!r}: {error['msg'][0].lower()}{error['msg'][1:]}"


_BRANCHES = {"int", "float", "str", "bool", "bytes", "tuple", "list", "dict", "none"}


def errors(exc: pydantic.ValidationError) -> list[Any]:
    """``exc.errors()`` with one error per key, unknown keys first, then the deepest: a union's branch names (``int``,
    ``tuple[…]``) dropped from the location and its branches' errors reduced to the one that got
    furthest (``weights = [{ sha = … }]`` is a part's unknown key, not "not a string")."""
    seen: dict[tuple[Any, ...], Any] = {}
    for e in exc.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p in _BRANCHES)))
        seen.setdefault(loc, {**e, "loc": loc})
    return sorted(seen.values(), key=lambda e: (e["type"] != "extra_forbidden", -len(e["loc"])))
