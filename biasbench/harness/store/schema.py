"""The results database's schema (``docs/architecture.md`` §4) and the check that a DuckDB file holds
it: our tables with our columns and types, before anything is written to the file or copied from it.

A file whose tables named like ours have other columns (someone else's ``jobs`` table) is not ours;
a results database from an older version lacks at most the columns in :data:`ADDED_COLUMNS`, which a
writer adds.
"""

from __future__ import annotations

import functools

import duckdb

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
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid BIGINT;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS retries BIGINT;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS timings JSON;
CREATE OR REPLACE VIEW latest_jobs AS
  SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY checkpoint_id, metric ORDER BY created_at DESC) AS rn
    FROM jobs) WHERE rn = 1;
CREATE OR REPLACE VIEW latest_results AS
  SELECT r.* FROM results r JOIN (
    SELECT checkpoint_id, metric, config_hash, row_number() OVER (
      PARTITION BY checkpoint_id, metric, CAST(params AS VARCHAR) ORDER BY created_at DESC) AS rn
    FROM jobs) j USING (checkpoint_id, metric, config_hash) WHERE j.rn = 1;
"""
#: the tables every results database has (a DuckDB file without them is someone else's database)
TABLES = ("checkpoints", "runs", "jobs", "results", "item_outputs", "failures")

#: columns added after the first release (an older database lacks them; a writer adds them)
ADDED_COLUMNS = frozenset({("runs", "pid"), ("runs", "retries"), ("jobs", "timings")})


@functools.cache
def expected_columns() -> dict[str, dict[str, str]]:
    """Our tables' columns and their DuckDB types, read from :data:`SCHEMA` built in memory."""
    with duckdb.connect() as con:
        con.execute(SCHEMA)
        return _columns(con, "memory")


def _columns(con: duckdb.DuckDBPyConnection, database: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = ? AND NOT internal ORDER BY table_name, column_index",
        [database],
    ).fetchall()
    views = {
        r[0]
        for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE database_name = ?", [database]
        ).fetchall()
    }
    for table, column, dtype in rows:
        if table not in views:
            out.setdefault(table, {})[column] = dtype
    return out


def schema_problem(
    con: duckdb.DuckDBPyConnection, database: str, *, allow_missing_tables: bool = False
) -> str | None:
    """What keeps ``database`` (a catalog of ``con``) from being a results database, or ``None``.

    Every table of ours that it has must have our columns with our types (less, at most, the
    :data:`ADDED_COLUMNS`), and no others. ``allow_missing_tables``: tables of ours may be absent
    (a new file, an older version) — but then the file may hold no table that is not ours."""
    want = expected_columns()
    have = _columns(con, database)
    ours = [t for t in TABLES if t in have]
    missing = [t for t in TABLES if t not in have]
    if missing:
        foreign = sorted(set(have) - set(TABLES))
        if not allow_missing_tables or (foreign and "jobs" not in have):
            listed = ", ".join(sorted(have)) or "no tables"
            return f"it has {listed}; missing {', '.join(missing)}"
    for table in ours:
        cols, expect = have[table], want[table]
        extra = [c for c in cols if c not in expect]
        absent = [c for c in expect if c not in cols and (table, c) not in ADDED_COLUMNS]
        wrong = [f"{c} {cols[c]} (ours: {expect[c]})" for c in cols if c in expect and cols[c] != expect[c]]
        parts = [
            text
            for text in (
                f"lacks {', '.join(absent)}" if absent else "",
                f"has columns we do not write ({', '.join(extra[:5])})" if extra else "",
                "types differ: " + "; ".join(wrong[:3]) if wrong else "",
            )
            if text
        ]
        if parts:
            return f"its table {table!r} is not ours: it " + " and ".join(parts)
    return None


#: DuckDB's file header and its two database headers precede the blocks (4 KiB each)
_HEADER_BYTES = 3 * 4096


def damage_problem(con: duckdb.DuckDBPyConnection, database: str, size: int) -> str | None:
    """Why the file behind ``database`` (``size`` bytes on disk) is damaged, or ``None``: a file cut
    short lacks blocks that its tables' columns live in (reading them would fail half-way, and a
    writer would rewrite the file). Free blocks at the end may be cut away by DuckDB itself, so only
    the blocks in use count: as many as the header counts, and every block a table of ours names."""
    row = next((r for r in con.execute("PRAGMA database_size").fetchall() if r[0] == database), None)
    if row is None:
        return None
    block_size, used_blocks = int(row[2]), int(row[4])
    blocks = used_blocks
    tables = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [database]
        ).fetchall()
    }
    for table in TABLES:
        if table in tables:
            (top,) = con.execute(
                f"SELECT max(block_id) FROM pragma_storage_info('{database}.{table}') WHERE block_id >= 0"
            ).fetchone()
            if top is not None:
                blocks = max(blocks, int(top) + 1)
    need = _HEADER_BYTES + blocks * block_size
    if blocks and size < need:
        return f"it is {size:,} bytes long but its blocks in use need {need:,} (truncated or damaged)"
    return None


#: phrases of DuckDB's errors when a file's blocks cannot be read back
DAMAGE_PHRASES = ("could not read enough bytes", "checksum", "corrupt", "invalid block", "failed to read")


def is_damage_error(e: BaseException) -> bool:
    low = str(e).lower()
    return isinstance(e, duckdb.Error) and any(p in low for p in DAMAGE_PHRASES)
