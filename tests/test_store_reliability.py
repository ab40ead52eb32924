"""The store under trouble: files that are not results databases, read-only places, another process's
lock (waited out, or one clear message naming its PID), runs whose process died, older databases,
timings kept apart from results, and jobs another run stored meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from biasbench.harness.store import JobKey, JobRecord, Store, StoreError, pid_alive
from tests.harness_fixtures import REPO, bench

PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)


def _write(store: Store, key: JobKey, value: float = 0.5, timings: dict | None = None) -> bool:
    return store.write_job(
        key,
        JobRecord(
            metric_version="1", scalars={"x": value}, n={"x": 3}, seconds=0.1, run_id="r", timings=timings
        ),
    )


def _main(argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """The real entry point (``bench`` = ``biasbench.cli:main``) in this process: exit code, stderr."""
    from biasbench.cli import main

    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    with pytest.raises(SystemExit) as ex:
        main()
    return int(ex.value.code or 0), capsys.readouterr().err


def _holder(db: Path) -> subprocess.Popen:
    """Another process that opens ``db`` read-write and keeps it open until its stdin closes."""
    code = (
        "import sys, duckdb\ncon = duckdb.connect(sys.argv[1])\nprint('ready', flush=True)\n"
        "sys.stdin.read()\ncon.close()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "ready"
    return p


def _release(p: subprocess.Popen) -> None:
    p.stdin.close()
    p.wait(timeout=30)


def _results_db(path: Path) -> Path:
    with Store(path) as s:
        _write(s, JobKey("c", "m", "h"))
    return path


# ---------------------------------------------------------------------------------------------------
# 1. one clear message, never a traceback
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "kind"), [(PNG, "a PNG image"), (b"just some notes\n", "text")])
def test_a_file_that_is_not_a_duckdb_database_is_one_clear_error(
    tmp_path, content, kind, capsys, monkeypatch
):
    f = tmp_path / "results.png"
    f.write_bytes(content)
    for ro in (False, True):
        with pytest.raises(StoreError, match=rf"{f}.* is not a DuckDB database .*{kind}"):
            Store(f, read_only=ro)
    for cmd in ("status", "results", "report"):
        r = bench([cmd, "--db", str(f)], tmp_path)
        assert r.returncode == 2 and "is not a DuckDB database" in r.stderr and "Traceback" not in r.stderr
    code, err = _main(["merge", str(tmp_path / "none.duckdb"), "--db", str(f)], capsys, monkeypatch)
    assert code == 2 and "is not a DuckDB database" in err
    assert f.read_bytes() == content, "the file must be left as it was"


def test_bench_run_on_a_png_prints_one_error_line_and_exits_2(tmp_path, capsys, monkeypatch):
    f = tmp_path / "plot.png"
    f.write_bytes(PNG)
    code, err = _main(["run", "demo", "-m", "accuracy", "--db", str(f)], capsys, monkeypatch)
    assert code == 2
    assert err.startswith("error: ") and str(f) in err and "PNG image" in err and "Traceback" not in err
    assert f.read_bytes() == PNG


def test_a_directory_is_one_clear_error(tmp_path, capsys, monkeypatch):
    d = tmp_path / "results"
    d.mkdir()
    for ro in (False, True):
        with pytest.raises(StoreError, match=rf"{d} is a directory"):
            Store(d, read_only=ro)
    r = bench(["status", "--db", str(d)], tmp_path)
    assert r.returncode == 2 and "is a directory" in r.stderr
    code, err = _main(["run", "demo", "-m", "accuracy", "--db", str(d)], capsys, monkeypatch)
    assert code == 2 and err.startswith("error: ") and "is a directory" in err


def test_someone_elses_duckdb_database_is_refused_not_written(tmp_path):
    db = tmp_path / "other.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE sales (x INT)")
    for ro in (False, True):
        with pytest.raises(StoreError, match="not a biasbench results database .*sales"):
            Store(db, read_only=ro)
    with duckdb.connect(str(db), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {"sales"}


def _read_only_dir(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a chmod 555 folder, or (as root, whom permissions
    do not stop) a kernel file system."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    for cand in (d, Path("/sys"), Path("/proc")):
        probe = cand / f"biasbench-probe-{os.getpid()}"
        try:
            probe.open("x").close()
        except OSError:
            return cand
        probe.unlink()
    pytest.fail("found no read-only folder to test with")


def test_a_read_only_location_is_one_clear_error(tmp_path, capsys, monkeypatch):
    ro = _read_only_dir(tmp_path)
    with pytest.raises(StoreError, match=rf"cannot (write|open) the results database {ro}/b.duckdb"):
        Store(ro / "b.duckdb")
    with pytest.raises(
        StoreError, match=rf"cannot create the folder of the results database {ro}/sub/b.duckdb"
    ):
        Store(ro / "sub" / "b.duckdb")
    code, err = _main(["run", "demo", "-m", "accuracy", "--db", str(ro / "b.duckdb")], capsys, monkeypatch)
    assert code == 2 and err.startswith("error: ") and f"{ro}/b.duckdb" in err and "Traceback" not in err
    (tmp_path / "ro").chmod(0o755)


def test_a_lock_held_too_long_names_the_holder_for_readers_and_writers(tmp_path, capsys, monkeypatch):
    db = _results_db(tmp_path / "b.duckdb")
    holder = _holder(db)
    try:
        monkeypatch.setenv("BIASBENCH_LOCK_TIMEOUT", "0.5")
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=rf"locked by another process \(PID {holder.pid}\b"):
            Store(db, read_only=True)
        assert time.monotonic() - t0 >= 0.5
        with pytest.raises(StoreError, match=rf"PID {holder.pid}"):
            Store(db)
        for cmd in ("status", "results", "report"):
            code, err = _main([cmd, "--db", str(db)], capsys, monkeypatch)
            assert code == 2 and f"PID {holder.pid}" in err and "Traceback" not in err, (cmd, err)
        code, err = _main(["run", "demo", "-m", "accuracy", "--db", str(db)], capsys, monkeypatch)
        assert code == 2 and err.startswith("error: ") and f"PID {holder.pid}" in err
    finally:
        _release(holder)


# ---------------------------------------------------------------------------------------------------
# 2. the writer holds the file only while it writes; whoever meets the lock waits it out
# ---------------------------------------------------------------------------------------------------


def _other_process_can_read(db: Path) -> bool:
    code = (
        "import sys, duckdb\nduckdb.connect(sys.argv[1], read_only=True).execute('SELECT count(*) FROM jobs')"
    )
    return subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True).returncode == 0


def test_a_writing_store_holds_no_lock_between_writes(tmp_path):
    db = tmp_path / "b.duckdb"
    store = Store(db)  # kept open, as `bench run` keeps it for the whole run
    run = store.start_run(argv=["bench"], git_sha=None, versions={}, device="cpu")
    _write(store, JobKey("c", "m", "h"))
    assert _other_process_can_read(db)
    store.record_failure("c2", "m", None, "boom", "tb", run)
    store.finish_run(run, "failed")
    assert _other_process_can_read(db)
    with Store(db, read_only=True) as r:  # in this process too, while the writing store is alive
        assert len(r.results()) == 1 and r.runs().iloc[0]["status"] == "failed"


def test_a_lock_released_within_the_timeout_is_waited_out(tmp_path):
    db = _results_db(tmp_path / "b.duckdb")
    holder = _holder(db)
    t0 = time.monotonic()
    import threading

    threading.Timer(1.0, _release, [holder]).start()
    reader = Store(db, read_only=True, lock_timeout=30)
    assert len(reader.results()) == 1 and time.monotonic() - t0 >= 0.9
    holder = _holder(db)
    threading.Timer(1.0, _release, [holder]).start()
    writer = Store(db, lock_timeout=30)
    assert _write(writer, JobKey("c2", "m", "h"))
    assert len(Store(db, read_only=True).results()) == 2


# ---------------------------------------------------------------------------------------------------
# 3. runs whose process is gone read `interrupted`
# ---------------------------------------------------------------------------------------------------


def _run_in_dead_process(db: Path) -> str:
    """Start a run from a process that then dies without finishing it (SIGKILL)."""
    code = (
        "import os, sys\nfrom biasbench.harness.store import Store\n"
        "print(Store(sys.argv[1]).start_run(argv=['bench'], git_sha=None, versions={}, device='cpu'), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(db)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert p.returncode == -9, p.stderr
    return p.stdout.strip()


def _status_in_file(db: Path) -> dict[str, str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute("SELECT run_id, status FROM runs").fetchall())


def test_a_run_whose_process_died_is_marked_interrupted(tmp_path):
    db = tmp_path / "b.duckdb"
    dead_run = _run_in_dead_process(db)
    with Store(db, read_only=True) as r:
        runs = r.runs().set_index("run_id")
    assert runs.loc[dead_run, "status"] == "interrupted"  # read-only: reported so before it is written
    assert runs.loc[dead_run, "host"] and runs.loc[dead_run, "pid"] > 0
    assert _status_in_file(db)[dead_run] == "running"
    live = Store(db)  # opening for writing marks it
    mine = live.start_run(argv=["bench"], git_sha=None, versions={}, device="cpu")
    assert _status_in_file(db) == {dead_run: "interrupted", mine: "running"}  # this process lives
    # `bench status` marks them too (from a read-only start)
    dead2 = _run_in_dead_process(db)
    r = bench(["status", "--db", str(db)], tmp_path)
    assert r.returncode == 0 and "interrupted" in r.stdout
    assert _status_in_file(db)[dead2] == "interrupted" and _status_in_file(db)[mine] == "running"


def test_pid_alive_knows_a_reaped_and_a_zombie_process_are_gone():
    assert pid_alive(os.getpid())
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while time.time() < deadline and Path(f"/proc/{p.pid}/stat").exists() and pid_alive(p.pid):
        time.sleep(0.05)  # exited but not reaped: a zombie
    assert not pid_alive(p.pid)
    p.wait()
    assert not pid_alive(p.pid) and not pid_alive(0)


# ---------------------------------------------------------------------------------------------------
# older databases, timings, jobs stored meanwhile
# ---------------------------------------------------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE checkpoints (id VARCHAR PRIMARY KEY, arch VARCHAR, weights VARCHAR, source VARCHAR,
  weights_sha256 VARCHAR, identity VARCHAR, preprocess JSON, labels VARCHAR, tags JSON, updated_at TIMESTAMPTZ);
CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status VARCHAR,
  argv JSON, git_sha VARCHAR, versions JSON, device VARCHAR, host VARCHAR);
CREATE TABLE jobs (checkpoint_id VARCHAR, metric VARCHAR, config_hash VARCHAR, metric_version VARCHAR, params JSON,
  datasets JSON, seconds DOUBLE, flags JSON, run_id VARCHAR, created_at TIMESTAMPTZ,
  PRIMARY KEY (checkpoint_id, metric, config_hash));
CREATE TABLE results (checkpoint_id VARCHAR, metric VARCHAR, key VARCHAR, value DOUBLE, n BIGINT,
  config_hash VARCHAR, metric_version VARCHAR, run_id VARCHAR, created_at TIMESTAMPTZ,
  UNIQUE (checkpoint_id, metric, key, config_hash));
CREATE TABLE item_outputs (checkpoint_id VARCHAR, metric VARCHAR, config_hash VARCHAR, path VARCHAR,
  n_rows BIGINT, run_id VARCHAR, created_at TIMESTAMPTZ);
CREATE TABLE failures (checkpoint_id VARCHAR, metric VARCHAR, config_hash VARCHAR, error VARCHAR,
  traceback VARCHAR, run_id VARCHAR, created_at TIMESTAMPTZ);
CREATE VIEW latest_jobs AS SELECT * EXCLUDE (rn) FROM (SELECT *, row_number() OVER (
  PARTITION BY checkpoint_id, metric ORDER BY created_at DESC) AS rn FROM jobs) WHERE rn = 1;
CREATE VIEW latest_results AS
  SELECT r.* FROM results r JOIN latest_jobs j USING (checkpoint_id, metric, config_hash);
INSERT INTO runs VALUES ('old-run', now(), NULL, 'running', '[]', NULL, '{}', 'cpu', 'h');
INSERT INTO jobs VALUES ('c', 'm', 'h0', '1', '{}', '{}', 1.0, '[]', 'old-run', now());
INSERT INTO results VALUES ('c', 'm', 'x', 0.25, 3, 'h0', '1', 'old-run', now());
"""


def _old_db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute(OLD_SCHEMA)
    return path


def test_a_database_from_before_pid_and_timings_keeps_working(tmp_path):
    old = _old_db(tmp_path / "old.duckdb")
    with Store(old, read_only=True) as r:  # read-only: nothing to migrate, nothing breaks
        assert r.runs().iloc[0]["status"] == "running" and len(r.results()) == 1
    r = bench(["status", "--db", str(old)], tmp_path)
    assert r.returncode == 0 and "jobs 1" in r.stdout
    # a shard from before merges into a new database (its missing columns stay NULL)
    with Store(tmp_path / "new.duckdb") as new:
        assert new.merge(old)["jobs"] == 1
        assert new.query("SELECT timings FROM jobs")["timings"].isna().all()
        assert new.runs()["pid"].isna().all()
    with Store(old) as s:  # writing: the columns are added, the old rows kept
        _write(s, JobKey("c", "m", "h1"), timings={"seconds_per_image": 0.5})
        jobs = s.query("SELECT config_hash, timings FROM jobs ORDER BY config_hash")
        assert list(jobs["config_hash"]) == ["h0", "h1"] and pd.isna(jobs["timings"][0])
        assert "pid" in s.runs().columns
        assert s.runs().iloc[0]["status"] == "running"  # no pid: nobody can tell, so it is left alone


def test_timings_are_stored_with_the_job_not_as_results(tmp_path):
    with Store(tmp_path / "b.duckdb") as s:
        _write(s, JobKey("c", "sis", "h"), timings={"seconds_per_image": 0.125})
        assert list(s.results()["key"]) == ["x"]
        (t,) = s.query("SELECT timings FROM jobs")["timings"]
    assert json.loads(t) == {"seconds_per_image": 0.125}


def test_if_absent_keeps_another_runs_copy_and_leaves_no_orphan_file(tmp_path):
    items = pd.DataFrame({"item": ["a", "b"], "v": [1.0, 2.0]})
    key = JobKey("c", "m", "h")
    with Store(tmp_path / "b.duckdb") as s:
        assert s.write_job(
            key,
            JobRecord(metric_version="1", scalars={"x": 1.0}, items=items, run_id="first"),
        )
        again = s.write_job(
            key,
            JobRecord(
                metric_version="1", scalars={"x": 2.0}, items=items.assign(v=[9.0, 9.0]), run_id="second"
            ),
            if_absent=True,
        )
        assert again is False
        assert s.results()["value"].tolist() == [1.0] and s.items("c", "m")["v"].tolist() == [1.0, 2.0]
        files = sorted(p.name for p in s.items_dir.rglob("*"))
        assert files == ["c__h.parquet", "m"]
        assert _write(s, key, 3.0)  # a forced recompute replaces
        assert s.results()["value"].tolist() == [3.0]
