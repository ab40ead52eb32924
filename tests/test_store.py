"""The DuckDB store: atomic jobs, reruns, failures, per-item Parquet outputs, newest-job view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biasbench.harness.store import JobKey, JobRecord, Store


def _write(
    store: Store, key: JobKey, value: float, run_id: str = "r1", items: pd.DataFrame | None = None
) -> None:
    store.write_job(
        key,
        JobRecord(
            metric_version="1",
            params={"a": 1},
            scalars={"x": value, "y": 2 * value},
            n={"x": 10, "y": 10},
            items=items,
            seconds=0.1,
            run_id=run_id,
        ),
    )


def test_written_job_is_stored_and_readable(tmp_path):
    with Store(tmp_path / "b.duckdb") as s:
        k = JobKey("ckpt", "m", "h1")
        assert k not in s.stored_jobs()
        _write(s, k, 0.5)
        assert s.stored_jobs() == {k}
        df = s.results()
        assert sorted(df["key"]) == ["x", "y"] and df.set_index("key").loc["y", "value"] == 1.0
        assert df.set_index("key").loc["x", "n"] == 10


def test_rewriting_a_job_replaces_its_rows(tmp_path):
    with Store(tmp_path / "b.duckdb") as s:
        k = JobKey("ckpt", "m", "h1")
        _write(s, k, 0.5)
        _write(s, k, 0.7)
        df = s.results(latest=False)
        assert len(df) == 2 and df.set_index("key").loc["x", "value"] == 0.7


def test_latest_results_show_only_the_newest_config_of_a_checkpoint_metric(tmp_path):
    with Store(tmp_path / "b.duckdb") as s:
        _write(s, JobKey("c", "m", "old"), 0.1)
        _write(s, JobKey("c", "m", "new"), 0.9)
        latest = s.results()
        assert set(latest["config_hash"]) == {"new"}
        assert len(s.results(latest=False)) == 4


def test_failed_transaction_leaves_no_partial_job(tmp_path):
    with Store(tmp_path / "b.duckdb") as s:
        k = JobKey("c", "m", "h")
        with pytest.raises(Exception):  # noqa: B017 - a non-numeric value fails inside the transaction
            s.write_job(
                k,
                JobRecord(metric_version="1", scalars={"ok": 1.0, "bad": "x"}, run_id="r"),
            )
        assert k not in s.stored_jobs()
        assert s.results(latest=False).empty


def test_items_round_trip_through_parquet_with_array_columns(tmp_path):
    items = pd.DataFrame(
        {
            "item": ["a", "b"],
            "order": [np.arange(5, dtype=np.int16), np.arange(3, dtype=np.int16)],
            "conf": [0.5, 0.25],
        }
    )
    with Store(tmp_path / "b.duckdb") as s:
        _write(s, JobKey("c", "m", "h"), 1.0, items=items)
        back = s.items("c", "m")
    assert list(back["item"]) == ["a", "b"]
    assert list(back["order"][0]) == [0, 1, 2, 3, 4]
    assert (tmp_path / "b.duckdb.items" / "m").is_dir()


def test_results_survive_reopen_and_failures_are_recorded(tmp_path):
    db = tmp_path / "b.duckdb"
    with Store(db) as s:
        run = s.start_run(argv=["bench"], git_sha=None, versions={}, device="cpu", host="h")
        _write(s, JobKey("c", "m", "h"), 1.0, run_id=run)
        s.record_failure("c2", "m", None, "boom", "Traceback…", run)
        s.finish_run(run, "failed")
    with Store(db, read_only=True) as s:
        assert len(s.results()) == 2
        f = s.failures()
        assert list(f["error"]) == ["boom"]
        assert s.runs().iloc[0]["status"] == "failed"


def test_read_only_open_of_missing_database_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results database"):
        Store(tmp_path / "nope.duckdb", read_only=True)


def test_writes_inside_held_share_one_connection_and_each_job_stays_atomic(tmp_path, monkeypatch):
    import duckdb

    path = tmp_path / "b.duckdb"
    Store(path)  # created (and its schema written) outside the count
    opened = []
    real = duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: opened.append(a) or real(*a, **k))
    s = Store(path)
    opened.clear()  # the opening checks' own connections
    with s.held():
        for i in range(5):
            _write(s, JobKey(f"c{i}", "m", "h"), 0.1 * i)
        with pytest.raises(Exception):  # noqa: B017 - a non-numeric value fails inside its transaction
            s.write_job(
                JobKey("bad", "m", "h"), JobRecord(metric_version="1", scalars={"x": "y"}, run_id="r")
            )
        assert len(s.stored_jobs()) == 5  # the failed job left nothing; the others are kept
    assert len(opened) == 1  # one connection for the block
    _write(s, JobKey("after", "m", "h"), 1.0)
    assert len(opened) == 2  # outside the block: a connection per call again
    with Store(path, read_only=True) as r:  # the held connection is closed: another reader opens it
        assert sorted(r.results()["checkpoint"].unique()) == ["after", *(f"c{i}" for i in range(5))]
