"""`bench run --executor ray` on a local two-node Ray cluster (``ray.cluster_utils.Cluster``: a head
and one worker node, one CPU each, all on 127.0.0.1, Ray's state in a temporary folder, no dashboard).

Two demo checkpoints copied from the shipped demo registry × ``shape_bias`` (computed) and ``accuracy``
on a dataset the empty data root lacks (a planned failure, recorded by the worker) run three ways: the
serial executor (the reference), the Ray executor through the CLI, and the Ray executor with the first
task's worker SIGKILLed mid-task (test hook ``$BIASBENCH_RAY_TEST_STALL``). Both Ray databases must
equal the serial one scalar for scalar with the same ``failures`` rows and no job twice; the killed
run's ``runs.retries`` is 1.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pytest

from biasbench.harness.store import Store
from tests.harness_fixtures import REPO, bench, demo_zoo_registry

if importlib.util.find_spec("ray") is None:  # pragma: no cover - CI installs the test extra, with ray
    if os.environ.get("CI", "").lower() == "true":
        raise ImportError("ray is missing: CI must install the test extra (it has ray)")
    pytest.skip("ray is not installed (pip install 'biasbench[ray]')", allow_module_level=True)

ZOO = ["zoo-plain", "zoo-shape-rand"]
METRICS = ["-m", "shape_bias,accuracy", "-p", "accuracy.dataset=imagenet-sample"]
NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The registry, an environment with a fresh cache and an empty data root, and the serial run's
    database (the reference)."""
    work = tmp_path_factory.mktemp("rayrun")
    (work / "data").mkdir()
    env = {"BIASBENCH_CACHE": str(work / "cache"), "BIASBENCH_DATA": str(work / "data")}
    reg = demo_zoo_registry(work / "demo2.toml", ZOO)
    serial = work / "serial.duckdb"
    # one thread, as a Ray task has (OMP_NUM_THREADS=1): two threads on a loaded 2-core machine are ~20× slower
    r = bench(["run", str(reg), *METRICS, "--threads", "1", "--db", str(serial)], work, env)
    assert r.returncode == 1, r.stderr[-3000:]  # the accuracy jobs fail: no imagenet-sample
    return work, env, reg, serial


#: Ray's state (sockets, logs, the current-cluster file) in a temporary folder, every node and driver on
#: 127.0.0.1 (Ray's switch for "no multi-host cluster": the loopback address as each node's IP)
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture(scope="module")
def cluster():
    """Head + one worker node (Ray's sockets need a short path: a folder directly under /tmp). The
    variables are set before ray is first imported (it reads them then) and put back afterwards."""
    tmp = tempfile.mkdtemp(prefix="bbray", dir="/tmp")
    env = {**RAY_ENV, "RAY_TMPDIR": tmp}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        c.add_node(**NODE)
        c.wait_for_nodes()
        assert c.address.startswith("127.0.0.1:"), c.address
        yield c
    finally:
        c.shutdown()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def _bench_ray(world, cluster, db: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    work, env, reg, _ = world
    full = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **env, **RAY_ENV, **(extra_env or {})}
    args = ["run", str(reg), *METRICS, "--db", str(db), "--executor", "ray", "--ray-address", cluster.address]
    return subprocess.Popen(
        [sys.executable, "-m", "biasbench.cli", *args],
        cwd=work,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: Ctrl-C raises KeyboardInterrupt even if this process's SIGINT is ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _tables(db: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(db), read_only=True) as con:
        q = {
            "results": "SELECT checkpoint_id, metric, key, value, n, config_hash FROM results",
            "jobs": "SELECT checkpoint_id, metric, config_hash, metric_version, params::VARCHAR FROM jobs",
            "failures": "SELECT checkpoint_id, metric, config_hash, error FROM failures",
            "items": "SELECT checkpoint_id, metric, config_hash, path, n_rows FROM item_outputs",
        }
        return {k: sorted(con.execute(sql).fetchall()) for k, sql in q.items()}


def _assert_same_as_serial(db: Path, serial: Path) -> None:
    got, want = _tables(db), _tables(serial)
    assert want["results"] and want["failures"]  # the reference computed and failed something
    for table in ("results", "jobs", "failures"):
        assert got[table] == want[table], table
    # item files: same rows; the paths live beside each database
    assert [r[:3] + r[4:] for r in got["items"]] == [r[:3] + r[4:] for r in want["items"]]
    assert all((db.with_name(db.name + ".items") / r[3]).is_file() for r in got["items"])


@pytest.mark.slow
def test_ray_run_on_two_nodes_stores_what_the_serial_run_stores(world, cluster) -> None:
    work = world[0]
    db = work / "ray.duckdb"
    t0 = time.perf_counter()
    proc = _bench_ray(world, cluster, db)
    out, errs = proc.communicate(timeout=240)
    wall = time.perf_counter() - t0
    assert proc.returncode == 1, errs[-3000:]  # a failed job: exit code 1, as serial
    assert "2 Ray task(s) on 2 node(s), 2 CPU(s)" in errs
    assert "✓ shape_bias" in errs and "not found" in errs
    _assert_same_as_serial(db, world[3])
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, retries FROM runs").fetchall() == [("failed", 0)]
    print(f"two-node Ray run: {wall:.1f}s wall")


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_retried_and_no_job_is_written_twice(world, cluster, tmp_path) -> None:
    db = tmp_path / "killed.duckdb"
    pid_file = tmp_path / "stall.pid"
    proc = _bench_ray(world, cluster, db, {"BIASBENCH_RAY_TEST_STALL": str(pid_file)})
    deadline = time.monotonic() + 180
    while not (pid_file.is_file() and pid_file.read_text().strip()):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no task reached the stall hook"
        time.sleep(0.2)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    out, errs = proc.communicate(timeout=240)
    assert proc.returncode == 1, errs[-3000:]
    assert "retried 1× after its worker died" in errs
    _assert_same_as_serial(db, world[3])
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT retries FROM runs").fetchall() == [(1,)]
        dup = con.execute(
            "SELECT count(*) FROM (SELECT checkpoint_id, metric, config_hash FROM jobs "
            "GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
    assert dup == 0


@pytest.mark.slow
def test_a_driver_killed_mid_run_leaves_whole_jobs_and_a_rerun_completes_the_rest(
    world, cluster, tmp_path
) -> None:
    """One task stalls (test hook) while the other's shard is merged; then the driver is SIGKILLed."""
    work, env, reg, serial = world
    db = tmp_path / "driver-killed.duckdb"
    proc = _bench_ray(world, cluster, db, {"BIASBENCH_RAY_TEST_STALL": str(tmp_path / "stall.pid")})
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no task's shard was merged"
        if db.is_file() and (tmp_path / "stall.pid").is_file():
            with Store(db, read_only=True) as store:
                if len(store.query("SELECT * FROM jobs")):
                    break
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    with duckdb.connect(str(db), read_only=True) as con:
        # whole jobs only: every job has its scalars, no scalar lacks its job; one checkpoint's jobs
        assert con.execute(
            "SELECT count(*) FROM jobs j ANTI JOIN results r USING (checkpoint_id, metric, config_hash)"
        ).fetchone() == (0,)
        assert con.execute(
            "SELECT count(*) FROM results r ANTI JOIN jobs j USING (checkpoint_id, metric, config_hash)"
        ).fetchone() == (0,)
        assert con.execute("SELECT count(DISTINCT checkpoint_id) FROM jobs").fetchone() == (1,)
    rerun = bench(["run", str(reg), *METRICS, "--threads", "1", "--db", str(db)], work, env)  # serial
    assert rerun.returncode == 1, rerun.stderr[-3000:]
    assert "1 stored" in " ".join(rerun.stderr.split())
    got, want = _tables(db), _tables(serial)
    for table in ("results", "jobs"):
        assert got[table] == want[table], table
    assert sorted(set(got["failures"])) == want["failures"]  # the planned failures, recorded again
    with Store(db, read_only=True) as store:
        assert sorted(store.runs()["status"]) == ["failed", "interrupted"]


def test_missing_ray_is_one_error_naming_the_extra(world, monkeypatch) -> None:
    work, env, reg, _ = world
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    r = bench(["run", str(reg), *METRICS, "--db", str(work / "x.duckdb"), "--executor", "ray"], work, env)
    assert r.returncode == 2
    assert "pip install 'biasbench[ray]'" in " ".join(r.stderr.split())
    assert not (work / "x.duckdb").exists()


def test_force_with_the_ray_executor_is_refused_before_anything_runs(world) -> None:
    work, env, reg, _ = world
    db = work / "forced.duckdb"
    r = bench(["run", str(reg), *METRICS, "--db", str(db), "--executor", "ray", "--force"], work, env)
    assert r.returncode == 2
    assert "--force is not supported with --executor ray" in " ".join(r.stderr.split())
    assert not db.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ctrl_c_on_the_driver_cancels_outstanding_tasks_and_leaves_whole_jobs(
    world, cluster, tmp_path
) -> None:
    """One task stalls (test hook) while the other's shard is merged; then the driver gets SIGINT: the
    stalled task's worker is cancelled (force: its process ends), the run is marked interrupted, and
    the database holds the merged checkpoint's whole jobs only."""
    db = tmp_path / "ctrl-c.duckdb"
    pid_file = tmp_path / "stall.pid"
    proc = _bench_ray(world, cluster, db, {"BIASBENCH_RAY_TEST_STALL": str(pid_file)})
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no task's shard was merged"
        if db.is_file() and pid_file.is_file() and pid_file.read_text().strip():
            with Store(db, read_only=True) as store:
                if len(store.query("SELECT * FROM jobs")):
                    break
        time.sleep(0.5)
    stalled = int(pid_file.read_text())
    assert _alive(stalled)
    proc.send_signal(signal.SIGINT)
    try:
        out, errs = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # Ray's core can swallow a SIGINT under load: a user presses again
        proc.send_signal(signal.SIGINT)
        out, errs = proc.communicate(timeout=120)
    assert proc.returncode != 0, errs[-3000:]
    assert "cancelled 1 outstanding Ray task(s)" in errs
    # (a driver that disconnects also ends its tasks on Ray's side; the message shows ours did it first)
    gone = time.monotonic() + 60
    while _alive(stalled):
        assert time.monotonic() < gone, "the outstanding task's worker was not cancelled"
        time.sleep(0.5)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute(
            "SELECT count(*) FROM jobs j ANTI JOIN results r USING (checkpoint_id, metric, config_hash)"
        ).fetchone() == (0,)
        assert con.execute("SELECT count(DISTINCT checkpoint_id) FROM jobs").fetchone() == (1,)
    with Store(db, read_only=True) as store:
        assert list(store.runs()["status"]) == ["interrupted"]
