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
from typing import Annotated, Any, Literal

import pandas as pd
import pydantic
from pydantic import AfterValidator, BaseModel, Field

from biasbench.core import names, schema
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

#: free text of a mapping: not blank, no control characters
_TEXT = rf"^(?:[^{names.CONTROL_RE.pattern[1:-1]}])*\S(?:[^{names.CONTROL_RE.pattern[1:-1]}])*$"
Text = Annotated[str, Field(pattern=_TEXT, description="a non-empty string without control characters")]
Name = Annotated[
    str,
    Field(
        pattern=_TEXT,
        max_length=200,
        description="a non-empty string without control characters, at most 200 characters",
    ),
]


def _nonzero(x: float) -> float:
    if x == 0:
        raise ValueError("zero")
    return x


class Column(BaseModel):
    """``"metric.key" = { column = "…" | mean = ["…", …], scale = … }``."""

    model_config = schema.STRICT
    column: Annotated[str, Field(min_length=1, description="a column name")] | None = None
    mean: (
        Annotated[tuple[str, ...], Field(min_length=1, description="a non-empty list of column names")] | None
    ) = None
    scale: Annotated[
        Annotated[float, Field(allow_inf_nan=False), AfterValidator(_nonzero)] | Literal["percent"],
        Field(description='a non-zero number or "percent"'),
    ] = 1.0


class Mapping(BaseModel):
    """A mapping file (the module docstring)."""

    model_config = schema.STRICT
    checkpoint: Annotated[
        str, Field(min_length=1, description='the checkpoint-id column (checkpoint = "<column>")')
    ]
    tags: Annotated[tuple[str, ...], Field(description="a list of column names")] = ()
    keys: Annotated[
        dict[str, Any],
        Field(min_length=1, description='a table of "metric.key" = "column" or {column/mean, scale}'),
    ]
    notes: Annotated[
        tuple[Text, ...], Field(description="a list of non-empty strings without control characters")
    ] = ()
    checkpoint_tags: Annotated[
        dict[
            str, Annotated[dict[Name, Name], Field(min_length=1, description='a table { tag = "value", … }')]
        ],
        Field(description='a table of "<checkpoint>" = { tag = "value" }'),
    ] = {}
    only_tagged: Annotated[bool, Field(description="true or false")] = False


MAPPING_ENTRIES = tuple(Mapping.model_fields)


def _validated(model: type[BaseModel], table: Any, where: str) -> Any:
    try:
        return model.model_validate(schema.as_tuples(table))
    except pydantic.ValidationError as e:
        problem = schema.describe(schema.errors(e)[0], model, table, key="`{}`")
    raise TableImportError(f"{where}: {problem}")


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


def parse_mapping(text: str) -> tuple[str, list[str], list[Target]]:
    """The checkpoint column, the tag columns and the targets of a mapping (TOML text)."""
    spec = read_mapping(text)
    return spec.checkpoint, spec.tags, spec.targets


def _checkpoint_tags(
    table: dict[str, dict[str, str]], tag_cols: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    for cid, tags in table.items():
        why = names.id_problem(cid)
        if why:
            raise TableImportError(f"mapping: [checkpoint_tags] {cid[:60]!r}: not a checkpoint id ({why})")
        for k in tags:
            if k in tag_cols:
                raise TableImportError(
                    f"mapping: [checkpoint_tags] {cid!r}: tag {k!r} is also a `tags` column; give it one way"
                )
    return {cid: {k: v.strip() for k, v in tags.items()} for cid, tags in table.items()}


def read_mapping(text: str) -> MappingSpec:
    """A mapping (TOML text), checked: every entry of :class:`MappingSpec`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TableImportError(f"mapping: not valid TOML: {e}") from e
    m: Mapping = _validated(Mapping, doc, "mapping")
    targets = []
    installed = all_metrics()
    for name, spec in doc["keys"].items():
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
        col: Column = _validated(
            Column, {"column": spec} if isinstance(spec, str) else spec, f"mapping: {name}"
        )
        if (col.column is None) == (col.mean is None):
            raise TableImportError(
                f"mapping: {name}: give exactly one of `column` or `mean` (and optionally `scale`)"
            )
        scale = 0.01 if col.scale == "percent" else float(col.scale)
        targets.append(Target(metric, key, (col.column,) if col.column is not None else col.mean, scale))
    if m.only_tagged and not m.checkpoint_tags:
        raise TableImportError("mapping: `only_tagged = true` needs a [checkpoint_tags] table")
    ckpt_tags = _checkpoint_tags(m.checkpoint_tags, m.tags)
    return MappingSpec(
        m.checkpoint, list(m.tags), targets, ckpt_tags, m.only_tagged, [n.strip() for n in m.notes]
    )


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
