"""`bench run` end to end on real (tiny) checkpoints and real images: reruns, failures, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.harness_fixtures import REPO, bench, install_throwaway_package, tiny_registry
from tests.plugins import probes
from tests.plugins.probes import marker_lines


@pytest.fixture()
def env(tmp_path, shared_data):
    return {"BIASBENCH_CACHE": str(tmp_path / "cache"), "BIASBENCH_DATA": str(shared_data)}


def _jobs(db) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT checkpoint_id, metric FROM jobs ORDER BY 1, 2").fetchall()


def test_run_stores_results_and_a_rerun_computes_nothing(tmp_path, env):
    reg = tiny_registry(tmp_path, n=2)
    args = ["run", str(reg), "--metrics", "accuracy", "--param", "accuracy.dataset=imagenet-sample",
            "--db", str(tmp_path / "b.duckdb")]
    first = bench(args, tmp_path, env)
    assert first.returncode == 0, first.stderr
    assert _jobs(tmp_path / "b.duckdb") == [("tiny0", "accuracy"), ("tiny1", "accuracy")]
    second = bench(args, tmp_path, env)
    assert second.returncode == 0, second.stderr
    assert "Nothing to compute" in second.stderr
    res = bench(["results", "--db", str(tmp_path / "b.duckdb"), "--format", "csv"], tmp_path, env)
    assert res.stdout.splitlines()[0] == "checkpoint,metric,key,value,n"
    assert sum(line.startswith("tiny") for line in res.stdout.splitlines()) == 4  # top1 + top5 each
    forced = bench([*args, "--force", "--dry-run"], tmp_path, env)
    assert forced.returncode == 0 and forced.stdout.count("todo") == 2


def test_corrupt_checkpoint_fails_its_job_only_and_exit_code_is_nonzero(tmp_path, env):
    reg = tiny_registry(tmp_path, n=1)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    reg.write_text(reg.read_text() + f'\n[[checkpoint]]\nid = "broken"\narch = "timm:test_resnet"\nweights = "{bad}"\n'
                   'preprocess = { resize = 64, crop = 64 }\n')
    db = tmp_path / "b.duckdb"
    r = bench(["run", str(reg), "-m", "accuracy", "-p", "accuracy.dataset=imagenet-sample", "--db", str(db)], tmp_path, env)
    assert r.returncode == 1
    assert "broken" in r.stderr and "1 job(s) failed" in r.stderr
    assert _jobs(db) == [("tiny0", "accuracy")]
    with duckdb.connect(str(db), read_only=True) as con:
        (err,) = con.execute("SELECT error FROM failures WHERE checkpoint_id = 'broken'").fetchone()
    assert "broken" in err or "bad.pth" in err


def test_nan_output_is_a_recorded_failure_with_a_clear_message(tmp_path, env):
    reg = tiny_registry(tmp_path, n=1)
    db = tmp_path / "b.duckdb"
    r = bench(["run", str(reg), "-m", "nan_probe,accuracy", "-p", "accuracy.dataset=imagenet-sample", "--db", str(db)],
              tmp_path, {**env, "BIASBENCH_METRICS": "tests.plugins.probes:NanProbe"})
    assert r.returncode == 1
    assert "is NaN" in r.stderr
    assert _jobs(db) == [("tiny0", "accuracy")]


def test_missing_dataset_is_one_clear_message_naming_where_it_looked(tmp_path, env):
    reg = tiny_registry(tmp_path, n=1)
    r = bench(["run", str(reg), "-m", "accuracy", "--db", str(tmp_path / "b.duckdb")], tmp_path, env)
    assert r.returncode == 1
    assert "imagenet-val" in r.stderr and "imagenet/val" in r.stderr


def test_wrong_class_count_fails_the_job_with_the_shapes(tmp_path, env):
    import timm
    import torch

    net = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    torch.save(net.state_dict(), tmp_path / "ten.pth")
    (tmp_path / "ten.toml").write_text(
        f'[[checkpoint]]\nid = "ten"\narch = "timm:test_resnet"\nweights = "{tmp_path / "ten.pth"}"\n'
        'num_classes = 10\nlabels = "imagenet-1k"\npreprocess = { resize = 64, crop = 64 }\n')
    r = bench(["run", str(tmp_path / "ten.toml"), "-m", "accuracy", "-p", "accuracy.dataset=imagenet-sample",
               "--db", str(tmp_path / "b.duckdb")], tmp_path, env)
    assert r.returncode == 1
    assert "10" in r.stderr and "1000" in r.stderr and "class" in r.stderr


def test_sigkill_mid_run_leaves_whole_jobs_and_the_rerun_finishes_the_rest(tmp_path, env):
    reg = tiny_registry(tmp_path, n=3)
    db = tmp_path / "b.duckdb"
    marker = tmp_path / "marker.txt"
    penv = {**os.environ, **env, "PYTHONPATH": str(REPO), "BIASBENCH_METRICS": "tests.plugins.probes:SlowProbe",
            "PROBE_MARKER": str(marker), "PROBE_SLEEP": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "biasbench.cli", "run", str(reg), "-m", "slow_probe", "--db", str(db)],
                            cwd=tmp_path, env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(marker_lines(marker)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker_lines(marker)[:2] == ["tiny0", "tiny1"], "second job never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _jobs(db) == [("tiny0", "slow_probe")]  # job 1 whole, job 2 absent
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM results WHERE checkpoint_id = 'tiny1'").fetchone()[0] == 0
    r = bench(["run", str(reg), "-m", "slow_probe", "--db", str(db)], tmp_path,
              {**env, "BIASBENCH_METRICS": "tests.plugins.probes:SlowProbe", "PROBE_SLEEP": "0"})
    assert r.returncode == 0, r.stderr
    assert _jobs(db) == [("tiny0", "slow_probe"), ("tiny1", "slow_probe"), ("tiny2", "slow_probe")]


def test_third_party_plugin_installed_with_pip_runs_through_bench_run(tmp_path, env):
    # the package's one module is the source of tests/plugins/probes.py (MeanConfidence among others)
    site = install_throwaway_package(tmp_path, "bb-extra", "bb_extra", {"metric.py": Path(probes.__file__).read_text()},
                                     '[project.entry-points."biasbench.metrics"]\n'
                                     'mean_confidence = "bb_extra.metric:MeanConfidence"')
    reg = tiny_registry(tmp_path, n=1)
    penv = {**env, "PYTHONPATH": f"{REPO}{os.pathsep}{site}"}
    ls = subprocess.run([sys.executable, "-m", "biasbench.cli", "ls", "metrics"], cwd=tmp_path, capture_output=True,
                        text=True, env={**os.environ, **penv, "COLUMNS": "200"})
    assert "mean_confidence" in ls.stdout and "bb-extra" in ls.stdout
    r = subprocess.run([sys.executable, "-m", "biasbench.cli", "run", str(reg), "-m", "mean_confidence",
                        "-p", "mean_confidence.dataset=imagenet-sample", "--db",
                        str(tmp_path / "b.duckdb")], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, **penv})
    assert r.returncode == 0, r.stderr
    assert _jobs(tmp_path / "b.duckdb") == [("tiny0", "mean_confidence")]


def test_shards_merge_into_one_database_and_remerging_adds_nothing(tmp_path, env) -> None:
    """Two machines run different checkpoints (one overlapping) into their own DBs; `bench merge`
    brings jobs, results and per-item files together; the overlap and a second merge add nothing."""
    reg_a = tiny_registry(tmp_path / "a", n=1)  # tiny0
    reg_b = tiny_registry(tmp_path / "b", n=2)  # tiny0 (same weights, same job) and tiny1
    common = ["-m", "accuracy", "-p", "accuracy.dataset=imagenet-sample"]
    for reg, db in ((reg_a, "a.duckdb"), (reg_b, "b.duckdb")):
        r = bench(["run", str(reg), *common, "--db", str(tmp_path / "shards" / db)], tmp_path, env)
        assert r.returncode == 0, r.stderr
    merged = tmp_path / "all.duckdb"
    r = bench(["merge", str(tmp_path / "shards" / "a.duckdb"), str(tmp_path / "shards" / "b.duckdb"),
               "--db", str(merged)], tmp_path, env)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stderr.split())  # rich wraps long paths
    assert said.count("added runs 1, checkpoints") == 2 and said.count("jobs 1, results 2, item_outputs 1") == 2
    assert _jobs(merged) == [("tiny0", "accuracy"), ("tiny1", "accuracy")]
    from biasbench.harness.store import Store

    with Store(merged, read_only=True) as st:
        assert len(st.results()) == 4 and len(st.checkpoints()) == 2 and len(st.runs()) == 2
        items = st.items("tiny1", "accuracy")  # copied beside the merged DB, readable from there
        assert len(items) == 300 and str(st.items_dir) in str(merged) + ".items"
    again = bench(["merge", str(tmp_path / "shards" / "b.duckdb"), "--db", str(merged)], tmp_path, env)
    assert again.returncode == 0 and "jobs 0, results 0" in " ".join(again.stderr.split())
    # the merged DB is a normal results DB: a rerun of shard b's registry against it computes nothing
    rerun = bench(["run", str(reg_b), *common, "--db", str(merged)], tmp_path, env)
    assert rerun.returncode == 0 and "Nothing to compute" in rerun.stderr
    missing = bench(["merge", str(tmp_path / "nope.duckdb"), "--db", str(merged)], tmp_path, env)
    assert missing.returncode == 2 and "no results database" in " ".join(missing.stderr.split())
