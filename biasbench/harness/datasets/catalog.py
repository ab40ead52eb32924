"""The dataset registry: every dataset a metric can ask for, by name.

An entry knows how to fingerprint its content cheaply (``manifest_hash``, part of every result's
``config_hash``) and how to load it as an :class:`~biasbench.metrics.base.ImageSet`. Names are
unique: registering a name twice is an error naming both places.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from biasbench.metrics.base import ImageSet, Preprocess


class DatasetMissing(FileNotFoundError):
    """A dataset is not where it was looked for; the message says where and how to get it."""


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    label_space: str
    # (data_root, preprocess) -> content hash; raises DatasetMissing
    manifest: Callable[[Path, Preprocess | None], str]
    # (data_root, preprocess, cache_dir) -> ImageSet; raises DatasetMissing
    load: Callable[[Path, Preprocess | None, Path], ImageSet]
    as_stored: bool = False  # True: images used as stored, preprocess ignored
    how_to_get: str = ""
    location: Callable[[Path], Path] | None = None
    registered_at: str = ""


_CATALOG: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    import inspect

    frame = inspect.stack()[1]
    where = f"{frame.filename}:{frame.lineno}"
    if entry.name in _CATALOG:
        raise ValueError(
            f"dataset {entry.name!r} registered twice: at {_CATALOG[entry.name].registered_at} and at {where}"
        )
    _CATALOG[entry.name] = DatasetEntry(**{**entry.__dict__, "registered_at": where})
    return _CATALOG[entry.name]


def catalog() -> dict[str, DatasetEntry]:
    """All registered datasets (imports the modules that register them)."""
    from biasbench.harness.datasets import builtin  # noqa: F401  (registers on import)

    return dict(_CATALOG)


def get(name: str) -> DatasetEntry:
    entries = catalog()
    if name not in entries:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name]


def default_data_root() -> Path:
    return Path(os.environ.get("BIASBENCH_DATA", "./data")).expanduser()


def default_cache_dir() -> Path:
    base = os.environ.get("BIASBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "biasbench"
    )
    return Path(base)
