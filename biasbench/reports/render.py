"""Rendering reports: Markdown tables and a correlation heatmap (matplotlib, PNG)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from biasbench.reports.correlations import correlation_square, pairwise_spearman, score_matrix


def _md_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    if df.empty:
        return "_(empty)_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(format(v, floatfmt) if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(
    results: pd.DataFrame, keys: list[str] | None = None, top: int = 50, across_metrics: bool = False
) -> str:
    """The correlation report: scores per checkpoint, then Spearman ρ (p) for every pair of keys
    (``across_metrics``: only pairs of keys from different metrics, e.g. a bias vs an accuracy)."""
    matrix = score_matrix(results)
    cols = keys or list(matrix.columns)
    corr = pairwise_spearman(matrix, cols)
    if across_metrics and len(corr):
        corr = corr[corr.x.str.split(".").str[0] != corr.y.str.split(".").str[0]]
    n_ckpt = len(matrix)
    out = [
        "# biasbench correlation report",
        "",
        f"_{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {n_ckpt} checkpoints, {len(cols)} scalar keys._",
        "",
        "## Scores",
        "",
        _md_table(matrix[[c for c in cols if c in matrix.columns]].reset_index())
        if n_ckpt
        else "_(no results)_\n",
        "## Spearman correlations across checkpoints",
        "",
        (
            "Every pair of non-constant keys of different metrics"
            if across_metrics
            else "Every pair of non-constant keys"
        )
        + ", over the checkpoints that have both; sorted by |ρ|"
        + (f"; the {top} strongest shown." if len(corr) > top else "."),
        "",
    ]
    if n_ckpt < 3:
        out.append("_Correlations need at least 3 checkpoints._\n")
    else:
        out.append(_md_table(corr.head(top)))
    return "\n".join(out)


def heatmap(results: pd.DataFrame, keys: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = score_matrix(results)
    sq = correlation_square(matrix, keys)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(sq), 0.8 + 0.5 * len(sq)))
    im = ax.imshow(sq.values, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(sq)), sq.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(sq)), sq.index, fontsize=8)
    for i in range(len(sq)):
        for j in range(len(sq)):
            v = sq.values[i, j]
            if v == v:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="Spearman ρ")
    ax.set_title(f"Spearman ρ across {len(matrix)} checkpoints")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
