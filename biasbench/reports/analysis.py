"""One report, assembled: which columns are correlated with which (the curated bias × generalization
table, chosen axes, or free pairs), the statistics for every pair, and the provenance of the numbers.

Curated (the default): rows are the keys the metric plugins declare as ``bias``, columns those declared
``generalization`` (``reports.roles``); ``bias`` / ``generalization`` replace either axis. Free
exploration: ``keys`` (or every non-constant column) correlated pair by pair; ``top`` keeps the
strongest pairs (p-values are adjusted over every pair tested, not only those shown).

The correction family (``family``): by default every cell of the table; ``"column"`` one family per
generalization axis, ``"row"`` one per bias, or a fixed list of keys (the cells among them; the other
cells are a second family) — so installing one more metric plugin cannot move an unrelated cell's
adjusted p (:func:`biasbench.reports.statistics.family_labels`; the page states the family).

The partial correlation controls for in-distribution accuracy: ``ood.id`` when stored, else
``accuracy.top1`` (or the column ``control`` names). Leave-one-category-out uses the checkpoint tag
``category`` when checkpoints carry it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biasbench.core.errors import InputError
from biasbench.reports import prediction as pr
from biasbench.reports import statistics as st
from biasbench.reports.scores import Scores, resolve_keys

CONTROL_CANDIDATES = ("ood.id", "accuracy.top1")
CATEGORY_TAG = "category"


#: the roles whose keys ``among`` pairs with each other
ROLES_AMONG = ("bias", "generalization")


class ReportError(InputError):
    """The report cannot be made as asked (unknown key or tag, nothing to correlate)."""


@dataclass
class Report:
    scores: Scores
    table: pd.DataFrame  # statistics.COLUMNS, one row per pair
    rows: list[str]
    cols: list[str]
    curated: bool
    options: st.Options
    control: str | None
    category: str | None
    tested: int  # pairs tested (their p-values adjusted within their families)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: per checkpoint, each covered image's SIS size as a fraction of its pixels (read from stored traces)
    sis_sizes: dict[str, np.ndarray] = field(default_factory=dict)
    #: all biases together (:mod:`biasbench.reports.prediction`): per generalization axis, the
    #: cross-validated R² of ID accuracy, the biases and both; None when not computed
    prediction: pd.DataFrame | None = None
    #: ``--by``: the same report for each group of checkpoints, by group name
    groups: dict[str, Report] = field(default_factory=dict)
    #: the ``--by`` specification the groups come from
    by: str | None = None
    #: what the page must say about some columns, from the checkpoints' label spaces
    #: (:func:`label_space_caveats`)
    caveats: list[str] = field(default_factory=list)
    #: the curated report's companions: every pair of the bias keys (``"bias"``: bias × bias) and of
    #: the generalization keys, with the same statistics
    matrices: dict[str, Report] = field(default_factory=dict)
    #: the correction family as asked: ``"table"``, ``"column"``, ``"row"`` or the fixed keys
    family: str | list[str] = "table"
    generated: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def family_sizes(self) -> dict[str, int]:
        """Each correction family's label and how many of the table's cells it holds (with ``top``,
        the shown cells; the adjustment covered every pair tested)."""
        if "family" not in self.table or not len(self.table):
            return {}
        return {str(k): int(v) for k, v in self.table["family"].value_counts(sort=False).items()}

    def label(self, column: str) -> str:
        """A column's declared label (its key when it declares none)."""
        cols = self.scores.columns
        return str(cols.at[column, "label"]) if column in cols.index else column

    @property
    def n_checkpoints(self) -> int:
        return len(self.scores.values)

    def verdict(self) -> list[str]:
        """The answer in words, generated from the numbers (:mod:`biasbench.reports.verdict`)."""
        from biasbench.reports.verdict import verdict

        return verdict(self)

    def to_markdown(self) -> str:
        """The report as Markdown (``bench report -f md``)."""
        from biasbench.reports.render import markdown

        return markdown(self)

    def to_csv(self) -> str:
        """One row per pair (``bench report -f csv``)."""
        from biasbench.reports.render import to_csv

        return to_csv(self)

    def to_latex(self) -> str:
        """The main table as a LaTeX ``booktabs`` table (``bench report -f latex``)."""
        from biasbench.reports.render import to_latex

        return to_latex(self)

    def to_json(self) -> str:
        from biasbench.reports.render import to_json

        return to_json(self)

    def to_html(
        self, path: str | Path | None = None, *, colour_by: str | None = None, size_by: str | None = None
    ) -> str:
        """The self-contained HTML page (``bench report -f html``), also written to ``path`` when given;
        ``colour_by``: the tag that colours the figures (default: the category tag); ``size_by``: a
        numeric tag that sizes the markers of the study-style scatter plots (e.g. ``eps``)."""
        from biasbench.reports.html import html_page

        page = html_page(self, colour_by=colour_by or self.category, size_by=size_by)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def terminal_parts(self) -> list[Any]:
        """The rich tables and lines ``bench report`` prints."""
        from biasbench.reports.render import terminal_tables

        return terminal_tables(self)


def _control(scores: Scores, control: str | None) -> str | None:
    if control is not None:
        found = resolve_keys(scores, [control])
        return found[0]
    for c in CONTROL_CANDIDATES:
        if c in scores.values.columns:
            return c
    return None


def _non_constant(values: pd.DataFrame, cols: list[str]) -> list[str]:
    return [c for c in cols if values[c].dropna().nunique() > 1]


def build_report(
    scores: Scores,
    *,
    keys: list[str] | None = None,
    all_keys: bool = False,
    bias: list[str] | None = None,
    generalization: list[str] | None = None,
    across_metrics: bool = False,
    top: int | None = None,
    control: str | None = None,
    category: str | None = CATEGORY_TAG,
    options: st.Options = st.Options(),
    provenance: dict[str, Any] | None = None,
    among: str | None = None,
    by: str | None = None,
    predict: bool = True,
    prediction_options: pr.PredictionOptions = pr.PredictionOptions(),
    matrices: bool = True,
    family: str | list[str] = "table",
) -> Report:
    """The statistics for the curated table (default) or for free pairs (``keys`` / ``all_keys``), or
    for every pair of one role's keys (``among="bias"``: bias × bias; ``"generalization"``).

    ``by``: also the same report for each group of checkpoints (:func:`group_checkpoints`).
    ``predict``: for the curated table, all biases together predicting each generalization axis
    (:mod:`biasbench.reports.prediction`). ``matrices``: for the curated table, also bias × bias and
    generalization × generalization (``Report.matrices``). ``family``: the correction family (the
    module docstring); a list of keys is resolved like ``keys`` (an unknown key is an error)."""
    if not isinstance(family, str):
        family = resolve_keys(scores, list(family))
    else:
        st.family_labels([], family)  # an unknown rule: one clear error before any work
    kwargs = dict(
        keys=keys,
        all_keys=all_keys,
        bias=bias,
        generalization=generalization,
        across_metrics=across_metrics,
        top=top,
        control=control,
        category=category,
        options=options,
        provenance=provenance,
        among=among,
        predict=predict,
        prediction_options=prediction_options,
        family=family,
    )
    groups = group_checkpoints(scores, by) if by else {}
    rep = _build_one(scores, **kwargs)
    rep.by = by
    rep.groups = {name: _build_one(scores.subset(cps), **kwargs) for name, cps in groups.items()}
    if rep.curated and matrices:
        for role in ROLES_AMONG:
            if len(_non_constant(scores.values, scores.with_role(role))) >= 2:
                rep.matrices[role] = _build_one(scores, **{**kwargs, "among": role, "predict": False})
    return rep


def label_space_caveats(report: Report, label_spaces: dict[str, str]) -> list[str]:
    """The caveats (``LabelSpace.caveats``) of the label spaces of the report's checkpoints, for the
    columns the report shows, each once: ``"ood.concepts: on the demo world, …"``."""
    from biasbench.core import labels

    shown = set(report.rows) | set(report.cols)
    out = []
    for space in sorted({label_spaces[c] for c in report.scores.checkpoints if c in label_spaces}):
        found = labels.find(space)
        for column, text in (found.caveats if found is not None else {}).items():
            if column in shown:
                out.append(f"{column}: {text}.")
    return list(dict.fromkeys(out))


def group_checkpoints(scores: Scores, by: str) -> dict[str, list[str]]:
    """The groups ``--by`` names: ``TAG`` — one group per value of the tag (checkpoints without it in
    ``(untagged)``); ``TAG=V1[,V2…]`` — the checkpoints whose tag is one of the values, and ``rest``
    (the study's adversarially trained vs the other models: ``--by category=adversarial``)."""
    tag, _, wanted = by.partition("=")
    tag = tag.strip()
    cov = scores.covariates
    if tag not in cov.columns:
        known = ", ".join(cov.columns) or "none"
        raise ReportError(f"--by {by!r}: no checkpoint carries the tag {tag!r}; tags: {known}")
    values = cov[tag].fillna("(untagged)").astype(str)
    if not wanted:
        return {f"{tag}={v}": list(values.index[values == v]) for v in sorted(values.unique())}
    chosen = [v.strip() for v in wanted.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in set(values)]
    if unknown:
        raise ReportError(
            f"--by {by!r}: no checkpoint has {tag} = {', '.join(map(repr, unknown))}; "
            f"values: {', '.join(sorted(values.unique()))}"
        )
    inside = values.isin(chosen)
    return {f"{tag}={','.join(chosen)}": list(values.index[inside]), "rest": list(values.index[~inside])}


def _build_one(
    scores: Scores,
    *,
    keys: list[str] | None,
    all_keys: bool,
    bias: list[str] | None,
    generalization: list[str] | None,
    across_metrics: bool,
    top: int | None,
    control: str | None,
    category: str | None,
    options: st.Options,
    provenance: dict[str, Any] | None,
    among: str | None,
    predict: bool,
    prediction_options: pr.PredictionOptions,
    family: str | list[str],
) -> Report:
    if among is not None:
        if among not in ROLES_AMONG:
            raise ReportError(f"--among {among!r}: choose one of {', '.join(ROLES_AMONG)}")
        if keys or all_keys:
            raise ReportError("--among chooses the keys itself; give it without --keys or --all")
        keys = scores.with_role(among)
        if len(keys) < 2:
            raise ReportError(
                f"--among {among}: the results hold {len(keys)} {among} key(s); a matrix needs two"
            )
    values = scores.values
    ctrl = _control(scores, control)
    cats = None
    if category:
        if category in scores.covariates.columns:
            cats = scores.covariates[category]
        elif category != CATEGORY_TAG:
            known = ", ".join(scores.covariates.columns) or "none"
            raise ReportError(f"no checkpoint carries the tag {category!r}; tags: {known}")
    curated = not (keys or all_keys)
    if curated:
        rows = resolve_keys(scores, bias) if bias else scores.with_role("bias")
        cols = resolve_keys(scores, generalization) if generalization else scores.with_role("generalization")
        pairs = st.grid_pairs(rows, cols)
    else:
        chosen = resolve_keys(scores, keys) if keys else list(values.columns)
        chosen = _non_constant(values, chosen)
        rows = cols = chosen
        metric_of = (lambda c: scores.columns.at[c, "metric"]) if across_metrics else None
        pairs = st.all_pairs(chosen, metric_of)
    table = _table(values, pairs, ctrl, cats, options, top, st.family_labels(pairs, family))
    if options.mask_p is not None:
        table["masked"] = ~(table["p"] < options.mask_p)  # NaN p: masked too
    prediction = None
    if predict and curated and rows and cols and len(values):
        prediction = pr.prediction_table(values, cols, rows, ctrl, prediction_options)
    return Report(
        scores=scores,
        table=table,
        rows=rows,
        cols=cols,
        curated=curated,
        options=options,
        control=ctrl,
        category=category if cats is not None else None,
        tested=len(pairs),
        provenance=provenance or {},
        prediction=prediction,
        family=family,
    )


def _table(
    values: pd.DataFrame,
    pairs: list[tuple[str, str]],
    control: str | None,
    cats: pd.Series | None,
    options: st.Options,
    top: int | None,
    families: list[str],
) -> pd.DataFrame:
    if top is None or len(pairs) <= top:
        return st.correlation_table(
            values, pairs, control=control, categories=cats, options=options, families=families
        )
    # many pairs: coefficients for all (the correction covers every test), the rest for the strongest
    quick = pd.DataFrame(
        [(x, y, *st.correlation(*values[[x, y]].dropna().T.to_numpy(), options.method)) for x, y in pairs],
        columns=["x", "y", "r", "p"],
    )
    quick["family"] = families
    quick["p_adj"] = st.adjust(quick["p"].to_numpy(), options.correction, families)
    quick = quick.dropna(subset=["r"])
    best = quick.reindex(quick["r"].abs().sort_values(ascending=False).index).head(top)
    full = st.correlation_table(
        values,
        list(zip(best["x"], best["y"], strict=True)),
        control=control,
        categories=cats,
        options=options,
        families=list(best["family"]),
    )
    full["p_adj"] = best["p_adj"].to_numpy()
    return full


def provenance(jobs: pd.DataFrame, runs: pd.DataFrame, scores: Scores, columns: list[str]) -> dict[str, Any]:
    """Where the numbers of ``columns`` come from: per metric (variant) its versions, parameters and
    datasets (name and manifest hash); the runs that wrote them; the imported tables.

    ``jobs``: the jobs behind the report (columns checkpoint, metric, metric_version, params, datasets,
    run_id); ``runs``: the store's runs table."""
    metrics = sorted({str(scores.columns.at[c, "metric"]) for c in columns if c in scores.columns.index})
    used = jobs[jobs["metric"].isin(metrics) & jobs["checkpoint"].isin(scores.checkpoints)]
    per_metric = []
    imports: dict[str, dict[str, Any]] = {}
    for (metric, params), grp in used.groupby(["metric", "params"], dropna=False):
        ds = json.loads(grp["datasets"].iloc[0] or "{}")
        if "import" in ds:
            imp = ds["import"]
            imports.setdefault(imp.get("source", "?"), {**imp, "checkpoints": 0})
            imports[imp.get("source", "?")]["checkpoints"] += len(grp)
            continue
        datasets = sorted(
            {
                f"{d.get('name')} (manifest {d.get('manifest')})"
                for g in grp["datasets"]
                for d in json.loads(g).values()
            }
        )
        per_metric.append(
            {
                "metric": metric,
                "versions": sorted(set(grp["metric_version"].astype(str))),
                "params": params,
                "datasets": datasets,
                "checkpoints": int(grp["checkpoint"].nunique()),
            }
        )
    run_ids = set(used["run_id"])
    run_rows = []
    for _, r in runs[runs["run_id"].isin(run_ids)].iterrows():
        versions = json.loads(r["versions"]) if isinstance(r["versions"], str) else (r["versions"] or {})
        run_rows.append(
            {
                "run_id": r["run_id"],
                "started_at": str(r["started_at"]),
                "status": r["status"],
                "git_sha": r.get("git_sha"),
                "device": r.get("device"),
                "versions": versions,
            }
        )
    return {"metrics": per_metric, "runs": run_rows, "imports": list(imports.values())}
