"""A report's inputs, shaped from what a store holds (or from a results table alone).

:func:`from_store_rows` takes the store's report rows (the newest result of each metric variant with
its job's parameters, datasets and version), its runs and each checkpoint's tags, and gives the
results a report reads (imported rows marked by their ``source``, their parameters cleared, the notes
their mapping declares among the report's notes) and the jobs behind them (for the provenance).
:func:`from_results` does the same for a long table (checkpoint, metric, key, value, n —
:func:`biasbench.results`) without a database: no provenance.
:func:`sis_sizes` reads each checkpoint's stored SIS traces through a callable, so this module never
touches the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from biasbench.metrics.sis_traces import sis_fractions

JOB_COLUMNS = ["checkpoint", "metric", "metric_version", "params", "datasets", "run_id"]
RESULT_COLUMNS = ["checkpoint", "metric", "key", "value", "n"]


@dataclass
class ReportInputs:
    """``results``: one row per (checkpoint, metric variant, key) with ``params`` and ``source``;
    ``jobs``: the jobs behind them; ``runs``: the runs that wrote them; ``tags``: per checkpoint."""

    results: pd.DataFrame
    jobs: pd.DataFrame
    runs: pd.DataFrame
    tags: dict[str, dict[str, Any]]
    sis_sizes: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def from_store_rows(
    rows: pd.DataFrame,
    runs: pd.DataFrame,
    tags: Mapping[str, Mapping[str, Any]],
    identities: Mapping[str, str] | None = None,
) -> ReportInputs:
    """``rows``: :meth:`Store.report_rows`; ``runs``: :meth:`Store.runs`; ``tags``:
    :meth:`Store.checkpoint_tags`; ``identities``: :meth:`Store.checkpoint_identities`. Checkpoints with
    the same identity (the same weights and preprocessing under two ids, e.g. a registry entry and an
    ``ARCH@WEIGHTS`` target) are one checkpoint to a correlation: the first id (sorted) is kept, the
    others are left out and named in a note."""
    res = rows.copy()
    notes = []
    by_identity: dict[str, list[str]] = {}
    present = set(res["checkpoint"])
    for cid, ident in sorted((identities or {}).items()):
        if cid in present:
            by_identity.setdefault(ident, []).append(cid)
    for ids in by_identity.values():
        if len(ids) > 1:
            res = res[~res["checkpoint"].isin(ids[1:])]
            notes.append(
                f"{', '.join(ids)} hold the same weights and preprocessing: counted once, as {ids[0]!r}"
            )
    imports = [json.loads(d or "{}").get("import", {}) for d in res["datasets"]]
    res["source"] = [imp.get("source") for imp in imports]
    res.loc[res["source"].notna(), "params"] = None
    jobs = res.drop_duplicates(["checkpoint", "metric", "params", "run_id"])[JOB_COLUMNS]
    notes += _import_notes(imports)
    notes += _uninstalled(res)
    return ReportInputs(res, jobs, runs, {k: dict(v) for k, v in tags.items()}, notes=notes)


def _import_notes(imports: list[dict[str, Any]]) -> list[str]:
    """The notes an imported table's mapping declares (a preset's known defects of the published
    table), once per table, in the order first met."""
    seen: dict[str, None] = {}
    for imp in imports:
        notes = imp.get("notes") or []
        if not isinstance(notes, list):
            continue
        where = f"imported table {imp.get('source', '?')!s} ({imp.get('file', '?')!s})"
        for note in notes:
            seen.setdefault(f"{where}: {note}", None)
    return list(seen)


def _uninstalled(res: pd.DataFrame) -> list[str]:
    """A note per measured metric whose plugin is not installed here: its keys have no declared role,
    so they stay out of the curated table (say so rather than let them vanish)."""
    from biasbench.metrics.discovery import METRICS

    installed = set(METRICS.providers())
    measured = sorted(set(res.loc[res["source"].isna(), "metric"]) - installed)
    return [
        f"metric {m!r} is stored but its plugin is not installed here: its keys have no declared role "
        "and stay out of the curated table (--keys or --all still reach them)"
        for m in measured
    ]


def from_results(frame: pd.DataFrame, tags: Mapping[str, Mapping[str, Any]] | None = None) -> ReportInputs:
    """A long results table (at least checkpoint, metric, key, value) and optional tags per checkpoint;
    ``params`` and ``source`` columns are used when present."""
    missing = [c for c in RESULT_COLUMNS[:4] if c not in frame.columns]
    if missing:
        from biasbench.reports.analysis import ReportError

        raise ReportError(
            f"a results table needs the columns {', '.join(RESULT_COLUMNS)}; missing: {', '.join(missing)}"
        )
    res = frame.copy()
    for col in ("params", "source"):
        if col not in res.columns:
            res[col] = None
    jobs = pd.DataFrame(columns=JOB_COLUMNS)
    runs = pd.DataFrame(columns=["run_id", "started_at", "status", "git_sha", "device", "versions"])
    return ReportInputs(res, jobs, runs, {k: dict(v) for k, v in (tags or {}).items()})


def sis_sizes(
    inputs: ReportInputs, read_traces: Callable[[str], pd.DataFrame], errors: tuple[type[BaseException], ...]
) -> None:
    """Fill ``inputs.sis_sizes``: per checkpoint with stored SIS traces (``read_traces(checkpoint)``),
    each image's SIS size (fraction of pixels) at the stored τ — no model; a checkpoint whose traces
    cannot be read (one of ``errors``) gets a note instead."""
    res = inputs.results
    taus = res[(res["metric"] == "sis") & (res["key"] == "tau") & res["source"].isna()]
    for ckpt, tau in zip(taus["checkpoint"], taus["value"], strict=True):
        try:
            inputs.sis_sizes[ckpt] = sis_fractions(read_traces(ckpt), float(tau))
        except errors as e:
            inputs.notes.append(f"SIS sizes of {ckpt}: {e}")
