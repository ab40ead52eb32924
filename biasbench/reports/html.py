"""The report as one self-contained HTML page: no network, no external file — the figures are inlined
(PNG as base64 ``data:`` URIs, the scatter grid as inline SVG whose points name their checkpoint on
hover), the style sheet is inline, and there is no script. It holds a short "how to read this", the
table, the figures, the scores behind them and the provenance (runs, versions, parameters, datasets
with manifest hashes, imported tables with their sha256, n).
"""

from __future__ import annotations

import base64
import json
import math
from html import escape
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # pragma: no cover
    from biasbench.reports.analysis import Report

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 0 1.2em 3em; color: #1d1d1f; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #d0d0d0; padding: 4px 7px; vertical-align: top; }
th { background: #f4f4f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.cell { text-align: center; white-space: nowrap; }
td.cell small, th small { color: #555; display: block; font-weight: normal; }
figure { margin: 1em 0; } figure img, figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 13px; }
.scroll { overflow-x: auto; }
.read { background: #f7f9fc; border-left: 4px solid #4a78c2; padding: .4em 1em; }
code { background: #f1f1f3; padding: 0 3px; border-radius: 3px; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _figure(body: str, caption: str) -> str:
    return f'<figure><div class="scroll">{body}</div><figcaption>{caption}</figcaption></figure>'


def _colour(r: float) -> str:
    """A cell background: red for positive, blue for negative coefficients, paler when small."""
    if r is None or math.isnan(r):
        return "#ffffff"
    a = min(abs(r), 1.0) * 0.55
    base = (214, 96, 77) if r > 0 else (67, 147, 195)
    mix = [round(255 - (255 - c) * a) for c in base]
    return "#" + "".join(f"{c:02x}" for c in mix)


def _matrix(report: Report) -> str:
    t = report.table
    head = "".join(f"<th>{escape(c)}<small>{escape(report.label(c))}</small></th>" for c in report.cols)
    rows = []
    for r in report.rows:
        cells = []
        for c in report.cols:
            hit = t[(t.x == r) & (t.y == c)]
            if not len(hit):
                cells.append("<td></td>")
                continue
            row = next(hit.itertuples(index=False))
            cells.append(
                f'<td class="cell" style="background:{_colour(shown(row))}"><b>{num(shown(row))}{star(row)}</b>'
                f"<small>{ci(row)}</small><small>partial {num(row.partial_r)} · loco {loco(row)}</small>"
                f"<small>n = {row.n}</small></td>"
            )
        rows.append(f"<tr><th>{escape(r)}<small>{escape(report.label(r))}</small></th>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><tr><th>bias \\ generalization</th>{head}</tr>{"".join(rows)}</table></div>'


def _pairs(report: Report) -> str:
    header = ["x", "y", SYMBOL[report.options.method], "95 % CI", "p", "p adj.", "partial", "partial p"]
    header += ["loco range", "loco: most influential", "n"]
    return _text_table([header, *pair_rows(report)])


def _text_table(rows: list[list[str]]) -> str:
    """A header row and text rows as an HTML table (numbers right-aligned)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in rows[0])
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if i > 1 else ""}">{escape(v)}</td>' for i, v in enumerate(r))
        + "</tr>"
        for r in rows[1:]
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _scores(report: Report, colour_by: str | None, cols: list[str] | None = None) -> str:
    if cols is None:
        cols = list(
            dict.fromkeys([*report.rows, *report.cols, *([report.control] if report.control else [])])
        )
    values = report.scores.values
    cov = report.scores.covariates
    tag = colour_by if colour_by in cov.columns else None
    head = "<th>checkpoint</th>" + (f"<th>{escape(tag)}</th>" if tag else "")
    head += "".join(f"<th>{escape(c)}</th>" for c in cols)
    rows = []
    for cp in values.index:
        cells = f"<th>{escape(str(cp))}</th>"
        if tag:
            cells += f"<td>{escape(str(cov.at[cp, tag]))}</td>"
        cells += "".join(f'<td class="num">{num(values.at[cp, c], ".4g")}</td>' for c in cols)
        rows.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'


def _provenance(report: Report) -> str:
    p: dict[str, Any] = report.provenance
    parts = [
        f"<p>{report.n_checkpoints} checkpoints: {escape(', '.join(map(str, report.scores.checkpoints)))}.</p>"
    ]
    if p.get("metrics"):
        rows = "".join(
            f"<tr><td>{escape(m['metric'])}</td><td>{escape(', '.join(m['versions']))}</td>"
            f"<td><code>{escape(str(m['params']))}</code></td><td>{escape('; '.join(m['datasets']))}</td>"
            f'<td class="num">{m["checkpoints"]}</td></tr>'
            for m in p["metrics"]
        )
        parts.append(
            "<table><tr><th>metric</th><th>version</th><th>parameters</th><th>datasets (manifest hash)</th>"
            f"<th>checkpoints</th></tr>{rows}</table>"
        )
    if p.get("imports"):
        rows = "".join(
            f"<tr><td>{escape(str(i.get('source')))}</td><td>{escape(str(i.get('file')))}</td>"
            f"<td><code>{escape(str(i.get('sha256')))}</code></td><td><code>{escape(str(i.get('mapping_sha256')))}</code></td>"
            f'<td class="num">{i.get("checkpoints")}</td></tr>'
            for i in p["imports"]
        )
        parts.append(
            "<p>Imported results (<code>bench import</code>), reported like measured ones:</p><table><tr>"
            "<th>source</th><th>file</th><th>file sha256</th><th>mapping sha256</th><th>results</th></tr>"
            f"{rows}</table>"
        )
    if p.get("runs"):
        rows = "".join(
            f"<tr><td><code>{escape(str(r['run_id']))}</code></td><td>{escape(str(r['started_at']))}</td>"
            f"<td>{escape(str(r['status']))}</td><td><code>{escape(str(r.get('git_sha') or ''))[:12]}</code></td>"
            f"<td>{escape(str(r.get('device') or ''))}</td><td><code>{escape(json.dumps(r.get('versions') or {}))}</code></td></tr>"
            for r in p["runs"]
        )
        parts.append(
            "<table><tr><th>run</th><th>started</th><th>status</th><th>git</th><th>device</th><th>versions</th>"
            f"</tr>{rows}</table>"
        )
    return "".join(parts)


def _how_to_read(report: Report) -> str:
    sym = SYMBOL[report.options.method]
    items = [
        f"Each cell correlates one bias measure (row) with one generalization measure (column) across "
        f"checkpoints: {report.options.method.capitalize()} {sym} from −1 to +1 (red positive, blue negative).",
        f"The interval under it is a {round(report.options.confidence * 100)} % bootstrap interval over "
        "checkpoints: with a dozen checkpoints it is wide, and an interval that spans 0 means the data "
        "cannot tell the sign.",
        f"<b>*</b>: the p-value is below 0.05 after {CORRECTION_NAME[report.options.correction]} correction "
        f"over all {report.tested} cells — many cells tested at once produce some small raw p-values by chance. "
        f"Correction family: {escape(family_text(report))}.",
    ]
    if report.control:
        items.append(
            f"<i>partial</i>: the rank correlation once <code>{escape(report.control)}</code> (in-distribution "
            "accuracy) is accounted for. If it is near 0 while the plain coefficient is large, the bias adds "
            "nothing beyond accuracy."
        )
    if report.category:
        items.append(
            f"<i>loco</i>: the coefficient recomputed with each <code>{escape(report.category)}</code> of "
            "checkpoints left out in turn; a range that crosses 0 means one group carries the correlation."
        )
    items.append(
        "<i>n</i>: the checkpoints that have both values (a metric may not apply to every checkpoint)."
    )
    items.append("Correlation across a zoo is not causation: recipes change several properties at once.")
    return '<div class="read"><ul>' + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>"


def html_page(report: Report, colour_by: str | None = None, size_by: str | None = None) -> str:
    """The whole report as one HTML document (string)."""
    body = [
        "<h1>Do biases explain generalization?</h1>",
        f'<p class="sub">biasbench report, {report.generated:%Y-%m-%d %H:%M UTC} — {escape(headline(report))}.</p>',
    ]
    said = report.verdict()
    if said:
        body += ["<h2>Verdict</h2>", f'<p class="verdict">{escape(" ".join(said))}</p>']
    body += ["<h2>How to read this</h2>", _how_to_read(report)]
    if report.n_checkpoints == 0:
        body.append("<p>No results stored yet: run <code>bench run</code> first.</p>")
    else:
        if report.curated and report.rows and report.cols:
            body += ["<h2>Bias × generalization</h2>", _matrix(report)]
        body.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in legend(report)) + "</ul>")
        if len(report.table):
            body.append(
                _figure(
                    _img(figures.png_bytes(figures.heatmap(report)), "heat map"), "The table as a heat map."
                )
            )
        pred = prediction_rows(report)
        if pred:
            body += [
                "<h2>All biases together</h2>",
                f"<p>{escape(PREDICTION_TITLE)}: how much of each axis the standardized bias vector predicts "
                "for checkpoints it was not fitted on, beside ID accuracy alone and ID accuracy plus the "
                "biases. R² ≤ 0: no better than predicting the mean.</p>",
                _text_table(pred),
            ]
        groups = group_rows(report)
        if groups:
            body += ["<h2>By group</h2>", f"<p>{escape(group_title(report))}.</p>", _text_table(groups)]
        if report.rows and report.cols:
            fig, titles = figures.scatter_grid(report, colour_by)
            body += [
                "<h2>Every pair, checkpoint by checkpoint</h2>",
                _figure(
                    figures.svg_with_titles(fig, titles),
                    "One point per checkpoint (hover a point for its name and values)"
                    + (f", coloured by <code>{escape(colour_by)}</code>." if colour_by else "."),
                ),
            ]
        for role, sub in report.matrices.items():
            body += [f"<h2>{escape(role.capitalize())} × {escape(role)}: every pair</h2>", _pairs(sub)]
        for f in figures.declared_figures(report, colour_by, size_by):
            body += [
                f"<h2>{escape(f.title)}</h2>",
                _figure(_img(figures.png_bytes(f.figure), f.title), escape(f.caption)),
            ]
        body += ["<h2>All numbers</h2>", _pairs(report), "<h2>Scores</h2>", _scores(report, colour_by)]
        stability = report.scores.with_role("stability")
        if stability:
            body += [
                "<h2>Stability</h2>",
                "<p>How reproducible the measures above are, as their metrics declare it (not correlated).</p>",
                _scores(report, colour_by, stability),
            ]
    body += ["<h2>Provenance</h2>", _provenance(report)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>biasbench report</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
