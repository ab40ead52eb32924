"""The report's answer in words, generated from its numbers by fixed rules (never hand-written).

Rules, in the order the sentences appear:

1. **Scope:** n checkpoints, the number of cells tested and the correction (with its families when
   ``--family`` is not the whole table).
2. **Cells:** how many cells have an adjusted p below ``ALPHA`` (0.05); the strongest of them (at most
   ``STRONGEST`` = 3, by |coefficient|) with their interval and, when the report controls for ID
   accuracy, whether the partial coefficient keeps the sign and is itself below ``ALPHA`` ("beyond ID
   accuracy") or not ("largely via ID accuracy"). No surviving cell: the strongest cell is named as
   not distinguishable from chance.
3. **All biases together** (when the report holds the prediction table): per generalization axis,
   "predicted" when the biases' out-of-sample R² is > 0 with permutation p < ``ALPHA``, otherwise "not
   predicted"; and, with a control, "beyond ID accuracy" when ΔR² (ID + biases over ID alone) is > 0
   with permutation p < ``ALPHA`` (Freedman–Lane: residuals of y on ID accuracy permuted; without
   permutations, its bootstrap interval above 0), "not beyond ID accuracy" otherwise; the sentence
   gives ΔR² with its interval and p.
4. **Groups** (``--by``): per group, its n and its count of surviving cells.
5. **Caveats:** always that a correlation across a zoo is not causation (recipes change several
   properties at once); with fewer than ``SMALL_N`` (20) checkpoints, that the intervals are wide and
   a null result is weak evidence; the report's own notes (e.g. the demo world's concepts sets).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from biasbench.reports.render import CORRECTION_NAME, family_text, num
from biasbench.reports.statistics import SYMBOL

if TYPE_CHECKING:  # pragma: no cover
    from biasbench.reports.analysis import Report

ALPHA = 0.05
STRONGEST = 3
SMALL_N = 20


def _ok(v: object) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _significant(table: pd.DataFrame) -> pd.DataFrame:
    hit = table[table["p_adj"] < ALPHA]
    return hit.reindex(hit["r"].abs().sort_values(ascending=False).index)


def _cell_phrase(report: Report, row: object, sym: str) -> str:
    text = (
        f"{report.label(row.x)} ~ {report.label(row.y)}: {sym} = {num(row.r)} "
        f"[{num(row.ci_low)}, {num(row.ci_high)}], n = {row.n}"
    )
    if report.control and _ok(row.partial_r):
        beyond = row.partial_p < ALPHA and math.copysign(1, row.partial_r) == math.copysign(1, row.r)
        text += (
            f" (partial {num(row.partial_r)}: beyond ID accuracy)"
            if beyond
            else f" (partial {num(row.partial_r)}: largely via ID accuracy)"
        )
    return text


def cells_sentences(report: Report) -> list[str]:
    """Rules 1–2 for one report (also used per group)."""
    t = report.table.dropna(subset=["r"])
    sym = SYMBOL[report.options.method]
    what = "bias × generalization cells" if report.curated else "pairs"
    within = "" if report.family == "table" else f" within families ({family_text(report)})"
    out = [
        f"{report.n_checkpoints} checkpoints, {report.tested} {what} tested, p-values adjusted with "
        f"{CORRECTION_NAME[report.options.correction]} correction{within}."
    ]
    if not len(t):
        out.append("No cell has a defined coefficient (too few checkpoints, or constant columns).")
        return out
    sig = _significant(t)
    if len(sig):
        best = [_cell_phrase(report, r, sym) for r in sig.head(STRONGEST).itertuples(index=False)]
        shown = (
            f"; the table shows the {len(t)} strongest of the {report.tested}"
            if len(t) < report.tested
            else ""
        )
        out.append(
            f"{len(sig)} of {len(t)} survive correction (adjusted p < {ALPHA:g}{shown}); the strongest: "
            + "; ".join(best)
            + "."
        )
    else:
        top = t.reindex(t["r"].abs().sort_values(ascending=False).index).iloc[0]
        out.append(
            f"No cell survives correction (adjusted p < {ALPHA:g}): at this n the table cannot tell a "
            f"correlation from chance; the strongest is {_cell_phrase(report, top, sym)}, adjusted p = "
            f"{num(top.p_adj, '.2g')}."
        )
    return out


def prediction_sentences(report: Report) -> list[str]:
    """Rule 3: one sentence per generalization axis of the prediction table."""
    pred = report.prediction
    if pred is None or not len(pred):
        return []
    out = []
    for y, grp in pred.groupby("y", sort=False):
        by = {r.model: r for r in grp.itertuples(index=False)}
        b = by.get("biases")
        if b is None or not _ok(b.r2):
            out.append(
                f"{report.label(y)}: too few complete checkpoints to predict it (n = {grp['n'].iloc[0]})."
            )
            continue
        predicted = b.r2 > 0 and b.p_perm < ALPHA
        text = (
            f"{report.label(y)}: the biases together {'predict' if predicted else 'do not predict'} it out of "
            f"sample (cross-validated R² = {num(b.r2)} [{num(b.r2_low)}, {num(b.r2_high)}], permutation "
            f"p = {num(b.p_perm, '.2g')}, n = {b.n})"
        )
        both, base = by.get("id+biases"), by.get("id")
        if both is not None and base is not None and _ok(both.gain):
            tested = _ok(both.p_gain)
            beyond = both.gain > 0 and both.p_gain < ALPHA if tested else both.gain_low > 0
            text += (
                f"; {'beyond' if beyond else 'not beyond'} ID accuracy alone (R² {num(base.r2)} → "
                f"{num(both.r2)}, ΔR² = {num(both.gain)} [{num(both.gain_low)}, {num(both.gain_high)}]"
                + (f", permutation p = {num(both.p_gain, '.2g')})" if tested else ")")
            )
        out.append(text + ".")
    return out


def group_sentences(report: Report) -> list[str]:
    """Rule 4."""
    out = []
    for name, sub in report.groups.items():
        t = sub.table.dropna(subset=["r"])
        sig = _significant(t)
        out.append(
            f"Group {name} (n = {sub.n_checkpoints}): {len(sig)} of {len(t)} cells survive correction"
            + (
                f"; strongest {_cell_phrase(sub, sig.iloc[0], SYMBOL[sub.options.method])}."
                if len(sig)
                else "."
            )
        )
    return out


def caveats(report: Report) -> list[str]:
    """Rule 5."""
    out = ["A correlation across a zoo is not causation: training recipes change several properties at once."]
    if 0 < report.n_checkpoints < SMALL_N:
        out.append(
            f"With {report.n_checkpoints} checkpoints (fewer than {SMALL_N}) the intervals are wide and a "
            "missing correlation is weak evidence of none."
        )
    return out + list(report.caveats)


def verdict(report: Report) -> list[str]:
    """The verdict's sentences (rules 1–5); empty for a report without checkpoints."""
    if report.n_checkpoints == 0:
        return []
    return [
        *cells_sentences(report),
        *prediction_sentences(report),
        *group_sentences(report),
        *caveats(report),
    ]
