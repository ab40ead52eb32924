"""`bench run` killed at random moments, and two `bench run` on one database at once (demo world, no
downloaded data; each run a process of its own, forked from one that imported `bench` once:
tests/forked_bench.py): the database always opens, holds whole jobs only, loses nothing, marks the
killed run interrupted, and a rerun ends with exactly the results of an uninterrupted run."""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from biasbench.harness.store import Store
from tests.forked_bench import Launcher
from tests.harness_fixtures import REPO, bench

DEMO_TOML = REPO / "biasbench" / "registry" / "files" / "demo.toml"
METRICS = ["-m", "accuracy,shape_bias,spectral", "-p", "spectral.n_images=64"]
RUN_LINE = re.compile(r"^run (\d{8}T\d{6}-[0-9a-f]{8}): ")
CKPT_LINE = re.compile(r"^([\w.-]+): \w")
DONE_LINE = re.compile(r"^\s+✓ (\w+) \(([\d.]+)s\)")
N_KILLS = 20


def _registry(path: Path, ids: list[str]) -> Path:
    """A registry of the demo zoo's checkpoints ``ids`` (entries copied from the shipped demo.toml)."""
    blocks = DEMO_TOML.read_text().split("[[checkpoint]]")[1:]
    entries = {re.search(r'^id = "([^"]+)"', b, re.M).group(1): b for b in blocks}
    path.write_text("".join("[[checkpoint]]" + entries[i].rstrip() + "\n\n" for i in ids))
    return path


def _env(cache: Path) -> dict[str, str]:
    # one torch thread: no OpenMP barrier stalls on a shared, busy CPU, and identical numbers in every run
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "BIASBENCH_CACHE": str(cache),
        "COLUMNS": "200",
        "BIASBENCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _prewarm(cache: Path) -> None:
    """Render the demo world's splits these metrics use into ``cache`` once, so no run generates them."""
    from biasbench.harness.datasets import catalog
    from biasbench.metrics.discovery import load_metric

    for name in ("accuracy", "shape_bias", "spectral"):
        for req in load_metric(name)().datasets("demo-world").values():
            catalog.get(req.name).load(Path("."), None, cache)


@pytest.fixture()
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Forks each `bench run` of the test: one thread of torch, the demo world rendered beforehand."""
    cache = tmp_path / "cache"
    _prewarm(cache)
    with Launcher(_env(cache), tmp_path) as forks:
        yield forks


class BenchRun:
    """`bench run` in a process of its own, forked from ``launcher`` (:mod:`tests.forked_bench`: the
    imports are done once, not in each of the 22 runs); its stderr lines are collected with their times
    (s since start)."""

    def __init__(self, args: list[str], cwd: Path, launcher: Launcher) -> None:
        self.t0 = time.monotonic()
        self.proc = launcher.bench(["run", *args], cwd)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.lines.append((time.monotonic() - self.t0, line.rstrip("\n")))

    def wait_for(self, pattern: re.Pattern, timeout: float = 180) -> float | None:
        """Seconds since start at which a line matched ``pattern``; None if the process ended first."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for t, line in self.lines[seen:]:
                if pattern.search(line):
                    return t
            seen = len(self.lines)
            if self.proc.poll() is not None and not self.reader.is_alive():
                return None
            time.sleep(0.01)
        raise TimeoutError(f"no line matching {pattern.pattern!r} within {timeout} s:\n{self.stderr}")

    def finish(self, timeout: float = 300) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return rc

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def reported_done(self) -> set[tuple[str, str]]:
        """(checkpoint, metric) of every job the run reported finished (✓ comes after the commit)."""
        done, ckpt = set(), None
        for _, line in self.lines:
            if m := CKPT_LINE.match(line):
                ckpt = m.group(1)
            elif (m := DONE_LINE.match(line)) and ckpt:
                done.add((ckpt, m.group(1)))
        return done


def _snapshot(db: Path) -> dict:
    """What the database holds, read the way a user would (a fresh read-only connection)."""
    Store(db, read_only=True)  # opens, and is a results database
    with duckdb.connect(str(db), read_only=True) as con:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        return {
            "jobs": {(c, m, h) for c, m, h in q("SELECT checkpoint_id, metric, config_hash FROM jobs")},
            "counts": {
                (c, m, h): k
                for c, m, h, k in q(
                    "SELECT checkpoint_id, metric, config_hash, count(*) FROM results GROUP BY ALL"
                )
            },
            "orphans": q(
                "SELECT count(*) FROM results r ANTI JOIN jobs j USING (checkpoint_id, metric, config_hash)"
            )[0][0]
            + q(
                "SELECT count(*) FROM item_outputs i ANTI JOIN jobs j "
                "USING (checkpoint_id, metric, config_hash)"
            )[0][0],
            "duplicates": q(
                "SELECT count(*) FROM (SELECT count(*) n FROM results GROUP BY checkpoint_id, metric, "
                "key, config_hash) WHERE n > 1"
            )[0][0]
            + q("SELECT count(*) - count(DISTINCT (checkpoint_id, metric, config_hash)) FROM jobs")[0][0],
            "items": q("SELECT checkpoint_id, metric, path, n_rows FROM item_outputs"),
            "runs": {pid: (run, status) for run, status, pid in q("SELECT run_id, status, pid FROM runs")},
            "values": {
                (c, m, k): v
                for c, m, k, v in q("SELECT checkpoint_id, metric, key, value FROM latest_results")
            },
        }


def _whole_job_problems(snap: dict, ref_counts: dict[tuple[str, str], int], db: Path) -> list[str]:
    problems = []
    for c, m, h in snap["jobs"]:
        got, want = snap["counts"].get((c, m, h), 0), ref_counts[(c, m)]
        if got != want:
            problems.append(f"job {c} × {m}: {got} result rows, the uninterrupted run has {want}")
    if snap["orphans"]:
        problems.append(f"{snap['orphans']} result/item rows without their job row")
    if snap["duplicates"]:
        problems.append(f"{snap['duplicates']} duplicate rows")
    for c, m, path, n_rows in snap["items"]:
        f = db.with_name(db.name + ".items") / path  # stored relative to the items folder
        if not f.is_file():
            problems.append(f"job {c} × {m}: per-item file {f} is missing")
        else:
            with duckdb.connect() as mem:
                if mem.execute(f"SELECT count(*) FROM read_parquet('{f}')").fetchone()[0] != n_rows:
                    problems.append(f"job {c} × {m}: per-item file {f} does not hold {n_rows} rows")
    return problems


@pytest.mark.slow
def test_sigkill_at_20_random_moments_never_loses_or_tears_a_job(tmp_path, launcher):
    t_start = time.monotonic()
    reg = _registry(tmp_path / "reg.toml", ["zoo-plain", "zoo-texture-rand"])
    args = [str(reg), *METRICS]

    # the uninterrupted run: its results, and how long the run proper takes (start_run … exit)
    ref = BenchRun([*args, "--db", str(tmp_path / "ref.duckdb")], tmp_path, launcher)
    t_line = ref.wait_for(RUN_LINE)
    assert ref.finish() == 0, ref.stderr
    run_seconds = ref.elapsed - t_line
    # fixed cost of a run besides its jobs: loading before the first job, writing up after the last
    done = [(t, float(m.group(2))) for t, line in ref.lines if (m := DONE_LINE.match(line))]
    overhead = min(run_seconds, (done[0][0] - done[0][1] - t_line) + (ref.elapsed - done[-1][0]))
    want = _snapshot(tmp_path / "ref.duckdb")
    ref_counts = {(c, m): k for (c, m, _), k in want["counts"].items()}
    n_jobs = len(want["jobs"])
    assert n_jobs == 6 and not _whole_job_problems(want, ref_counts, tmp_path / "ref.duckdb")

    # 20 runs, each killed at a seeded moment drawn uniformly over its run: the uninterrupted run's
    # duration, its jobs' share scaled to the jobs left (a run that finishes first replaces that
    # estimate for its number of jobs: a shared CPU makes any one measurement noisy). Each resumes
    # the database the kills before it left, as a user reruns after a crash; a run that finishes
    # before its moment completes the database (checked against the uninterrupted run) and the next
    # one starts a new database.
    rng = random.Random(1234)
    fractions = [rng.random() for _ in range(N_KILLS)]
    survived, lost, landed, completed, log = 0, 0, 0, 0, []
    observed: dict[int, float] = {}
    db = tmp_path / "b0.duckdb"
    for i, u in enumerate(fractions):
        if db.exists() and len(_snapshot(db)["jobs"]) == n_jobs:
            completed += 1
            db = tmp_path / f"b{completed}.duckdb"
        before = _snapshot(db)["jobs"] if db.exists() else set()
        run = BenchRun([*args, "--db", str(db)], tmp_path, launcher)
        t_run = run.wait_for(RUN_LINE)
        assert t_run is not None, run.stderr
        n_todo = int(re.search(r": (\d+) jobs? to compute", run.stderr).group(1))
        delay = u * observed.get(n_todo, overhead + (run_seconds - overhead) * n_todo / n_jobs)
        time.sleep(max(0.0, t_run + delay - run.elapsed))
        hit = run.proc.poll() is None
        if hit:
            os.kill(run.proc.pid, signal.SIGKILL)
        rc = run.finish()
        landed += hit
        if not hit:
            observed[n_todo] = run.elapsed - t_run
        status = bench(["status", "--db", str(db)], tmp_path)  # marks the dead run interrupted
        snap = _snapshot(db)
        problems = _whole_job_problems(snap, ref_counts, db)
        after = {(c, m) for c, m, _ in snap["jobs"]}
        gone = {(c, m) for c, m, _ in before - snap["jobs"]} | (run.reported_done() - after)
        lost += len(gone)
        if gone:
            problems.append(f"jobs lost: {sorted(gone)}")
        row = snap["runs"].get(run.proc.pid)
        # killed: interrupted — unless the kill came after the run had finished its jobs and recorded `ok`
        finished = row is not None and row[1] == "ok" and len(snap["jobs"]) == n_jobs
        expected = "interrupted" if hit and not finished else "ok"
        if status.returncode != 0:
            problems.append(f"bench status failed: {status.stderr}")
        if row is None or row[1] != expected:
            problems.append(f"the run of PID {run.proc.pid} reads {row}, expected {expected!r}")
        if not hit and rc != 0:
            problems.append(f"an unkilled run exited {rc}:\n{run.stderr}")
        if len(snap["jobs"]) == n_jobs and snap["values"] != want["values"]:
            problems.append("the completed database's scalars differ from the uninterrupted run's")
        survived += not problems
        log.append(
            f"kill {i + 1:2d} ({db.name}, {n_todo} jobs to do) at +{delay:5.2f}s: "
            f"{('killed after its last write' if finished else 'killed') if hit else 'finished first'}, "
            f"{len(snap['jobs'])}/{n_jobs} jobs stored"
            f"{'; ' + '; '.join(problems) if problems else ''}"
        )

    # a final rerun completes the rest; every stored scalar equals the uninterrupted run's exactly
    final = BenchRun([*args, "--db", str(db)], tmp_path, launcher)
    assert final.finish() == 0, final.stderr
    got = _snapshot(db)
    elapsed = time.monotonic() - t_start
    print("\n" + "\n".join(log))
    print(
        f"uninterrupted run: {run_seconds:.1f} s from start_run to exit; kills that landed mid-run: "
        f"{landed}/{N_KILLS}; databases completed (and checked) before the final rerun: {completed}; "
        f"test took {elapsed:.0f} s"
    )
    print(f"kills survived: {survived}/{N_KILLS}, jobs lost: {lost}")
    assert survived == N_KILLS and lost == 0, "\n".join(log)
    assert not _whole_job_problems(got, ref_counts, db)
    assert {(c, m, h) for c, m, h in got["jobs"]} == want["jobs"]
    assert got["values"] == want["values"]
    assert {status for _, status in got["runs"].values()} <= {"ok", "interrupted"}, got["runs"]


@pytest.mark.slow
def test_two_runs_on_one_database_at_once_both_finish_and_readers_can_watch(tmp_path, launcher):
    db = tmp_path / "b.duckdb"
    reg_a = _registry(tmp_path / "a.toml", ["zoo-plain", "zoo-plain-s1"])
    reg_b = _registry(tmp_path / "b.toml", ["zoo-plain-s1", "zoo-texture-rand"])  # overlaps a in zoo-plain-s1
    a = BenchRun([str(reg_a), *METRICS, "--db", str(db)], tmp_path, launcher)
    b = BenchRun([str(reg_b), *METRICS, "--db", str(db)], tmp_path, launcher)

    # while they run, another process reads: status and results succeed (read-only, between writes)
    assert a.wait_for(re.compile("✓")) is not None or b.wait_for(re.compile("✓")) is not None, (
        a.stderr + b.stderr
    )
    reads_during_run = 0
    while a.proc.poll() is None or b.proc.poll() is None:  # each read starts while a run is in progress
        st = bench(["status", "--db", str(db)], tmp_path)
        res = bench(["results", "--db", str(db), "--format", "csv"], tmp_path)
        assert st.returncode == 0 and "jobs" in st.stdout, st.stderr
        assert res.returncode == 0 and res.stdout.startswith(
            "checkpoint,metric,key,value,n,variant,datasets"
        ), res.stderr
        reads_during_run += 1
        time.sleep(0.3)  # someone watching, not a busy loop
    rcs = a.finish(), b.finish()
    for rc, run in zip(rcs, (a, b), strict=True):
        assert rc == 0 or (rc == 2 and "locked by another process (PID" in run.stderr), run.stderr
    snap = _snapshot(db)
    jobs = Counter((c, m) for c, m, _ in snap["jobs"])
    ckpts = {"zoo-plain", "zoo-plain-s1", "zoo-texture-rand"} if rcs == (0, 0) else None
    assert not snap["duplicates"] and not snap["orphans"] and all(n == 1 for n in jobs.values())
    if ckpts:
        assert set(jobs) == {(c, m) for c in ckpts for m in ("accuracy", "shape_bias", "spectral")}
        assert sorted(s for _, s in snap["runs"].values()) == ["ok", "ok"]
    per_metric = {}
    for (c, m, _), n in snap["counts"].items():
        assert per_metric.setdefault(m, n) == n, (
            f"{c} × {m}: {n} rows, another checkpoint has {per_metric[m]}"
        )
    skipped = sum("stored meanwhile by another run" in r.stderr for r in (a, b))
    print(
        f"\nconcurrency: exit codes {rcs}; {len(jobs)} jobs, no duplicates; {reads_during_run} status+results "
        f"reads while a run was writing; runs that skipped a job the other stored meanwhile: {skipped}"
    )
    assert reads_during_run >= 1
