"""Which datasets can be downloaded: the download specs the dataset registry's entries declare
(``DatasetEntry.download``, ``DatasetFamily.download``), by name - ours and third parties' alike."""

from __future__ import annotations

from biasbench.core.errors import UnknownNameError
from biasbench.core.plugins import PluginError, suggest
from biasbench.harness.datasets import catalog
from biasbench.harness.datasets.download_spec import DownloadSpec


def download_specs() -> dict[str, DownloadSpec]:
    """Every download spec that an installed dataset declares, by its name (the dataset's, or a part's)."""
    out: dict[str, DownloadSpec] = {}
    owner: dict[str, str] = {}
    for name, dataset in catalog.families().items():
        for spec in catalog.download_specs_of(dataset):
            if spec.name in out:
                raise PluginError(
                    f"two datasets declare a download named {spec.name!r}: {owner[spec.name]} and {name}"
                )
            out[spec.name], owner[spec.name] = spec, name
    return dict(sorted(out.items()))


def download_parts(target: str) -> list[str]:
    """The downloads whose archives are merged parts of the dataset folder ``target`` (ImageNet-C)."""
    return sorted(
        s.name
        for s in download_specs().values()
        if s.target == target and s.archive is not None and s.archive.merge
    )


def get_download_spec(name: str) -> DownloadSpec:
    """The download spec called ``name``, or for a family member (``cifar10/test``) its family's one
    download; an :class:`UnknownNameError` says why there is none: the dataset (or the member's family)
    is fetched in parts (their names), cannot be downloaded (its ``how_to_get``), or is unknown."""
    specs = download_specs()
    if name in specs:
        return specs[name]
    family, sep, _ = name.partition("/")
    if sep and family in catalog.families():
        own = [s.name for s in catalog.download_specs_of(catalog.families()[family])]
        if len(own) == 1:
            return specs[own[0]]
        if own:
            raise UnknownNameError(
                f"{name!r} is a member of {family}, which is fetched in parts, one command each: "
                f"bench data fetch {' | '.join(own)}"
            )
    parts = download_parts(name)
    if parts:
        raise UnknownNameError(
            f"{name!r} is fetched in parts, one command each: bench data fetch {' | '.join(parts)}"
        )
    known = catalog.catalog()
    downloadable = f"downloadable: {', '.join(specs)}"
    if name in known or name in catalog.families():
        entry = known.get(name) or catalog.families()[name]
        raise UnknownNameError(
            f"{name} cannot be downloaded automatically. {entry.how_to_get or entry.description} "
            f"({downloadable})"
        )
    raise UnknownNameError(f"no download for dataset {name!r}{suggest(name, list(specs))}; {downloadable}")
