"""What a stored scalar key is to a report: a bias (a row), a generalization measure (a column), a
stability figure or a diagnostic — as the metric that writes it declares (``Metric.key_roles``); and the
figures it declares over its keys (``Metric.curves``).

Roles are found through the metric plugin registry, so a third-party metric joins the curated report by
declaring ``key_roles`` in its own module. Exact key names win over ``fnmatch`` patterns; among
patterns, the first one declared wins. A key no pattern matches, and every key of a metric that is not
installed (e.g. an imported table's), is ``diagnostic``.
"""

from __future__ import annotations

import fnmatch

from biasbench.core.plugins import PluginError
from biasbench.metrics.base import Curve, KeyGrid, KeyRole
from biasbench.metrics.discovery import METRICS

DIAGNOSTIC = KeyRole("diagnostic")


def _declared(metric: str) -> dict[str, KeyRole] | None:
    try:
        cls = METRICS.get(metric)  # the registry caches its lookups
    except PluginError:  # not installed (an imported table's metric name) or a plugin that fails to load
        return None
    return dict(cls.key_roles)


def key_role(metric: str, key: str) -> KeyRole:
    """The role ``metric`` declares for ``key`` (``diagnostic`` when it declares none)."""
    roles = _declared(metric)
    if not roles:
        return DIAGNOSTIC
    if key in roles:
        return roles[key]
    for pattern, role in roles.items():
        if fnmatch.fnmatchcase(key, pattern):
            return role
    return DIAGNOSTIC


def declared_position(metric: str, key: str) -> int:
    """Where ``key``'s role is declared among its metric's ``key_roles`` (the report's order); undeclared
    keys come last."""
    roles = _declared(metric) or {}
    for i, pattern in enumerate(roles):
        if key == pattern or fnmatch.fnmatchcase(key, pattern):
            return i
    return len(roles)


def declared_curves(metrics: list[str]) -> list[tuple[str, Curve | KeyGrid]]:
    """The figures the installed ``metrics`` declare (``Metric.curves``), in the order given."""
    out = []
    for metric in metrics:
        try:
            cls = METRICS.get(metric)
        except PluginError:
            continue
        out += [(metric, c) for c in cls.curves]
    return out
