"""``bench merge`` treats a shard as untrusted input: a path that leads out of the shard's items folder,
an absolute path, a metric or checkpoint id we would never write, a NaN, a foreign or damaged file are
each refused with one message before anything is written or copied; a good shard (renamed with its
items folder, too) still merges and its per-item files are read back."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from biasbench.harness.store import JobKey, JobRecord, Store, StoreError
from tests.harness_fixtures import bench

KEY = JobKey("ckpt-a", "accuracy", "0123456789abcdef")


def _shard(path: Path, key: JobKey = KEY, value: float = 0.75) -> Path:
    with Store(path) as s:
        s.write_job(
            key,
            JobRecord(
                metric_version="1",
                params={"dataset": "x"},
                scalars={"top1": value},
                n={"top1": 4},
                items=pd.DataFrame({"item": [0, 1, 2, 3], "correct": [1, 0, 1, 1]}),
                seconds=0.1,
                run_id="20261202T000000-abcdef01",
            ),
        )
        s.upsert_checkpoint({"id": key.checkpoint_id, "arch": "timm:resnet18", "tags": "{}"})
    return path


def _tamper(path: Path, sql: str) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute(sql)


def _item_file(shard: Path) -> Path:
    (f,) = (shard.parent / "shard.duckdb.items").rglob("*.parquet")
    return f


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture()
def world(tmp_path: Path) -> tuple[Path, Path]:
    """(shard database, target database path) in a folder of their own, a sibling ``victim`` folder."""
    (tmp_path / "victim").mkdir()
    return _shard(tmp_path / "work" / "shard.duckdb"), tmp_path / "work" / "target.duckdb"


def _refused(shard: Path, target: Path, match: str) -> None:
    before = _tree(shard.parent.parent)
    with pytest.raises(StoreError, match=match):
        with Store(target) as t:
            t.merge(shard)
    with Store(target, read_only=True) as t:
        assert t.query("SELECT count(*) AS n FROM jobs")["n"][0] == 0
        assert t.query("SELECT count(*) AS n FROM item_outputs")["n"][0] == 0
    created = _tree(shard.parent.parent) - before
    assert all(p.startswith("work/target.duckdb") for p in created), created
    assert not (shard.parent.parent / "victim" / ".bashrc").exists()


def test_a_metric_name_that_climbs_out_of_the_items_folder_is_refused(world):
    shard, target = world
    payload = shard.parent / "shard.duckdb.items" / "payload"
    payload.mkdir()
    (payload / ".bashrc").write_text("echo owned\n")
    _tamper(shard, "UPDATE jobs SET metric = '../../victim'; UPDATE results SET metric = '../../victim'")
    _tamper(
        shard,
        "UPDATE item_outputs SET metric = '../../victim', path = 'shard.duckdb.items/payload/.bashrc'",
    )
    _refused(shard, target, r"shard.duckdb is refused, nothing was merged: metric name '\.\./\.\./victim'")


def test_the_probes_traversal_through_the_cli_exits_2_and_writes_nothing_outside(world):
    shard, target = world
    payload = shard.parent / "shard.duckdb.items" / "payload"
    payload.mkdir()
    (payload / ".bashrc").write_text("echo owned\n")
    _tamper(shard, "UPDATE item_outputs SET metric = '../../victim', path = 'payload/.bashrc'")
    r = bench(["merge", str(shard), "--db", str(target)], shard.parent)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "refused" in r.stderr
    assert not (shard.parent.parent / "victim" / ".bashrc").exists()
    assert not target.exists(), "a refused shard must not even create the target"


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../../victim/x.parquet", "shard.duckdb.items/../../x.parquet", "a/b/c/d.parquet"],
)
def test_an_item_path_outside_the_shards_items_folder_is_refused(world, path):
    shard, target = world
    _tamper(shard, f"UPDATE item_outputs SET path = '{path}'")
    _refused(shard, target, "per-item path .* is not a file of its items folder")


def test_a_symbolic_link_leading_out_of_the_items_folder_is_refused(world):
    shard, target = world
    f = _item_file(shard)
    f.unlink()
    os.symlink("/etc/passwd", f)
    _refused(shard, target, "leads outside")


def test_a_per_item_file_that_is_not_parquet_is_refused(world):
    shard, target = world
    _item_file(shard).write_text("root:x:0:0:root:/root:/bin/bash\n")
    _refused(shard, target, "is not a Parquet file")


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("UPDATE results SET value = 'NaN'", "is not a finite number"),
        ("UPDATE results SET value = 'Infinity'", "is not a finite number"),
        (
            "UPDATE checkpoints SET id = '../../../x' || chr(27) || '[31m<script>'",
            r"checkpoint id '\.\./\.\./\.\./x\\x1b\[31m<script>'",
        ),
        ("UPDATE jobs SET checkpoint_id = '=cmd|'' /C calc''!A0'", "checkpoint id .=cmd"),
        ("UPDATE results SET key = 'a' || chr(27) || '[2J'", "result key"),
        ("UPDATE jobs SET config_hash = '../x'", "config hash '../x'"),
        ("UPDATE jobs SET run_id = 'r' || chr(10) || 'x'", "run id"),
    ],
)
def test_rows_we_would_never_write_are_refused(world, sql, match):
    shard, target = world
    _tamper(shard, sql)
    _refused(shard, target, match)


def test_a_foreign_database_with_tables_named_like_ours_is_refused(tmp_path):
    shard = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(shard)) as con:
        for t in ("checkpoints", "runs", "jobs", "results", "item_outputs", "failures"):
            con.execute(f"CREATE TABLE {t} (x INTEGER, y VARCHAR)")
    with pytest.raises(StoreError, match="not a biasbench results database .*table"):
        with Store(tmp_path / "target.duckdb") as t:
            t.merge(shard)


def test_a_truncated_shard_is_refused_as_damaged(tmp_path):
    good = _shard(tmp_path / "good.duckdb")
    cut = tmp_path / "cut.duckdb"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    r = bench(["merge", str(cut), "--db", str(tmp_path / "t.duckdb")], tmp_path)
    assert r.returncode == 2 and "damaged" in r.stderr and "Traceback" not in r.stderr
    assert cut.read_bytes() == data[: len(data) // 2]


def test_a_good_shard_renamed_with_its_items_folder_merges_and_its_items_read_back(tmp_path):
    shard = _shard(tmp_path / "a" / "shard.duckdb")
    moved = tmp_path / "b" / "renamed.duckdb"
    moved.parent.mkdir()
    shutil.move(shard, moved)
    shutil.move(shard.with_name("shard.duckdb.items"), moved.with_name("renamed.duckdb.items"))
    with Store(moved, read_only=True) as s:  # the renamed database finds its own items
        assert list(s.items(KEY.checkpoint_id, KEY.metric)["correct"]) == [1, 0, 1, 1]
    target = tmp_path / "c" / "target.duckdb"
    with Store(target) as t:
        counts = t.merge(moved)
        assert counts["jobs"] == 1 and counts["results"] == 1 and counts["item_outputs"] == 1
        assert list(t.items(KEY.checkpoint_id, KEY.metric)["correct"]) == [1, 0, 1, 1]
        assert t.merge(moved)["jobs"] == 0  # twice adds nothing
    assert _tree(target.parent) == {
        "target.duckdb",
        "target.duckdb.items",
        "target.duckdb.items/accuracy",
        "target.duckdb.items/accuracy/ckpt-a__0123456789abcdef.parquet",
    }
