"""The DuckDB store (``docs/architecture.md`` §4): one file, one writer, one transaction per job.

Tables
------
``checkpoints(id, arch, weights, source, weights_sha256, identity, preprocess JSON, labels, tags JSON)``
``runs(run_id, started_at, finished_at, status, argv JSON, git_sha, versions JSON, device, host)``
``jobs(checkpoint_id, metric, config_hash, metric_version, params JSON, datasets JSON, seconds, flags
JSON, run_id, created_at)`` — one row per finished job; its presence is what "stored" means (a rerun
skips it unless ``--force``).
``results(checkpoint_id, metric, key, value DOUBLE, n, config_hash, metric_version, run_id,
created_at)`` unique on ``(checkpoint_id, metric, key, config_hash)``.
``item_outputs(checkpoint_id, metric, config_hash, path, n_rows, run_id, created_at)`` — per-item
outputs live in Parquet files beside the database (``<db>.items/<metric>/<checkpoint>__<hash>.parquet``).
``failures(checkpoint_id, metric, config_hash, error, traceback, run_id, created_at)``.
View ``latest_results``: for each (checkpoint, metric, key) the row of the newest job.

A job's rows (jobs, results, item_outputs) are written in one transaction: a killed run leaves whole
jobs or nothing. The Parquet file is written first under a temporary name and renamed into place, so
a kill between the rename and the commit leaves at most an orphan file that the rerun overwrites.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
  id VARCHAR PRIMARY KEY, arch VARCHAR, weights VARCHAR, source VARCHAR, weights_sha256 VARCHAR,
  identity VARCHAR, preprocess JSON, labels VARCHAR, tags JSON, updated_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS runs (
  run_id VARCHAR PRIMARY KEY, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status VARCHAR,
  argv JSON, git_sha VARCHAR, versions JSON, device VARCHAR, host VARCHAR);
CREATE TABLE IF NOT EXISTS jobs (
  checkpoint_id VARCHAR, metric VARCHAR, config_hash VARCHAR, metric_version VARCHAR, params JSON,
  datasets JSON, seconds DOUBLE, flags JSON, run_id VARCHAR, created_at TIMESTAMPTZ,
  PRIMARY KEY (checkpoint_id, metric, config_hash));
CREATE TABLE IF NOT EXISTS results (
  checkpoint_id VARCHAR, metric VARCHAR, key VARCHAR, value DOUBLE, n BIGINT, config_hash VARCHAR,
  metric_version VARCHAR, run_id VARCHAR, created_at TIMESTAMPTZ,
  UNIQUE (checkpoint_id, metric, key, config_hash));
CREATE TABLE IF NOT EXISTS item_outputs (
  checkpoint_id VARCHAR, metric VARCHAR, config_hash VARCHAR, path VARCHAR, n_rows BIGINT,
  run_id VARCHAR, created_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS failures (
  checkpoint_id VARCHAR, metric VARCHAR, config_hash VARCHAR, error VARCHAR, traceback VARCHAR,
  run_id VARCHAR, created_at TIMESTAMPTZ);
CREATE OR REPLACE VIEW latest_jobs AS
  SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY checkpoint_id, metric ORDER BY created_at DESC) AS rn
    FROM jobs) WHERE rn = 1;
CREATE OR REPLACE VIEW latest_results AS
  SELECT r.* FROM results r JOIN latest_jobs j USING (checkpoint_id, metric, config_hash);
"""


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class JobKey:
    checkpoint_id: str
    metric: str
    config_hash: str


class Store:
    """The results database. Open with ``Store(path)``; use as a context manager to close it."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"no results database at {self.path.resolve()} (run `bench run` first)")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as e:
            raise RuntimeError(
                f"cannot open the results database {self.path}: {e} (is another `bench run` writing to it?)"
            ) from e
        if not read_only:
            self.con.execute(SCHEMA)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def items_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".items")

    # -- runs ----------------------------------------------------------------------------------
    def start_run(self, *, argv: list[str], git_sha: str | None, versions: dict[str, str], device: str,
                  host: str) -> str:
        run_id = _now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self.con.execute(
            "INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?, ?, ?, ?)",
            [run_id, _now(), json.dumps(argv), git_sha, json.dumps(versions), device, host],
        )
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        self.con.execute("UPDATE runs SET finished_at = ?, status = ? WHERE run_id = ?", [_now(), status, run_id])

    # -- checkpoints ---------------------------------------------------------------------------
    def upsert_checkpoint(self, row: dict[str, Any]) -> None:
        cols = ["id", "arch", "weights", "source", "weights_sha256", "identity", "preprocess", "labels", "tags"]
        values = [row.get(c) for c in cols] + [_now()]
        self.con.execute(
            f"INSERT OR REPLACE INTO checkpoints ({', '.join(cols)}, updated_at) VALUES ({', '.join('?' * (len(cols) + 1))})",
            values,
        )

    # -- jobs ----------------------------------------------------------------------------------
    def has_job(self, key: JobKey) -> bool:
        return (
            self.con.execute(
                "SELECT count(*) FROM jobs WHERE checkpoint_id = ? AND metric = ? AND config_hash = ?",
                [key.checkpoint_id, key.metric, key.config_hash],
            ).fetchone()[0]
            > 0
        )

    def stored_jobs(self) -> set[JobKey]:
        rows = self.con.execute("SELECT checkpoint_id, metric, config_hash FROM jobs").fetchall()
        return {JobKey(*r) for r in rows}

    def write_job(
        self,
        key: JobKey,
        *,
        metric_version: str,
        params: dict[str, Any],
        datasets: dict[str, Any],
        scalars: dict[str, float],
        n: dict[str, int],
        items: pd.DataFrame | None,
        flags: Iterable[str],
        seconds: float,
        run_id: str,
    ) -> None:
        """Write one job's rows atomically (replacing an earlier copy of the same job)."""
        items_path = None
        if items is not None and len(items):
            items_path = self._write_items(key, items)
        now = _now()
        where = [key.checkpoint_id, key.metric, key.config_hash]
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            for table in ("jobs", "results", "item_outputs"):
                con.execute(f"DELETE FROM {table} WHERE checkpoint_id = ? AND metric = ? AND config_hash = ?", where)
            con.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*where, metric_version, json.dumps(params, sort_keys=True), json.dumps(datasets, sort_keys=True),
                 seconds, json.dumps(list(flags)), run_id, now],
            )
            rows = [
                (key.checkpoint_id, key.metric, k, float(v), int(n.get(k, 0)), key.config_hash, metric_version,
                 run_id, now)
                for k, v in scalars.items()
            ]
            con.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if items_path is not None:
                con.execute(
                    "INSERT INTO item_outputs VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [*where, str(items_path.relative_to(self.items_dir.parent)), len(items), run_id, now],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _write_items(self, key: JobKey, items: pd.DataFrame) -> Path:
        safe_ckpt = "".join(c if c.isalnum() or c in "-_." else "_" for c in key.checkpoint_id)
        dest = self.items_dir / key.metric / f"{safe_ckpt}__{key.config_hash}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        frame = items  # noqa: F841 - referenced by name in the SQL below
        self.con.execute(f"COPY (SELECT * FROM frame) TO '{_sql_str(tmp)}' (FORMAT parquet)")
        os.replace(tmp, dest)
        return dest

    def record_failure(self, checkpoint_id: str, metric: str, config_hash: str | None, error: str,
                       traceback: str, run_id: str) -> None:
        self.con.execute(
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
        Returns the number of rows added per table.
        """
        other = Path(other)
        if not other.exists():
            raise FileNotFoundError(f"no results database at {other.resolve()}")
        if other.resolve() == self.path.resolve():
            raise ValueError(f"cannot merge {other} into itself")
        con = self.con
        con.execute(f"ATTACH '{_sql_str(other)}' AS shard (READ_ONLY)")
        try:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE merge_keys AS "
                "SELECT checkpoint_id, metric, config_hash FROM shard.jobs "
                "EXCEPT SELECT checkpoint_id, metric, config_hash FROM jobs"
            )
            items = con.execute(
                "SELECT i.* FROM shard.item_outputs i JOIN merge_keys USING (checkpoint_id, metric, config_hash)"
            ).df()
            other_items_root = other.parent
            paths: list[str] = []
            for row in items.itertuples():
                src = other_items_root / row.path
                if not src.is_file():
                    raise FileNotFoundError(f"{other}: per-item file {src} is missing (copy the shard's "
                                            f"{other.name}.items folder along with it)")
                dest = self.items_dir / row.metric / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest)
                paths.append(str(dest.relative_to(self.items_dir.parent)))
            items["path"] = paths
            con.register("merge_items", items)
            counts: dict[str, int] = {}
            con.execute("BEGIN TRANSACTION")
            try:
                def add(table: str, sql: str) -> None:
                    before = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    con.execute(sql)
                    counts[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - before

                add("runs", "INSERT INTO runs SELECT * FROM shard.runs "
                            "WHERE run_id NOT IN (SELECT run_id FROM runs)")
                add("checkpoints", "INSERT OR REPLACE INTO checkpoints SELECT o.* FROM shard.checkpoints o "
                                   "LEFT JOIN checkpoints c ON c.id = o.id "
                                   "WHERE c.id IS NULL OR o.updated_at > c.updated_at")
                add("jobs", "INSERT INTO jobs SELECT j.* FROM shard.jobs j "
                            "JOIN merge_keys USING (checkpoint_id, metric, config_hash)")
                add("results", "INSERT INTO results SELECT r.* FROM shard.results r "
                               "JOIN merge_keys USING (checkpoint_id, metric, config_hash)")
                add("item_outputs", "INSERT INTO item_outputs SELECT * FROM merge_items")
                add("failures", "INSERT INTO failures SELECT * FROM shard.failures "
                                "EXCEPT SELECT * FROM failures")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return counts
        finally:
            con.execute("DROP TABLE IF EXISTS merge_keys")
            with contextlib.suppress(duckdb.Error):
                con.unregister("merge_items")
            con.execute("DETACH shard")

    # -- reading -------------------------------------------------------------------------------
    def results(self, *, latest: bool = True, metrics: list[str] | None = None,
                checkpoints: list[str] | None = None) -> pd.DataFrame:
        table = "latest_results" if latest else "results"
        sql = f"SELECT checkpoint_id AS checkpoint, metric, key, value, n, config_hash, run_id, created_at FROM {table}"
        conds, args = [], []
        if metrics:
            conds.append(f"metric IN ({', '.join('?' * len(metrics))})")
            args += metrics
        if checkpoints:
            conds.append(f"checkpoint_id IN ({', '.join('?' * len(checkpoints))})")
            args += checkpoints
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        return self.con.execute(sql + " ORDER BY checkpoint, metric, key", args).df()

    def items(self, checkpoint_id: str, metric: str, config_hash: str | None = None) -> pd.DataFrame:
        """The per-item outputs of the newest (or the given) job of ``checkpoint_id`` × ``metric``."""
        sql = ("SELECT i.path FROM item_outputs i JOIN jobs j USING (checkpoint_id, metric, config_hash) "
               "WHERE i.checkpoint_id = ? AND i.metric = ?")
        args: list[Any] = [checkpoint_id, metric]
        if config_hash:
            sql += " AND i.config_hash = ?"
            args.append(config_hash)
        row = self.con.execute(sql + " ORDER BY j.created_at DESC LIMIT 1", args).fetchone()
        if row is None:
            raise KeyError(f"no per-item outputs stored for {checkpoint_id!r} × {metric!r}")
        path = self.items_dir.parent / row[0]
        return self.con.execute(f"SELECT * FROM read_parquet('{_sql_str(path)}')").df()

    def failures(self, run_id: str | None = None) -> pd.DataFrame:
        if run_id:
            return self.con.execute("SELECT * FROM failures WHERE run_id = ? ORDER BY created_at", [run_id]).df()
        return self.con.execute("SELECT * FROM failures ORDER BY created_at").df()

    def checkpoints(self) -> pd.DataFrame:
        return self.con.execute("SELECT * FROM checkpoints ORDER BY id").df()

    def runs(self) -> pd.DataFrame:
        return self.con.execute("SELECT * FROM runs ORDER BY started_at").df()

    def query(self, sql: str, args: list[Any] | None = None) -> pd.DataFrame:
        return self.con.execute(sql, args or []).df()


def _sql_str(p: Path | str) -> str:
    return str(p).replace("'", "''")
