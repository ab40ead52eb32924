"""`bench run` end to end on real (tiny) checkpoints: reruns, failures, kills, plugins, merges.

Every test runs on the demo world (the synthetic world that ships in the package: datasets
``demo-world/<split>``, label space ``demo-world``) or on a constructed data root, with an empty data
root: none of them needs the real data in ../shared/data, so none of them can skip for the lack of it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.harness_fixtures import (
    DEMO_PREPROCESS,
    REPO,
    bench,
    demo_registry,
    install_throwaway_package,
    tiny_checkpoint,
    tiny_registry,
)
from tests.plugins import probes
from tests.plugins.probes import marker_lines

ACC = ["-p", "accuracy.dataset=demo-world/test"]


@pytest.fixture()
def env(tmp_path):
    """A fresh cache and an empty data root: the demo world is generated, nothing is read from disk."""
    empty = tmp_path / "empty-data-root"
    empty.mkdir()
    return {"BIASBENCH_CACHE": str(tmp_path / "cache"), "BIASBENCH_DATA": str(empty)}


def _jobs(db) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT checkpoint_id, metric FROM jobs ORDER BY 1, 2").fetchall()


def _failures(db) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT checkpoint_id, metric, error FROM failures ORDER BY 1, 2").fetchall()


def test_run_stores_results_and_a_rerun_computes_nothing(tmp_path, env):
    reg = demo_registry(tmp_path, n=2)
    args = ["run", str(reg), "--metrics", "accuracy", *ACC, "--db", str(tmp_path / "b.duckdb")]
    first = bench(args, tmp_path, env)
    assert first.returncode == 0, first.stderr
    assert _jobs(tmp_path / "b.duckdb") == [("tiny0", "accuracy"), ("tiny1", "accuracy")]
    second = bench(args, tmp_path, env)
    assert second.returncode == 0, second.stderr
    assert "Nothing to compute" in second.stdout
    res = bench(["results", "--db", str(tmp_path / "b.duckdb"), "--format", "csv"], tmp_path, env)
    assert res.stdout.splitlines()[0] == "checkpoint,metric,key,value,n,variant,datasets"
    rows = [line.split(",") for line in res.stdout.splitlines()[1:]]
    assert sorted((r[0], r[2], r[4]) for r in rows) == [  # top1 + top5 each, on the 1000 test images
        ("tiny0", "top1", "1000"),
        ("tiny0", "top5", "1000"),
        ("tiny1", "top1", "1000"),
        ("tiny1", "top5", "1000"),
    ]
    forced = bench([*args, "--force", "--dry-run"], tmp_path, env)
    assert forced.returncode == 0 and "2 todo, 0 stored" in forced.stdout


def test_corrupt_checkpoint_fails_its_job_only_and_exit_code_is_nonzero(tmp_path, env):
    reg = demo_registry(tmp_path, n=1)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    reg.write_text(
        reg.read_text() + f'\n[[checkpoint]]\nid = "broken"\narch = "timm:test_resnet"\nweights = "{bad}"\n'
        f'labels = "demo-world"\n{DEMO_PREPROCESS}'
    )
    db = tmp_path / "b.duckdb"
    r = bench(["run", str(reg), "-m", "accuracy", *ACC, "--db", str(db)], tmp_path, env)
    assert r.returncode == 1
    assert "broken" in r.stderr and "1 job(s) failed" in r.stderr
    assert _jobs(db) == [("tiny0", "accuracy")]
    (failure,) = _failures(db)
    assert failure[:2] == ("broken", "accuracy")
    assert "broken" in failure[2] or "bad.pth" in failure[2]


def test_nan_output_is_a_recorded_failure_with_a_clear_message(tmp_path, env):
    reg = demo_registry(tmp_path, n=1)
    db = tmp_path / "b.duckdb"
    r = bench(
        [
            "run",
            str(reg),
            "-m",
            "nan_probe,accuracy",
            "-p",
            "nan_probe.dataset=demo-world/test",
            *ACC,
            "--db",
            str(db),
        ],
        tmp_path,
        {**env, "BIASBENCH_METRICS": "tests.plugins.probes:NanProbe"},
    )
    assert r.returncode == 1
    assert "is NaN" in r.stderr
    assert _jobs(db) == [("tiny0", "accuracy")]  # the NaN job stores nothing; the other job is whole
    (failure,) = _failures(db)
    assert failure[:2] == ("tiny0", "nan_probe") and "NaN" in failure[2] and "value" in failure[2]


def test_missing_dataset_is_one_clear_message_naming_where_it_looked(tmp_path, env):
    """An ImageNet checkpoint against an empty data root: imagenet-val (its default) is not there."""
    reg = tiny_registry(tmp_path, n=1)
    db = tmp_path / "b.duckdb"
    r = bench(["run", str(reg), "-m", "accuracy", "--db", str(db)], tmp_path, env)
    assert r.returncode == 1
    said = " ".join(r.stderr.split())  # rich wraps long paths
    assert "imagenet-val" in said and "imagenet/val" in said
    (failure,) = _failures(db)
    assert failure[:2] == ("tiny0", "accuracy")
    assert (
        "imagenet-val" in failure[2] and str(Path(env["BIASBENCH_DATA"]) / "imagenet" / "val") in failure[2]
    )


def test_wrong_class_count_fails_the_job_with_the_shapes(tmp_path, env):
    """A 1000-class network declared for the 10-class demo world: the job fails naming both counts."""
    w = tiny_checkpoint(tmp_path / "thousand.pth", num_classes=1000)
    (tmp_path / "thousand.toml").write_text(
        f'[[checkpoint]]\nid = "thousand"\narch = "timm:test_resnet"\nweights = "{w}"\n'
        f'num_classes = 1000\nlabels = "demo-world"\n{DEMO_PREPROCESS}'
    )
    db = tmp_path / "b.duckdb"
    r = bench(
        ["run", str(tmp_path / "thousand.toml"), "-m", "accuracy", *ACC, "--db", str(db)], tmp_path, env
    )
    assert r.returncode == 1
    said = " ".join(r.stderr.split())
    assert "thousand" in said and re.search(r"\b10\b", said) and re.search(r"\b1000\b", said), said
    assert "class" in said, said
    assert _jobs(db) == []
    (failure,) = _failures(db)
    assert failure[:2] == ("thousand", "accuracy")
    assert re.search(r"\b10\b", failure[2]) and re.search(r"\b1000\b", failure[2]), failure[2]


def test_sigkill_mid_run_leaves_whole_jobs_and_the_rerun_finishes_the_rest(tmp_path, env):
    reg = demo_registry(tmp_path, n=3)
    db = tmp_path / "b.duckdb"
    marker = tmp_path / "marker.txt"
    probe = ["-m", "slow_probe", "-p", "slow_probe.dataset=demo-world/test"]
    penv = {
        **os.environ,
        **env,
        "PYTHONPATH": str(REPO),
        "BIASBENCH_METRICS": "tests.plugins.probes:SlowProbe",
        "PROBE_MARKER": str(marker),
        "PROBE_SLEEP": "3",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "biasbench.cli", "run", str(reg), *probe, "--db", str(db)],
        cwd=tmp_path,
        env=penv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while len(marker_lines(marker)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker_lines(marker)[:2] == ["tiny0", "tiny1"], "second job never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _jobs(db) == [("tiny0", "slow_probe")]  # job 1 whole, job 2 absent
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM results WHERE checkpoint_id = 'tiny0'").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM results WHERE checkpoint_id = 'tiny1'").fetchone()[0] == 0
    r = bench(
        ["run", str(reg), *probe, "--db", str(db)],
        tmp_path,
        {
            **env,
            "BIASBENCH_METRICS": "tests.plugins.probes:SlowProbe",
            "PROBE_SLEEP": "0",
            "PROBE_MARKER": str(marker),
        },
    )
    assert r.returncode == 0, r.stderr
    assert marker_lines(marker)[2:] == ["tiny1", "tiny2"]  # the rerun computed only what was missing
    assert _jobs(db) == [("tiny0", "slow_probe"), ("tiny1", "slow_probe"), ("tiny2", "slow_probe")]


def test_third_party_plugin_installed_with_pip_runs_through_bench_run(tmp_path, env):
    # the package's one module is the source of tests/plugins/probes.py (MeanConfidence among others)
    site = install_throwaway_package(
        tmp_path,
        "bb-extra",
        "bb_extra",
        {"metric.py": Path(probes.__file__).read_text()},
        '[project.entry-points."biasbench.metrics"]\nmean_confidence = "bb_extra.metric:MeanConfidence"',
    )
    reg = demo_registry(tmp_path, n=1)
    penv = {**env, "PYTHONPATH": f"{REPO}{os.pathsep}{site}"}
    ls = subprocess.run(
        [sys.executable, "-m", "biasbench.cli", "ls", "metrics"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **penv, "COLUMNS": "200"},
    )
    assert "mean_confidence" in ls.stdout and "bb-extra" in ls.stdout
    # no dataset parameter: the plugin asks the label space for its clean set (demo-world/test)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "biasbench.cli",
            "run",
            str(reg),
            "-m",
            "mean_confidence",
            "-p",
            "mean_confidence.n_images=50",
            "--db",
            str(tmp_path / "b.duckdb"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **penv},
    )
    assert r.returncode == 0, r.stderr
    assert _jobs(tmp_path / "b.duckdb") == [("tiny0", "mean_confidence")]
    with duckdb.connect(str(tmp_path / "b.duckdb"), read_only=True) as con:
        value, n = con.execute("SELECT value, n FROM results WHERE key = 'mean_confidence'").fetchone()
        (datasets,) = con.execute("SELECT datasets FROM jobs").fetchone()
    assert 0.1 <= value <= 1.0 and n == 50  # a softmax maximum over 10 classes
    assert "demo-world/test" in str(datasets)


def test_shards_merge_into_one_database_and_remerging_adds_nothing(tmp_path, env) -> None:
    """Two machines run different checkpoints (one overlapping) into their own DBs; `bench merge`
    brings jobs, results and per-item files together; the overlap and a second merge add nothing."""
    reg_a = demo_registry(tmp_path / "a", n=1)  # tiny0
    reg_b = demo_registry(tmp_path / "b", n=2)  # tiny0 (same weights, same job) and tiny1
    common = ["-m", "accuracy", *ACC]
    for reg, db in ((reg_a, "a.duckdb"), (reg_b, "b.duckdb")):
        r = bench(["run", str(reg), *common, "--db", str(tmp_path / "shards" / db)], tmp_path, env)
        assert r.returncode == 0, r.stderr
    merged = tmp_path / "all.duckdb"
    r = bench(
        [
            "merge",
            str(tmp_path / "shards" / "a.duckdb"),
            str(tmp_path / "shards" / "b.duckdb"),
            "--db",
            str(merged),
        ],
        tmp_path,
        env,
    )
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())  # rich wraps long paths
    assert (
        said.count("added runs 1, checkpoints") == 2 and said.count("jobs 1, results 2, item_outputs 1") == 2
    )
    assert _jobs(merged) == [("tiny0", "accuracy"), ("tiny1", "accuracy")]
    from biasbench.harness.store import Store

    with Store(merged, read_only=True) as st:
        assert len(st.results()) == 4 and st.counts()["checkpoints"] == 2 and len(st.runs()) == 2
        items = st.items("tiny1", "accuracy")  # copied beside the merged DB, readable from there
        assert len(items) == 1000 and str(st.items_dir) in str(merged) + ".items"
    again = bench(["merge", str(tmp_path / "shards" / "b.duckdb"), "--db", str(merged)], tmp_path, env)
    assert again.returncode == 0 and "jobs 0, results 0" in " ".join(again.stdout.split())
    # the merged DB is a normal results DB: a rerun of shard b's registry against it computes nothing
    rerun = bench(["run", str(reg_b), *common, "--db", str(merged)], tmp_path, env)
    assert rerun.returncode == 0 and "Nothing to compute" in rerun.stdout
    missing = bench(["merge", str(tmp_path / "nope.duckdb"), "--db", str(merged)], tmp_path, env)
    assert missing.returncode == 2 and "no results database" in " ".join(missing.stderr.split())
