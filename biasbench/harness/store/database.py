"""The DuckDB store (``docs/architecture.md`` §4): one file, one transaction per job, held only while
it is read or written.

Tables
------
``checkpoints(id, arch, weights, source, weights_sha256, identity, preprocess JSON, labels, tags JSON)``
``runs(run_id, started_at, finished_at, status, argv JSON, git_sha, versions JSON, device, host, pid,
retries)``
``jobs(checkpoint_id, metric, config_hash, metric_version, params JSON, datasets JSON, seconds, flags
JSON, run_id, created_at, timings JSON)`` — one row per finished job; its presence is what "stored"
means (a rerun skips it unless ``--force``). ``timings``: what the job measured about the run
(e.g. SIS ``seconds_per_image``), never a result.
``results(checkpoint_id, metric, key, value DOUBLE, n, config_hash, metric_version, run_id,
created_at)`` unique on ``(checkpoint_id, metric, key, config_hash)``.
``item_outputs(checkpoint_id, metric, config_hash, path, n_rows, run_id, created_at)`` — per-item
outputs live in Parquet files beside the database (``<db>.items/<metric>/<checkpoint>__<hash>.parquet``);
``path`` is relative to the items folder (``<metric>/<file>``; older databases stored it with the
folder's name in front, which is read the same way), so a database renamed with its items folder
keeps finding its files.
``failures(checkpoint_id, metric, config_hash, error, traceback, run_id, created_at)``.
View ``latest_results``: for each (checkpoint, metric, parameters, key) the row of the newest job, so
one metric run under different parameters (``accuracy`` on two datasets) keeps one row per variant.

A job's rows (jobs, results, item_outputs) are written in one transaction: a killed run leaves whole
jobs or nothing. The Parquet file is written first under a temporary name and renamed into place just
before the commit, so a kill between the rename and the commit leaves at most an orphan file that
the rerun overwrites.

Sharing the file. DuckDB locks the file for one read-write process (or any number of read-only
ones). A writing ``Store`` therefore connects for each write (``start_run``, ``upsert_checkpoint``,
``write_job``, ``record_failure``, ``finish_run``) and each read, and disconnects right after: between
writes, ``bench status`` / ``results`` / ``report`` open the file read-only, and two ``bench run``
on one database take turns. Whoever meets the lock retries with backoff (writers up to
``WRITE_LOCK_TIMEOUT`` s, readers ``READ_LOCK_TIMEOUT`` s; ``$BIASBENCH_LOCK_TIMEOUT`` overrides
both) and then raises :class:`StoreError` naming the holder's PID. Every other reason the file cannot
be used (a directory, not a DuckDB file, not writable) is a :class:`StoreError` naming the file and
the cause, too.

A run records its PID and host; a ``running`` run on this host whose process is gone is marked
``interrupted`` when a store opens for writing (and by ``bench status``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from biasbench.core.errors import InputError, NotFoundError, StateError, UnknownNameError
from biasbench.harness.status import RunStatus
from biasbench.harness.store.schema import SCHEMA, damage_problem, is_damage_error, schema_problem
from biasbench.harness.store.shards import ShardError, check_shard, item_relpath

#: seconds a writer / a reader waits for another process's lock before giving up
WRITE_LOCK_TIMEOUT = 60.0
READ_LOCK_TIMEOUT = 10.0
LOCK_TIMEOUT_ENV = "BIASBENCH_LOCK_TIMEOUT"


class StoreError(StateError):
    """The results database cannot be used: not a DuckDB file, a directory, not writable, or locked
    by another process for too long. The message names the file and the cause (and the holder's PID
    for a lock)."""


class StoreMissing(StoreError, NotFoundError):
    """A database opened for reading does not exist (nothing is created)."""


class DiskFull(StoreError):
    """The disk filled (or a quota or file-size limit was reached) during a run: the run stops at once
    with one message; every job written before stays."""


def disk_full(e: BaseException, where: str = "the run") -> DiskFull:
    return DiskFull(
        f"{where} stopped: the disk is full or a file-size limit was reached ({_first_line(e)}); every job "
        "written before is intact — free space and rerun (stored jobs are skipped)"
    )


_scratch = threading.local()


def scratch() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB for the per-item Parquet files (written and read without holding
    the results database). One per thread, kept open: opening an in-memory DuckDB costs ~35 ms, a
    noticeable share of a demo job."""
    pid, con = getattr(_scratch, "owner", (None, None))
    if con is None or pid != os.getpid():  # a forked child opens its own
        con = duckdb.connect()
        _scratch.owner = (os.getpid(), con)
    return con


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class JobKey:
    checkpoint_id: str
    metric: str
    config_hash: str


@dataclass
class JobRecord:
    """What one finished job stores (its key aside): the metric's version and parameters, the datasets
    it read, its scalars with what each rests on (``n``), per-item rows, flags, the seconds it took, the
    run that computed it, and ``timings`` (measurements of the run, never results)."""

    metric_version: str
    scalars: dict[str, float]
    run_id: str
    params: dict[str, Any] | None = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    items: pd.DataFrame | None = None
    flags: Iterable[str] = ()
    seconds: float = 0.0
    timings: dict[str, float] | None = None


class Store:
    """The results database. ``Store(path)`` for writing (creates the file and its tables),
    ``Store(path, read_only=True)`` for reading; either holds no connection between calls (each call
    connects, retrying while another process holds the lock). Use as a context manager if you like;
    ``close`` only marks the store closed."""

    def __init__(self, path: str | Path, read_only: bool = False, lock_timeout: float | None = None) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._held: duckdb.DuckDBPyConnection | None = None  # see held()
        if lock_timeout is None:
            env = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
            try:
                lock_timeout = float(env) if env else None
            except ValueError:
                raise StoreError(f"${LOCK_TIMEOUT_ENV} = {env!r} is not a number of seconds") from None
        self.lock_timeout = (
            lock_timeout
            if lock_timeout is not None
            else READ_LOCK_TIMEOUT
            if read_only
            else WRITE_LOCK_TIMEOUT
        )
        if self.path.is_dir():
            raise StoreError(
                f"the results database {self.path} is a directory, not a database file "
                "(give --db a file path, e.g. bench.duckdb)"
            )
        if read_only:
            if not self.path.exists():
                raise StoreMissing(f"no results database at {self.path.resolve()} (run `bench run` first)")
            with self._connect() as con:
                self._check_tables(con, writing=False)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the folder of the results database {self.path}: "
                f"{e.strerror or e} (choose a writable --db location)"
            ) from e
        if self.path.is_file() and self.path.stat().st_size > 0:
            # someone else's or a damaged file is refused before it is opened for writing (a
            # read-write open may already rewrite a damaged file's bytes)
            with self._connect(read_only=True) as con:
                self._check_tables(con, writing=True)
        with self._connect() as con:
            self._check_tables(con, writing=True)
            con.execute(SCHEMA)
            self._mark_interrupted(con)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release: connections last one call (``with Store(...)`` reads as a scope)."""

    @property
    def items_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".items")

    # -- connections ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """One connection for every call inside the block — many small writes (an imported table's
        jobs) without opening the file for each; every write keeps its own transaction, and other
        processes wait for the block to end, as for any write."""
        if self._held is not None:
            yield
            return
        with self._connect() as con:
            self._held = con
            try:
                yield
            finally:
                self._held = None

    @contextlib.contextmanager
    def _connect(
        self,
        read_only: bool | None = None,
        lock_timeout: float | None = None,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one call (inside :meth:`held`, the held one); another process's lock is
        waited out with backoff (up to ``lock_timeout`` s), every other failure to open is a
        :class:`StoreError`."""
        if self._held is not None:
            yield self._held
            return
        ro = self.read_only if read_only is None else read_only
        timeout = self.lock_timeout if lock_timeout is None else lock_timeout
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=ro)
                break
            except duckdb.Error as e:
                if is_damage_error(e):
                    raise StoreError(self._damaged(_first_line(e))) from e
                if not _is_lock_error(e):
                    raise StoreError(_explain(self.path, e, writing=not ro)) from e
                if time.monotonic() >= deadline:
                    raise StoreError(_lock_message(self.path, e, timeout)) from e
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 1.6, 1.0)
        try:
            yield con
        except (duckdb.IOException, duckdb.TransactionException, OSError) as e:
            if is_damage_error(e):
                raise StoreError(self._damaged(_first_line(e))) from e
            if not is_space_error(e):
                raise
            raise StoreError(
                f"cannot write to the results database {self.path}: the disk is full or a file-size limit was "
                f"reached ({_first_line(e)}); every job written before is intact, free space and rerun"
            ) from e
        finally:
            con.close()

    def _damaged(self, why: str) -> str:
        return (
            f"the results database {self.path} is damaged: {why}; it was opened read-only and left as it is "
            "(restore it from a copy, or point --db at another file)"
        )

    def _check_tables(self, con: duckdb.DuckDBPyConnection, *, writing: bool) -> None:
        """Refuse a DuckDB file that is someone else's database: reading, any table of ours missing;
        either way, a table named like ours with other columns (an empty file becomes a results
        database, an older one gains its new columns)."""
        database = con.execute("SELECT current_database()").fetchone()[0]
        damage = damage_problem(con, database, self.path.stat().st_size)
        if damage:
            raise StoreError(self._damaged(damage))
        problem = schema_problem(con, database, allow_missing_tables=writing)
        if problem:
            raise StoreError(
                f"{self.path} is a DuckDB database but not a biasbench results database ({problem}); "
                "point --db at a results database or a new file — nothing was written to it"
            )

    # -- runs ----------------------------------------------------------------------------------
    def start_run(
        self,
        *,
        argv: list[str],
        git_sha: str | None,
        versions: dict[str, str],
        device: str,
        host: str | None = None,
    ) -> str:
        """A new ``running`` run of this process (its PID and ``host``, default this machine's name)."""
        run_id = _now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        with self._connect() as con:
            con.execute(
                "INSERT INTO runs (run_id, started_at, finished_at, status, argv, git_sha, versions, device, host, pid) "
                "VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    _now(),
                    RunStatus.RUNNING.value,
                    json.dumps(argv),
                    git_sha,
                    json.dumps(versions),
                    device,
                    host or socket.gethostname(),
                    os.getpid(),
                ],
            )
        return run_id

    def finish_run(self, run_id: str, status: RunStatus | str) -> None:
        """End a run with ``status`` (ok, failed or interrupted; anything else is refused)."""
        status = RunStatus(status)
        if status == RunStatus.RUNNING:
            raise InputError(f"run {run_id}: a run is finished as ok, failed or interrupted, not running")
        with self._connect() as con:
            con.execute(
                "UPDATE runs SET finished_at = ?, status = ? WHERE run_id = ?",
                [_now(), status.value, run_id],
            )

    def record_retries(self, run_id: str, retries: int) -> None:
        """``runs.retries``: task attempts a distributed executor (``bench run --executor ray``) repeated
        because a worker died (NULL for a serial run)."""
        with self._connect() as con:
            con.execute("UPDATE runs SET retries = ? WHERE run_id = ?", [retries, run_id])

    def _stale_runs(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        """``running`` runs on this host whose process is gone (none in a database too old to have
        ``runs.pid``, opened read-only)."""
        has_pid = con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
            "AND table_name = 'runs' AND column_name = 'pid'"
        ).fetchone()[0]
        if not has_pid:
            return []
        rows = con.execute(
            "SELECT run_id, pid, epoch(started_at) FROM runs "
            "WHERE status = ? AND host = ? AND pid IS NOT NULL",
            [RunStatus.RUNNING.value, socket.gethostname()],
        ).fetchall()
        return [run_id for run_id, pid, started in rows if not _run_process_alive(int(pid), started)]

    def _mark_interrupted(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        stale = self._stale_runs(con)
        if stale:
            con.executemany(
                "UPDATE runs SET status = ? WHERE run_id = ? AND status = ?",
                [[RunStatus.INTERRUPTED.value, r, RunStatus.RUNNING.value] for r in stale],
            )
        return stale

    def mark_interrupted(self, lock_timeout: float = 2.0) -> list[str]:
        """Mark ``running`` runs on this host whose process is gone as ``interrupted`` and return their
        ids. Best effort from a read-only store: when the file cannot be written (a read-only
        location, a lock held past ``lock_timeout``) nothing is written, and :meth:`runs` still
        reports them as interrupted."""
        if not self.read_only:
            with self._connect() as con:
                return self._mark_interrupted(con)
        with self._connect() as con:
            if not self._stale_runs(con):
                return []
        try:
            with self._connect(read_only=False, lock_timeout=min(lock_timeout, self.lock_timeout)) as con:
                return self._mark_interrupted(con)
        except StoreError:
            return []

    # -- checkpoints ---------------------------------------------------------------------------
    def upsert_checkpoint(self, row: dict[str, Any]) -> None:
        cols = [
            "id",
            "arch",
            "weights",
            "source",
            "weights_sha256",
            "identity",
            "preprocess",
            "labels",
            "tags",
        ]
        values = [row.get(c) for c in cols] + [_now()]
        with self._connect() as con:
            con.execute(
                f"INSERT OR REPLACE INTO checkpoints ({', '.join(cols)}, updated_at) "
                f"VALUES ({', '.join('?' * (len(cols) + 1))})",
                values,
            )

    def update_tags(self, tags: dict[str, str]) -> int:
        """Set the stored tags (JSON text) of checkpoints that have a row here, by id — a registry's
        edited tags reach the store on every run, even when every job is already stored. Returns how
        many rows changed."""
        if not tags:
            return 0
        with self._connect() as con:
            before = con.execute("SELECT id, CAST(tags AS VARCHAR) FROM checkpoints").fetchall()
            changed = [[tags[cid], cid] for cid, old in before if cid in tags and (old or "{}") != tags[cid]]
            if changed:
                con.executemany("UPDATE checkpoints SET tags = ? WHERE id = ?", changed)
        return len(changed)

    # -- jobs ----------------------------------------------------------------------------------
    def stored_jobs(self) -> set[JobKey]:
        with self._connect() as con:
            rows = con.execute("SELECT checkpoint_id, metric, config_hash FROM jobs").fetchall()
        return {JobKey(*r) for r in rows}

    def write_job(self, key: JobKey, record: JobRecord, *, if_absent: bool = False) -> bool:
        """Write one job's rows atomically, replacing an earlier copy of the same job — or, with
        ``if_absent``, leaving an existing copy (another process's) alone. Returns whether it wrote.

        ``record.timings`` (e.g. seconds per image) go to ``jobs.timings``, not to ``results``."""
        metric_version, params, datasets = record.metric_version, record.params, record.datasets
        scalars, n, items, flags = record.scalars, record.n, record.items, record.flags
        seconds, run_id, timings = record.seconds, record.run_id, record.timings
        tmp = dest = None
        if items is not None and len(items):
            tmp, dest = self._write_items_tmp(key, items)
        now = _now()
        where = [key.checkpoint_id, key.metric, key.config_hash]
        try:
            with self._connect() as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    if if_absent and _has_job(con, key):
                        con.execute("ROLLBACK")
                        return False
                    for table in ("jobs", "results", "item_outputs"):
                        con.execute(
                            f"DELETE FROM {table} WHERE checkpoint_id = ? AND metric = ? AND config_hash = ?",
                            where,
                        )
                    con.execute(
                        "INSERT INTO jobs (checkpoint_id, metric, config_hash, metric_version, params, datasets, "
                        "seconds, flags, run_id, created_at, timings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            *where,
                            metric_version,
                            json.dumps(params, sort_keys=True),
                            json.dumps(datasets, sort_keys=True),
                            seconds,
                            json.dumps(list(flags)),
                            run_id,
                            now,
                            json.dumps({k: float(v) for k, v in (timings or {}).items()}, sort_keys=True),
                        ],
                    )
                    # one INSERT of three parallel lists (unnest zips them): executemany costs ~0.7 ms a
                    # row (OOD stores ~250 keys); NaN stays NaN (a DataFrame scan would make it NULL)
                    con.execute(
                        "INSERT INTO results (checkpoint_id, metric, key, value, n, config_hash, metric_version, "
                        "run_id, created_at) SELECT ?, ?, unnest(?::VARCHAR[]), unnest(?::DOUBLE[]), "
                        "unnest(?::BIGINT[]), ?, ?, ?, ?",
                        [
                            key.checkpoint_id,
                            key.metric,
                            list(scalars),
                            [float(v) for v in scalars.values()],
                            [int(n.get(k, 0)) for k in scalars],
                            key.config_hash,
                            metric_version,
                            run_id,
                            now,
                        ],
                    )
                    if tmp is not None and dest is not None:
                        con.execute(
                            "INSERT INTO item_outputs (checkpoint_id, metric, config_hash, path, n_rows, run_id, "
                            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [*where, dest.relative_to(self.items_dir).as_posix(), len(items), run_id, now],
                        )
                        os.replace(tmp, dest)
                    con.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(duckdb.Error):
                        con.execute("ROLLBACK")
                    raise
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        return True

    def _item_path(self, key: JobKey) -> Path:
        """Where a job's per-item file lives: ``<db>.items/<metric>/<checkpoint>__<hash>.parquet``."""
        safe_ckpt = "".join(c if c.isalnum() or c in "-_." else "_" for c in key.checkpoint_id)
        if safe_ckpt != key.checkpoint_id:  # ids differing only in replaced characters keep apart
            safe_ckpt += "-" + hashlib.sha256(key.checkpoint_id.encode()).hexdigest()[:8]
        safe_metric = "".join(c if c.isalnum() or c in "-_" else "_" for c in key.metric)
        safe_hash = "".join(c if c.isalnum() or c in "-_" else "_" for c in key.config_hash)
        return self.items_dir / safe_metric / f"{safe_ckpt}__{safe_hash}.parquet"

    def _write_items_tmp(self, key: JobKey, items: pd.DataFrame) -> tuple[Path, Path]:
        """The per-item Parquet file under a temporary name beside its destination (written with an
        in-memory DuckDB: the results database is not held meanwhile)."""
        dest = self._item_path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the per-item folder {dest.parent} of {self.path}: {e.strerror or e}"
            ) from e
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        mem = scratch()
        mem.register("frame", items)
        try:
            mem.execute(f"COPY (SELECT * FROM frame) TO '{_sql_str(tmp)}' (FORMAT parquet)")
        finally:
            mem.unregister("frame")
        return tmp, dest

    def record_failure(
        self,
        checkpoint_id: str,
        metric: str,
        config_hash: str | None,
        error: str,
        traceback: str,
        run_id: str,
    ) -> None:
        with self._connect() as con:
            con.execute(
                "INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?, ?)",
                [checkpoint_id, metric, config_hash, error, traceback, run_id, _now()],
            )

    # -- merging shards ------------------------------------------------------------------------
    def merge(self, other: str | Path) -> dict[str, int]:
        """Copy another database's jobs (with their results, per-item files and checkpoints), runs and
        failures into this one — how shards of a zoo run on several machines come together.

        A job already stored here (same checkpoint, metric, config_hash) is kept as is; merging the
        same shard twice adds nothing. A checkpoint row is taken from the shard when it is new here or
        newer there. Per-item Parquet files are copied into this database's items folder first (an
        interrupted merge leaves at most unreferenced files); the table rows go in one transaction.
        Columns a shard from an older version lacks (``runs.pid``, ``jobs.timings``) stay NULL.
        Returns the number of rows added per table.
        """
        other = Path(other)
        if not other.exists():
            raise StoreMissing(f"no results database at {other.resolve()}")
        if other.resolve() == self.path.resolve():
            raise InputError(f"cannot merge {other} into itself")
        check_shard_file(other, self.lock_timeout)
        with self._connect() as con:
            _attach_shard(con, other)
            try:
                sources = check_shard(con, other)  # again, on what is attached now
                return self._merge_attached(con, sources)
            except ShardError as e:
                raise StoreError(str(e)) from e
            except duckdb.Error as e:
                if is_damage_error(e):
                    raise StoreError(f"{other} is refused: the file is damaged ({_first_line(e)})") from e
                raise
            finally:
                con.execute("DROP TABLE IF EXISTS merge_keys")
                with contextlib.suppress(duckdb.Error):
                    con.unregister("merge_items")
                con.execute("DETACH shard")

    def _merge_attached(self, con: duckdb.DuckDBPyConnection, sources: dict[int, Path]) -> dict[str, int]:
        """Merge the attached, checked shard; ``sources``: each item row's checked file."""
        con.execute(
            "CREATE OR REPLACE TEMP TABLE merge_keys AS "
            "SELECT checkpoint_id, metric, config_hash FROM shard.jobs "
            "EXCEPT SELECT checkpoint_id, metric, config_hash FROM jobs"
        )
        items = con.execute(
            "SELECT i.rowid AS shard_rowid, i.* FROM shard.item_outputs i "
            "JOIN merge_keys USING (checkpoint_id, metric, config_hash)"
        ).df()
        paths: list[str] = []
        for row in items.itertuples():
            src = sources[int(row.shard_rowid)]
            dest = self._item_path(JobKey(row.checkpoint_id, row.metric, row.config_hash))
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
            paths.append(dest.relative_to(self.items_dir).as_posix())
        items = items.drop(columns=["shard_rowid"])
        items["path"] = paths
        con.register("merge_items", items)
        counts: dict[str, int] = {}
        con.execute("BEGIN TRANSACTION")
        try:

            def add(table: str, sql: str) -> None:
                before = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                con.execute(sql)
                counts[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - before

            add(
                "runs",
                "INSERT INTO runs BY NAME SELECT * FROM shard.runs "
                "WHERE run_id NOT IN (SELECT run_id FROM runs)",
            )
            add(
                "checkpoints",
                "INSERT OR REPLACE INTO checkpoints BY NAME SELECT o.* FROM shard.checkpoints o "
                "LEFT JOIN checkpoints c ON c.id = o.id "
                "WHERE c.id IS NULL OR o.updated_at > c.updated_at",
            )
            add(
                "jobs",
                "INSERT INTO jobs BY NAME SELECT j.* FROM shard.jobs j "
                "JOIN merge_keys USING (checkpoint_id, metric, config_hash)",
            )
            add(
                "results",
                "INSERT INTO results BY NAME SELECT r.* FROM shard.results r "
                "JOIN merge_keys USING (checkpoint_id, metric, config_hash)",
            )
            add("item_outputs", "INSERT INTO item_outputs BY NAME SELECT * FROM merge_items")
            add(
                "failures",
                "INSERT INTO failures BY NAME SELECT * FROM shard.failures EXCEPT SELECT * FROM failures",
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return counts

    # -- reading -------------------------------------------------------------------------------
    def results(
        self, *, latest: bool = True, metrics: list[str] | None = None, checkpoints: list[str] | None = None
    ) -> pd.DataFrame:
        """The stored results (the newest job of each variant unless ``latest=False``) with their job's
        ``params`` and ``datasets`` (JSON text)."""
        table = "latest_results" if latest else "results"
        sql = (
            "SELECT r.checkpoint_id AS checkpoint, r.metric, r.key, r.value, r.n, r.config_hash, r.run_id, "
            "r.created_at, CAST(j.params AS VARCHAR) AS params, CAST(j.datasets AS VARCHAR) AS datasets "
            f"FROM {table} r LEFT JOIN jobs j USING (checkpoint_id, metric, config_hash)"
        )
        conds, args = [], []
        if metrics:
            conds.append(f"r.metric IN ({', '.join('?' * len(metrics))})")
            args += metrics
        if checkpoints:
            conds.append(f"r.checkpoint_id IN ({', '.join('?' * len(checkpoints))})")
            args += checkpoints
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        return self.query(sql + " ORDER BY checkpoint, metric, key, r.created_at", args)

    def items(self, checkpoint_id: str, metric: str, config_hash: str | None = None) -> pd.DataFrame:
        """The per-item outputs of the newest (or the given) job of ``checkpoint_id`` × ``metric``."""
        sql = (
            "SELECT i.path FROM item_outputs i JOIN jobs j USING (checkpoint_id, metric, config_hash) "
            "WHERE i.checkpoint_id = ? AND i.metric = ?"
        )
        args: list[Any] = [checkpoint_id, metric]
        if config_hash:
            sql += " AND i.config_hash = ?"
            args.append(config_hash)
        with self._connect() as con:
            row = con.execute(sql + " ORDER BY j.created_at DESC LIMIT 1", args).fetchone()
        if row is None:
            raise UnknownNameError(f"no per-item outputs stored for {checkpoint_id!r} × {metric!r}")
        rel = item_relpath(row[0])
        if rel is None:
            raise StoreError(
                f"the per-item path {row[0]!r} of {checkpoint_id!r} × {metric!r} is not a file of {self.items_dir}"
            )
        path = self.items_dir / rel
        if not path.is_file():
            raise StoreError(
                f"the per-item file of {checkpoint_id!r} × {metric!r} is missing: {path} (moved without the database's "
                f"{self.items_dir.name} folder?); its scalars are stored, rerun the job with --force to get the items back"
            )
        try:
            return scratch().execute(f"SELECT * FROM read_parquet('{_sql_str(path)}')").df()
        except duckdb.Error as e:
            raise StoreError(
                f"the per-item file of {checkpoint_id!r} × {metric!r} is unreadable (truncated or damaged): {path}: "
                f"{str(e).splitlines()[0]}; its scalars are stored, rerun the job with --force to rewrite it"
            ) from e

    def failures(self, run_id: str | None = None) -> pd.DataFrame:
        if run_id:
            return self.query("SELECT * FROM failures WHERE run_id = ? ORDER BY created_at", [run_id])
        return self.query("SELECT * FROM failures ORDER BY created_at")

    def runs(self) -> pd.DataFrame:
        """Every run, oldest first; a ``running`` run on this host whose process is gone reads
        ``interrupted`` even before it is marked so in the file."""
        with self._connect() as con:
            df = con.execute("SELECT * FROM runs ORDER BY started_at").df()
            stale = self._stale_runs(con)
        if stale:
            df.loc[df["run_id"].isin(stale), "status"] = RunStatus.INTERRUPTED.value
        return df

    def counts(self) -> dict[str, int]:
        """How many rows each table holds (runs, checkpoints, jobs, results, failures)."""
        tables = ("runs", "checkpoints", "jobs", "results", "failures")
        row = self.query("SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in tables)).iloc[0]
        return {t: int(row[t]) for t in tables}

    def checkpoint_ids(self) -> set[str]:
        return set(self.query("SELECT id FROM checkpoints")["id"])

    def checkpoint_tags(self) -> dict[str, dict[str, Any]]:
        """Each stored checkpoint's tags (a report's covariates)."""
        rows = self.query("SELECT id, CAST(tags AS VARCHAR) AS tags FROM checkpoints")
        return {cid: (json.loads(t) if t else {}) for cid, t in rows.itertuples(index=False)}

    def checkpoint_identities(self) -> dict[str, str]:
        """Each checkpoint's identity (sha256 over its weights' sha256 and its preprocessing), where it
        was loaded here (imported checkpoints have none)."""
        rows = self.query("SELECT id, identity FROM checkpoints WHERE identity IS NOT NULL")
        return dict(zip(rows["id"], rows["identity"], strict=True))

    def checkpoint_label_spaces(self) -> dict[str, str]:
        """Each stored checkpoint's label space, where it is known (imported checkpoints have none)."""
        rows = self.query("SELECT id, labels FROM checkpoints WHERE labels IS NOT NULL")
        return dict(zip(rows["id"], rows["labels"], strict=True))

    def report_rows(self) -> pd.DataFrame:
        """What a report reads: the newest results of each metric variant (checkpoint, metric, key, value,
        n, run_id) with their job's ``params``, ``datasets`` (JSON text) and ``metric_version``."""
        return self.query(
            "SELECT r.checkpoint_id AS checkpoint, r.metric, r.key, r.value, r.n, r.run_id, "
            "CAST(j.params AS VARCHAR) AS params, CAST(j.datasets AS VARCHAR) AS datasets, j.metric_version "
            "FROM latest_results r JOIN jobs j USING (checkpoint_id, metric, config_hash) "
            "ORDER BY checkpoint, metric, key"
        )

    def timing_rows(self) -> pd.DataFrame:
        """Every stored job that recorded timings: metric, the checkpoint's arch, the run's device,
        seconds, ``timings`` and ``datasets`` (JSON text) — a dry run's cost history."""
        return self.query(
            "SELECT j.metric, c.arch, r.device, j.seconds, CAST(j.timings AS VARCHAR) AS timings, "
            "CAST(j.datasets AS VARCHAR) AS datasets "
            "FROM jobs j LEFT JOIN checkpoints c ON c.id = j.checkpoint_id "
            "LEFT JOIN runs r ON r.run_id = j.run_id WHERE j.timings IS NOT NULL"
        )

    def query(self, sql: str, args: list[Any] | None = None) -> pd.DataFrame:
        with self._connect() as con:
            return con.execute(sql, args or []).df()


def _attach_shard(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Attach the shard ``path`` read-only as ``shard`` (a :class:`StoreError` naming the cause)."""
    try:
        con.execute(f"ATTACH '{_sql_str(path)}' AS shard (READ_ONLY)")
    except duckdb.Error as e:
        raise StoreError(_explain(path, e, writing=False)) from e


def check_shard_file(path: str | Path, lock_timeout: float = READ_LOCK_TIMEOUT) -> None:
    """Check a shard for ``bench merge`` read-only, touching nothing else (:mod:`biasbench.harness.store.shards`):
    a :class:`StoreError` naming the shard and the first problem."""
    path = Path(path)
    if not path.exists():
        raise StoreMissing(f"no results database at {path.resolve()}")
    Store(path, read_only=True, lock_timeout=lock_timeout)  # a clear error for a file that is no results DB
    with duckdb.connect() as con:
        _attach_shard(con, path)
        try:
            check_shard(con, path)
        except ShardError as e:
            raise StoreError(str(e)) from e
        except duckdb.Error as e:
            raise StoreError(f"{path} is refused: the file cannot be read ({_first_line(e)})") from e


def _has_job(con: duckdb.DuckDBPyConnection, key: JobKey) -> bool:
    return (
        con.execute(
            "SELECT count(*) FROM jobs WHERE checkpoint_id = ? AND metric = ? AND config_hash = ?",
            [key.checkpoint_id, key.metric, key.config_hash],
        ).fetchone()[0]
        > 0
    )


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine and is not a zombie (a killed, unreaped child)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): signal 0 said it exists
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (Unix seconds), from ``/proc``; ``None`` where that is unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        ticks = int(stat.rpartition(")")[2].split()[19])  # field 22: starttime, in clock ticks after boot
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


#: seconds a process may seem to have started after its run (btime and clock-tick rounding)
_START_SLACK = 5.0


def _run_process_alive(pid: int, run_started: float | None) -> bool:
    """Whether the process of a run is still there: alive, and not a newer process that was given the
    same PID (after a reboot, or once PIDs wrapped around) — one that started after the run did."""
    if not pid_alive(pid):
        return False
    started = process_start_time(pid)
    return started is None or run_started is None or started <= float(run_started) + _START_SLACK


_LOCK_PATTERNS = ("could not set lock", "conflicting lock")


def _is_lock_error(e: BaseException) -> bool:
    msg = str(e).lower()
    return any(p in msg for p in _LOCK_PATTERNS)


def lock_holder(e: BaseException) -> tuple[int | None, str]:
    """The PID (when DuckDB names it) and a short description of the process holding the lock."""
    m = re.search(r"held in (.*?) \(PID (\d+)\)", str(e))
    if not m:
        return None, ""
    pid = int(m.group(2))
    what = m.group(1)
    with contextlib.suppress(OSError):
        cmd = " ".join(
            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
        )
        if cmd:
            what = cmd if len(cmd) <= 120 else cmd[:117] + "…"
    return pid, what


def _lock_message(path: Path, e: BaseException, timeout: float) -> str:
    pid, what = lock_holder(e)
    holder = (
        f"PID {pid}" + (f": {what}" if what else "") if pid is not None else "a process DuckDB does not name"
    )
    return (
        f"the results database {path} is locked by another process ({holder}) and stayed locked for "
        f"{timeout:g} s; a `bench run` holds it only while it writes, so a process that keeps it open "
        f"(a Python session, the duckdb shell) is in the way: wait for it or stop it "
        f"(${LOCK_TIMEOUT_ENV} sets how long to wait)"
    )


def is_space_error(e: BaseException) -> bool:
    """A write failed for lack of space (a full disk, a quota, a file-size limit), or was caused by
    one (the error's cause or context is such a failure)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if _space_error(e):
            return True
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return False


def _space_error(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    low = str(e).lower()
    return any(m in low for m in ("no space left", "file too large", "disk quota"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return re.sub(r"^[A-Za-z ]*Error: ", "", text[0]) if text else type(e).__name__


def _explain(path: Path, e: BaseException, *, writing: bool) -> str:
    """One sentence naming the file and the cause for a failure to open it."""
    msg = re.sub(r"^[A-Za-z ]*Error: ", "", str(e).strip())
    low = msg.lower()
    if "not a valid duckdb database" in low:
        kind = _sniff(path)
        return (
            f"{path} is not a DuckDB database (it exists and holds {kind}); point --db at a results "
            "database (.duckdb) or at a new file"
        )
    if "is a directory" in low:
        return f"the results database {path} is a directory, not a database file (give --db a file path)"
    if "permission denied" in low or "read-only file system" in low:
        how = "write" if writing else "read"
        cause = "read-only file system" if "read-only file system" in low else "permission denied"
        hint = " (choose a writable --db location)" if writing else ""
        return f"cannot {how} the results database {path}: {cause}{hint}"
    return f"cannot open the results database {path}: {msg}"


def _sniff(path: Path) -> str:
    """What a file that is not a DuckDB database seems to hold (for the error message)."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return "something else"
    if not head:
        return "nothing (it is empty)"
    for magic, kind in (
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"PK\x03\x04", "a zip archive"),
        (b"SQLite format 3", "an SQLite database"),
        (b"PAR1", "a Parquet file"),
        (b"%PDF", "a PDF"),
    ):
        if head.startswith(magic):
            return kind
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of another kind"
    return "text"


def _sql_str(p: Path | str) -> str:
    return str(p).replace("'", "''")
