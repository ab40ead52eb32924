"""Label spaces as data: what a model's logits index, and everything a metric needs to know about it.

A :class:`LabelSpace` holds

* ``num_classes`` and the class names (and ids, e.g. WordNet ids) — loaded lazily;
* ``datasets``: the default dataset of each *purpose* a metric may ask for (``clean``,
  ``cue-conflict``, ``edges``, ``filled-silhouettes``, ``stylized-16`` …), so a metric asks
  "the clean set of this label space" instead of switching on its name;
* ``decisions``: how this space's probabilities map onto another space's classes (ImageNet-1k onto
  the 16 entry-level categories: one group of indices per category, averaged);
* ``subsets``: named index subsets (ImageNet-A's and ImageNet-R's 200 classes);
* ``multi_labels``: named multi-label tables (ImageNet ReaL);
* ``defaults``: per-metric parameter defaults that depend on the kind of data (SIS's τ at 224 px vs
  on 32-px images, the demo world's image budget) — ``space.default("sis", "tau", 0.99)``.

Every label space is a plugin of the entry-point group ``biasbench.labels`` (ours are declared in
``pyproject.toml`` like a third party's), looked up with :func:`get`. Adding one is one file plus one
entry-point line. See ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from biasbench.core.errors import InputError, UnknownNameError
from biasbench.core.plugins import PluginError, PluginRegistry, Provider

#: Names of the label spaces this package ships (datasets declare theirs by name).
IMAGENET_1K = "imagenet-1k"
IMAGENET16 = "imagenet16"
DEMO_WORLD = "demo-world"
CIFAR10 = "cifar10"

GROUP = "biasbench.labels"


class UnknownLabelSpace(PluginError):
    """A label space that no installed plugin declares."""


@dataclass(frozen=True, eq=False)
class LabelSpace:
    """One label space (see the module docstring). Loaders are called once, on first use."""

    name: str
    num_classes: int
    description: str
    class_names_loader: Callable[[], Sequence[str]]
    class_ids_loader: Callable[[], Sequence[str]] | None = None
    datasets: Mapping[str, str] = field(default_factory=dict)
    decisions: Mapping[str, Callable[[], Sequence[Sequence[int]]]] = field(default_factory=dict)
    subsets: Mapping[str, Callable[[], Sequence[int]]] = field(default_factory=dict)
    multi_labels: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: bumped when ``defaults`` change what a job computes (image counts, grids); part of every job's
    #: content key when set, so a result computed under the former defaults is not taken for a current
    #: one (``""``: not in the key — label spaces whose defaults never changed keep their hashes)
    defaults_version: str = ""
    #: what a report over this label space's checkpoints must say about a ``metric.key`` (e.g. that an
    #: aggregate is correlated with a bias by construction); shown on the page and in the verdict
    caveats: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        names = tuple(str(n) for n in self.class_names_loader())
        if len(names) != self.num_classes:
            raise InputError(
                f"label space {self.name!r}: {len(names)} class names for {self.num_classes} classes"
            )
        return names

    @cached_property
    def class_ids(self) -> tuple[str, ...]:
        """Stable class identifiers (ImageNet: WordNet ids); the class names where there are none."""
        return tuple(str(i) for i in self.class_ids_loader()) if self.class_ids_loader else self.class_names

    def dataset(self, purpose: str) -> str | None:
        """The default dataset of ``purpose`` in this label space, or ``None`` if it has none."""
        return self.datasets.get(purpose)

    def decision_groups(self, target: str) -> tuple[tuple[int, ...], ...] | None:
        """Groups of this space's class indices, one per class of label space ``target`` (in its
        class order), or ``None`` if there is no decision rule onto ``target``."""
        loader = self.decisions.get(target)
        return None if loader is None else tuple(tuple(int(i) for i in g) for g in loader())

    def subset(self, name: str) -> tuple[int, ...]:
        if name not in self.subsets:
            raise UnknownNameError(
                f"label space {self.name!r} has no subset {name!r}; known: {', '.join(self.subsets) or 'none'}"
            )
        return tuple(int(i) for i in self.subsets[name]())

    def multi_label(self, name: str) -> Any:
        if name not in self.multi_labels:
            raise UnknownNameError(
                f"label space {self.name!r} has no multi-label table {name!r}; known: {', '.join(self.multi_labels) or 'none'}"
            )
        return self.multi_labels[name]()

    def default(self, metric: str, key: str, fallback: Any = None) -> Any:
        """The default of ``metric``'s parameter ``key`` for data of this label space."""
        return self.defaults.get(metric, {}).get(key, fallback)


def _check(name: str, obj: Any, p: Provider) -> LabelSpace:
    if not isinstance(obj, LabelSpace):
        raise PluginError(
            f"label space {name!r} from {p.provider}: {p.target} is a {type(obj).__name__}, not a LabelSpace"
        )
    if obj.name != name:
        raise PluginError(
            f"label space entry point {name!r} from {p.provider} points to {p.target}, named {obj.name!r}"
        )
    return obj


#: Every installed label space.
LABEL_SPACES: PluginRegistry[LabelSpace] = PluginRegistry("label space", GROUP, _check)


def get(name: str) -> LabelSpace:
    """The label space called ``name`` (an :class:`UnknownLabelSpace` error lists the known ones)."""
    try:
        return LABEL_SPACES.get(name)
    except PluginError as e:
        if name in LABEL_SPACES.providers():
            raise
        raise UnknownLabelSpace(str(e)) from None


def find(name: str) -> LabelSpace | None:
    """The label space called ``name``, or ``None`` if none is installed."""
    return LABEL_SPACES.get(name) if name in LABEL_SPACES.providers() else None


def num_classes(name: str) -> int | None:
    """Class count of label space ``name``, or ``None`` if no installed plugin declares it."""
    space = find(name)
    return None if space is None else space.num_classes


def known() -> list[str]:
    return LABEL_SPACES.names()
