"""`bench report` on a constructed database: metric variants are distinct columns (and
``latest_results`` keeps the newest job per parameter set), the curated table's rows and columns come
from the roles the metric plugins declare (a third-party metric joins without editing biasbench),
an unknown key is an error listing the known ones, tags reach the leave-one-category-out range, and
every format prints the same hand-computed ρ."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass

import pytest

from biasbench.harness.store import JobKey, JobRecord, Store
from biasbench.metrics.base import Curve, CurvePanel, KeyRole, Metric
from biasbench.metrics.discovery import METRICS
from tests.harness_fixtures import bench

# shape bias and OOD aggregate of five checkpoints; ranks of "id" vs shape bias differ by
# (-1, 1, -1, 1, 0): ρ = 1 - 6·4/(5·24) = 0.8
SHAPE = [0.1, 0.2, 0.3, 0.4, 0.5]
OOD_ID = [0.62, 0.60, 0.71, 0.70, 0.80]
ROBUST = [0.5, 0.4, 0.3, 0.2, 0.1]  # ρ(shape, robustness) = -1
CATEGORY = ["plain", "plain", "stylized", "stylized", "adversarial"]


def _job(
    s: Store, ckpt: str, metric: str, h: str, params: dict, scalars: dict[str, float], run: str = "r1"
) -> None:
    s.write_job(
        JobKey(ckpt, metric, h),
        JobRecord(
            metric_version="1",
            params=params,
            datasets={"images": {"name": "demo-world/test", "manifest": "abc123", "preprocess": "as-stored"}},
            scalars=scalars,
            n=dict.fromkeys(scalars, 100),
            run_id=run,
        ),
    )


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "b.duckdb"
    with Store(path) as s:
        run = s.start_run(argv=["bench", "run"], git_sha="abc", versions={"biasbench": "0.1.0"}, device="cpu")
        for i in range(5):
            c = f"c{i}"
            s.upsert_checkpoint({"id": c, "arch": "a", "tags": json.dumps({"category": CATEGORY[i]})})
            _job(
                s,
                c,
                "shape_bias",
                f"s{i}",
                {"aggregation": "mean"},
                {"shape_bias": SHAPE[i], "n_shape": 7},
                run,
            )
            _job(s, c, "ood", f"o{i}", {"sets": None}, {"id": OOD_ID[i], "robustness": ROBUST[i]}, run)
        s.finish_run(run, "ok")
    return path


def _report(db, tmp_path, *args: str):
    return bench(["report", "--db", str(db), "--resamples", "200", *args], tmp_path)


def test_curated_table_takes_rows_and_columns_from_the_declared_roles(db, tmp_path):
    r = _report(db, tmp_path, "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["rows"] == ["shape_bias.shape_bias"]  # n_shape is a diagnostic
    assert doc["columns"] == ["ood.id", "ood.robustness"]  # declared order
    cells = {(p["x"], p["y"]): p for p in doc["pairs"]}
    assert cells[("shape_bias.shape_bias", "ood.id")]["r"] == pytest.approx(0.8)
    assert cells[("shape_bias.shape_bias", "ood.robustness")]["r"] == pytest.approx(-1.0)
    assert all(p["n"] == 5 for p in doc["pairs"]) and doc["tests"] == 2
    assert doc["control"] == "ood.id" and doc["category"] == "category"
    rob = cells[("shape_bias.shape_bias", "ood.robustness")]
    assert rob["ci_low"] <= rob["r"] <= rob["ci_high"]
    # leaving each category out: robustness stays -1 whatever is dropped (the tags reached the report)
    assert rob["loco_min"] == pytest.approx(-1.0) and rob["loco_max"] == pytest.approx(-1.0)
    prov = doc["provenance"]
    assert {m["metric"] for m in prov["metrics"]} == {"shape_bias", "ood"}
    assert any("manifest abc123" in d for m in prov["metrics"] for d in m["datasets"])
    assert prov["runs"][0]["git_sha"] == "abc"


def test_terminal_markdown_and_csv_print_the_same_coefficient(db, tmp_path):
    term = _report(db, tmp_path)
    assert term.returncode == 0, term.stderr
    assert "shape_bias.shape_bias" in term.stdout and "+0.80" in term.stdout and "n=5" in term.stdout
    assert "Holm" in term.stdout and "controlling for ood.id" in term.stdout
    md = _report(db, tmp_path, "--format", "md")
    assert "## Bias × generalization" in md.stdout and "+0.80" in md.stdout
    rows = list(csv.DictReader(io.StringIO(_report(db, tmp_path, "--format", "csv").stdout)))
    by = {(r["x"], r["y"]): r for r in rows}
    assert float(by[("shape_bias.shape_bias", "ood.id")]["r"]) == pytest.approx(0.8)
    assert by[("shape_bias.shape_bias", "ood.id")]["x_label"] == "shape bias"


def test_unknown_key_is_an_error_listing_the_known_keys(db, tmp_path):
    r = _report(db, tmp_path, "--keys", "nosuch.key")
    assert r.returncode == 2
    assert "unknown key 'nosuch.key'" in r.stderr and "shape_bias.shape_bias" in r.stderr
    assert "ood.robustness" in r.stderr
    r = _report(db, tmp_path, "--generalization", "ood.nope")
    assert r.returncode == 2 and "ood.id" in r.stderr


def test_free_exploration_correlates_the_requested_keys_pairwise(db, tmp_path):
    r = _report(db, tmp_path, "--keys", "shape_bias.shape_bias,ood.id,ood.robustness", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3
    r = _report(db, tmp_path, "--keys", "shape_bias.shape_bias,ood.id,ood.robustness", "--across-metrics")
    assert r.returncode == 0 and "ood.id" in r.stdout


def test_metric_variants_are_distinct_columns_and_the_newest_job_per_parameters_wins(db, tmp_path):
    with Store(db) as s:
        for i in range(5):
            _job(s, f"c{i}", "accuracy", f"a{i}", {"dataset": None}, {"top1": 0.1 * i})
            _job(s, f"c{i}", "accuracy", f"b{i}", {"dataset": "imagenet-sample"}, {"top1": 0.9 - 0.1 * i})
        time.sleep(0.01)
        # a newer job with the first parameter set replaces that variant's value (c0 only)
        _job(s, "c0", "accuracy", "a0-new", {"dataset": None}, {"top1": 0.55})
        latest = s.results(metrics=["accuracy"], checkpoints=["c0"])
    assert sorted(latest["value"]) == [0.55, 0.9]  # one row per parameter set, the newer one
    r = _report(db, tmp_path, "--keys", "accuracy.top1", "--format", "json")
    assert r.returncode == 0, r.stderr
    pair = json.loads(r.stdout)["pairs"]
    assert len(pair) == 1
    assert {pair[0]["x"], pair[0]["y"]} == {
        "accuracy[dataset=default].top1",
        "accuracy[dataset=imagenet-sample].top1",
    }
    # c0's default variant is 0.55 now
    from scipy import stats

    default = [0.55, 0.1, 0.2, 0.3, 0.4]
    sample = [0.9, 0.8, 0.7, 0.6, 0.5]
    assert pair[0]["r"] == pytest.approx(stats.spearmanr(default, sample).statistic)


class _ThirdParty(Metric):
    """A third-party bias measure (test only)."""

    name = "tp_bias"
    version = "1"
    key_roles = {"texture_*": KeyRole("bias", None, "texture reliance")}

    @dataclass(frozen=True)
    class Params:
        pass


def test_a_third_party_metric_joins_the_curated_table_by_declaring_key_roles(db, tmp_path):
    with Store(db) as s:
        for i in range(5):
            _job(s, f"c{i}", "tp_bias", f"t{i}", {}, {"texture_reliance": 1.0 - SHAPE[i], "other": float(i)})
    before = json.loads(_report(db, tmp_path, "--format", "json").stdout)
    assert "tp_bias.texture_reliance" not in before["rows"]  # not installed: diagnostic
    said = _report(db, tmp_path, "--format", "md").stdout  # … and the page says so
    assert "metric 'tp_bias' is stored but its plugin is not installed here" in said
    METRICS.register("tp_bias", _ThirdParty)
    try:
        doc = json.loads(_report(db, tmp_path, "--format", "json").stdout)
    finally:
        METRICS.unregister("tp_bias")
    assert doc["rows"] == ["shape_bias.shape_bias", "tp_bias.texture_reliance"]
    cells = {(p["x"], p["y"]): p["r"] for p in doc["pairs"]}
    assert cells[("tp_bias.texture_reliance", "ood.id")] == pytest.approx(-0.8)


def test_an_unknown_colour_tag_and_a_missing_output_folder_are_errors(db, tmp_path):
    r = _report(db, tmp_path, "--colour-by", "nope")
    assert r.returncode == 2 and "category" in r.stderr
    r = _report(db, tmp_path, "--format", "md", "-o", str(tmp_path / "missing" / "r.md"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert not (tmp_path / "missing").exists()
    r = _report(db, tmp_path, "--figures", str(tmp_path / "nofolder"))
    assert r.returncode == 2 and not (tmp_path / "nofolder").exists()


def test_an_empty_database_says_to_run_first(tmp_path):
    path = tmp_path / "e.duckdb"
    Store(path)  # creates the file and its tables
    r = _report(path, tmp_path)
    assert r.returncode == 0 and "bench run" in r.stdout


def test_figures_stay_screen_sized_whatever_the_number_of_keys(tmp_path):
    """Thirty keys (435 pairs; the old heat map of 127 keys was 7740 × 7716 px): every figure fits
    1260 × 900 px."""
    from PIL import Image

    path = tmp_path / "many.duckdb"
    with Store(path) as s:
        for i in range(6):
            scalars = {f"k{j:02d}": float((i * (j + 1)) % 7 + 0.1 * j) for j in range(30)}
            _job(s, f"c{i}", "wide", f"w{i}", {}, scalars)
    figs = tmp_path / "figs"
    figs.mkdir()
    r = _report(
        path, tmp_path, "--all", "--top", "25", "--figure", str(tmp_path / "h.png"), "--figures", str(figs)
    )
    assert r.returncode == 0, r.stderr
    for png in [tmp_path / "h.png", *figs.glob("*.png")]:
        with Image.open(png) as im:
            assert im.size[0] <= 1260 and im.size[1] <= 900, (png.name, im.size)


def test_sis_sizes_are_read_from_the_stored_traces(tmp_path):
    """Three 16-pixel images masked 4 pixels per step (order = the step that masks each pixel) at
    τ = 0.9: conf (1, .99, .95, .5, .1) gives t* = 2, so the 8 pixels with order ≥ 2 remain (0.5);
    conf (.95, .5, …) gives t* = 0, all 16 (1.0); a clean confidence of .5 < τ is not covered."""
    import numpy as np
    import pandas as pd

    from biasbench.harness.store import StoreError
    from biasbench.reports.inputs import from_store_rows, sis_sizes

    order = np.repeat(np.arange(4, dtype=np.int16), 4)
    confs = [[1.0, 0.99, 0.95, 0.5, 0.1], [0.95, 0.5, 0.4, 0.3, 0.1], [0.5, 0.4, 0.3, 0.2, 0.1]]
    items = pd.DataFrame(
        {"item": [0, 1, 2], "order": [order] * 3, "conf": [np.asarray(c, np.float32) for c in confs]}
    )
    path = tmp_path / "sis.duckdb"
    with Store(path) as s:
        s.write_job(
            JobKey("c0", "sis", "h"),
            JobRecord(
                metric_version="1", scalars={"tau": 0.9, "sis_frac_median": 0.75}, items=items, run_id="r"
            ),
        )
    with Store(path, read_only=True) as s:
        data = from_store_rows(s.report_rows(), s.runs(), s.checkpoint_tags())
        sis_sizes(data, lambda c: s.items(c, "sis"), (KeyError, StoreError))
    sizes, notes = data.sis_sizes, data.notes
    assert notes == [] and list(sizes) == ["c0"]
    assert sizes["c0"][:2].tolist() == [0.5, 1.0] and np.isnan(sizes["c0"][2])


def test_imported_values_share_the_measured_column_and_a_measurement_wins_over_them():
    import pandas as pd

    from biasbench.reports.scores import build_scores

    def rows(params, source, values):
        return [
            {"checkpoint": c, "metric": "ood", "key": "id", "value": v, "params": params, "source": source}
            for c, v in values.items()
        ]

    one = pd.DataFrame(
        rows('{"sets": null}', None, {"a": 0.5, "b": 0.6}) + rows(None, "pub", {"b": 0.9, "c": 0.7})
    )
    s = build_scores(one)
    assert list(s.values.columns) == ["ood.id"]
    assert s.values["ood.id"].to_dict() == {"a": 0.5, "b": 0.6, "c": 0.7}  # b: measured, not imported
    assert s.shadowed == 1 and "hidden by a measurement" in s.notes[0]
    two = pd.DataFrame(
        rows('{"sets": null}', None, {"a": 0.5})
        + rows('{"sets": ["v2"]}', None, {"a": 0.4})
        + rows(None, "pub", {"c": 0.7})
    )
    assert sorted(build_scores(two).values.columns) == [
        "ood[sets=default].id",
        "ood[sets=v2].id",
        "ood[source=pub].id",
    ]


def test_stability_keys_are_shown_beside_the_table_in_the_terminal_and_markdown_not_correlated(db, tmp_path):
    """SIS declares its bootstrap interval as role "stability": the terminal and Markdown reports list
    it per checkpoint under the matrix, and it never becomes a row or column of the correlations."""
    lows = [0.011, 0.022, 0.033, 0.044, 0.055]
    with Store(db) as s:
        run = s.start_run(argv=["bench", "run"], git_sha="abc", versions={"biasbench": "0.1.0"}, device="cpu")
        for i in range(5):
            _job(
                s,
                f"c{i}",
                "sis",
                f"q{i}",
                {"tau": 0.9},
                {"sis_frac_median": 0.1 * (i + 1), "sis_frac_median_ci_low": lows[i]},
                run,
            )
        s.finish_run(run, "ok")
    term = _report(db, tmp_path)
    assert term.returncode == 0, term.stderr
    text = " ".join(term.stdout.split())
    assert "Stability" in text and "sis.sis_frac_median_ci_low" in text
    assert all(f"{v:.4g}" in text for v in lows)
    md = _report(db, tmp_path, "--format", "md")
    stab = md.stdout.split("## Stability", 1)[1].split("##", 1)[0]
    assert "| c3 | 0.044 |" in stab
    doc = json.loads(_report(db, tmp_path, "--format", "json").stdout)
    assert "sis.sis_frac_median" in doc["rows"]
    assert not any("ci_low" in k for k in [*doc["rows"], *doc["columns"]])


def test_the_python_report_is_the_object_bench_report_renders(db, tmp_path):
    """``biasbench.report(db)`` gives the hand-computed ρ in ``.table``, its Markdown and CSV are the
    bytes of ``bench report -f md|csv``, and ``.to_html(path)`` writes the page."""
    import biasbench

    rep = biasbench.report(db, resamples=200)
    cells = rep.table.set_index(["x", "y"])["r"]
    assert cells[("shape_bias.shape_bias", "ood.id")] == pytest.approx(0.8)
    assert cells[("shape_bias.shape_bias", "ood.robustness")] == pytest.approx(-1.0)
    for fmt, text in (("md", rep.to_markdown()), ("csv", rep.to_csv())):
        r = _report(db, tmp_path, "--format", fmt)
        assert r.returncode == 0, r.stderr
        if fmt == "md":  # the page names the time it was made
            text, cli = (t.split("\n", 3)[3] for t in (text, r.stdout))
            assert text == cli
        else:
            assert text == r.stdout
    page = rep.to_html(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == page and page.lstrip().startswith("<!DOCTYPE")


def test_a_report_from_a_results_frame_and_tags_needs_no_database(db):
    """The long table of ``biasbench.results`` with the tags as a mapping: the same ρ, and the
    leave-one-category-out analysis sees the categories."""
    import biasbench

    frame = biasbench.results(db)
    tags = {f"c{i}": {"category": CATEGORY[i]} for i in range(5)}
    rep = biasbench.report(frame, tags=tags, resamples=200)
    cells = rep.table.set_index(["x", "y"])
    assert cells.loc[("shape_bias.shape_bias", "ood.id"), "r"] == pytest.approx(0.8)
    assert rep.category == "category" and rep.provenance["runs"] == []
    with pytest.raises(biasbench.BiasbenchError, match="missing: value"):
        biasbench.report(frame.drop(columns="value"))


class _ThirdPartyCurve(Metric):
    """A third-party measure with a curve over a noise level (test only)."""

    name = "tp_curve"
    version = "1"
    key_roles = {"robust_auc": KeyRole("bias", None, "robustness AUC"), "acc@*": KeyRole("diagnostic")}
    curves = (
        Curve(
            name="tp_noise",
            title="Third-party: accuracy against noise",
            y_label="accuracy",
            panels=(CurvePanel("acc@{x}", "", "noise level"),),
            caption="Accuracy per noise level (a third-party metric's own curve).",
        ),
    )

    @dataclass(frozen=True)
    class Params:
        pass


def test_a_third_party_metrics_declared_curve_reaches_the_page_and_the_figures_folder(db, tmp_path):
    """Declared in the metric's own module, drawn by the report without editing reports/: one line per
    checkpoint over the stored ``acc@<level>`` keys, on the HTML page and as ``tp_noise.png``."""
    import biasbench
    from biasbench.reports import figures

    with Store(db) as s:
        for i in range(5):
            scalars = {
                "robust_auc": SHAPE[i],
                **{f"acc@{lvl}": 1.0 - lvl * (i + 1) / 10 for lvl in (0.1, 0.2, 0.4)},
            }
            _job(s, f"c{i}", "tp_curve", f"q{i}", {}, scalars)
    METRICS.register("tp_curve", _ThirdPartyCurve)
    try:
        rep = biasbench.report(db, resamples=200)
        (fig,) = [f for f in figures.declared_figures(rep) if f.stem == "tp_noise"]
        (ax,) = fig.figure.axes
        assert len(ax.lines) == 5 and list(ax.lines[0].get_xdata()) == [0.1, 0.2, 0.4]
        assert list(ax.lines[4].get_ydata()) == pytest.approx([0.95, 0.9, 0.8])  # c4: 1 - level·5/10
        page = rep.to_html()
        out = tmp_path / "figs"
        out.mkdir()
        r = _report(db, tmp_path, "--figures", str(out))
    finally:
        METRICS.unregister("tp_curve")
    assert "<h2>Third-party</h2>" in page and "Accuracy per noise level" in page
    assert r.returncode == 0, r.stderr
    assert (out / "tp_noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_among_generalization_pairs_the_generalization_keys_with_each_other(db, tmp_path):
    """id (0.62, 0.60, 0.71, 0.70, 0.80) vs robustness (0.5 … 0.1): ranks (2, 1, 4, 3, 5) vs (5, 4, 3, 2, 1),
    Σd² = 36, ρ = 1 − 6·36/(5·24) = −0.8; bias × bias needs two bias keys (the fixture has one)."""
    r = _report(db, tmp_path, "--among", "generalization", "--format", "json")
    assert r.returncode == 0, r.stderr
    (pair,) = json.loads(r.stdout)["pairs"]
    assert (pair["x"], pair["y"]) == ("ood.id", "ood.robustness") and pair["r"] == pytest.approx(-0.8)
    r = _report(db, tmp_path, "--among", "bias")
    assert r.returncode == 2 and "the results hold 1 bias key(s); a matrix needs two" in r.stderr
    r = _report(db, tmp_path, "--among", "texture")
    assert r.returncode == 2 and "choose one of bias, generalization" in r.stderr


def test_the_studys_display_shows_a_coefficient_with_uncorrected_p_at_least_the_mask_as_zero(db, tmp_path):
    """ρ(shape, id) = 0.8 over 5 checkpoints has p = 0.104 (scipy): shown as 0 under --mask-p 0.05, while
    ρ(shape, robustness) = −1 (p = 0) stays; the JSON keeps the real coefficients and says which are
    masked, and the legend says what the display does."""
    from scipy import stats

    p_id = stats.spearmanr(SHAPE, OOD_ID).pvalue
    assert p_id >= 0.05 and stats.spearmanr(SHAPE, ROBUST).pvalue < 0.05
    md = _report(db, tmp_path, "--mask-p", "0.05", "--format", "md")
    assert md.returncode == 0, md.stderr
    row = next(line for line in md.stdout.splitlines() if line.startswith("| shape_bias.shape_bias | ood.id"))
    assert row.split("|")[3].strip() == "+0.00"
    row = next(
        line for line in md.stdout.splitlines() if line.startswith("| shape_bias.shape_bias | ood.robustness")
    )
    assert row.split("|")[3].strip().startswith("-1.00")
    assert "uncorrected p is ≥ 0.05 is shown as 0" in md.stdout
    doc = json.loads(_report(db, tmp_path, "--mask-p", "0.05", "--format", "json").stdout)
    cells = {(p["x"], p["y"]): p for p in doc["pairs"]}
    assert cells[("shape_bias.shape_bias", "ood.id")]["r"] == pytest.approx(0.8)
    assert cells[("shape_bias.shape_bias", "ood.id")]["masked"] is True
    assert cells[("shape_bias.shape_bias", "ood.robustness")]["masked"] is False
    plain = _report(db, tmp_path, "--format", "md").stdout
    assert "shown as 0" not in plain  # the default stays ours: every coefficient shown


def test_the_same_weights_under_two_ids_count_once_in_every_correlation(db, tmp_path):
    """c5 is c0 again (same identity, same stored values) under another id: counted twice, shape vs id
    over six checkpoints would differ from the hand-computed 0.8 over five; counted once, it is 0.8 again
    and a note names both ids."""
    with Store(db) as s:
        s.upsert_checkpoint(
            {"id": "c0", "arch": "a", "identity": "same", "tags": json.dumps({"category": "plain"})}
        )
        s.upsert_checkpoint(
            {"id": "c5", "arch": "a", "identity": "same", "tags": json.dumps({"category": "plain"})}
        )
        _job(s, "c5", "shape_bias", "s5", {"aggregation": "mean"}, {"shape_bias": SHAPE[0], "n_shape": 7})
        _job(s, "c5", "ood", "o5", {"sets": None}, {"id": OOD_ID[0], "robustness": ROBUST[0]})
    doc = json.loads(_report(db, tmp_path, "--format", "json").stdout)
    assert doc["checkpoints"] == ["c0", "c1", "c2", "c3", "c4"]
    cells = {(p["x"], p["y"]): p for p in doc["pairs"]}
    assert cells[("shape_bias.shape_bias", "ood.id")]["n"] == 5
    assert cells[("shape_bias.shape_bias", "ood.id")]["r"] == pytest.approx(0.8)
    md = _report(db, tmp_path, "--format", "md").stdout
    assert "c0, c5 hold the same weights and preprocessing: counted once, as 'c0'" in md
