"""The `bench` commands a newcomer types: ls, data fetch/verify, results, report, status, --help."""

from __future__ import annotations

import pytest

from biasbench.harness.store import JobKey, JobRecord, Store
from tests.harness_fixtures import bench


@pytest.mark.parametrize("cmd", [[], ["run"], ["results"], ["report"], ["ls"], ["data"], ["zoo"], ["status"]])
def test_every_command_has_help(tmp_path, cmd):
    r = bench([*cmd, "--help"], tmp_path)
    assert r.returncode == 0 and "Usage" in r.stdout


def test_ls_lists_shipped_checkpoints_metrics_and_datasets(tmp_path):
    r = bench(["ls", "checkpoints", "efficientnet-lite"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "efficientnet_lite0" in r.stdout and "efficientnet_lite2" in r.stdout
    r = bench(["ls", "metrics"], tmp_path)
    for name in ("accuracy", "shape_bias", "acc16"):
        assert name in r.stdout
    r = bench(["ls", "datasets", "--data-root", str(tmp_path)], tmp_path)
    assert "imagenet-val" in r.stdout and "cue-conflict" in r.stdout


def test_data_fetch_through_a_local_mirror_then_verify_catches_a_flipped_byte(
    tmp_path, shared_data, http_server
):
    url = http_server(shared_data)
    root = tmp_path / "data"
    r = bench(["data", "fetch", "edges", "--data-root", str(root), "--mirror", url], tmp_path)
    assert r.returncode == 0, r.stderr
    files = sorted((root / "edges").rglob("*.png"))
    assert len(files) == 160
    assert bench(["data", "verify", "edges", "--data-root", str(root)], tmp_path).returncode == 0
    data = bytearray(files[7].read_bytes())
    data[100] ^= 0xFF
    files[7].write_bytes(bytes(data))
    r = bench(["data", "verify", "edges", "--data-root", str(root)], tmp_path)
    assert r.returncode == 1 and files[7].name in r.stderr


def test_data_fetch_of_imagenet_val_says_how_to_get_it(tmp_path):
    r = bench(["data", "fetch", "imagenet-val", "--data-root", str(tmp_path)], tmp_path)
    assert r.returncode == 2 and "image-net.org" in r.stderr


def _db(tmp_path):
    db = tmp_path / "b.duckdb"
    with Store(db) as s:
        for i, (a, b) in enumerate([(0.1, 1.0), (0.2, 3.0), (0.3, 2.0), (0.4, 5.0)]):
            s.write_job(
                JobKey(f"c{i}", "m", "h"),
                JobRecord(metric_version="1", scalars={"a": a, "b": b}, n={"a": 4, "b": 4}, run_id="r"),
            )
        s.record_failure("c9", "m", None, "weights missing", "tb", "r")
    return db


def test_results_formats_and_report_and_status(tmp_path):
    db = _db(tmp_path)
    r = bench(["results", "--db", str(db), "--format", "json"], tmp_path)
    assert r.returncode == 0 and '"checkpoint":"c0"' in r.stdout.replace(" ", "")
    r = bench(
        [
            *("report", "--db", str(db), "--format", "md", "--keys", "m.a,m.b"),
            *("--out", str(tmp_path / "r.md"), "--figure", str(tmp_path / "h.png")),
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "r.md").read_text()
    assert "m.a" in text and "0.8" in text  # Spearman of a vs b over 4 checkpoints = 0.8
    assert (tmp_path / "h.png").stat().st_size > 1000
    r = bench(["status", "--db", str(db)], tmp_path)
    assert "weights missing" in r.stdout and "failures 1" in r.stdout


def test_results_on_a_missing_database_is_one_clear_error(tmp_path):
    r = bench(["results", "--db", str(tmp_path / "none.duckdb")], tmp_path)
    assert r.returncode == 2 and "no results database" in r.stderr


def test_unknown_metric_and_bad_param_are_clear_errors(tmp_path):
    r = bench(["run", "efficientnet-lite", "-m", "nope", "--db", str(tmp_path / "b.duckdb")], tmp_path)
    assert r.returncode == 2 and "unknown metric 'nope'" in r.stderr
    r = bench(
        [
            "run",
            "efficientnet-lite",
            "-m",
            "accuracy",
            "-p",
            "accuracy.nope=1",
            "--db",
            str(tmp_path / "b.duckdb"),
        ],
        tmp_path,
    )
    assert r.returncode == 2 and "has no parameter nope" in r.stderr
