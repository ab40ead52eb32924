"""Never write to a database we did not create: a DuckDB file whose tables are named like ours but hold
other columns is refused before it is opened for writing, and a file cut short is opened read-only,
called damaged, and left byte for byte as it was — by `bench run`, `status` and `results` alike."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from biasbench.harness.store import JobKey, JobRecord, Store, StoreError


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _main(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    from biasbench.cli import main

    monkeypatch.setenv("COLUMNS", "60")  # narrow: an error line must still not be wrapped
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    with pytest.raises(SystemExit) as ex:
        main()
    return int(ex.value.code or 0), capsys.readouterr().err


def _foreign(path: Path) -> Path:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE results (id INTEGER, score DOUBLE)")
        con.execute("CREATE TABLE jobs (name VARCHAR, done BOOLEAN)")
        con.execute("INSERT INTO results VALUES (1, 0.5)")
        con.execute("INSERT INTO jobs VALUES ('payroll', true)")
    return path


def _ours(path: Path, n_jobs: int = 30) -> Path:
    with Store(path) as s:
        for i in range(n_jobs):
            s.write_job(
                JobKey(f"c{i}", "accuracy", "0123456789abcdef"),
                JobRecord(
                    metric_version="1",
                    scalars={"top1": i / n_jobs},
                    n={"top1": 10},
                    items=pd.DataFrame({"item": range(2000), "correct": [i % 2] * 2000}),
                    seconds=0.1,
                    run_id="r",
                ),
            )
    return path


def test_a_foreign_database_with_tables_named_results_and_jobs_is_refused_and_left_unchanged(
    tmp_path, capsys, monkeypatch
):
    db = _foreign(tmp_path / "theirs.duckdb")
    before = _digest(db)
    with pytest.raises(StoreError, match=r"not a biasbench results database .*table 'jobs' is not ours"):
        Store(db)
    for argv in (["run", "demo", "-m", "accuracy"], ["status"], ["results"]):
        code, err = _main([*argv, "--db", str(db)], capsys, monkeypatch)
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert "not a biasbench results database" in err
    assert _digest(db) == before
    with duckdb.connect(str(db), read_only=True) as con:
        assert {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()} == {
            "results",
            "jobs",
        }


def test_a_truncated_database_is_called_damaged_and_its_bytes_are_not_changed(tmp_path, capsys, monkeypatch):
    good = _ours(tmp_path / "good.duckdb")
    data = good.read_bytes()
    cut = tmp_path / "cut.duckdb"
    cut.write_bytes(data[: int(len(data) * 0.5)])
    before = _digest(cut)
    for ro in (True, False):
        with pytest.raises(StoreError, match=r"is damaged: .* \(truncated"):
            Store(cut, read_only=ro)
    for argv in (["run", "demo", "-m", "accuracy"], ["status"], ["results"]):
        code, err = _main([*argv, "--db", str(cut)], capsys, monkeypatch)
        assert code == 2 and err.startswith("error: ") and "damaged" in err and err.count("\n") == 1, err
    assert _digest(cut) == before


def test_our_own_database_still_opens_for_reading_and_writing(tmp_path):
    db = _ours(tmp_path / "good.duckdb", n_jobs=3)
    with Store(db, read_only=True) as s:
        assert len(s.results()) == 3
    with Store(db) as s:
        assert len(s.stored_jobs()) == 3
