"""The dataset registry: every dataset a metric can ask for, by name (entry-point group ``biasbench.datasets``).

A plugin of the group is either

* a :class:`DatasetEntry` — one dataset: how to fingerprint its content cheaply (``manifest``, part of
  every result's ``config_hash``), how to load it as an :class:`~biasbench.core.images.ImageSet`, where
  it is looked for, and how to get it - in words (``how_to_get``) and, where it can be downloaded, as
  a :class:`~biasbench.harness.datasets.download_spec.DownloadSpec` (``download``: ``bench data fetch
  NAME`` then fetches and verifies it); or
* a :class:`DatasetFamily` — several datasets under one name, looked up as ``<family>/<member>``
  (the demo world's splits: ``demo-world/test``, ``demo-world/gaussian_blur-3`` …) and listed as one
  row.

Ours are declared in ``pyproject.toml`` exactly like a third party's::

    [project.entry-points."biasbench.datasets"]
    my-set = "my_package.my_datasets:MY_SET"

During development a plugin can also be named in the environment variable ``BIASBENCH_DATASETS`` as
``module:attr[,module:attr…]`` without installing it (like ``BIASBENCH_METRICS`` for metrics). A name
declared twice is an error naming both providers (:mod:`biasbench.core.plugins`).

Besides the registered names, :func:`get` takes ``folder:PATH[#labels=SPACE]``: any ImageFolder of
photos, ``PATH/<class>/<image>`` (:mod:`biasbench.harness.datasets.folder_dataset`, named here by its
target like an entry point, so this registry imports no dataset module). See ``docs/architecture.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biasbench.core.errors import NotFoundError
from biasbench.core.images import ImageSet
from biasbench.core.plugins import PluginError, PluginRegistry, Provider, import_target, suggest
from biasbench.core.preprocess import Preprocess
from biasbench.core.streaming import LoadOptions
from biasbench.harness.datasets.download_spec import DownloadSpec

GROUP = "biasbench.datasets"
ENV_VAR = "BIASBENCH_DATASETS"

#: ``folder:PATH`` datasets: the prefix and the builder of their entries (``module:attr``, imported on
#: first use, like an entry point's target)
FOLDER_PREFIX = "folder:"
FOLDER_ENTRY = "biasbench.harness.datasets.folder_dataset:folder_entry"
FOLDER_HINT = "biasbench.harness.datasets.folder_dataset:HINT"


class DatasetMissing(NotFoundError):
    """A dataset is not where it was looked for; the message says where and how to get it."""


class UnknownDataset(PluginError, KeyError):
    """No installed dataset plugin has this name (the message lists the known ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


#: A dataset's download: one :class:`DownloadSpec` named like the dataset, several (the parts of one
#: folder, each fetched by its own name: ImageNet-C's five tars), or a function returning either, called
#: when the download is first asked for (so that listing datasets reads no spec).
Download = DownloadSpec | Sequence[DownloadSpec] | Callable[[], "DownloadSpec | Sequence[DownloadSpec]"]


def download_specs_of(dataset: DatasetEntry | DatasetFamily) -> tuple[DownloadSpec, ...]:
    """The download specs a dataset declares (none: it cannot be downloaded)."""
    d = dataset.download
    if d is None:
        return ()
    if callable(d) and not isinstance(d, DownloadSpec):
        d = d()
    specs = (d,) if isinstance(d, DownloadSpec) else tuple(d)
    for s in specs:
        if not isinstance(s, DownloadSpec):
            raise PluginError(f"dataset {dataset.name!r}: its download {s!r:.80} is not a DownloadSpec")
    return specs


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset. ``manifest(data_root, preprocess)`` -> content hash and ``load(data_root,
    preprocess, cache_dir)`` -> ImageSet both raise :class:`DatasetMissing` when it is absent; a load
    that also takes ``options`` (:class:`~biasbench.core.streaming.LoadOptions`) gets the loader
    options through :meth:`load_set`.
    ``as_stored``: images are used as stored (the preprocessing is ignored). ``location(data_root)``:
    where it is looked for (``None``: generated, nothing on disk). ``published_size``: the images in the
    published set, by which ``bench run --dry-run`` sizes a set that is not on disk yet (``None``:
    unknown). ``download``: how ``bench data fetch`` gets it (:data:`Download`; ``None``: it cannot)."""

    name: str
    description: str
    label_space: str
    manifest: Callable[[Path, Preprocess | None], str]
    load: Callable[[Path, Preprocess | None, Path], ImageSet]
    as_stored: bool = False
    how_to_get: str = ""
    location: Callable[[Path], Path] | None = None
    published_size: int | None = None
    download: Download | None = None

    def load_set(
        self,
        data_root: Path,
        preprocess: Preprocess | None,
        cache_dir: Path,
        options: LoadOptions | None = None,
    ) -> ImageSet:
        """``load(data_root, preprocess, cache_dir)``, with the loader ``options`` (the cache budget)
        passed explicitly to a load that takes them: one with a parameter named ``options``."""
        if options is not None and "options" in inspect.signature(self.load).parameters:
            return self.load(data_root, preprocess, cache_dir, options=options)  # type: ignore[call-arg]
        return self.load(data_root, preprocess, cache_dir)


@dataclass(frozen=True)
class DatasetFamily:
    """Datasets under one name, ``<name>/<member>``. ``members()`` -> ``{member: DatasetEntry}`` (each
    entry's own ``name`` is ``<name>/<member>``); ``summary`` describes the members in one line."""

    name: str
    description: str
    label_space: str
    members: Callable[[], Mapping[str, DatasetEntry]]
    summary: str = ""
    how_to_get: str = ""
    location: Callable[[Path], Path] | None = None
    download: Download | None = None


Dataset = DatasetEntry | DatasetFamily


def _check(name: str, obj: Any, p: Provider) -> Dataset:
    if not isinstance(obj, (DatasetEntry, DatasetFamily)):
        raise PluginError(
            f"dataset {name!r} from {p.provider}: {p.target} is a {type(obj).__name__}, not a DatasetEntry "
            "or DatasetFamily"
        )
    if obj.name != name:
        raise PluginError(
            f"dataset entry point {name!r} from {p.provider} points to {p.target}, named {obj.name!r}"
        )
    return obj


def _env_name(obj: Any) -> str:
    name = getattr(obj, "name", "")
    if not isinstance(obj, (DatasetEntry, DatasetFamily)) or not name:
        raise PluginError(f"${ENV_VAR}: {obj!r} is not a DatasetEntry or DatasetFamily with a name")
    return str(name)


#: Every installed dataset and dataset family (entry points, ``$BIASBENCH_DATASETS``, run time).
DATASETS: PluginRegistry[Dataset] = PluginRegistry(
    "dataset", GROUP, _check, env_var=ENV_VAR, env_name=_env_name
)


def folder_hint() -> str:
    """One line on the ``folder:PATH`` syntax, for ``bench ls datasets``."""
    return str(import_target(FOLDER_HINT))


def _members(family: DatasetFamily) -> Mapping[str, DatasetEntry]:
    members = family.members()
    for key, entry in members.items():
        if entry.name != f"{family.name}/{key}":
            raise PluginError(f"dataset family {family.name!r}: member {key!r} is named {entry.name!r}")
    return members


def get(name: str) -> DatasetEntry:
    """The dataset called ``name`` (``<family>/<member>`` for a member of a family; ``folder:PATH``
    for a folder of photos, see :mod:`biasbench.harness.datasets.folder_dataset`)."""
    if name.startswith(FOLDER_PREFIX):
        return import_target(FOLDER_ENTRY)(name)
    provs = DATASETS.providers()
    if name in provs:
        obj = DATASETS.load(provs[name])
        if isinstance(obj, DatasetFamily):
            examples = ", ".join(f"{name}/{m}" for m in list(_members(obj))[:3])
            raise UnknownDataset(
                f"{name!r} is a family of datasets; name one of its members, e.g. {examples}"
            )
        return obj
    family, sep, member = name.partition("/")
    if sep and family in provs:
        obj = DATASETS.load(provs[family])
        if isinstance(obj, DatasetFamily):
            members = _members(obj)
            if member in members:
                return members[member]
            raise UnknownDataset(
                f"unknown dataset {name!r}{suggest(member, list(members))}: the family {family!r} has "
                f"{', '.join(members)}"
            )
    names = sorted(catalog())  # every member, for the suggestion; the listing names families once
    listed = sorted(f"{n}/…" if isinstance(DATASETS.load(p), DatasetFamily) else n for n, p in provs.items())
    raise UnknownDataset(
        f"unknown dataset {name!r}{suggest(name, names)}; known: {', '.join(listed)} "
        "(`bench ls datasets` lists each family's members), or folder:PATH for a folder of photos"
    )


def families() -> dict[str, Dataset]:
    """Every installed dataset plugin by its registered name (families as one item), sorted."""
    return DATASETS.all()


def catalog() -> dict[str, DatasetEntry]:
    """Every dataset by name, family members included (``demo-world/test`` …), sorted."""
    out: dict[str, DatasetEntry] = {}
    for name, obj in families().items():
        if isinstance(obj, DatasetFamily):
            out.update({m.name: m for m in _members(obj).values()})
        else:
            out[name] = obj
    return dict(sorted(out.items()))
