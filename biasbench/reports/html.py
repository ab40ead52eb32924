"""The report as one self-contained HTML page: no network, no external file — the figures are inlined
(PNG as base64 ``data:`` URIs, the scatter grid as inline SVG whose points name their checkpoint on
hover), the style sheet is inline, and there is no script. It holds a short "how to read this", the
table, the figures, the scores behind them (with each checkpoint's own binomial interval where the
score is countable) and the provenance (runs, versions, parameters, datasets with manifest hashes,
imported tables with their sha256, n).

The page is the Jinja2 template ``templates/report.html.j2`` (package data) rendered with
autoescaping: this module only gathers the numbers and strings; every value from the results
(checkpoint ids, tags, keys, labels, parameters) is escaped by Jinja2, and only matplotlib's SVG
(its titles escaped by :func:`figures.svg_with_titles`) is passed as markup.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup

from biasbench.reports import figures
from biasbench.reports.render import (
    CORRECTION_NAME,
    PREDICTION_TITLE,
    ci,
    family_text,
    group_rows,
    group_title,
    headline,
    legend,
    loco,
    num,
    pair_rows,
    prediction_rows,
    shown,
    star,
)
from biasbench.reports.statistics import SYMBOL
from biasbench.reports.uncertainty import score_intervals

if TYPE_CHECKING:  # pragma: no cover
    from biasbench.reports.analysis import Report

TEMPLATE = "report.html.j2"


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("biasbench.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _colour(r: float) -> str:
    """A cell background: red for positive, blue for negative coefficients, paler when small."""
    if r is None or math.isnan(r):
        return "#ffffff"
    a = min(abs(r), 1.0) * 0.55
    base = (214, 96, 77) if r > 0 else (67, 147, 195)
    mix = [round(255 - (255 - c) * a) for c in base]
    return "#" + "".join(f"{c:02x}" for c in mix)


def _matrix(report: Report) -> dict[str, Any]:
    t = report.table
    rows = []
    for r in report.rows:
        cells: list[dict[str, Any] | None] = []
        for c in report.cols:
            hit = t[(t.x == r) & (t.y == c)]
            if not len(hit):
                cells.append(None)
                continue
            row = next(hit.itertuples(index=False))
            cells.append(
                {
                    "colour": _colour(shown(row)),
                    "value": f"{num(shown(row))}{star(row)}",
                    "ci": ci(row),
                    "partial": num(row.partial_r),
                    "loco": loco(row),
                    "n": row.n,
                }
            )
        rows.append({"key": r, "label": report.label(r), "cells": cells})
    return {"cols": [{"key": c, "label": report.label(c)} for c in report.cols], "rows": rows}


def _pairs(report: Report) -> list[list[str]]:
    header = ["x", "y", SYMBOL[report.options.method], "95 % CI", "p", "p adj.", "partial", "partial p"]
    header += ["loco range", "loco: most influential", "n"]
    return [header, *pair_rows(report)]


def _scores(report: Report, colour_by: str | None, cols: list[str] | None = None) -> dict[str, Any]:
    """The checkpoints × ``cols`` table (default: the report's rows, columns and control), each value
    with its binomial interval where it is countable."""
    if cols is None:
        cols = list(
            dict.fromkeys([*report.rows, *report.cols, *([report.control] if report.control else [])])
        )
    values = report.scores.values
    cov = report.scores.covariates
    tag = colour_by if colour_by in cov.columns else None
    intervals = score_intervals(report.scores, report.options.confidence)
    rows = []
    for cp in values.index:
        own = intervals.get(str(cp), {})
        rows.append(
            {
                "checkpoint": str(cp),
                "tag": str(cov.at[cp, tag]) if tag else "",
                "cells": [
                    {
                        "value": num(values.at[cp, c], ".4g"),
                        "interval": f"[{own[c]['low']:.4g}, {own[c]['high']:.4g}]" if c in own else "",
                    }
                    for c in cols
                ],
            }
        )
    return {"tag": tag, "cols": cols, "rows": rows}


def _provenance(report: Report) -> dict[str, list[dict[str, Any]]]:
    p: dict[str, Any] = report.provenance
    return {
        "metrics": [
            {
                "metric": m["metric"],
                "versions": m["versions"],
                "params": str(m["params"]),
                "datasets": m["datasets"],
                "checkpoints": m["checkpoints"],
            }
            for m in p.get("metrics") or []
        ],
        "imports": [
            {k: str(i.get(k)) for k in ("source", "file", "sha256", "mapping_sha256", "checkpoints")}
            for i in p.get("imports") or []
        ],
        "runs": [
            {
                "run_id": str(r["run_id"]),
                "started_at": str(r["started_at"]),
                "status": str(r["status"]),
                "git_sha": str(r.get("git_sha") or ""),
                "device": str(r.get("device") or ""),
                "versions": json.dumps(r.get("versions") or {}),
            }
            for r in p.get("runs") or []
        ],
    }


def page_context(report: Report, colour_by: str | None = None, size_by: str | None = None) -> dict[str, Any]:
    """Everything the template shows, as plain values (the figures drawn here)."""
    said = report.verdict()
    empty = report.n_checkpoints == 0
    ctx: dict[str, Any] = {
        "generated": f"{report.generated:%Y-%m-%d %H:%M UTC}",
        "headline": headline(report),
        "verdict": " ".join(said),
        "method_name": report.options.method.capitalize(),
        "sym": SYMBOL[report.options.method],
        "confidence": round(report.options.confidence * 100),
        "correction": CORRECTION_NAME[report.options.correction],
        "tested": report.tested,
        "family": family_text(report),
        "control": report.control,
        "category": report.category,
        "intervals": "",
        "empty": empty,
        "n_checkpoints": report.n_checkpoints,
        "checkpoints": [str(c) for c in report.scores.checkpoints],
        "provenance": _provenance(report),
    }
    if empty:
        return ctx
    scores = _scores(report, colour_by)
    if any(v["interval"] for row in scores["rows"] for v in row["cells"]):
        ctx["intervals"] = f"{ctx['confidence']} % Wilson interval (declared proportions: value = k / n)"
    scatter = scatter_caption = None
    if report.rows and report.cols:
        fig, titles = figures.scatter_grid(report, colour_by)
        scatter = Markup(figures.svg_with_titles(fig, titles))  # matplotlib's SVG, its titles escaped
        scatter_caption = "One point per checkpoint (hover a point for its name and values)" + (
            Markup(", coloured by <code>{}</code>.").format(colour_by) if colour_by else "."
        )
    stability = report.scores.with_role("stability")
    ctx.update(
        matrix=_matrix(report) if report.curated and report.rows and report.cols else None,
        legend=legend(report),
        heatmap=_uri(figures.png_bytes(figures.heatmap(report))) if len(report.table) else None,
        prediction=prediction_rows(report),
        prediction_title=PREDICTION_TITLE,
        groups=group_rows(report),
        group_title=group_title(report) if report.groups else "",
        scatter=scatter,
        scatter_caption=scatter_caption,
        matrices=[
            {"title": f"{role.capitalize()} × {role}", "rows": _pairs(sub)}
            for role, sub in report.matrices.items()
        ],
        figures=[
            {"title": f.title, "caption": f.caption, "uri": _uri(figures.png_bytes(f.figure))}
            for f in figures.declared_figures(report, colour_by, size_by)
        ],
        pairs=_pairs(report),
        scores=scores,
        stability=_scores(report, colour_by, stability) if stability else None,
    )
    return ctx


def html_page(report: Report, colour_by: str | None = None, size_by: str | None = None) -> str:
    """The whole report as one HTML document (string)."""
    return _environment().get_template(TEMPLATE).render(page_context(report, colour_by, size_by))
