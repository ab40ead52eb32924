"""The report's input, shaped: one row per checkpoint, one column per (metric variant, key), each
column with its declared role; the checkpoints' tags as covariates.

Metric variants. One metric stored under several parameter sets (``accuracy`` on two datasets) gives
one column per parameter set, named by the parameters that differ between them —
``accuracy[dataset=imagenet-sample].top1`` beside ``accuracy[dataset=default].top1`` — never one value
silently replacing the other. A metric stored under one parameter set keeps the plain name
``metric.key``.

Imported results (``bench import``) carry no parameters. They share the plain column with the measured
results of their metric when that metric has at most one measured variant (where a checkpoint has
both, the measurement is used and the imported value is counted as shadowed); beside several measured
variants they get their own column ``metric[source=NAME].key``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from biasbench.core.errors import InputError
from biasbench.core.plugins import suggest
from biasbench.core.variants import variant_labels
from biasbench.reports.roles import declared_position, key_role


class UnknownKeyError(InputError):
    """A requested column is not in the results; the message lists the known ones."""


@dataclass
class Scores:
    """``values``: checkpoints × columns; ``columns``: per column its metric, key, variant, role,
    higher_is_better, label and whether it is a declared proportion; ``covariates``: checkpoints × tag
    names (strings); ``counts``: checkpoints × columns, the ``n`` each value rests on (empty when the
    results carry none)."""

    values: pd.DataFrame
    columns: pd.DataFrame
    covariates: pd.DataFrame
    shadowed: int = 0  # imported values hidden by a measurement of the same checkpoint and column
    notes: list[str] = field(default_factory=list)
    counts: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def checkpoints(self) -> list[str]:
        return list(self.values.index)

    def with_role(self, role: str) -> list[str]:
        """The columns of ``role``, by metric and then in the order the metric declares its keys."""
        cols = self.columns[self.columns["role"] == role]
        return list(cols.sort_values(["metric", "position", "variant", "key"], kind="stable").index)

    def subset(self, checkpoints: list[str]) -> Scores:
        """The same columns for only ``checkpoints`` (a group of the report)."""
        return Scores(
            self.values.loc[checkpoints],
            self.columns,
            self.covariates.loc[checkpoints]
            if len(self.covariates.columns)
            else self.covariates.reindex(checkpoints),
            shadowed=self.shadowed,
            notes=list(self.notes),
            counts=self.counts.reindex(checkpoints) if len(self.counts.columns) else self.counts,
        )


def build_scores(results: pd.DataFrame, tags: dict[str, dict[str, Any]] | None = None) -> Scores:
    """``results``: columns checkpoint, metric, key, value and optionally ``params`` (the job's
    parameter JSON; missing or None for imported rows) and ``source`` (the import's name)."""
    tags = tags or {}
    if results.empty:
        empty = pd.DataFrame(
            columns=[
                "metric",
                "key",
                "variant",
                "role",
                "higher_is_better",
                "label",
                "imported",
                "position",
                "proportion",
            ]
        )
        return Scores(pd.DataFrame(), empty, pd.DataFrame(index=pd.Index([], name="checkpoint")))
    df = results.copy()
    if "params" not in df:
        df["params"] = "{}"
    if "source" not in df:
        df["source"] = None
    df["params"] = df["params"].astype(object).where(df["params"].notna(), None)
    df.loc[df["params"].isin(["null", "NULL"]), "params"] = None
    df["variant"] = ""
    for _, grp in df.groupby("metric"):
        labels = variant_labels(list(grp["params"]))
        measured_variants = {v for p, v in labels.items() if p is not None}
        rows = grp.index
        df.loc[rows, "variant"] = [labels[p] for p in grp["params"]]
        if len(measured_variants) > 1:  # imported rows beside several measured variants: their own column
            imp = grp.index[grp["params"].isna()]
            df.loc[imp, "variant"] = [f"[source={s}]" for s in grp.loc[imp, "source"]]
    df["column"] = df["metric"] + df["variant"] + "." + df["key"]
    df["imported"] = df["params"].isna()
    # a measurement beats an imported value of the same checkpoint and column
    df = df.sort_values(["checkpoint", "column", "imported"])
    dup = df.duplicated(["checkpoint", "column"], keep="first")
    shadowed = int((dup & df["imported"]).sum())
    df = df[~dup]
    values = df.pivot(index="checkpoint", columns="column", values="value").sort_index().sort_index(axis=1)
    values.columns.name = None
    counts = pd.DataFrame()
    if "n" in df:
        counts = df.pivot(index="checkpoint", columns="column", values="n").reindex_like(values)
        counts.columns.name = None
    meta_rows = {}
    for col, grp in df.groupby("column"):
        first = grp.iloc[0]
        role = key_role(first["metric"], first["key"])
        meta_rows[col] = {
            "metric": first["metric"],
            "key": first["key"],
            "variant": first["variant"],
            "role": role.role,
            "higher_is_better": role.higher_is_better,
            "label": role.label or first["key"],
            "imported": bool(grp["imported"].any()),
            "position": declared_position(first["metric"], first["key"]),
            "proportion": role.proportion,
        }
    columns = pd.DataFrame.from_dict(meta_rows, orient="index").reindex(values.columns)
    cov = pd.DataFrame(
        [{k: (None if v is None else str(v)) for k, v in (tags.get(c) or {}).items()} for c in values.index],
        index=values.index,
    )
    notes = []
    if shadowed:
        notes.append(f"{shadowed} imported value(s) hidden by a measurement of the same checkpoint and key")
    return Scores(values, columns, cov, shadowed=shadowed, notes=notes, counts=counts)


def resolve_keys(scores: Scores, keys: list[str]) -> list[str]:
    """Columns for the requested keys: an exact column name, or ``metric.key`` for every variant of that
    key. An unknown key is an :class:`UnknownKeyError` listing every known column."""
    known = list(scores.values.columns)
    base = {c: f"{scores.columns.at[c, 'metric']}.{scores.columns.at[c, 'key']}" for c in known}
    out: list[str] = []
    unknown = []
    for k in keys:
        hits = [k] if k in known else [c for c in known if base[c] == k]
        if not hits:
            unknown.append(k)
        out += [h for h in hits if h not in out]
    if unknown:
        hint = suggest(unknown, known + list(base.values()))
        raise UnknownKeyError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{hint}; "
            f"known keys: {', '.join(known) or 'none (the database holds no results)'}"
        )
    return out
