"""Selecting checkpoints by their tags: ``bench run resnet50-zoo --where category=adversarial_training``.

Each ``--where KEY=VALUE`` keeps the checkpoints whose tag ``KEY`` equals ``VALUE``; filters on
different keys must all hold, several values for one key are alternatives
(``--where norm=l2 --where eps=3 --where eps=5``: L2 models with ε 3 or 5). Values compare as text, and
as numbers when both sides are numbers (``eps=3`` matches ``eps = 3.0``).
"""

from __future__ import annotations

import math
from typing import Any

from biasbench.registry.registry_files import RegistryError
from biasbench.registry.spec import CheckpointSpec


def parse_where(items: list[str]) -> dict[str, list[str]]:
    """``["a=1", "a=2", "b=x"]`` -> ``{"a": ["1", "2"], "b": ["x"]}``; a filter without ``=`` is an error."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise RegistryError(f"--where {item!r}: expected KEY=VALUE, e.g. category=adversarial_training")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def tag_matches(tag: Any, wanted: str) -> bool:
    """Whether a tag value equals a ``--where`` value (as text, or as numbers when both are numbers)."""
    if tag is None:
        return False
    if str(tag) == wanted or (isinstance(tag, bool) and str(tag).lower() == wanted.lower()):
        return True
    a, b = _number(tag), _number(wanted)
    return a is not None and b is not None and a == b


def select(specs: list[CheckpointSpec], where: dict[str, list[str]]) -> list[CheckpointSpec]:
    """The specs matching every key of ``where`` (any of its values); none matching is an error that
    lists the values the tag takes."""
    if not where:
        return specs
    kept = [
        s for s in specs if all(any(tag_matches(s.tags.get(k), v) for v in vs) for k, vs in where.items())
    ]
    if not kept:
        hints = []
        for k in where:
            seen = sorted({str(s.tags[k]) for s in specs if k in s.tags})
            hints.append(f"{k}: {', '.join(seen[:20])}" if seen else f"no checkpoint has the tag {k!r}")
        raise RegistryError(
            f"no checkpoint matches --where {' '.join(f'{k}={v}' for k, vs in where.items() for v in vs)} "
            f"(of {len(specs)}; values: {'; '.join(hints)})"
        )
    return kept
