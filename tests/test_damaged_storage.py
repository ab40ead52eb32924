"""Storage that goes wrong under a run: a truncated per-item file, a full disk. Each ends in one clear
message and loses no earlier result."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.harness_fixtures import REPO, bench


def demo_registry(path: Path, recipes: list[str]) -> Path:
    path.write_text(
        "".join(
            f'[[checkpoint]]\nid = "{r}"\narch = "zoo:resnet50-w8"\nweights = "zoo:{r}"\nlabels = "demo-world"\n\n'
            for r in recipes
        )
    )
    return path


def test_a_truncated_per_item_file_is_a_clear_error_and_the_scalars_stay(tmp_path):
    env = {"BIASBENCH_CACHE": str(tmp_path / "cache"), "BIASBENCH_DATA": str(tmp_path / "data")}
    reg = demo_registry(tmp_path / "r.toml", ["plain"])
    db = tmp_path / "b.duckdb"
    r = bench(["run", str(reg), "-m", "sis", "-p", "sis.n_images=4", "--db", str(db)], tmp_path, env)
    assert r.returncode == 0, r.stderr
    (item,) = (tmp_path / "b.duckdb.items" / "sis").glob("*.parquet")
    data = item.read_bytes()
    item.write_bytes(data[: len(data) // 2])
    broken = bench(["results", "--db", str(db), "--recompute", "sis.tau=0.95"], tmp_path, env)
    said = " ".join(broken.stderr.split())
    assert (
        broken.returncode == 2
        and "unreadable (truncated or damaged)" in said
        and item.name in said.replace(" ", "")
    )
    plain = bench(["results", "--db", str(db), "--format", "csv"], tmp_path, env)
    assert plain.returncode == 0 and plain.stdout.count("plain,sis,") > 10
    item.unlink()
    gone = bench(["results", "--db", str(db), "--recompute", "sis.tau=0.95"], tmp_path, env)
    assert gone.returncode == 2 and "is missing" in gone.stderr


@pytest.mark.slow
def test_a_full_disk_during_a_run_fails_cleanly_and_keeps_every_earlier_result(tmp_path):
    """The second run may not grow any file past a few KiB (RLIMIT_FSIZE: writes fail with EFBIG,
    as on a full disk): it ends with a clear message, and the first run's results all stay."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "BIASBENCH_CACHE": str(tmp_path / "cache"),
        "BIASBENCH_DATA": str(tmp_path / "data"),
        "BIASBENCH_THREADS": "1",
        "COLUMNS": "200",
    }
    db = tmp_path / "b.duckdb"

    def run(recipe: str, *extra: str, limit: int | None = None) -> subprocess.CompletedProcess:
        def limit_file_size() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        reg = demo_registry(tmp_path / f"{recipe}.toml", [recipe])
        return subprocess.run(
            [sys.executable, "-m", "biasbench.cli", "run", str(reg), "-m", "accuracy", *extra],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=limit_file_size if limit else None,
        )

    first = run("plain", "--db", str(db))
    assert first.returncode == 0, first.stderr
    query = "SELECT * FROM results WHERE checkpoint_id = 'plain' ORDER BY key"
    with duckdb.connect(str(db), read_only=True) as con:
        before = con.execute(query).fetchall()
    assert run("blur", "--db", str(tmp_path / "warm.duckdb")).returncode == 0  # the world's cache is warm now
    second = run("blur", "--db", str(db), limit=4096)
    said = " ".join(second.stderr.split())
    assert second.returncode != 0
    assert "Traceback" not in second.stderr, second.stderr
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
    assert second.returncode == 2 and len(errors) == 1, said  # one error line, the run stopped
    assert "disk is full or a file-size limit" in errors[0] and "job(s) failed" not in said, said
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute(query).fetchall() == before
        assert con.execute("SELECT count(*) FROM jobs WHERE checkpoint_id = 'plain'").fetchone()[0] == 1
        # the full disk is no job's failure: nothing is recorded against the jobs
        assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0
