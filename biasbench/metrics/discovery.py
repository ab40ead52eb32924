"""Metric discovery through the entry-point group ``biasbench.metrics``.

Our own metrics register exactly like third-party ones (``pyproject.toml``). During development a
plugin can also be named in the environment variable ``BIASBENCH_METRICS`` as
``module:Class[,module:Class…]`` without installing it. Two providers of the same metric name are an
error that names both. A plugin that fails to import is reported with its provider and the error.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points

from biasbench.metrics.base import Metric

GROUP = "biasbench.metrics"
ENV_VAR = "BIASBENCH_METRICS"


class PluginError(RuntimeError):
    """A metric plugin is broken, duplicated or unknown."""


@dataclass(frozen=True)
class MetricProvider:
    name: str
    target: str  # "module:Class"
    provider: str  # the distribution (package) that declares it, or the env var

    def load(self) -> type[Metric]:
        module, _, attr = self.target.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as e:  # noqa: BLE001 - any import error of a plugin is reported the same way
            raise PluginError(f"metric {self.name!r} from {self.provider} ({self.target}) failed to load: {e!r}") from e
        if not (isinstance(obj, type) and issubclass(obj, Metric)):
            raise PluginError(f"metric {self.name!r} from {self.provider}: {self.target} is not a Metric subclass")
        if obj.name != self.name:
            raise PluginError(
                f"metric entry point {self.name!r} from {self.provider} points to {self.target}, whose name is {obj.name!r}"
            )
        return obj


def providers() -> dict[str, MetricProvider]:
    """All declared metrics by name (nothing is imported yet)."""
    found: dict[str, MetricProvider] = {}

    def add(p: MetricProvider) -> None:
        if p.name in found and found[p.name].target != p.target:
            other = found[p.name]
            raise PluginError(
                f"metric name {p.name!r} is provided twice: by {other.provider} ({other.target}) and by "
                f"{p.provider} ({p.target}); uninstall one of them"
            )
        found[p.name] = p

    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        provider = f"package {dist.name}" if dist is not None else "an installed package"
        add(MetricProvider(ep.name, ep.value, provider))
    for item in filter(None, (s.strip() for s in os.environ.get(ENV_VAR, "").split(","))):
        module, _, attr = item.partition(":")
        if not attr:
            raise PluginError(f"{ENV_VAR}: {item!r} is not of the form module:Class")
        cls_name = _metric_name_of(item)
        add(MetricProvider(cls_name, item, f"${ENV_VAR}"))
    return found


def _metric_name_of(target: str) -> str:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    name = getattr(obj, "name", "")
    if not name:
        raise PluginError(f"{ENV_VAR}: {target} has no metric name")
    return name


def load_metric(name: str) -> type[Metric]:
    provs = providers()
    if name not in provs:
        raise PluginError(f"unknown metric {name!r}; installed: {', '.join(sorted(provs)) or 'none'}")
    return provs[name].load()


def all_metrics() -> dict[str, type[Metric]]:
    return {name: p.load() for name, p in sorted(providers().items())}
