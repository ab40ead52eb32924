"""Naming a metric's variants: one metric stored under several parameter sets is told apart by the
parameters that differ between the sets (``[dataset=imagenet-sample]``), never by a hash."""

from __future__ import annotations

import json
from typing import Any


def _format_value(v: Any) -> str:
    if v is None:
        return "default"
    if isinstance(v, (list, tuple)):
        return "+".join(_format_value(x) for x in v)
    return str(v)


def variant_labels(params: list[str | None]) -> dict[str | None, str]:
    """For the distinct parameter JSON strings of one metric: ``""`` when there is at most one
    measured set, else ``"[k=v,…]"`` over the parameters that differ (imported: ``None`` → ``""``)."""
    measured = sorted({p for p in params if p is not None})
    labels: dict[str | None, str] = {None: ""}
    if len(measured) <= 1:
        labels.update({p: "" for p in measured})
        return labels
    parsed = {p: json.loads(p) or {} for p in measured}
    names = sorted({k for d in parsed.values() for k in d})
    differing = [k for k in names if len({json.dumps(d.get(k), sort_keys=True) for d in parsed.values()}) > 1]
    for p, d in parsed.items():
        labels[p] = "[" + ",".join(f"{k}={_format_value(d.get(k))}" for k in differing) + "]"
    return labels
