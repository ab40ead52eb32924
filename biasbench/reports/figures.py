"""The report's figures (matplotlib, Agg), sized for a laptop screen: at most ``MAX_W`` × ``MAX_H``
inches at ``DPI`` (≤ 1260 × 900 px), whatever the number of keys.

* ``heatmap``: the correlation table, each cell with its coefficient and bootstrap interval;
* ``scatter_grid``: every bias × generalization pair, one point per checkpoint, coloured by a tag; as
  SVG each point carries a ``<title>`` (the checkpoint's name shows on hover in a browser);
* ``curve``: a curve a metric declares over its keys (``Metric.curves``: spectral's low-/high-pass
  accuracy ratio against the cutoff, critical_band's thresholds against the noise band, a third-party
  metric's own), one line per checkpoint;
* ``key_grid``: a map a metric declares over keys on a 2-D grid (``Metric.curves`` holding a
  :class:`~biasbench.metrics.base.KeyGrid`: regions' SIS density over the image), one map per
  checkpoint;
* ``sis_sizes``: per checkpoint, the distribution of its images' SIS sizes.

:func:`declared_figures` is the one list of those that the HTML page and ``--figures`` both show.

A figure whose data is not stored (no ``spectral`` results, say) is not drawn.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import matplotlib

from biasbench.core.errors import InputError, NotFoundError

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import Normalize, TwoSlopeNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from biasbench.metrics.base import KeyGrid  # noqa: E402
from biasbench.reports.roles import declared_curves  # noqa: E402
from biasbench.reports.statistics import SYMBOL  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from biasbench.metrics.base import Curve
    from biasbench.reports.analysis import Report

DPI = 90


class FigureError(InputError):
    """A figure cannot be drawn as asked (a size tag that is not a number, an unknown file format)."""


FIGURE_FORMATS = ("png", "svg", "pdf")
MAX_PAIRS = 12  # panels of a free exploration's scatter grid
_MPL = tuple(int(p) for p in matplotlib.__version__.split(".")[:2])
MAX_W, MAX_H = 14.0, 10.0


def _size(w: float, h: float) -> tuple[float, float]:
    return (min(MAX_W, max(4.0, w)), min(MAX_H, max(3.0, h)))


def _short(column: str, width: int = 28) -> str:
    return column if len(column) <= width else "…" + column[-(width - 1) :]


def heatmap(report: Report) -> Figure:
    """The table as a heat map; each cell shows the coefficient, its interval and ``*`` if significant."""
    if report.curated:
        rows, cols = report.rows, report.cols
    else:
        keys = list(dict.fromkeys([*report.table.x, *report.table.y]))[:20]
        rows = cols = keys
    t = report.table.set_index(["x", "y"])
    grid = np.full((len(rows), len(cols)), np.nan)
    text = [["" for _ in cols] for _ in rows]
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            key = (r, c) if (r, c) in t.index else (c, r) if (c, r) in t.index else None
            if key is None:
                continue
            row = t.loc[key]
            r_shown = 0.0 if bool(row.get("masked", False)) else row["r"]  # the study's display (--mask-p)
            grid[i, j] = r_shown
            mark = "*" if row["p_adj"] == row["p_adj"] and row["p_adj"] < 0.05 else ""
            ci = "" if math.isnan(row["ci_low"]) else f"\n[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
            text[i][j] = "—" if math.isnan(row["r"]) else f"{r_shown:+.2f}{mark}{ci}"
    fig = plt.figure(
        figsize=_size(3.2 + 1.6 * len(cols), 1.6 + 0.62 * len(rows)), dpi=DPI, layout="constrained"
    )
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), [_short(c) for c in cols], rotation=25, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [_short(r, 44) for r in rows], fontsize=8)
    small = max(5.5, min(8.0, 60 / max(len(cols), 1)))
    for i in range(len(rows)):
        for j in range(len(cols)):
            if text[i][j]:
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=small)
    sym = SYMBOL[report.options.method]
    fig.colorbar(im, ax=ax, label=f"{report.options.method.capitalize()} {sym}", shrink=0.8)
    fig.suptitle(
        f"{sym} across {report.n_checkpoints} checkpoints "
        f"({round(100 * report.options.confidence)} % bootstrap CI; * adjusted p < 0.05)",
        fontsize=10,
    )
    return fig


def _colours(report: Report, tag: str | None) -> tuple[pd.Series, dict[str, tuple]]:
    cps = report.scores.values.index
    cov = report.scores.covariates
    if tag and tag in cov.columns:
        cats = cov[tag].reindex(cps).fillna("(untagged)").astype(str)
    else:
        cats = pd.Series("checkpoint", index=cps)
    cmap = plt.get_cmap("tab10")
    palette = {c: cmap(i % 10) for i, c in enumerate(sorted(cats.unique()))}
    return cats, palette


def scatter_grid(report: Report, colour_by: str | None = None) -> tuple[Figure, dict[str, str]]:
    """Small multiples, one point per checkpoint: the curated table's every (bias, generalization) pair
    as a grid (x: generalization, y: bias), or the ``MAX_PAIRS`` first pairs of a free exploration;
    and the SVG element id of each point with its hover text (for :func:`svg_with_titles`)."""
    values = report.scores.values
    cats, palette = _colours(report, colour_by)
    if report.curated:
        panels = [(i, j, r, c) for i, r in enumerate(report.rows) for j, c in enumerate(report.cols)]
        n_rows, n_cols = len(report.rows), len(report.cols)
    else:
        pairs = list(zip(report.table.y, report.table.x, strict=True))[:MAX_PAIRS]  # y on the y axis
        n_cols = min(4, max(1, len(pairs)))
        n_rows = max(1, math.ceil(len(pairs) / n_cols))
        panels = [(k // n_cols, k % n_cols, r, c) for k, (r, c) in enumerate(pairs)]
    w, h = 0.6 + 2.5 * n_cols, 0.9 + 1.9 * n_rows
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=_size(w, h), dpi=DPI, squeeze=False, layout="constrained"
    )
    titles: dict[str, str] = {}
    used = set()
    for i, j, r, c in panels:
        ax = axes[i][j]
        used.add((i, j))
        pair = values[[r, c]].dropna()
        for k, (cp, (y_v, x_v)) in enumerate(pair.iterrows()):
            gid = f"pt-{i}-{j}-{k}"
            ax.scatter([x_v], [y_v], s=22, color=palette[cats[cp]], edgecolor="black", linewidth=0.3, gid=gid)
            titles[gid] = f"{cp} ({cats[cp]}): {r} = {y_v:.4g}, {c} = {x_v:.4g}"
        ax.tick_params(labelsize=6)
        if not report.curated or i == n_rows - 1:
            ax.set_xlabel(_short(c, 30), fontsize=7)
        if not report.curated or j == 0:
            ax.set_ylabel(_short(r.split(".", 1)[-1], 22), fontsize=7)
    for i in range(n_rows):
        for j in range(n_cols):
            if (i, j) not in used:
                axes[i][j].set_axis_off()
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=col, markeredgecolor="black", label=cat)
        for cat, col in palette.items()
    ]
    if len(palette) > 1:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=7)
    what = "Bias (rows) × generalization (columns)" if report.curated else "The strongest pairs"
    fig.suptitle(f"{what}, one point per checkpoint{_by(colour_by)}", fontsize=10)
    return fig, titles


def marker_sizes(report: Report, size_by: str | None) -> pd.Series:
    """Per checkpoint a marker area: 24 without ``size_by``; else 16 … 140 in proportion to the tag's
    numeric value (e.g. the adversarial-training ε; an untagged checkpoint counts as 0). A tag that is
    not a number is an error."""
    cps = report.scores.values.index
    if not size_by:
        return pd.Series(24.0, index=cps)
    cov = report.scores.covariates
    if size_by not in cov.columns:
        raise FigureError(
            f"--size-by: no checkpoint carries the tag {size_by!r}; tags: {', '.join(cov.columns) or 'none'}"
        )
    raw = cov[size_by].reindex(cps)
    vals = pd.to_numeric(raw.fillna("0"), errors="coerce")
    if vals.isna().any():
        bad = sorted(set(raw[vals.isna()].astype(str)))
        raise FigureError(
            f"--size-by {size_by}: the tag is not a number for every checkpoint ({', '.join(bad)})"
        )
    span = float(vals.max() - vals.min())
    return 16.0 + 124.0 * ((vals - vals.min()) / span if span > 0 else vals * 0.0)


def study_scatter(
    report: Report, bias: str, colour_by: str | None = None, size_by: str | None = None
) -> Figure | None:
    """One bias against every generalization axis of the report (one panel per axis, x = the bias), one
    point per checkpoint, labelled with its name, coloured by a tag and sized by a numeric tag — the
    study's scatter plots. ``None`` when no checkpoint has the bias and an axis."""
    values = report.scores.values
    panels = [(c, values[[bias, c]].dropna()) for c in report.cols if c != bias]
    panels = [(c, d) for c, d in panels if len(d)]
    if not panels:
        return None
    cats, palette = _colours(report, colour_by)
    sizes = marker_sizes(report, size_by)
    fig, axes = plt.subplots(
        1, len(panels), figsize=_size(3.3 * len(panels), 3.6), dpi=DPI, squeeze=False, layout="constrained"
    )
    for ax, (col, pair) in zip(axes[0], panels, strict=True):
        ax.scatter(
            pair[bias],
            pair[col],
            s=sizes.reindex(pair.index),
            c=[palette[cats[cp]] for cp in pair.index],
            edgecolor="black",
            linewidth=0.3,
            alpha=0.85,
        )
        if len(pair) <= 60:
            for cp, (x_v, y_v) in pair.iterrows():
                ax.annotate(str(cp), (x_v, y_v), fontsize=5, xytext=(2, 2), textcoords="offset points")
        row = report.table[(report.table.x == bias) & (report.table.y == col)]
        if len(row):
            r = row.iloc[0]
            ax.set_title(f"{SYMBOL[report.options.method]} = {r['r']:+.2f} (n = {int(r['n'])})", fontsize=8)
        ax.set_xlabel(_short(report.label(bias), 40), fontsize=7)
        ax.set_ylabel(_short(report.label(col), 40), fontsize=7)
        ax.tick_params(labelsize=6)
    _legend(fig, palette)
    fig.suptitle(f"{report.label(bias)} against generalization{_by(colour_by)}", fontsize=10)
    return fig


def _by(tag: str | None) -> str:
    return f", coloured by {tag}" if tag else ""


def _series(values: pd.DataFrame, metric: str, key: str) -> list[tuple[float, str]]:
    """The columns ``<metric>.<key>`` with ``{x}`` a number, as (x, column), sorted by x."""
    pattern = re.escape(f"{metric}.{key}").replace(re.escape("{x}"), "([0-9.]+)")
    found = []
    for col in values.columns:
        m = re.fullmatch(pattern, col)
        if m:
            found.append((float(m.group(1)), col))
    return sorted(found)


def _lines(ax, values: pd.DataFrame, series: list[tuple[float, str]], cats: pd.Series, palette: dict) -> None:
    xs = [x for x, _ in series]
    for cp in values.index:
        ys = [values.at[cp, col] for _, col in series]
        if all(isinstance(y, float) and math.isnan(y) for y in ys):
            continue
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, color=palette[cats[cp]], label=cp, alpha=0.85)


def curve(report: Report, metric: str, spec: Curve, colour_by: str | None = None) -> Figure | None:
    """A metric's declared curve (:class:`~biasbench.metrics.base.Curve`): per panel, one line per
    checkpoint over the x values of its keys; ``None`` when no panel has data."""
    values = report.scores.values
    panels = [(p, _series(values, metric, p.key)) for p in spec.panels]
    panels = [(p, s) for p, s in panels if s]
    if not panels:
        return None
    cats, palette = _colours(report, colour_by)
    prefix = f"{metric}."
    stored = values[[c for c in values.columns if c.startswith(prefix)]]
    stored = stored.rename(columns=lambda c: c[len(prefix) :])
    width = 8 if len(panels) == 1 else 5.5 * len(panels)
    fig, axes = plt.subplots(
        1, len(panels), figsize=_size(width, 4.2), dpi=DPI, sharey=True, layout="constrained", squeeze=False
    )
    for ax, (panel, series) in zip(axes[0], panels, strict=True):
        _lines(ax, values, series, cats, palette)
        if spec.tick is not None:
            ax.set_xticks([x for x, _ in series], [spec.tick(x, stored) for x, _ in series], fontsize=7)
        ax.set_xlabel(panel.x_label, fontsize=8)
        if panel.title:
            ax.set_title(panel.title, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel(spec.y_label, fontsize=8)
    _legend(fig, palette)
    fig.suptitle(f"{spec.title}{_by(colour_by)}", fontsize=10)
    return fig


def _grid_cells(values: pd.DataFrame, metric: str, key: str) -> dict[tuple[int, int], str]:
    """The columns ``<metric>.<key>`` with ``{row}`` and ``{col}`` integers, as {(row, col): column}."""
    pattern = (
        re.escape(f"{metric}.{key}")
        .replace(re.escape("{row}"), "(?P<row>[0-9]+)")
        .replace(re.escape("{col}"), "(?P<col>[0-9]+)")
    )
    found = {}
    for col in values.columns:
        m = re.fullmatch(pattern, col)
        if m:
            found[(int(m.group("row")), int(m.group("col")))] = col
    return found


def key_grid(report: Report, metric: str, spec: KeyGrid) -> Figure | None:
    """A metric's declared grid of keys (:class:`~biasbench.metrics.base.KeyGrid`): one map per
    checkpoint that has any of them, on one colour scale (diverging about ``spec.centre`` if set);
    ``None`` when no checkpoint has them."""
    values = report.scores.values
    cells = _grid_cells(values, metric, spec.key)
    if not cells:
        return None
    n_r = 1 + max(r for r, _ in cells)
    n_c = 1 + max(c for _, c in cells)
    maps = {}
    for cp in values.index:
        grid = np.full((n_r, n_c), np.nan)
        for (r, c), col in cells.items():
            grid[r, c] = values.at[cp, col]
        if np.isfinite(grid).any():
            maps[cp] = grid
    if not maps:
        return None
    lo = float(min(np.nanmin(g) for g in maps.values()))
    hi = float(max(np.nanmax(g) for g in maps.values()))
    if spec.centre is not None:
        # the data's own range on each side of the centre (a density never shows as negative)
        norm = TwoSlopeNorm(spec.centre, min(lo, spec.centre - 1e-9), max(hi, spec.centre + 1e-9))
        cmap = "RdBu_r"
    else:
        norm = Normalize(lo, hi if hi > lo else lo + 1e-9)
        cmap = "viridis"
    n_cols = min(6, len(maps))
    n_rows = math.ceil(len(maps) / n_cols)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=_size(1.2 + 2.0 * n_cols, 1.0 + 2.1 * n_rows),
        dpi=DPI,
        squeeze=False,
        layout="constrained",
    )
    im = None
    for k, (cp, grid) in enumerate(maps.items()):
        ax = axes[k // n_cols][k % n_cols]
        im = ax.imshow(grid, cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(_short(str(cp), 26), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    for k in range(len(maps), n_rows * n_cols):
        axes[k // n_cols][k % n_cols].set_axis_off()
    fig.colorbar(im, ax=axes, label=spec.colour_label, shrink=0.8)
    fig.suptitle(spec.title, fontsize=10)
    return fig


def draw_declared(report: Report, metric: str, spec: Curve | KeyGrid, colour_by: str | None) -> Figure | None:
    """The figure a metric declares in ``Metric.curves``, by its kind: a curve over x or a grid map."""
    if isinstance(spec, KeyGrid):
        return key_grid(report, metric, spec)
    return curve(report, metric, spec, colour_by)


@dataclass
class ReportFigure:
    """One figure beyond the table's own (heat map, scatter grid): its file stem, heading and caption."""

    stem: str
    title: str
    caption: str
    figure: Figure


def declared_figures(
    report: Report, colour_by: str | None = None, size_by: str | None = None
) -> list[ReportFigure]:
    """Every figure beyond the table's heat map and scatter grid, the one list the HTML page and
    ``--figures`` both show: the bias × bias and generalization × generalization heat maps, each bias
    against the generalization axes as the study draws them, the curves the report's metrics declare,
    then the SIS sizes read from stored traces."""
    metrics = list(dict.fromkeys(report.scores.columns["metric"].astype(str)))
    out = []
    for role, sub in report.matrices.items():
        out.append(
            ReportFigure(
                f"heatmap_{role}",
                f"{role.capitalize()} × {role}",
                f"Every pair of the {role} keys, with the same statistics as the main table (the study's "
                f"{role} × {role} matrix).",
                heatmap(sub),
            )
        )
    if report.curated and report.cols:
        for k, bias in enumerate(report.rows):
            fig = study_scatter(report, bias, colour_by, size_by)
            if fig is not None:
                out.append(
                    ReportFigure(
                        f"study_{k:02d}",
                        f"{report.label(bias)} against the generalization axes",
                        "As the study draws it: x the bias, y each generalization axis, one labelled point per "
                        "checkpoint"
                        + (f", marker size by {size_by}" if size_by else "")
                        + _by(colour_by)
                        + ".",
                        fig,
                    )
                )
    for metric, spec in declared_curves(metrics):
        fig = draw_declared(report, metric, spec, colour_by)
        if fig is not None:
            out.append(ReportFigure(spec.name, spec.title.split(":")[0], spec.caption, fig))
    fig = sis_sizes(report, colour_by)
    if fig is not None:
        caption = (
            "Per checkpoint, the SIS size of each image it is confident on (τ as stored): small = a few "
            "pixels suffice for the same confident decision."
        )
        out.append(ReportFigure("sis_sizes", "SIS sizes", caption, fig))
    return out


def sis_sizes(report: Report, colour_by: str | None = None) -> Figure | None:
    """Each checkpoint's distribution of per-image SIS size (fraction of pixels), one box per
    checkpoint with its images as points, sorted by median."""
    sizes = {c: np.asarray(v, float)[np.isfinite(v)] for c, v in report.sis_sizes.items()}
    sizes = {c: v for c, v in sizes.items() if v.size}
    if not sizes:
        return None
    order = sorted(sizes, key=lambda c: float(np.median(sizes[c])))
    cats, palette = _colours(report, colour_by)
    fig = plt.figure(figsize=_size(9, 1.2 + 0.38 * len(order)), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    horizontal = {"orientation": "horizontal"} if _MPL >= (3, 10) else {"vert": False}
    ax.boxplot([sizes[c] for c in order], widths=0.6, showfliers=False, **horizontal)
    rng = np.random.default_rng(0)  # vertical jitter of the points, fixed so the figure is reproducible
    for i, c in enumerate(order, start=1):
        col = palette.get(cats.get(c, ""), "gray")
        ax.scatter(sizes[c], i + rng.uniform(-0.18, 0.18, sizes[c].size), s=9, color=col, alpha=0.7)
    ax.set_yticks(range(1, len(order) + 1), [f"{c} (n={sizes[c].size})" for c in order], fontsize=7)
    ax.set_xlabel("SIS size (fraction of the image's pixels)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    _legend(fig, {k: v for k, v in palette.items() if k in {cats.get(c) for c in order}})
    fig.suptitle(f"SIS size per image (covered images only){_by(colour_by)}", fontsize=10)
    return fig


def _legend(fig: Figure, palette: dict) -> None:
    if len(palette) > 1:
        handles = [plt.Line2D([], [], color=col, marker="o", label=cat) for cat, col in palette.items()]
        fig.legend(handles=handles, loc="outside right upper", fontsize=7)


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def svg_with_titles(fig: Figure, titles: dict[str, str]) -> str:
    """The figure as an SVG document whose elements with the given ids carry a ``<title>`` (a browser
    shows it on hover)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    for gid, title in titles.items():
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{escape(title)}</title>', 1)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)  # creator and date: not for the page
    return svg[svg.index("<svg") :]


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` (its folder must exist: a typo is not a new folder)."""
    if not path.parent.is_dir():
        raise NotFoundError(f"the folder {path.parent} does not exist")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def write_all(
    report: Report,
    folder: Path,
    colour_by: str | None = None,
    size_by: str | None = None,
    formats: tuple[str, ...] = ("png",),
) -> list[Path]:
    """Every figure that has data, in each of ``formats`` (png, svg, pdf), in the existing ``folder``."""
    if not folder.is_dir():
        raise NotFoundError(f"the folder {folder} does not exist")
    unknown = [f for f in formats if f not in FIGURE_FORMATS]
    if unknown:
        raise FigureError(
            f"unknown figure format {', '.join(unknown)} (choose from {', '.join(FIGURE_FORMATS)})"
        )
    figs = [("heatmap", heatmap(report))]
    if report.rows and report.cols:
        figs.append(("scatter", scatter_grid(report, colour_by)[0]))
    figs += [(f.stem, f.figure) for f in declared_figures(report, colour_by, size_by)]
    out = []
    for stem, fig in figs:
        for fmt in formats:
            out.append(folder / f"{stem}.{fmt}")
            fig.savefig(out[-1], dpi=DPI)
        plt.close(fig)
    return out
