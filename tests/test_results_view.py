"""`bench results` says where each row came from: two `top1` rows of one checkpoint that differ only
in their dataset carry the variant ``[dataset=…]`` and the dataset's name; ``--key`` selects keys
(wildcards, ``metric.key``); ``--wide`` is one row per checkpoint and one column per variant and key."""

from __future__ import annotations

import io

import pandas as pd

import biasbench
from biasbench.harness.store import JobKey, JobRecord, Store
from tests.harness_fixtures import bench


def _db(path):
    with Store(path) as s:
        run = s.start_run(argv=["bench"], git_sha="x", versions={}, device="cpu")
        for c, (a, b) in {"c0": (0.5, 0.7), "c1": (0.6, 0.9)}.items():
            s.upsert_checkpoint({"id": c, "arch": "a"})
            for h, ds, v in (("h1", "imagenet-sample", a), ("h2", "demo-world/test", b)):
                s.write_job(
                    JobKey(c, "accuracy", h + c),
                    JobRecord(
                        metric_version="1",
                        params={"dataset": ds},
                        datasets={"images": {"name": ds, "manifest": "m", "preprocess": "p"}},
                        scalars={"top1": v, "top5": 1.0},
                        n={"top1": 10, "top5": 10},
                        run_id=run,
                    ),
                )
            s.write_job(
                JobKey(c, "shape_bias", "s" + c),
                JobRecord(metric_version="1", scalars={"shape_bias": a}, n={"shape_bias": 5}, run_id=run),
            )
        s.finish_run(run, "ok")
    return path


def test_rows_name_their_variant_and_dataset_and_keys_select_them(tmp_path):
    db = _db(tmp_path / "r.duckdb")
    df = biasbench.results(db, keys=["top1"])
    assert set(df["key"]) == {"top1"} and len(df) == 4
    row = df[(df.checkpoint == "c1") & (df.datasets == "demo-world/test")].iloc[0]
    assert row.variant == "[dataset=demo-world/test]" and row.value == 0.9
    assert set(biasbench.results(db, keys=["shape_bias.*"])["key"]) == {"shape_bias"}
    assert (
        biasbench.results(db, keys=["shape_bias.*"])["variant"] == ""
    ).all()  # one parameter set: no variant


def test_the_wide_view_has_one_column_per_variant_and_key(tmp_path):
    db = _db(tmp_path / "r.duckdb")
    r = bench(["results", "--db", str(db), "--key", "top1", "--wide", "-f", "csv"], tmp_path)
    assert r.returncode == 0, r.stderr
    wide = pd.read_csv(io.StringIO(r.stdout)).set_index("checkpoint")
    assert list(wide.columns) == [
        "accuracy[dataset=demo-world/test].top1",
        "accuracy[dataset=imagenet-sample].top1",
    ]
    assert wide.loc["c0", "accuracy[dataset=imagenet-sample].top1"] == 0.5
    r = bench(["results", "--db", str(db), "--key", "top*", "--wide", "-f", "json"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_json(io.StringIO(r.stdout)).columns) == 1 + 4  # checkpoint, 2 variants × top1/top5
