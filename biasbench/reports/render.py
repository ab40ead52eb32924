"""A report as text: a rich table for the terminal (the default), Markdown, CSV and JSON.

The curated report is a matrix — bias measures as rows, generalization measures as columns — whose
cell holds the coefficient with its bootstrap interval, a ``*`` when the adjusted p is below ``ALPHA``,
the partial coefficient (controlling for ID accuracy), the leave-one-category-out range and n. Free
exploration (``--keys``/``--all``) is a list of pairs with the same numbers. CSV and JSON hold the
long table, one row per pair, with every number unrounded.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.table import Table
from rich.text import Text

from biasbench.reports.statistics import SYMBOL
from biasbench.reports.uncertainty import score_intervals

if TYPE_CHECKING:  # pragma: no cover
    from biasbench.reports.analysis import Report

ALPHA = 0.05
CORRECTION_NAME = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "no"}


def num(v: Any, fmt: str = "+.2f") -> str:
    """A number for a table; an undefined one (NaN, None) is ``—``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return format(float(v), fmt)


def ci(row: Any) -> str:
    if row is None or math.isnan(row.ci_low):
        return "—"
    return f"[{num(row.ci_low)}, {num(row.ci_high)}]"


def loco(row: Any) -> str:
    if row is None or math.isnan(row.loco_min):
        return "—"
    return f"{num(row.loco_min)}…{num(row.loco_max)}"


def shown(row: Any) -> float:
    """The coefficient as displayed: 0 where the study's display masks it (``--mask-p``)."""
    return 0.0 if bool(getattr(row, "masked", False)) else row.r


def star(row: Any) -> str:
    return "*" if row is not None and row.p_adj == row.p_adj and row.p_adj < ALPHA else ""


def _cell(report: Report, x: str, y: str) -> Any:
    t = report.table
    hit = t[(t.x == x) & (t.y == y)]
    return next(hit.itertuples(index=False)) if len(hit) else None


def headline(report: Report) -> str:
    sym = SYMBOL[report.options.method]
    what = "bias × generalization" if report.curated else "pairs of keys"
    return (
        f"{report.options.method.capitalize()} {sym} across {report.n_checkpoints} checkpoints, {what}; "
        f"{round(report.options.confidence * 100)} % bootstrap CI over checkpoints "
        f"({report.options.n_resamples} resamples, seed {report.options.seed})"
    )


def family_text(report: Report) -> str:
    """Which cells each correction family holds, in words (``--family``)."""
    sizes = report.family_sizes()
    if isinstance(report.family, list):
        fixed, rest = sizes.get("fixed", 0), sizes.get("rest", 0)
        text = f"fixed by --family: the {fixed} cells among {', '.join(report.family)}"
        return text + (f"; the other {rest} cells are a second family" if rest else "")
    if report.family == "table":
        return f"one family, every cell of the table ({report.tested} cells)"
    what = "generalization column" if report.family == "column" else "bias row"
    if not report.curated:
        what = "y key" if report.family == "column" else "x key"
    each = ", ".join(f"{k.split(' ', 1)[1]} ({v})" for k, v in sizes.items())
    return f"one family per {what}: {each}"


def legend(report: Report) -> list[str]:
    """The lines that explain the table's marks."""
    lines = [
        f"* p < {ALPHA} after {CORRECTION_NAME[report.options.correction]} correction over "
        f"{report.tested} tests; correction family: {family_text(report)}.",
    ]
    if report.control:
        lines.append(
            f"partial: Spearman ρ controlling for {report.control} (ID accuracy; — in that column itself)."
        )
    if report.category:
        lines.append(
            f"loco: range of the coefficient with each `{report.category}` left out in turn "
            "(a range across 0: one category carries it)."
        )
    if report.options.mask_p is not None:
        lines.append(
            f"study display: a coefficient whose uncorrected p is ≥ {report.options.mask_p:g} is shown as 0 "
            "(as Gavrikov & Keuper 2024 do); its CI, p and the CSV/JSON keep the real value (column masked)."
        )
    lines += report.scores.notes
    lines += report.caveats
    return lines


def _cell_lines(row: Any) -> list[str]:
    if row is None:
        return ["(not paired)"]
    lines = [f"{num(shown(row))}{star(row)}", ci(row)]
    lines.append(f"partial {num(row.partial_r)}")
    lines.append(f"loco {loco(row)}")
    lines.append(f"n={row.n}")
    return lines


def terminal_tables(report: Report) -> list[Table | Text]:
    """The report as rich renderables: the matrix (curated) or the pair list, then the legend."""
    out: list[Table | Text] = []
    said = report.verdict()
    if said:
        out.append(Text("Verdict\n" + "\n".join(f"• {line}" for line in said), style="bold"))
    if report.curated:
        if not report.rows or not report.cols:
            return [*out, Text(_empty_reason(report))]
        t = Table(title=headline(report), show_lines=True, title_justify="left")
        t.add_column("bias \\ generalization", style="bold")
        for c in report.cols:
            t.add_column(Text(f"{c}\n{report.label(c)}"), justify="right")
        for r in report.rows:
            t.add_row(
                Text(f"{r}\n{report.label(r)}"),
                *(Text("\n".join(_cell_lines(_cell(report, r, c)))) for c in report.cols),
            )
        out.append(t)
        stab = stability_rows(report)
        if stab:
            title = (
                "Stability: how reproducible the measures are, as their metrics declare it (not correlated)"
            )
            out.append(_rich_table(title, stab, {"checkpoint"}))
    else:
        t = Table(title=headline(report), title_justify="left")
        for name in ("x", "y", SYMBOL[report.options.method], "95% CI", "p", "p adj", "partial", "loco", "n"):
            t.add_column(name, justify="left" if name in ("x", "y") else "right")
        for row in report.table.itertuples(index=False):
            t.add_row(
                *map(
                    Text,
                    (
                        row.x,
                        row.y,
                        num(row.r) + star(row),
                        ci(row),
                        num(row.p, ".2g"),
                        num(row.p_adj, ".2g"),
                        num(row.partial_r),
                        loco(row),
                        str(row.n),
                    ),
                )
            )
        out.append(t)
    pred = prediction_rows(report)
    if pred:
        out.append(_rich_table(PREDICTION_TITLE, pred, {"generalization", "predictor"}))
    groups = group_rows(report)
    if groups:
        out.append(_rich_table(group_title(report), groups, {"x", "y"}))
    out.append(Text("\n".join(legend(report))))
    return out


def _rich_table(title: str, rows: list[list[str]], left: set[str]) -> Table:
    """A header row and text rows as a rich table; the ``left`` columns left-aligned, the rest right."""
    t = Table(title=title, title_justify="left")
    for name in rows[0]:
        t.add_column(name, justify="left" if name in left else "right")
    for row in rows[1:]:
        t.add_row(*map(Text, row))
    return t


PREDICTION_TITLE = (
    "All biases together: cross-validated R² of each generalization axis (ridge, nested CV; "
    "95 % bootstrap CI; permutation p; ΔR²'s p by permuting the residuals of y on ID accuracy)"
)
PREDICTION_HEADER = [
    "generalization",
    "predictor",
    "n",
    "R²",
    "95% CI",
    "perm. p",
    "ΔR² over ID",
    "95% CI of Δ",
    "perm. p of Δ",
]


def prediction_rows(report: Report) -> list[list[str]]:
    """Header and one row per (generalization axis, predictor) of the prediction table; empty when
    the report has none."""
    pred = report.prediction
    if pred is None or not len(pred):
        return []
    rows = [PREDICTION_HEADER]
    for r in pred.itertuples(index=False):
        rows.append(
            [
                r.y,
                {"id": "ID accuracy", "biases": f"{r.features} biases", "id+biases": "ID + biases"}[r.model],
                str(r.n),
                num(r.r2),
                "—" if math.isnan(r.r2_low) else f"[{num(r.r2_low)}, {num(r.r2_high)}]",
                num(r.p_perm, ".2g"),
                num(r.gain),
                "—" if math.isnan(r.gain_low) else f"[{num(r.gain_low)}, {num(r.gain_high)}]",
                num(r.p_gain, ".2g"),
            ]
        )
    return rows


def group_title(report: Report) -> str:
    return (
        f"By group (--by {report.by}): {SYMBOL[report.options.method]} per group, * adjusted within the group"
    )


def _short(row: Any) -> str:
    return "—" if row is None else f"{num(shown(row))}{star(row)} {ci(row)} n={row.n}"


def group_rows(report: Report) -> list[list[str]]:
    """Header (x, y, all, each group) and one row per pair: the coefficient of every group side by side;
    empty without ``--by``."""
    if not report.groups:
        return []
    names = ["all", *report.groups]
    reps = [report, *report.groups.values()]
    rows = [["x", "y", *(f"{n} (n={r.n_checkpoints})" for n, r in zip(names, reps, strict=True))]]
    for pair in report.table.itertuples(index=False):
        rows.append([pair.x, pair.y, *(_short(_cell(r, pair.x, pair.y)) for r in reps)])
    return rows


def _empty_reason(report: Report) -> str:
    if report.n_checkpoints == 0:
        return "No results stored yet: run `bench run` first."
    missing = []
    if not report.rows:
        missing.append(
            "no bias keys (metrics declaring key_roles 'bias': shape_bias, spectral, critical_band, sis)"
        )
    if not report.cols:
        missing.append("no generalization keys (the `ood` metric's aggregates)")
    return (
        "The curated table is empty: " + "; ".join(missing) + ". `--keys`/`--all` correlate any stored keys."
    )


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md_escape, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def pair_rows(report: Report) -> list[list[str]]:
    return [
        [
            r.x,
            r.y,
            num(shown(r)) + star(r),
            ci(r),
            num(r.p, ".2g"),
            num(r.p_adj, ".2g"),
            num(r.partial_r),
            num(r.partial_p, ".2g"),
            loco(r),
            (r.loco_drop or "—"),
            str(r.n),
        ]
        for r in report.table.itertuples(index=False)
    ]


PAIR_HEADER = [
    "x",
    "y",
    "coef",
    "95% CI",
    "p",
    "p adj",
    "partial",
    "partial p",
    "loco range",
    "loco most",
    "n",
]


def stability_rows(report: Report) -> list[list[str]]:
    """Header and one row per checkpoint of the keys a metric declares with role ``stability`` (e.g.
    SIS's bootstrap interval and its two-path agreement), shown beside the table, never correlated;
    empty when no stored key has that role."""
    cols = report.scores.with_role("stability")
    if not cols:
        return []
    values = report.scores.values
    rows = [["checkpoint", *cols]]
    for cp in values.index:
        rows.append([str(cp), *(num(values.at[cp, c], ".4g") for c in cols)])
    return rows


def markdown(report: Report) -> str:
    out = [
        "# biasbench report: do biases explain generalization?",
        "",
        f"_{report.generated:%Y-%m-%d %H:%M UTC}; {headline(report)}._",
        "",
    ]
    said = report.verdict()
    if said:
        out += ["## Verdict", "", *(f"- {line}" for line in said), ""]
    if report.curated:
        out += ["## Bias × generalization", ""]
        if report.rows and report.cols:
            header = ["bias \\ generalization", *report.cols]
            rows = []
            for r in report.rows:
                cells = []
                for c in report.cols:
                    row = _cell(report, r, c)
                    cells.append("—" if row is None else f"{num(row.r)}{star(row)} {ci(row)} n={row.n}")
                rows.append([r, *cells])
            out.append(_md_table(header, rows))
        else:
            out.append(_empty_reason(report) + "\n")
        stab = stability_rows(report)
        if stab:
            out += ["", "## Stability", "", _md_table(stab[0], stab[1:])]
    pred = prediction_rows(report)
    if pred:
        out += ["## All biases together", "", PREDICTION_TITLE + ".", "", _md_table(pred[0], pred[1:])]
    groups = group_rows(report)
    if groups:
        out += ["## By group", "", group_title(report) + ".", "", _md_table(groups[0], groups[1:])]
    for role, sub in report.matrices.items():
        out += [f"## {role.capitalize()} × {role}", "", _md_table(PAIR_HEADER, pair_rows(sub))]
    out += ["## Every pair" if report.curated else "## Pairs", ""]
    out.append(_md_table(PAIR_HEADER, pair_rows(report)) if len(report.table) else "_(no pairs)_\n")
    out += ["", *(f"- {line}" for line in legend(report)), ""]
    return "\n".join(out)


def long_table(report: Report) -> pd.DataFrame:
    """The statistics, one row per pair, with the columns' labels and roles."""
    t = report.table.copy()
    t.insert(2, "x_label", [report.label(x) for x in t.x])
    t.insert(3, "y_label", [report.label(y) for y in t.y])
    t["correction"] = report.options.correction
    t["control"] = report.control or ""
    t["category"] = report.category or ""
    return t


#: a cell a spreadsheet would read as a formula (OWASP's CSV-injection list), unless it is a number
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def neutralise_formula(value: object) -> object:
    """A text cell starting like a formula gets a leading ``'`` (OWASP's advice against CSV
    injection), so a spreadsheet shows it as text; numbers and other cells are returned as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as CSV with every text cell (and header) that would be a spreadsheet formula
    neutralised."""
    safe = frame.copy()
    safe.columns = [neutralise_formula(str(c)) for c in safe.columns]
    for c in safe.columns:
        if safe[c].dtype == object or pd.api.types.is_string_dtype(safe[c]):
            safe[c] = safe[c].map(neutralise_formula)
    return safe.to_csv(index=False)


def grouped_table(report: Report) -> pd.DataFrame:
    """:func:`long_table` for all checkpoints (group ``all``) and, with ``--by``, each group's rows
    after it, with a leading ``group`` column."""
    frames = []
    for name, rep in [("all", report), *report.groups.items()]:
        t = long_table(rep)
        t.insert(0, "group", name)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def to_csv(report: Report) -> str:
    return csv_text(grouped_table(report) if report.groups else long_table(report))


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    # the non-ASCII signs our labels use, as math (pdflatex has no glyph for them)
    "≤": r"$\le$",
    "≥": r"$\ge$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "²": r"$^2$",
    "…": r"\ldots{}",
    "ρ": r"$\rho$",
    "τ": r"$\tau$",
    "σ": r"$\sigma$",
    "μ": r"$\mu$",
    "ε": r"$\varepsilon$",
    "−": "-",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(report: Report) -> str:
    """The curated matrix (or the pair list) as a ``booktabs`` table: the coefficient with ``*`` when
    the adjusted p is below ``ALPHA`` and its interval beneath; a caption with n, the method, the
    interval and the correction (needs ``\\usepackage{booktabs}``)."""
    sym = {"ρ": r"$\rho$", "r": "$r$", "τ": r"$\tau$"}[SYMBOL[report.options.method]]
    caption = latex_escape(
        f"{report.options.method.capitalize()} {SYMBOL[report.options.method]} across {report.n_checkpoints} "
        "checkpoints; "
        f"{round(report.options.confidence * 100)} % bootstrap interval over checkpoints; * adjusted p < "
        f"{ALPHA} ({CORRECTION_NAME[report.options.correction]} over {report.tested} tests; "
        f"family: {family_text(report)})."
    )

    def cell(row: Any) -> str:
        if row is None or math.isnan(row.r):
            return "--"
        mark = "$^{*}$" if star(row) else ""
        interval = (
            ""
            if math.isnan(row.ci_low)
            else f" \\newline {{\\scriptsize [{num(row.ci_low)}, {num(row.ci_high)}]}}"
        )
        return f"${num(shown(row))}${mark}{interval}"

    if report.curated and report.rows and report.cols:
        head = [
            "bias \\textbackslash{} generalization",
            *(latex_escape(report.label(c)) for c in report.cols),
        ]
        body = [
            [latex_escape(report.label(r)), *(cell(_cell(report, r, c)) for c in report.cols)]
            for r in report.rows
        ]
        spec = "l" + "p{2.2cm}" * len(report.cols)
    else:
        head = ["x", "y", sym, "n"]
        body = [
            [latex_escape(r.x), latex_escape(r.y), cell(r), str(r.n)]
            for r in report.table.itertuples(index=False)
        ]
        spec = "llp{2.2cm}r"
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
        *(" & ".join(row) + r" \\" for row in body),
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{caption}}}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    return [] if frame is None else json.loads(frame.to_json(orient="records"))


def to_json(report: Report) -> str:
    t = long_table(report)
    doc = {
        "generated": report.generated.isoformat(),
        "method": report.options.method,
        "confidence": report.options.confidence,
        "n_resamples": report.options.n_resamples,
        "seed": report.options.seed,
        "correction": report.options.correction,
        "tests": report.tested,
        "family": report.family,
        "families": report.family_sizes(),
        "checkpoints": report.scores.checkpoints,
        "rows": report.rows,
        "columns": report.cols,
        "control": report.control,
        "category": report.category,
        "pairs": json.loads(t.to_json(orient="records")),
        "verdict": report.verdict(),
        "prediction": _records(report.prediction),
        "groups": {
            name: {
                "checkpoints": rep.scores.checkpoints,
                "pairs": json.loads(long_table(rep).to_json(orient="records")),
                "prediction": _records(rep.prediction),
            }
            for name, rep in report.groups.items()
        },
        "matrices": {
            role: json.loads(long_table(sub).to_json(orient="records"))
            for role, sub in report.matrices.items()
        },
        "scores": json.loads(report.scores.values.to_json(orient="index")),
        "score_intervals": score_intervals(report.scores, report.options.confidence),
        "score_interval_method": f"Wilson score interval, {round(report.options.confidence * 100)} % "
        "(declared proportions: value = k / n)",
        "provenance": report.provenance,
    }
    return json.dumps(doc, indent=1, default=str) + "\n"
