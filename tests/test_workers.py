"""``bench run --workers N`` (biasbench/harness/workers.py): the checkpoints shared among worker
processes store what the serial run stores, ensembles stay with their members, a dead worker fails
only its own unfinished jobs, and a killed ``bench run`` leaves neither a process nor a torn job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from rich.console import Console

import biasbench
from biasbench.core.errors import InputError
from biasbench.harness import session
from biasbench.harness.executor import ExecOptions
from biasbench.harness.process_start import parse_workers
from biasbench.harness.status import Outcome
from biasbench.harness.store import Store
from biasbench.harness.workers import MAX_AUTO_WORKERS, units_of, worker_count
from biasbench.metrics.base import Metric, MetricResult
from biasbench.metrics.common import dataset_request
from tests.conftest import REPO, missing_prerequisite

#: a demo slice with both kinds of multi-network checkpoint: the ensemble (its members zoo-plain,
#: zoo-gaussian-noise and zoo-mixup) and the input-dropout wrapper (4 masks)
SLICE = ["category=baseline", "category=ensemble", "category=test-time-dropout"]


def _values(db: Path) -> pd.DataFrame:
    with Store(db, read_only=True) as s:
        return s.query("SELECT checkpoint_id, metric, key, value, n FROM results ORDER BY 1, 2, 3")


def _plans(tmp_path: Path, metrics: list[str], where: list[str] | None = None) -> list:
    opts = session.RunOptions(
        data_root=tmp_path / "data", cache_dir=tmp_path / "cache", where=tuple(where or ())
    )
    specs = session.resolve(["demo"], opts.where)
    with Store(tmp_path / "plan.duckdb") as store:
        return session.plan_jobs(store, specs, session.build_metrics(metrics, None), opts)


@pytest.mark.slow
def test_two_workers_store_the_serial_runs_values_bit_for_bit(tmp_path, cache_dir):
    """Accuracy and SIS (BackSelect's gradients, the wrapper's stacked masks) on the slice: two worker
    processes of one thread each store the values one process of one thread stores, bit for bit, in
    one recorded run, each job with its thread count."""
    params = {"sis": {"n_images": 8}}
    common = dict(where=SLICE, seed=0, data_root=tmp_path / "data")
    before = torch.get_num_threads()
    try:
        serial = biasbench.run(
            ["demo"], ["accuracy", "sis"], params, db=tmp_path / "serial.duckdb", threads=1, **common
        )
        parallel = biasbench.run(
            ["demo"],
            ["accuracy", "sis"],
            params,
            db=tmp_path / "workers.duckdb",
            threads=2,
            workers=2,
            **common,
        )
    finally:
        torch.set_num_threads(before)
    assert serial.failed == 0 and parallel.failed == 0
    assert parallel.count(Outcome.DONE) == serial.count(Outcome.DONE) == 8  # 4 checkpoints × 2 metrics
    # the summary lists the checkpoints in plan order, as the serial run's does
    assert [o.checkpoint for o in parallel.outcomes] == [o.checkpoint for o in serial.outcomes]
    a, b = _values(tmp_path / "serial.duckdb"), _values(tmp_path / "workers.duckdb")
    assert len(a) > 50
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    with Store(tmp_path / "workers.duckdb", read_only=True) as s:
        runs = s.query("SELECT status FROM runs")
        threads = s.query("SELECT DISTINCT timings->>'$.\"run.threads\"' AS t FROM jobs")
    assert runs["status"].tolist() == ["ok"]
    assert threads["t"].tolist() == ["1.0"]


def test_an_ensemble_shares_a_unit_with_its_members_and_the_largest_units_go_first(tmp_path):
    """The demo's 13 checkpoints × accuracy: the ensemble and its three members are one unit, in plan
    order (members first, so their forwards are served to it), cost 1 + 1 + 1 + 3 network calls; the
    input-dropout wrapper's 4 masks make the next unit; the 8 others follow, one checkpoint each."""
    units = units_of(_plans(tmp_path, ["accuracy"]))
    ids = [[cp.spec.id for cp in u] for u in units]
    assert ids[0] == ["zoo-plain", "zoo-gaussian-noise", "zoo-mixup", "zoo-ensemble-plain-noise-mixup"]
    assert ids[1] == ["zoo-input-dropout-test-time"]
    assert all(len(u) == 1 for u in ids[2:]) and len(ids) == 2 + 8
    assert sorted(i for u in ids for i in u) == sorted(cp.spec.id for cp in _plans(tmp_path, ["accuracy"]))


def test_a_stored_checkpoint_makes_no_unit(tmp_path, cache_dir):
    """Only checkpoints with work to do are handed out: after zoo-plain's accuracy is stored, its unit
    (the ensemble's) holds the ensemble and the two members still to do."""
    db = tmp_path / "plan.duckdb"
    biasbench.run(
        ["demo"], ["accuracy"], db=db, where=["category=baseline"], threads=1, data_root=tmp_path / "data"
    )
    plain_done = [u for u in units_of(_plans(tmp_path, ["accuracy"])) if len(u) > 1]
    assert [[cp.spec.id for cp in u] for u in plain_done] == [
        ["zoo-gaussian-noise", "zoo-mixup", "zoo-ensemble-plain-noise-mixup"]
    ]


def _exec(device: str = "cpu", group: int | str = 1, compile: bool = False) -> ExecOptions:
    return ExecOptions(Path("."), Path("."), torch.device(device), group=group, compile=compile)


def test_auto_takes_a_worker_per_thread_up_to_the_cap_and_the_units(monkeypatch):
    monkeypatch.delenv("BIASBENCH_WORKERS", raising=False)
    assert worker_count("auto", _exec(), threads=2, units=10) == 2
    assert worker_count("auto", _exec(), threads=1, units=10) == 1  # a busy machine: one free CPU
    assert worker_count("auto", _exec(), threads=64, units=10) == MAX_AUTO_WORKERS
    assert worker_count("auto", _exec(), threads=8, units=3) == 3
    # one process where processes cannot help: one GPU, dataset-major groups, compiled graphs
    assert worker_count("auto", _exec("cuda"), threads=8, units=10) == 1
    assert worker_count("auto", _exec(group="auto"), threads=8, units=10) == 1
    assert worker_count("auto", _exec(compile=True), threads=8, units=10) == 1
    # a plan too small to win back the workers' start (images × conditions), and the demo's
    assert worker_count("auto", _exec(), threads=2, units=10, work=57_806) == 1  # 2 checkpoints × all
    assert worker_count("auto", _exec(), threads=2, units=10, work=376_000) == 2
    assert worker_count(2, _exec(), threads=2, units=10, work=4_600) == 2  # asked for: given
    monkeypatch.setenv("BIASBENCH_WORKERS", "3")
    assert worker_count("auto", _exec(), threads=2, units=10) == 3
    assert worker_count(1, _exec(), threads=2, units=10) == 1  # an explicit number wins over the variable
    monkeypatch.setenv("BIASBENCH_WORKERS", "none")
    with pytest.raises(InputError, match="BIASBENCH_WORKERS='none' is not a whole number"):
        worker_count("auto", _exec(), threads=2, units=10)


def test_an_explicit_worker_count_that_cannot_work_is_one_clear_error():
    with pytest.raises(InputError, match="cannot go with a CUDA device, --group or --compile"):
        worker_count(2, _exec("cuda"), threads=2, units=10)
    assert parse_workers("auto") == "auto" and parse_workers("3") == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(InputError, match="--workers must be auto or a whole number"):
            parse_workers(bad)


class _ExitsOnce(Metric):
    """Ends the worker process running it (``os._exit(9)``, as the OOM killer would) the first time it
    runs anywhere (``flag`` names a file it creates); afterwards a plain mean logit."""

    name = "exits_once_test"
    flag = ""

    def datasets(self, label_space):
        return {"images": dataset_request(self.name, label_space, None)}

    def evaluate(self, model, data, ctx):
        try:
            with open(self.flag, "x"):
                pass
        except FileExistsError:
            logits = ctx.predict(model, data["images"].images[:16])
            return MetricResult({"mean_logit": float(logits.double().mean())}, n=16)
        os._exit(9)


def test_a_worker_that_dies_fails_only_its_unfinished_jobs_and_the_others_finish(tmp_path, cache_dir):
    metric = _ExitsOnce()
    metric.flag = str(tmp_path / "died")
    opts = session.RunOptions(
        data_root=tmp_path / "data",
        cache_dir=cache_dir,
        where=("category=baseline", "category=stylized"),
        workers=2,
    )
    specs = session.resolve(["demo"], opts.where)
    torch.set_num_threads(2)
    try:
        _, summary = session.plan_and_execute(
            tmp_path / "r.duckdb", specs, [metric], opts, torch.device("cpu"), console=Console(quiet=True)
        )
    finally:
        torch.set_num_threads(1)
    assert summary is not None and summary.failed == 1 and summary.count(Outcome.DONE) == 3
    (failed,) = [o for o in summary.outcomes if o.status == Outcome.FAILED]
    assert "worker process running it died (exit code 9)" in failed.summary
    with Store(tmp_path / "r.duckdb", read_only=True) as s:
        stored = s.query("SELECT checkpoint_id FROM jobs")["checkpoint_id"].tolist()
        failures = s.query("SELECT checkpoint_id, error FROM failures")
        runs = s.query("SELECT status FROM runs")["status"].tolist()
    assert len(stored) == 3 and failed.checkpoint not in stored
    assert failures["checkpoint_id"].tolist() == [failed.checkpoint]
    assert runs == ["failed"]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent PID) of a process from /proc, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, their children, …; Linux /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = st[1]
    kids = [p for p, parent in parents.items() if parent == pid]
    return kids + [d for k in kids for d in _descendants(k)]


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs: it exists and is no zombie (an exited process its parent has not
    reaped yet holds no memory and runs nothing)."""
    st = _stat(pid)
    return st is not None and st[0] != "Z"


@pytest.mark.slow
def test_a_killed_bench_run_leaves_no_worker_and_only_whole_jobs(tmp_path):
    """SIGKILL the parent of two workers once the first job is stored: both workers (and the fork
    server) are gone within 3 s, every stored job is whole, and a rerun computes exactly the rest (on
    4 demo checkpoints, one unit each: 2 for each worker)."""
    if not Path("/proc/self/stat").exists():
        missing_prerequisite("the worker processes are found through /proc (Linux)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "BIASBENCH_CACHE": str(tmp_path / "cache")}
    args = [
        sys.executable,
        "-m",
        "biasbench.cli",
        "run",
        "--db",
        str(tmp_path / "k.duckdb"),
        "-m",
        "accuracy,spectral",
        "--where",
        "category=baseline",
        "--where",
        "category=stylized",
    ]
    args += [
        "--data-root",
        str(tmp_path / "data"),
        "--threads",
        "2",
        "--workers",
        "2",
        "-p",
        "spectral.n_images=50",
    ]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + 120, []
    try:
        while time.monotonic() < deadline:
            # the two workers, the fork server they forked from and multiprocessing's resource tracker
            workers = _descendants(proc.pid)
            if (tmp_path / "k.duckdb").exists() and len(workers) >= 4 and _stored(tmp_path / "k.duckdb") >= 1:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no job was stored within 120 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone_by = time.monotonic() + 3
        while time.monotonic() < gone_by and any(_running(w) for w in workers):
            time.sleep(0.1)
        assert not any(_running(w) for w in workers), "a worker outlived its bench run"
    finally:
        if proc.poll() is None:
            proc.kill()
    first = _stored(tmp_path / "k.duckdb")
    with Store(tmp_path / "k.duckdb", read_only=True) as s:  # whole jobs: every job row has its results
        torn = s.query(
            "SELECT j.checkpoint_id, j.metric FROM jobs j LEFT JOIN results r USING (checkpoint_id, metric, "
            "config_hash) GROUP BY ALL HAVING count(r.key) = 0"
        )
    assert torn.empty and 1 <= first < 8
    r = subprocess.run(
        args[:-4] + ["--workers", "1", "-p", "spectral.n_images=50"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert _stored(tmp_path / "k.duckdb") == 8  # 4 checkpoints × 2 metrics
    assert f"{8 - first} jobs to compute, {first} stored" in r.stderr


def _stored(db: Path) -> int:
    try:
        with Store(db, read_only=True, lock_timeout=5) as s:
            return int(s.query("SELECT count(*) AS n FROM jobs")["n"][0])
    except Exception:  # noqa: BLE001 - not created yet, or a writer holds it: ask again
        return 0


def test_a_dry_run_says_the_wall_time_its_workers_would_take(tmp_path, cache_dir):
    """The estimate adds up job seconds; with 2 workers the dry run also gives half of it as wall time."""
    db = tmp_path / "h.duckdb"
    data = tmp_path / "data"
    opts = session.RunOptions(data_root=data, cache_dir=cache_dir, where=("category=stylized",), workers=2)
    specs = session.resolve(["demo"], opts.where)
    before = torch.get_num_threads()
    try:  # the history's device class is "cpu (2 threads, …)", as the dry run's
        biasbench.run(["demo"], ["accuracy"], db=db, where=["category=baseline"], threads=2, data_root=data)
        _, lines = session.dry_run(
            db, specs, session.build_metrics(["accuracy"], None), opts, torch.device("cpu")
        )
    finally:
        torch.set_num_threads(before)
    (total,) = [line for line in lines if line.startswith("total:")]
    (wall,) = [line for line in lines if "worker processes" in line]
    total_s = float(total.split("~", 1)[1].split(" s")[0])
    wall_s = float(wall.split("about ", 1)[1].split(" s ")[0])
    assert wall.startswith("in 2 worker processes (--workers)")
    assert wall_s == pytest.approx(total_s / 2, rel=0.01)


def test_auto_runs_a_small_plan_in_this_process(tmp_path, cache_dir, monkeypatch):
    """2 checkpoints × accuracy (2 × 1,000 images × conditions) is below MIN_AUTO_WORK (150 k): `auto`
    with 2 threads runs it here, so its jobs ran with both threads."""
    monkeypatch.delenv("BIASBENCH_WORKERS", raising=False)
    db = tmp_path / "small.duckdb"
    before = torch.get_num_threads()
    try:
        summary = biasbench.run(
            ["demo"],
            ["accuracy"],
            db=db,
            where=["category=baseline"],
            threads=2,
            workers="auto",
            data_root=tmp_path / "data",
        )
    finally:
        torch.set_num_threads(before)
    assert summary.failed == 0 and summary.count(Outcome.DONE) == 2
    with Store(db, read_only=True) as s:
        threads = s.query("SELECT DISTINCT timings->>'$.\"run.threads\"' AS t FROM jobs")["t"].tolist()
    assert threads == ["2.0"]


def test_workers_fork_from_a_server_that_preloads_torch_timm_and_our_metrics():
    from biasbench.harness import process_start
    from biasbench.metrics import discovery

    assert process_start.METRICS_GROUP == discovery.GROUP
    mods = process_start.preload()
    assert mods[:2] == ["biasbench.harness.workers", "timm"]
    builtin = {p.target.partition(":")[0] for p in discovery.providers().values()}
    assert {m for m in builtin if m.startswith("biasbench.")} <= set(mods)
    assert all(m.startswith("biasbench.") for m in mods[2:])  # a third party's plugin: its own worker's
    assert mods[-1] == "biasbench.harness.fork_server"
    if sys.platform.startswith("linux"):
        assert process_start.context().get_start_method() == "forkserver"


@pytest.mark.parametrize(
    ("requested", "options", "env", "may"),
    [
        ("auto", {}, None, True),
        (2, {}, None, True),
        (1, {}, None, False),
        ("auto", {}, "1", False),  # $BIASBENCH_WORKERS=1: auto is one process
        ("auto", {"device": "cuda"}, None, False),
        ("auto", {"group": "4"}, None, False),
        ("auto", {"compile": True}, None, False),
    ],
)
def test_the_fork_server_starts_only_for_a_run_that_may_fork_workers(
    monkeypatch, requested, options, env, may
):
    from biasbench.harness.process_start import may_fork_workers

    if env is None:
        monkeypatch.delenv("BIASBENCH_WORKERS", raising=False)
    else:
        monkeypatch.setenv("BIASBENCH_WORKERS", env)
    kw = {"device": "auto", "group": "1", "compile": False, **options}
    assert may_fork_workers(requested, **kw) is may


def test_the_fork_server_module_changes_nothing_when_imported_elsewhere():
    """Its exit shortcut and heap freeze are for the fork server only: anywhere else the exit code stays
    the program's and no object is frozen."""
    code = "import biasbench.harness.fork_server, gc, sys; sys.exit(3 + gc.get_freeze_count())"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == 3
