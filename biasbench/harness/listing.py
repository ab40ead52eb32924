"""What ``bench ls`` lists, as data: blocks of entries, each a head of fields and detail lines.

The CLI only prints them (fields padded to the widest in their block, details indented); a notebook can
read them too. Checkpoints come grouped by their ``category`` tag, each with its weight source and how
its bytes are pinned; datasets with where each is looked for and whether it is there; weight sources
and label spaces with their providers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "Entry", "architectures", "checkpoints", "datasets", "label_spaces", "sources"]


@dataclass(frozen=True)
class Entry:
    head: tuple[str, ...]
    details: tuple[str, ...] = ()


@dataclass
class Block:
    """Entries under an optional ``title``, in groups (a group title, or ``None`` for none), and an
    optional ``footer`` line."""

    title: str | None = None
    groups: list[tuple[str | None, list[Entry]]] = field(default_factory=list)
    footer: str | None = None

    @property
    def entries(self) -> list[Entry]:
        return [e for _, members in self.groups for e in members]


def checkpoints(registries: Sequence[str] | None = None, lock_file: Path | None = None) -> list[Block]:
    """One block per registry (default: every shipped one), grouped by the ``category`` tag."""
    from biasbench.registry import lock
    from biasbench.registry.registry_files import resolve_targets, shipped_registries

    blocks = []
    for name in registries or sorted(shipped_registries()):
        specs = resolve_targets([name])
        groups: dict[str, list[Entry]] = {}
        for sp in specs:
            weights = sp.weights_text() or "(the architecture’s own pretrained weights)"
            details = [f"weights: {weights}"]
            tags = {k: v for k, v in sp.tags.items() if k != "category"}
            if tags:
                details.append("tags: " + " ".join(f"{k}={v}" for k, v in tags.items()))
            head = (sp.id, sp.arch, lock.source_kind(sp), lock.pin_status(sp, lock_file))
            groups.setdefault(str(sp.tags.get("category", "")), []).append(Entry(head, tuple(details)))
        title = f"{name}: {len(specs)} checkpoint{'s' * (len(specs) != 1)}"
        if len(groups) > 1 or "" not in groups:
            title += f" in {len(groups)} categor{'ies' if len(groups) != 1 else 'y'}"
        blocks.append(Block(title, [(f"{c} ({len(m)})" if c else None, m) for c, m in groups.items()]))
    return blocks


def datasets(root: Path) -> Block:
    """Every registered dataset (a family of splits is one entry): its label space, whether it is
    present under ``root`` (or generated), and where it is looked for."""
    from biasbench.harness.datasets.catalog import DATASETS, DatasetFamily

    entries = []
    for name, p in sorted(DATASETS.providers().items()):
        d = DATASETS.load(p)
        if d.location is None:
            status, where = "generated", ""
        else:
            loc = d.location(root)
            status, where = ("present" if loc.exists() else "missing"), f"at {loc}"
        details = [d.description + ("" if p.provider == "package biasbench" else f" (from {p.provider})")]
        if isinstance(d, DatasetFamily):
            details.append(f"splits: {d.summary}")
        shown = f"{name}/<split>" if isinstance(d, DatasetFamily) else name
        entries.append(Entry((shown, d.label_space, status, where), tuple(details)))
    footer = f"data root: {root.resolve()} (--data-root or $BIASBENCH_DATA)"
    return Block(None, [(None, entries)], footer)


def sources() -> Block:
    """Installed weight sources (the ``weights = "<scheme>:…"`` prefixes) and their providers."""
    from biasbench.registry.sources import SOURCES

    entries = []
    for name, p in sorted(SOURCES.providers().items()):
        src = SOURCES.load(p)
        alias = f" (alias of {src.scheme})" if name != src.scheme else ""
        entries.append(Entry((name, src.syntax + alias), (f"{src.summary()} [{p.provider}]",)))
    return Block(None, [(None, entries)])


def label_spaces() -> Block:
    """Installed label spaces: class count, default dataset per purpose, subsets, providers."""
    from biasbench.core.labels import LABEL_SPACES

    entries = []
    for name, p in sorted(LABEL_SPACES.providers().items()):
        space = LABEL_SPACES.load(p)
        details = [f"{space.description} [{p.provider}]"]
        if space.datasets:
            details.append("datasets: " + ", ".join(f"{k}={v}" for k, v in space.datasets.items()))
        extras = [
            *(f"subset {k}" for k in space.subsets),
            *(f"decisions onto {k}" for k in space.decisions),
            *(f"multi-label {k}" for k in space.multi_labels),
        ]
        if extras:
            details.append("; ".join(extras))
        entries.append(Entry((name, f"{space.num_classes} classes"), tuple(details)))
    return Block(None, [(None, entries)])


def architectures() -> Block:
    """Installed architecture families (the ``arch = "<family>:<name>"`` prefixes) and their providers."""
    from biasbench.registry.architectures import ARCHITECTURES

    entries = []
    for name, p in sorted(ARCHITECTURES.providers().items()):
        fam = ARCHITECTURES.load(p)
        entries.append(Entry((name, fam.syntax or f"{name}:<name>"), (f"{fam.summary()} [{p.provider}]",)))
    return Block(None, [(None, entries)])
