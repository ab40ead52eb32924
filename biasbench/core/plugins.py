"""One registry pattern for everything extensible: metrics, datasets, weight sources, label spaces.

A :class:`PluginRegistry` is a named set of plugins of one kind, filled from three places:

1. the entry-point group of its kind (``biasbench.metrics``, ``biasbench.datasets``,
   ``biasbench.sources``, ``biasbench.labels``); our own plugins are declared there too, in
   ``pyproject.toml``, exactly like a third party's::

       [project.entry-points."biasbench.datasets"]
       my-set = "my_package.my_module:MY_SET"

2. an environment variable (``BIASBENCH_METRICS`` …) naming ``module:attr`` targets, for plugins under
   development that are not installed;
3. :meth:`PluginRegistry.register` at run time (notebooks, tests).

Nothing is imported until a plugin is looked up (:meth:`get`) or listed (:meth:`all`). A name declared
by two providers is a :class:`PluginError` naming both; an unknown name is a :class:`PluginError`
listing the known ones; a plugin that fails to import or fails its kind's check is reported with its
provider and target. See ``docs/architecture.md`` (plugin groups).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from biasbench.core.errors import InputError, StateError

T = TypeVar("T")

#: The provider string of plugins registered with :meth:`PluginRegistry.register`.
RUNTIME = "register() at run time"


class PluginError(StateError):
    """A plugin is broken, declared twice, or unknown (the message names the provider)."""


@dataclass(frozen=True)
class Provider:
    """Where a plugin comes from: ``target`` (``module:attr``) declared by ``provider`` (a package,
    an environment variable, or a run-time registration)."""

    name: str
    target: str
    provider: str
    obj: Any = None  # set for run-time registrations (nothing to import)


@functools.lru_cache(maxsize=64)
def _declared(group: str, path: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """(name, target, provider) of the group's entry points. Scanning the installed distributions
    takes milliseconds, and lookups happen per dataset and per job, so the scan is kept per process
    and ``sys.path`` (a package installed into an already-scanned folder shows up in a new process)."""
    del path  # part of the cache key only
    out = []
    for ep in entry_points(group=group):
        dist = getattr(ep, "dist", None)
        out.append(
            (ep.name, ep.value, f"package {dist.name}" if dist is not None else "an installed package")
        )
    return tuple(out)


def declared_modules(group: str) -> list[str]:
    """The modules of the entry points declared in ``group``, in order (nothing is imported)."""
    return list(dict.fromkeys(value.partition(":")[0] for _, value, _ in _declared(group, tuple(sys.path))))


def import_target(target: str) -> Any:
    """The object named by ``module:dotted.attr``."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise InputError(f"{target!r} is not of the form module:attr")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring as one line (the summary a listing shows)."""
    text = (doc or "").strip().split("\n\n", 1)[0]
    return " ".join(text.split())


def suggest(name: str | list[str], choices: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean a, b?)`` for close matches (``difflib`` ratio ≥ ``cutoff``, up to three per
    name when ``name`` is a list of names), else ``""``."""
    pool = list(dict.fromkeys(choices))
    names = [name] if isinstance(name, str) else name
    close = dict.fromkeys(m for n in names for m in difflib.get_close_matches(n, pool, n=3, cutoff=cutoff))
    return f" (did you mean {', '.join(close)}?)" if close else ""


class PluginRegistry(Generic[T]):
    """Plugins of one ``kind`` (``"metric"``, ``"dataset"`` …) from the entry-point ``group``.

    ``check(name, obj, provider)`` validates a loaded object and returns the plugin (raise
    :class:`PluginError` with a clear message). ``env_name(target)`` gives the name of an
    environment-variable plugin (its declared ``name``); without it the variable is not read.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        check: Callable[[str, Any, Provider], T],
        *,
        env_var: str | None = None,
        env_name: Callable[[Any], str] | None = None,
    ) -> None:
        self.kind, self.group, self.env_var = kind, group, env_var
        self._check, self._env_name = check, env_name
        self._runtime: dict[str, Provider] = {}
        self._loaded: dict[tuple[str, str, str], T] = {}

    # -- declaring ---------------------------------------------------------------------------------
    def register(self, name: str, obj: Any, provider: str = RUNTIME, target: str | None = None) -> None:
        """Add a plugin object at run time (a duplicate name is an error naming both providers);
        ``target`` names where it lives (default: the object's module and qualified name)."""
        module = getattr(obj, "__module__", None) or type(obj).__module__
        p = Provider(name, target or f"{module}:{getattr(obj, '__qualname__', name)}", provider, obj)
        found = self.providers()
        if name in found:
            raise self._duplicate(found[name], p)
        self._runtime[name] = p

    def unregister(self, name: str) -> None:
        """Remove a run-time registration (no-op for other providers)."""
        self._runtime.pop(name, None)
        self._loaded = {k: v for k, v in self._loaded.items() if k[0] != name}

    def _duplicate(self, a: Provider, b: Provider) -> PluginError:
        return PluginError(
            f"{self.kind} name {a.name!r} is provided twice: by {a.provider} ({a.target}) and by "
            f"{b.provider} ({b.target}); uninstall or rename one of them"
        )

    def providers(self) -> dict[str, Provider]:
        """Every declared plugin by name (nothing is imported, except environment-variable targets,
        whose name is read from the object)."""
        found: dict[str, Provider] = {}

        def add(p: Provider) -> None:
            if p.name in found and found[p.name].target != p.target:
                raise self._duplicate(found[p.name], p)
            found[p.name] = p

        for name, value, provider in _declared(self.group, tuple(sys.path)):
            add(Provider(name, value, provider))
        if self.env_var and self._env_name is not None:
            for item in filter(None, (s.strip() for s in os.environ.get(self.env_var, "").split(","))):
                try:
                    obj = import_target(item)
                except Exception as e:  # noqa: BLE001 - any import error of a plugin is reported the same way
                    raise PluginError(f"${self.env_var}: cannot load {item!r}: {e!r}") from e
                add(Provider(self._env_name(obj), item, f"${self.env_var}"))
        for p in self._runtime.values():
            add(p)
        return found

    # -- looking up --------------------------------------------------------------------------------
    def load(self, p: Provider) -> T:
        key = (p.name, p.target, p.provider)
        if key not in self._loaded:
            if p.obj is not None:
                obj = p.obj
            else:
                try:
                    obj = import_target(p.target)
                except Exception as e:  # noqa: BLE001 - any import error of a plugin is reported the same way
                    raise PluginError(
                        f"{self.kind} {p.name!r} from {p.provider} ({p.target}) failed to load: {e!r}"
                    ) from e
            self._loaded[key] = self._check(p.name, obj, p)
        return self._loaded[key]

    def get(self, name: str) -> T:
        """The plugin called ``name``; unknown: a :class:`PluginError` listing the known names."""
        found = self.providers()
        if name not in found:
            raise PluginError(
                f"unknown {self.kind} {name!r}{suggest(name, sorted(found))}; "
                f"known: {', '.join(sorted(found)) or 'none'}"
            )
        return self.load(found[name])

    def names(self) -> list[str]:
        return sorted(self.providers())

    def all(self) -> dict[str, T]:
        """Every plugin, loaded, by name (sorted)."""
        return {name: self.load(p) for name, p in sorted(self.providers().items())}
