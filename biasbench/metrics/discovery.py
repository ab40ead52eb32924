"""Metric discovery: the entry-point group ``biasbench.metrics`` through the shared plugin registry.

Our own metrics register exactly like third-party ones (``pyproject.toml``). During development a
plugin can also be named in the environment variable ``BIASBENCH_METRICS`` as
``module:Class[,module:Class…]`` without installing it. Two providers of the same metric name are an
error that names both; a plugin that fails to import is reported with its provider and the error
(:mod:`biasbench.core.plugins`).
"""

from __future__ import annotations

from typing import Any

from biasbench.core.names import metric_name_problem
from biasbench.core.plugins import PluginError, PluginRegistry, Provider
from biasbench.metrics.base import Metric

GROUP = "biasbench.metrics"
ENV_VAR = "BIASBENCH_METRICS"

__all__ = ["ENV_VAR", "GROUP", "METRICS", "PluginError", "all_metrics", "load_metric", "providers"]


def _check(name: str, obj: Any, p: Provider) -> type[Metric]:
    if not (isinstance(obj, type) and issubclass(obj, Metric)):
        raise PluginError(f"metric {name!r} from {p.provider}: {p.target} is not a Metric subclass")
    if obj.name != name:
        raise PluginError(
            f"metric entry point {name!r} from {p.provider} points to {p.target}, whose name is {obj.name!r}"
        )
    problem = metric_name_problem(name)
    if problem:
        raise PluginError(f"metric name {name!r} from {p.provider} ({p.target}) is invalid: {problem}")
    return obj


def _env_name(obj: Any) -> str:
    name = getattr(obj, "name", "")
    if not name:
        raise PluginError(f"{ENV_VAR}: {obj!r} has no metric name")
    return str(name)


#: Every installed metric plugin.
METRICS: PluginRegistry[type[Metric]] = PluginRegistry(
    "metric", GROUP, _check, env_var=ENV_VAR, env_name=_env_name
)


def providers() -> dict[str, Provider]:
    """All declared metrics by name (entry points and ``$BIASBENCH_METRICS``)."""
    return METRICS.providers()


def load_metric(name: str) -> type[Metric]:
    return METRICS.get(name)


def all_metrics() -> dict[str, type[Metric]]:
    return METRICS.all()
