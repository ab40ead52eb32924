"""`bench import`: a published-style wide table (percentages, a mean of columns, a category column, a
column nobody asked for) becomes imported results with their provenance, reported exactly like
measured ones and combined with them; the report reproduces ρ computed by hand."""

from __future__ import annotations

import hashlib
import json

import duckdb
import pytest

from biasbench.harness.store import JobKey, JobRecord, Store
from biasbench.reports.importer import TableImportError, parse_mapping, read_table
from tests.harness_fixtures import bench

# imported: shape bias 10 / 30 / 50 %, ID accuracy = mean(IN-val, IN-v2) = 55 / 60 / 75 %
PUBLISHED = """model,family,Shape bias (%),IN-val,IN-v2,notes
pub-a,adversarial,10,50,60,first
pub-b,standard,30,58,62,
pub-c,standard,50,80,70,third
"""
MAPPING = """
checkpoint = "model"
tags = ["family"]

[keys]
"shape_bias.shape_bias" = { column = "Shape bias (%)", scale = "percent" }
"ood.id" = { mean = ["IN-val", "IN-v2"], scale = 0.01 }
"""
# measured: shape bias 0.15 / 0.35 / 0.55, ID accuracy 0.50 / 0.65 / 0.70.
# All six by shape bias: pub-a .10, m0 .15, pub-b .30, m1 .35, pub-c .50, m2 .55 (ranks 1…6);
# their ID accuracy .55, .50, .60, .65, .75, .70 has ranks 2, 1, 3, 4, 6, 5: d = (-1, 1, 0, 0, -1, 1),
# Σd² = 4, ρ = 1 - 6·4 / (6·35) = 31/35.
MEASURED = {"m0": (0.15, 0.50), "m1": (0.35, 0.65), "m2": (0.55, 0.70)}


def _files(tmp_path):
    csv_path = tmp_path / "published.csv"
    csv_path.write_text(PUBLISHED)
    map_path = tmp_path / "map.toml"
    map_path.write_text(MAPPING)
    return csv_path, map_path


def _measured_db(path):
    with Store(path) as s:
        for c, (sb, acc) in MEASURED.items():
            s.upsert_checkpoint({"id": c, "arch": "resnet", "tags": json.dumps({"family": "ours"})})
            for metric, scalars in (("shape_bias", {"shape_bias": sb}), ("ood", {"id": acc})):
                s.write_job(
                    JobKey(c, metric, f"h-{c}"),
                    JobRecord(
                        metric_version="1",
                        params={"p": 1},
                        scalars=scalars,
                        n=dict.fromkeys(scalars, 10),
                        run_id="r0",
                    ),
                )
    return path


def test_the_mapping_reads_percent_and_the_mean_of_columns_and_lists_unused_columns():
    t = read_table(PUBLISHED.encode(), MAPPING, source="study", file_name="published.csv")
    v = {(r.checkpoint, r.key): r.value for r in t.results.itertuples()}
    assert v[("pub-a", "shape_bias")] == pytest.approx(0.10)
    assert v[("pub-c", "id")] == pytest.approx(0.75)
    assert t.tags["pub-a"] == {"family": "adversarial"}
    assert t.unused == ["notes"]
    assert t.provenance["sha256"] == hashlib.sha256(PUBLISHED.encode()).hexdigest()


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ('checkpoint = "model"\n[keys]\n"ood.id" = "IN-nope"', "'IN-nope'"),
        ('checkpoint = "model"\n[keys]\n"oodid" = "IN-val"', "metric.key"),
        ('checkpoint = "model"\n[keys]\n"ood.id" = { column = "IN-val", scale = "half" }', "scale"),
        ('[keys]\n"ood.id" = "IN-val"', "checkpoint"),
        ('checkpoint = "model"\n[keys]\n"ood.id" = { column = "IN-val", mean = ["IN-v2"] }', "exactly one"),
    ],
)
def test_a_bad_mapping_is_an_error_that_says_what_is_wrong(mapping, message):
    with pytest.raises(TableImportError, match=message):
        read_table(PUBLISHED.encode(), mapping, source="study", file_name="published.csv")


def test_a_cell_that_is_not_a_number_names_its_row_and_column():
    bad = PUBLISHED.replace("pub-b,standard,30", "pub-b,standard,n/a")
    with pytest.raises(TableImportError, match=r"row 3 \(pub-b\), column 'Shape bias \(%\)'"):
        read_table(bad.encode(), MAPPING, source="s", file_name="f.csv")
    assert parse_mapping(MAPPING)[0] == "model"


def test_imported_results_reproduce_the_hand_computed_rho_beside_measured_ones(tmp_path):
    db = _measured_db(tmp_path / "b.duckdb")
    csv_path, map_path = _files(tmp_path)
    r = bench(
        ["import", str(csv_path), "--mapping", str(map_path), "--source", "study", "--db", str(db)], tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "imported 6 values of 3 checkpoints" in r.stdout and "not imported): notes" in r.stderr
    # provenance stored with every imported job
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT datasets, flags, params FROM jobs WHERE metric_version = 'import'"
        ).fetchall()
        tags = dict(con.execute("SELECT id, CAST(tags AS VARCHAR) FROM checkpoints").fetchall())
    assert len(rows) == 6
    prov = json.loads(rows[0][0])["import"]
    assert prov["source"] == "study" and prov["file"] == "published.csv"
    assert prov["sha256"] == hashlib.sha256(PUBLISHED.encode()).hexdigest() and "IN-v2" in prov["mapping"]
    assert json.loads(tags["pub-a"]) == {"family": "adversarial"} and json.loads(tags["m0"]) == {
        "family": "ours"
    }
    # `bench results` shows them like measured ones
    res = bench(["results", "--db", str(db), "--format", "csv"], tmp_path)
    assert "pub-c,ood,id,0.75" in res.stdout
    # the report: one column per key (imported and measured combined), ρ over all six = 31/35
    rep = bench(
        ["report", "--db", str(db), "--format", "json", "--category", "family", "--resamples", "200"],
        tmp_path,
    )
    assert rep.returncode == 0, rep.stderr
    doc = json.loads(rep.stdout)
    assert doc["rows"] == ["shape_bias.shape_bias"] and doc["columns"] == ["ood.id"]
    (pair,) = doc["pairs"]
    assert pair["n"] == 6 and pair["r"] == pytest.approx(31 / 35)
    assert doc["provenance"]["imports"][0]["sha256"] == prov["sha256"]
    # re-importing the same file replaces, it does not duplicate
    again = bench(
        ["import", str(csv_path), "--mapping", str(map_path), "--source", "study", "--db", str(db)], tmp_path
    )
    assert again.returncode == 0
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM jobs WHERE metric_version = 'import'").fetchone()[0] == 6


def test_leave_one_category_out_over_imported_tags(tmp_path):
    """Leaving each `family` out in turn (full ρ = 31/35 ≈ 0.886):
    without "adversarial" (pub-a): m0 .15/.50, pub-b .30/.60, m1 .35/.65, pub-c .50/.75, m2 .55/.70 —
    accuracy ranks 1, 2, 3, 5, 4: Σd² = 2, ρ = 1 - 12/120 = 0.9;
    without "standard" (pub-b, pub-c): pub-a .10/.55, m0 .15/.50, m1 .35/.65, m2 .55/.70 — ranks
    2, 1, 3, 4: Σd² = 2, ρ = 1 - 12/60 = 0.8;
    without "ours" (m0–m2): the three imported ones rise together, ρ = 1 (the largest move: 0.114)."""
    db = _measured_db(tmp_path / "b.duckdb")
    csv_path, map_path = _files(tmp_path)
    bench(
        ["import", str(csv_path), "--mapping", str(map_path), "--source", "study", "--db", str(db)], tmp_path
    )
    doc = json.loads(
        bench(
            ["report", "--db", str(db), "--format", "json", "--category", "family", "--resamples", "200"],
            tmp_path,
        ).stdout
    )
    (pair,) = doc["pairs"]
    assert (pair["loco_min"], pair["loco_max"]) == (pytest.approx(0.8), pytest.approx(1.0))
    assert pair["loco_drop"] == "ours"


def test_a_missing_mapped_column_is_an_error_listing_the_table_columns(tmp_path):
    csv_path, map_path = _files(tmp_path)
    map_path.write_text(MAPPING.replace('"IN-v2"', '"IN-v3"'))
    r = bench(
        [
            "import",
            str(csv_path),
            "--mapping",
            str(map_path),
            "--source",
            "s",
            "--db",
            str(tmp_path / "x.duckdb"),
        ],
        tmp_path,
    )
    assert r.returncode == 2 and "'IN-v3'" in r.stderr and "'IN-v2'" in r.stderr


def test_bench_import_has_help(tmp_path):
    r = bench(["import", "--help"], tmp_path)
    assert r.returncode == 0 and "--mapping" in r.stdout and "--source" in r.stdout


def test_import_table_from_python_stores_a_recorded_ok_run_and_reports_the_same_rho(tmp_path):
    import biasbench

    db = _measured_db(tmp_path / "b.duckdb")
    csv_path, map_path = _files(tmp_path)
    table = biasbench.import_table(csv_path, map_path, "study", db=db)
    assert len(table.results) == 6 and table.unused == ["notes"]
    with Store(db, read_only=True) as s:
        (run,) = s.runs().itertuples()
        assert run.status == "ok" and run.device == "import"
    rep = biasbench.report(db, category="family", resamples=200)
    (r,) = rep.table["r"]
    assert r == pytest.approx(31 / 35)
    with pytest.raises(biasbench.BiasbenchError, match="no such file"):
        biasbench.import_table(tmp_path / "none.csv", map_path, "study", db=db)
