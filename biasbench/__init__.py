"""biasbench: benchmark image-classifier checkpoints for their biases and their generalization.

The Python API (what ``bench`` itself calls; see the README, "Using biasbench from Python"):

* :func:`run` — targets × metrics into a results database, exactly as ``bench run``;
* :func:`evaluate` — a ``torch.nn.Module`` that exists only in this process;
* :func:`results` — the stored long table (checkpoint, metric, key, value, n);
* :func:`report` — do the biases explain generalization? (the object ``bench report`` renders);
* :func:`import_table` — published per-checkpoint results, stored beside measured ones.

Every error raised on purpose is a :class:`BiasbenchError` (``exit_code``: what ``bench`` exits with).

This module is the API layer: it sits beside the CLI, above ``harness`` and ``reports`` (the only
place that combines the two: a report reads the store through :mod:`biasbench.harness.store`'s readers
and is computed by :mod:`biasbench.reports`). Importing ``biasbench`` loads nothing heavy; the API is
imported on first use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from biasbench.reports.analysis import Report
    from biasbench.reports.importer import ImportedTable

__version__ = "0.1.0"
__all__ = [
    "BiasbenchError",
    "Report",
    "Results",
    "RunOptions",
    "RunSummary",
    "evaluate",
    "import_table",
    "report",
    "results",
    "run",
]

_SESSION = ("run", "evaluate", "results", "Results", "RunOptions")


def __getattr__(name: str) -> Any:
    if name in _SESSION:
        from biasbench.harness import session

        return getattr(session, name)
    if name == "RunSummary":
        from biasbench.harness.executor import RunSummary

        return RunSummary
    if name == "Report":
        from biasbench.reports.analysis import Report

        return Report
    if name == "BiasbenchError":
        from biasbench.core.errors import BiasbenchError

        return BiasbenchError
    raise AttributeError(f"module 'biasbench' has no attribute {name!r}")


def report(
    source: str | Path | pd.DataFrame = "bench.duckdb",
    *,
    keys: Sequence[str] | None = None,
    all_keys: bool = False,
    bias: Sequence[str] | None = None,
    generalization: Sequence[str] | None = None,
    method: str = "spearman",
    correction: str = "holm",
    control: str | None = None,
    category: str | None = "category",
    resamples: int = 2000,
    seed: int = 0,
    top: int = 50,
    across_metrics: bool = False,
    tags: Mapping[str, Mapping[str, Any]] | None = None,
    sis_sizes: bool = False,
    among: str | None = None,
    mask_p: float | None = None,
    by: str | None = None,
    predict: bool = True,
    permutations: int = 1000,
    family: str | Sequence[str] = "table",
) -> Report:
    """Bias × generalization correlations across checkpoints — the report ``bench report`` renders
    (``.table`` a DataFrame, one row per pair; ``.to_markdown()``, ``.to_html(path)``).

    ``source``: a results database, or a long results table (checkpoint, metric, key, value[, n]; e.g.
    :func:`results`) with ``tags`` per checkpoint for the category analyses. The curated table (the
    declared biases × generalization keys) unless ``keys`` or ``all_keys`` asks for free pairs;
    ``method`` spearman | pearson | kendall, ``correction`` holm | bh | none, ``control`` the
    ID-accuracy column of the partial correlation, ``category`` the tag left out one value at a time.
    ``sis_sizes``: also read each checkpoint's per-image SIS sizes from its stored traces (the HTML
    page's figure). ``among="bias"`` (or ``"generalization"``): every pair of that role's keys, e.g.
    shape bias vs LPP — the bias × bias matrix. ``mask_p=0.05``: the study's display (a coefficient with
    uncorrected p ≥ 0.05 shown as 0; ``.table`` keeps the real one and a ``masked`` column).
    ``by="category"`` (one group per value) or ``"category=adversarial"`` (those and the rest): every
    table also per group (``.groups``). ``predict``: all biases together predicting each generalization
    axis out of sample (``.prediction``: cross-validated ridge R² with ``permutations`` permutations,
    also the permutation p of ΔR² over ID accuracy). ``family``: the cells each p-value is corrected
    with — ``"table"`` (every cell of the table), ``"column"`` (one family per generalization axis),
    ``"row"`` (one per bias), or a list of keys fixed in advance (the cells among them; the others are
    a second family), so results of a newly installed metric leave those cells' adjusted p alone."""
    import pandas as pd

    from biasbench.reports import inputs as report_inputs
    from biasbench.reports.analysis import build_report, label_space_caveats, provenance
    from biasbench.reports.prediction import PredictionOptions
    from biasbench.reports.scores import build_scores
    from biasbench.reports.statistics import Options, check_choice

    check_choice(method, correction)
    label_spaces: dict[str, str] = {}
    if isinstance(source, pd.DataFrame):
        data = report_inputs.from_results(source, tags)
    else:
        from biasbench.harness.store import Store, StoreError

        with Store(source, read_only=True) as store:
            data = report_inputs.from_store_rows(
                store.report_rows(), store.runs(), store.checkpoint_tags(), store.checkpoint_identities()
            )
            label_spaces = store.checkpoint_label_spaces()
            if sis_sizes:
                report_inputs.sis_sizes(data, lambda c: store.items(c, "sis"), (KeyError, StoreError))
    scores = build_scores(data.results, data.tags)
    scores.notes += data.notes
    rep = build_report(
        scores,
        keys=list(keys) if keys else None,
        all_keys=all_keys,
        bias=list(bias) if bias else None,
        generalization=list(generalization) if generalization else None,
        across_metrics=across_metrics,
        top=top,
        control=control,
        category=category,
        options=Options(
            method=method, correction=correction, n_resamples=resamples, seed=seed, mask_p=mask_p
        ),
        among=among,
        by=by,
        predict=predict,
        prediction_options=PredictionOptions(permutations=permutations, n_resamples=resamples, seed=seed),
        family=family if isinstance(family, str) else list(family),
    )
    used = sorted(set(rep.rows) | set(rep.cols) | ({rep.control} if rep.control else set()))
    rep.provenance = provenance(data.jobs, data.runs, scores, used)
    rep.sis_sizes = data.sis_sizes
    rep.caveats = label_space_caveats(rep, label_spaces)
    return rep


def import_table(
    file: str | Path,
    mapping: str | Path | None = None,
    source: str | None = None,
    *,
    db: str | Path = "bench.duckdb",
    preset: str | None = None,
) -> ImportedTable:
    """Import a published wide table (one row per checkpoint; ``mapping``: a TOML naming the checkpoint
    column, tags and ``metric.key`` targets, or ``preset``: a shipped one such as ``"gavrikov2024"`` —
    exactly one of the two) into ``db`` as one recorded run, so reports use its values beside measured
    ones. ``source`` defaults to the preset's name. Returns what was read (values, tags, unused columns,
    skipped cells, rows left out, the provenance with the mapping's notes)."""
    from biasbench.harness.session import record_import
    from biasbench.reports.importer import TableImportError, read_files

    table = read_files(Path(file), None if mapping is None else Path(mapping), source, preset=preset)
    if table.results.empty:
        raise TableImportError(f"{file}: no value to import (every mapped cell is empty)")
    record_import(db, table.results, table.tags, table.provenance, table.provenance["source"])
    return table
