"""A shard for ``bench merge`` is untrusted input: it is checked whole, read-only, before anything is
written to the target database or copied out of the shard's folder.

A shard is refused (a :class:`ShardError` naming the shard and the first offending row) when it is

* damaged (cut short) or not our schema (a foreign table named like ours, a missing table);
* holding a checkpoint id, metric name, result key, config hash or run id that our registry and our
  runs would never write (:mod:`biasbench.core.names`): these name files and reach terminals;
* holding a result value that is not a finite number;
* pointing at a per-item file outside its own ``<shard>.items`` folder (an absolute path, a ``..``
  component, a symbolic link leading out), or at one that is missing or is not a Parquet file.

What comes back is, for each per-item row, the checked source file inside the shard's items folder.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import duckdb

from biasbench.core import names
from biasbench.core.errors import StateError
from biasbench.harness.store.schema import damage_problem, schema_problem

#: a run id: ``<timestamp>-<hex>`` as :meth:`Store.start_run` writes it, or any short printable token
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,99}")
#: a config hash as it may appear in a shard (ours are 16 hex digits; also names a file)
CONFIG_HASH_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_PARQUET_MAGIC = b"PAR1"


class ShardError(StateError):
    """A shard cannot be merged: damaged, not our schema, or holding rows we would never write."""


def _distinct(con: duckdb.DuckDBPyConnection, alias: str, column: str, tables: tuple[str, ...]) -> list:
    sql = " UNION ".join(f"SELECT DISTINCT {column} AS v FROM {alias}.{t}" for t in tables)
    return [r[0] for r in con.execute(sql).fetchall()]


def _show(value: object, limit: int) -> str:
    """A value from the shard as it may be printed: quoted, control characters escaped, cut short."""
    return repr(value if not isinstance(value, str) else value[:limit])


def _refuse(shard: Path, what: str) -> ShardError:
    return ShardError(f"{shard} is refused, nothing was merged: {what}")


def check_shard(con: duckdb.DuckDBPyConnection, shard: Path, alias: str = "shard") -> dict[int, Path]:
    """Check the shard attached to ``con`` as ``alias`` (read-only); return, for each row of its
    ``item_outputs`` (by ``rowid``), the per-item file it names, checked to lie inside the shard's
    items folder. Raises :class:`ShardError`."""
    damage = damage_problem(con, alias, shard.stat().st_size)
    if damage:
        raise _refuse(shard, f"the file is damaged: {damage}")
    problem = schema_problem(con, alias)
    if problem:
        raise _refuse(shard, f"it is not a biasbench results database ({problem})")

    for cid in _distinct(con, alias, "checkpoint_id", ("jobs", "results", "item_outputs", "failures")) + [
        r for r in _distinct(con, alias, "id", ("checkpoints",))
    ]:
        why = names.id_problem(cid)
        if why:
            raise _refuse(shard, f"checkpoint id {_show(cid, 80)}: {why}")
    for metric in _distinct(con, alias, "metric", ("jobs", "results", "item_outputs", "failures")):
        why = names.metric_name_problem(metric)
        if why:
            raise _refuse(shard, f"metric name {_show(metric, 80)}: {why}")
    for key in _distinct(con, alias, "key", ("results",)):
        why = names.key_problem(key)
        if why:
            raise _refuse(shard, f"result key {_show(key, 80)}: {why}")
    for h in _distinct(con, alias, "config_hash", ("jobs", "results", "item_outputs")):
        if not isinstance(h, str) or not CONFIG_HASH_TOKEN_RE.fullmatch(h):
            raise _refuse(shard, f"config hash {_show(h, 80)} is not a content key")
    for run_id in _distinct(con, alias, "run_id", ("runs", "jobs", "results", "item_outputs", "failures")):
        if run_id is not None and not (isinstance(run_id, str) and RUN_ID_RE.fullmatch(run_id)):
            raise _refuse(shard, f"run id {_show(run_id, 80)} is not one we write")
    bad = con.execute(
        f"SELECT checkpoint_id, metric, key, value FROM {alias}.results "
        "WHERE value IS NULL OR NOT isfinite(value) LIMIT 1"
    ).fetchone()
    if bad:
        raise _refuse(shard, f"result {bad[0]} · {bad[1]} · {bad[2]} = {bad[3]} is not a finite number")

    items_dir = shard.with_name(shard.name + ".items")
    sources: dict[int, Path] = {}
    rows = con.execute(f"SELECT rowid, metric, path FROM {alias}.item_outputs").fetchall()
    for rowid, _metric, stored in rows:
        sources[int(rowid)] = _item_source(shard, items_dir, stored)
    return sources


def item_relpath(stored: str) -> PurePosixPath | None:
    """A stored per-item path relative to the database's items folder: ``<metric>/<file>`` (older
    databases stored ``<db name>.items/<metric>/<file>``; the folder's name is dropped, so a database
    renamed with its items folder keeps finding its files). ``None`` for a path that is absolute, has
    a ``..`` component, or is not two or three components long."""
    if not isinstance(stored, str) or not stored or names.CONTROL_RE.search(stored):
        return None
    p = PurePosixPath(stored.replace("\\", "/"))
    if p.is_absolute() or any(part in ("..", ".", "") for part in p.parts):
        return None
    parts = p.parts
    if len(parts) == 3 and parts[0].endswith(".items"):
        parts = parts[1:]
    if len(parts) != 2:
        return None
    return PurePosixPath(*parts)


def _item_source(shard: Path, items_dir: Path, stored: str) -> Path:
    rel = item_relpath(stored)
    if rel is None:
        raise _refuse(
            shard,
            f"per-item path {_show(stored, 120)} is not a file of its items folder "
            f"{items_dir.name} (absolute, '..', or not <metric>/<file>.parquet)",
        )
    src = items_dir / rel
    root = items_dir.resolve()
    real = src.resolve()
    if not real.is_relative_to(root):
        raise _refuse(shard, f"per-item file {src} leads outside {items_dir} (a symbolic link?)")
    if not real.is_file():
        raise _refuse(
            shard,
            f"per-item file {src} is missing (copy the shard's {items_dir.name} folder along with it)",
        )
    with real.open("rb") as f:
        head = f.read(4)
    if head != _PARQUET_MAGIC:
        raise _refuse(shard, f"per-item file {src} is not a Parquet file")
    return real
