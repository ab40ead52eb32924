"""Reading a published wide table (one row per checkpoint) into results, through a mapping.

The mapping (TOML) names the checkpoint-id column, optionally the columns that become checkpoint tags,
and for each target ``metric.key`` either one column or the mean of a list of columns, with an
optional ``scale`` (a number, or ``"percent"`` for × 0.01)::

    checkpoint = "model"
    tags = ["category"]

    [keys]
    "shape_bias.shape_bias" = { column = "shape bias", scale = "percent" }
    "ood.id" = { mean = ["IN-val", "IN-v2", "IN-ReaL"], scale = "percent" }
    "ood.adversarial" = "PGD"          # shorthand: one column, no scale

Optional entries: ``notes = ["…"]`` — what a reader of a report built on the table must know (its
known defects); they travel with the provenance and a report lists them. ``[checkpoint_tags]`` —
tags the table itself lacks, per checkpoint id (``"ckpt" = { category = "…" }``), beside those of the
``tags`` columns; with ``only_tagged = true`` only the rows listed there are imported (the others are
named in ``ImportedTable.left_out``).

Columns the mapping does not mention are listed (``ImportedTable.unused``), never guessed. An empty
cell leaves that key out for that checkpoint (a mean needs all its columns); a cell that is not a
number is an error naming the row and column. The provenance — the source name, the file's name and
sha256, the mapping and its sha256, the preset's name and the notes — travels with every imported
result.

Presets: mappings shipped in ``biasbench/reports/presets/NAME.toml`` for published tables
(:func:`presets`, :func:`preset_text`; ``bench import TABLE --preset NAME``), e.g. ``gavrikov2024``.
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from biasbench.core import names
from biasbench.core.errors import InputError
from biasbench.core.plugins import suggest
from biasbench.metrics.discovery import all_metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class TableImportError(InputError):
    """The table or the mapping cannot be used; the message says which part and why."""


PRESETS_DIR = Path(__file__).parent / "presets"
MAPPING_ENTRIES = ("checkpoint", "tags", "keys", "notes", "checkpoint_tags", "only_tagged")


@dataclass(frozen=True)
class Target:
    metric: str
    key: str
    columns: tuple[str, ...]
    scale: float = 1.0


@dataclass(frozen=True)
class MappingSpec:
    """A parsed mapping: the checkpoint column, the tag columns, the targets, the tags declared per
    checkpoint, whether only those checkpoints are imported, and the notes."""

    checkpoint: str
    tags: list[str]
    targets: list[Target]
    checkpoint_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    only_tagged: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportedTable:
    """``results``: columns checkpoint, metric, key, value; ``tags``: per checkpoint; ``unused``: the
    table's columns the mapping does not mention; ``provenance``: source, file, sha256, mapping (and
    ``preset``, ``notes`` where given); ``left_out``: rows not imported (``only_tagged``); ``absent``:
    checkpoints the mapping's [checkpoint_tags] lists that the table does not have."""

    results: pd.DataFrame
    tags: dict[str, dict[str, str]]
    unused: list[str]
    skipped: int  # cells left out because a column was empty
    provenance: dict[str, Any] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)  # [checkpoint_tags] ids the table does not have


def presets() -> list[str]:
    """The names of the shipped mapping presets."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def preset_text(name: str) -> str:
    """The mapping (TOML text) of the shipped preset ``name``; an unknown name is an error that lists
    the known ones."""
    known = presets()
    if name not in known:
        raise TableImportError(
            f"unknown preset {name[:80]!r} (known: {', '.join(known) or 'none'}){suggest(name, known)}"
        )
    return (PRESETS_DIR / f"{name}.toml").read_text(encoding="utf-8")


def _scale(value: Any, target: str) -> float:
    if value is None:
        return 1.0
    if value == "percent":
        return 0.01
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value != 0
    ):
        return float(value)
    raise TableImportError(f'mapping: {target}: scale must be a non-zero number or "percent", got {value!r}')


def parse_mapping(text: str) -> tuple[str, list[str], list[Target]]:
    """The checkpoint column, the tag columns and the targets of a mapping (TOML text)."""
    spec = read_mapping(text)
    return spec.checkpoint, spec.tags, spec.targets


def _text_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    if names.CONTROL_RE.search(value) or len(value) > 200:
        return "has control characters or is longer than 200 characters"
    return None


def _checkpoint_tags(doc: dict[str, Any], tag_cols: list[str]) -> dict[str, dict[str, str]]:
    table = doc.get("checkpoint_tags", {})
    if not isinstance(table, dict):
        raise TableImportError(
            'mapping: [checkpoint_tags] must be a table of "<checkpoint>" = { tag = "value" }'
        )
    out = {}
    for cid, tags in table.items():
        why = names.id_problem(cid)
        if why:
            raise TableImportError(f"mapping: [checkpoint_tags] {cid[:60]!r}: not a checkpoint id ({why})")
        if not isinstance(tags, dict) or not tags:
            raise TableImportError(f'mapping: [checkpoint_tags] {cid!r}: give a table {{ tag = "value", … }}')
        for k, v in tags.items():
            why = _text_problem(k) or _text_problem(v)
            if why:
                raise TableImportError(
                    f"mapping: [checkpoint_tags] {cid!r}, tag {k[:60]!r}: the name or value {why}"
                )
            if k in tag_cols:
                raise TableImportError(
                    f"mapping: [checkpoint_tags] {cid!r}: tag {k!r} is also a `tags` column; give it one way"
                )
        out[cid] = {k: v.strip() for k, v in tags.items()}
    return out


def read_mapping(text: str) -> MappingSpec:
    """A mapping (TOML text), checked: every entry of :class:`MappingSpec`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TableImportError(f"mapping: not valid TOML: {e}") from e
    unknown = sorted(set(doc) - set(MAPPING_ENTRIES))
    if unknown:
        raise TableImportError(
            f"mapping: unknown entries {', '.join(unknown)} (known: {', '.join(MAPPING_ENTRIES)})"
        )
    ckpt = doc.get("checkpoint")
    if not isinstance(ckpt, str) or not ckpt:
        raise TableImportError('mapping: `checkpoint = "<column>"` (the checkpoint-id column) is required')
    tags = doc.get("tags", [])
    if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise TableImportError("mapping: `tags` must be a list of column names")
    keys = doc.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise TableImportError(
            'mapping: a [keys] table is required ("metric.key" = "column" or {column/mean, scale})'
        )
    targets = []
    installed = all_metrics()
    for name, spec in keys.items():
        metric, dot, key = name.partition(".")
        if not (dot and metric and key):
            raise TableImportError(f"mapping: target {name!r} must be metric.key (e.g. ood.id)")
        why = names.metric_name_problem(metric) or names.key_problem(key)
        if why:
            raise TableImportError(f"mapping: target {name[:80]!r}: {why}")
        if metric not in installed:
            raise TableImportError(
                f"mapping: target {name[:80]!r}: {metric!r} is not an installed metric "
                f"(installed: {', '.join(sorted(installed))}){suggest(metric, sorted(installed))}"
            )
        if isinstance(spec, str):
            spec = {"column": spec}
        if not isinstance(spec, dict):
            raise TableImportError(f"mapping: {name}: a column name or a table {{column/mean, scale}}")
        extra = sorted(set(spec) - {"column", "mean", "scale"})
        if extra or ("column" in spec) == ("mean" in spec):
            raise TableImportError(
                f"mapping: {name}: give exactly one of `column` or `mean` (and optionally `scale`)"
            )
        cols = [spec["column"]] if "column" in spec else spec["mean"]
        if not (isinstance(cols, list) and cols and all(isinstance(c, str) for c in cols)):
            raise TableImportError(f"mapping: {name}: `mean` must be a non-empty list of column names")
        targets.append(Target(metric, key, tuple(cols), _scale(spec.get("scale"), name)))
    notes = doc.get("notes", [])
    if not (isinstance(notes, list) and all(isinstance(n, str) and n.strip() for n in notes)):
        raise TableImportError("mapping: `notes` must be a list of non-empty strings")
    if any(names.CONTROL_RE.search(n) for n in notes):
        raise TableImportError("mapping: a note has control characters")
    only_tagged = doc.get("only_tagged", False)
    if not isinstance(only_tagged, bool):
        raise TableImportError("mapping: `only_tagged` must be true or false")
    ckpt_tags = _checkpoint_tags(doc, tags)
    if only_tagged and not ckpt_tags:
        raise TableImportError("mapping: `only_tagged = true` needs a [checkpoint_tags] table")
    return MappingSpec(ckpt, tags, targets, ckpt_tags, only_tagged, [n.strip() for n in notes])


def read_table(
    csv_bytes: bytes, mapping_text: str, *, source: str, file_name: str, preset: str | None = None
) -> ImportedTable:
    """The imported results of one wide CSV table under ``mapping_text`` (``preset``: the shipped
    preset it is, recorded in the provenance)."""
    if not source or any(c in source for c in "[]=,"):
        raise TableImportError(f"source name {source!r}: give a short name without brackets, '=' or ','")
    spec = read_mapping(mapping_text)
    ckpt_col, tag_cols, targets = spec.checkpoint, spec.tags, spec.targets
    try:
        table = pd.read_csv(io.BytesIO(csv_bytes), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise TableImportError(f"{file_name}: not a readable CSV table: {e}") from e
    left_out: list[str] = []
    absent: list[str] = []
    if ckpt_col in table.columns:  # (a missing checkpoint column is reported below with the others)
        table, left_out, absent = _select_rows(table, ckpt_col, spec)
    row_no = [int(i) + 2 for i in table.index]  # the file's row numbers (header: row 1)
    table = table.reset_index(drop=True)
    columns = list(table.columns)
    needed = [ckpt_col, *tag_cols, *(c for t in targets for c in t.columns)]
    missing = [c for c in dict.fromkeys(needed) if c not in columns]
    if missing:
        raise TableImportError(
            f"{file_name}: the mapping names column(s) {', '.join(map(repr, missing))} that the table does not "
            f"have; its columns: {', '.join(map(repr, columns))}"
        )
    ids = table[ckpt_col].str.strip()
    if (ids == "").any():
        raise TableImportError(
            f"{file_name}: row {row_no[int((ids == '').to_numpy().argmax())]} has no checkpoint id"
        )
    for i, cid in enumerate(ids):
        why = names.id_problem(cid)
        if why:
            raise TableImportError(
                f"{file_name}: row {row_no[i]}: checkpoint id {cid[:60]!r} is not one a registry allows ({why})"
            )
    tag_problem = next(
        (
            (i, c)
            for i in range(len(table))
            for c in tag_cols
            if names.CONTROL_RE.search(table.at[i, c]) or len(table.at[i, c]) > 200
        ),
        None,
    )
    if tag_problem:
        i, c = tag_problem
        raise TableImportError(
            f"{file_name}: row {row_no[i]}, tag column {c!r}: {table.at[i, c][:60]!r} has control characters "
            "or is longer than 200 characters"
        )
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise TableImportError(f"{file_name}: checkpoint id(s) appear more than once: {', '.join(dup)}")
    rows, skipped = [], 0
    for i, ckpt in enumerate(ids):
        for t in targets:
            cells = [table.at[i, c].strip() for c in t.columns]
            if any(c == "" for c in cells):
                skipped += 1
                continue
            try:
                nums = [float(c) for c in cells]
            except ValueError:
                bad = next(c for c, v in zip(t.columns, cells, strict=True) if not _is_float(v))
                raise TableImportError(
                    f"{file_name}: row {row_no[i]} ({ckpt}), column {bad!r}: {table.at[i, bad]!r} is not a number"
                ) from None
            value = sum(nums) / len(nums) * t.scale
            if not math.isfinite(value):
                raise TableImportError(
                    f"{file_name}: row {row_no[i]} ({ckpt}): {t.metric}.{t.key} is not finite"
                )
            rows.append({"checkpoint": ckpt, "metric": t.metric, "key": t.key, "value": value})
    tags = {
        ckpt: {
            **{c: table.at[i, c].strip() for c in tag_cols if table.at[i, c].strip()},
            **spec.checkpoint_tags.get(ckpt, {}),
        }
        for i, ckpt in enumerate(ids)
    }
    unused = [c for c in columns if c not in set(needed)]
    provenance = {
        "source": source,
        "file": file_name,
        "sha256": hashlib.sha256(csv_bytes).hexdigest(),
        "mapping_sha256": hashlib.sha256(mapping_text.encode()).hexdigest(),
        "mapping": mapping_text,
    }
    if preset:
        provenance["preset"] = preset
    if spec.notes:
        provenance["notes"] = list(spec.notes)
    results = pd.DataFrame(rows, columns=["checkpoint", "metric", "key", "value"])
    return ImportedTable(results, tags, unused, skipped, provenance, left_out, absent)


def _select_rows(
    table: pd.DataFrame, ckpt_col: str, spec: MappingSpec
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The rows to import (``only_tagged``: those [checkpoint_tags] lists; original index kept), the
    ids left out, and the checkpoints [checkpoint_tags] lists that the table does not have."""
    ids = table[ckpt_col].str.strip()
    present = set(ids)
    absent = [c for c in spec.checkpoint_tags if c not in present]
    if not spec.only_tagged:
        return table, [], absent
    keep = ids.isin(set(spec.checkpoint_tags))
    return table[keep], [c for c in ids[~keep] if c], absent


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_files(
    csv_path: Path, mapping_path: Path | None, source: str | None, *, preset: str | None = None
) -> ImportedTable:
    """:func:`read_table` on files: the mapping is ``mapping_path`` or the shipped ``preset`` (exactly
    one of them); ``source`` defaults to the preset's name."""
    if (mapping_path is None) == (preset is None):
        raise TableImportError(
            "give a mapping (--mapping MAP.toml) or a preset (--preset NAME, known: "
            f"{', '.join(presets())}), not {'both' if preset else 'neither'}"
        )
    if preset is not None:
        mapping_text = preset_text(preset)
        source = source or preset
    if not source:
        raise TableImportError("give a --source name for the table (where it comes from)")
    for p in (csv_path, mapping_path):
        if p is not None and not p.is_file():
            raise TableImportError(f"no such file: {p}")
    if mapping_path is not None:
        try:
            mapping_text = mapping_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise TableImportError(
                f"{mapping_path}: the mapping is not UTF-8 text ({e.reason} at byte {e.start})"
            ) from e
    return read_table(
        csv_path.read_bytes(),
        mapping_text,
        source=source,
        file_name=csv_path.name,
        preset=preset,
    )
