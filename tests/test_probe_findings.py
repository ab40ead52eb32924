"""The probe's findings on command-line input, exports, terminals, imports and run bookkeeping: each ends
in one clear, unwrapped, escaped error line (exit 2) or is handled, and nothing is lost."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from biasbench.harness.store import JobKey, JobRecord, Store
from biasbench.registry.spec import CheckpointError
from tests.harness_fixtures import bench, demo_registry


def _main(argv: list[str], capsys, monkeypatch, columns: int = 60) -> tuple[int, str, str]:
    """The real entry point in this process at a narrow terminal: exit code, stdout, stderr."""
    from biasbench.cli import main

    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    code = 0
    try:
        main()
    except SystemExit as ex:
        code = int(ex.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _one_error_line(err: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


# -- command-line input ---------------------------------------------------------------------------


def test_a_param_without_an_equals_sign_is_refused_not_stored_as_an_empty_string(
    tmp_path, capsys, monkeypatch
):
    code, _, err = _main(
        ["run", "demo", "-p", "accuracy.dataset", "--db", str(tmp_path / "x.duckdb")], capsys, monkeypatch
    )
    assert code == 2
    _one_error_line(err)
    assert "expected METRIC.KEY=VALUE" in err
    assert not (tmp_path / "x.duckdb").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--batch-size", "0"],
        ["run", "--batch-size", "-1"],
        ["run", "--threads", "100000"],
        ["report", "--top", "-1"],
        ["report", "--resamples", str(10**12)],
    ],
)
def test_numbers_out_of_range_are_refused_before_anything_runs(tmp_path, argv):
    r = bench([*argv, "--db", str(tmp_path / "x.duckdb")], tmp_path)
    assert r.returncode == 2 and "Invalid value" in r.stderr, r.stderr
    assert not (tmp_path / "x.duckdb").exists()


@pytest.mark.parametrize("budget", ["1e999G", "nanG", "-5G", "99999999999T"])
def test_an_absurd_cache_budget_is_one_error_line(tmp_path, capsys, monkeypatch, budget):
    code, _, err = _main(
        ["run", "demo", "--cache-budget", budget, "--db", str(tmp_path / "x.duckdb")], capsys, monkeypatch
    )
    assert code == 2 and "cache budget" in err
    _one_error_line(err)


@pytest.mark.parametrize("target", ["/proc/version", "DIR"])
def test_a_report_output_that_cannot_be_written_fails_before_the_report_is_computed(
    tmp_path, capsys, monkeypatch, target
):
    out = tmp_path if target == "DIR" else Path(target)
    t0 = time.monotonic()
    code, _, err = _main(
        ["report", "-o", str(out), "--db", str(tmp_path / "none.duckdb")], capsys, monkeypatch
    )
    assert code == 2 and "--out" in err and time.monotonic() - t0 < 10
    _one_error_line(err)


def test_a_failure_inside_the_run_inputs_prints_one_line_not_a_second_error_2(tmp_path, capsys, monkeypatch):
    code, _, err = _main(
        ["run", "demo", "-p", "nosuch.x=1", "--db", str(tmp_path / "x.duckdb")], capsys, monkeypatch
    )
    assert code == 2 and "error: 2" not in err
    _one_error_line(err)


def test_quoted_text_keeps_its_colons_and_long_errors_are_not_wrapped(tmp_path, capsys, monkeypatch):
    long_name = "root:x:0:0:" + "y" * 150
    code, _, err = _main(
        ["run", "demo", "-p", long_name, "--db", str(tmp_path / "x.duckdb")], capsys, monkeypatch, columns=40
    )
    assert code == 2 and long_name in err  # no emoji for :x:, no line break inside
    _one_error_line(err)


def test_a_torchvision_name_that_is_no_weights_enum_is_a_checkpoint_error():
    from biasbench.registry.weight_sources.torchvision_enum import torchvision_weights_enum

    with pytest.raises(CheckpointError, match="unknown torchvision weights 'get_weight.x'"):
        torchvision_weights_enum("get_weight.x", "c")


# -- exports and terminals ------------------------------------------------------------------------


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_neutralised():
    from biasbench.reports.render import csv_text

    frame = pd.DataFrame(
        {
            "checkpoint": ["=cmd|' /C calc'!A0", "+SUM(1;2)", "@x", "-2.5", "plain", "\tTAB"],
            "tag": ['=HYPERLINK("http://x")', "a", "b", "c", "d", "e"],
            "value": [1.0, -2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    lines = csv_text(frame).splitlines()
    rows = [ln.split(",")[0] for ln in lines[1:]]
    assert rows[0].startswith("'=cmd") and rows[1] == "'+SUM(1;2)" and rows[2] == "'@x"
    assert rows[3] == "-2.5" and rows[4] == "plain" and rows[5].startswith("'\t")
    assert "'=HYPERLINK" in lines[1] and lines[2].endswith(",-2.0")


def test_status_and_results_print_control_characters_as_escapes(tmp_path):
    db = tmp_path / "r.duckdb"
    with Store(db) as s:
        s.write_job(
            JobKey("c", "accuracy", "0123456789abcdef"),
            JobRecord(metric_version="1", scalars={"top1": 0.5}, n={"top1": 2}, seconds=0.1, run_id="r"),
        )
        s.record_failure("c", "accuracy", None, "missing key \x1b[31mfc.weight\x1b[2J", "tb", "r")
    for argv in (["status"], ["results"]):
        r = bench([*argv, "--db", str(db)], tmp_path)
        assert r.returncode == 0 and "\x1b" not in r.stdout + r.stderr
    assert "\\x1b[31mfc.weight" in bench(["status", "--db", str(db)], tmp_path).stdout


# -- imports --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "why"),
    [
        ("../../../etc/passwd", "is not one a registry allows"),
        ("x" * 20000, "is not one a registry allows"),
        ("=cmd|' /C calc'!A0", "is not one a registry allows"),
        ("a\x1b[31mb", "is not one a registry allows"),
    ],
)
def test_bench_import_refuses_ids_the_registry_forbids(tmp_path, cell, why):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"model": [cell], "acc": ["0.5"]}).to_csv(csv, index=False)
    mapping = tmp_path / "m.toml"
    mapping.write_text('checkpoint = "model"\n[keys]\n"ood.id" = "acc"\n')
    db = tmp_path / "r.duckdb"
    r = bench(["import", str(csv), "--mapping", str(mapping), "--source", "paper", "--db", str(db)], tmp_path)
    assert r.returncode == 2 and why in r.stderr and "\x1b" not in r.stderr
    assert not db.exists()


def test_bench_import_refuses_an_unknown_looking_metric_name_and_a_non_utf8_mapping(tmp_path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"model": ["m1"], "acc": ["0.5"]}).to_csv(csv, index=False)
    mapping = tmp_path / "m.toml"
    mapping.write_text('checkpoint = "model"\n[keys]\n"evil.<script>x</script>" = "acc"\n')
    r = bench(
        ["import", str(csv), "--mapping", str(mapping), "--source", "p", "--db", str(tmp_path / "r")],
        tmp_path,
    )
    assert r.returncode == 2 and "'evil' is not an installed metric" in r.stderr
    mapping.write_bytes(b'checkpoint = "model\xff"\n')
    r = bench(
        ["import", str(csv), "--mapping", str(mapping), "--source", "p", "--db", str(tmp_path / "r")],
        tmp_path,
    )
    assert r.returncode == 2 and "not UTF-8" in r.stderr and "Traceback" not in r.stderr


def test_an_import_run_is_recorded_with_the_run_status_ok(tmp_path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"model": ["m1", "m2"], "acc": ["0.5", "0.7"]}).to_csv(csv, index=False)
    mapping = tmp_path / "m.toml"
    mapping.write_text('checkpoint = "model"\n[keys]\n"ood.id" = "acc"\n')
    db = tmp_path / "r.duckdb"
    r = bench(["import", str(csv), "--mapping", str(mapping), "--source", "paper", "--db", str(db)], tmp_path)
    assert r.returncode == 0, r.stderr
    with Store(db, read_only=True) as s:
        assert list(s.runs()["status"]) == ["ok"]


# -- run bookkeeping ------------------------------------------------------------------------------


def test_tags_edited_in_a_registry_reach_the_store_when_every_job_is_already_stored(tmp_path):
    reg = demo_registry(tmp_path, n=1)
    db = tmp_path / "r.duckdb"
    args = ["run", str(reg), "-m", "accuracy", "--db", str(db), "--cache-dir", str(tmp_path / "c")]
    assert bench(args, tmp_path).returncode == 0
    reg.write_text(reg.read_text().replace("tags = { seed = 0 }", 'tags = { seed = 0, category = "new" }'))
    r = bench(args, tmp_path)
    assert r.returncode == 0 and "Nothing to compute" in r.stdout
    with Store(db, read_only=True) as s:
        tags = json.loads(s.query("SELECT * FROM checkpoints").set_index("id").loc["tiny0", "tags"])
    assert tags == {"category": "new", "seed": 0}


def test_a_running_run_whose_pid_now_belongs_to_a_newer_process_is_interrupted(tmp_path):
    db = tmp_path / "r.duckdb"
    with Store(db) as s:
        old = s.start_run(argv=[], git_sha=None, versions={}, device="cpu")
        s.query(  # the same PID (this process), but the run began a day before this process did
            "UPDATE runs SET started_at = started_at - INTERVAL 1 DAY WHERE run_id = ?", [old]
        )
        mine = s.start_run(argv=[], git_sha=None, versions={}, device="cpu")
    with Store(db, read_only=True) as s:
        status = dict(zip(s.runs()["run_id"], s.runs()["status"], strict=True))
    assert status[old] == "interrupted" and status[mine] == "running"
    assert os.getpid() > 0


# -- downloads and registries ---------------------------------------------------------------------


def test_bench_lock_tries_every_entry_reports_each_failure_and_exits_non_zero(tmp_path, http_server):
    from biasbench.registry import lock
    from tests.harness_fixtures import DEMO_PREPROCESS, tiny_checkpoint

    tiny_checkpoint(tmp_path / "srv" / "w.pth", num_classes=10)
    url = http_server(tmp_path / "srv")
    reg = tmp_path / "reg" / "r.toml"
    reg.parent.mkdir()
    entries = [("gone1", "missing1.pth"), ("good", "w.pth"), ("gone2", "missing2.pth")]
    reg.write_text(
        "".join(
            f'[[checkpoint]]\nid = "{cid}"\narch = "timm:test_resnet"\nweights = "{url}/{f}"\n'
            f'labels = "demo-world"\n{DEMO_PREPROCESS}\n'
            for cid, f in entries
        )
    )
    r = bench(["lock", str(reg), "--cache-dir", str(tmp_path / "cache")], tmp_path)
    assert r.returncode == 1, r.stderr
    assert "failed: gone1" in r.stderr and "failed: gone2" in r.stderr
    assert "2 of 3 files could not be locked" in r.stderr
    assert [e.id for e in lock.read_lock(reg.with_suffix(".lock")).values()] == ["good"]


def test_an_unknown_dataset_lists_families_once_not_every_member(tmp_path, capsys, monkeypatch):
    code, _, err = _main(
        [
            "run",
            "demo",
            "-m",
            "accuracy",
            "-p",
            "accuracy.dataset=nosuch",
            "--db",
            str(tmp_path / "x.duckdb"),
        ],
        capsys,
        monkeypatch,
    )
    lines = [ln for ln in err.splitlines() if "unknown dataset 'nosuch'" in ln]
    assert code == 1 and lines
    assert "0 jobs to compute, 0 stored, 13 that cannot run (recorded as failures)" in err
    listed = lines[0].split("known: ", 1)[-1]
    assert "imagenet-c/…" in listed and "demo-world/…" in listed
    assert "imagenet-c/brightness" not in listed and len(listed.split(", ")) < 40


def test_the_zoos_dry_run_reads_in_under_40_lines_with_causes_and_dataset_volumes(tmp_path):
    r = bench(["run", "resnet50-zoo", "--dry-run", "--db", str(tmp_path / "z.duckdb")], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = (r.stdout + r.stderr).splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    assert any(ln.startswith("plan: 384 jobs (48 checkpoints × 8 metrics)") for ln in lines)
    assert any("error ×48: dataset 'edges' not found" in ln for ln in lines)
    assert any(ln.startswith("  dataset imagenet-c/… (95 members): absent") for ln in lines)
    assert any("dataset imagenet-r: absent, download ≈" in ln and "decoded cache ≈" in ln for ln in lines)
    verbose = bench(
        ["run", "resnet50-zoo", "--dry-run", "--verbose", "--db", str(tmp_path / "z.duckdb")], tmp_path
    )
    assert len(verbose.stdout.splitlines()) > 384  # the per-job table on request


class _Endless:
    """A server on 127.0.0.1 that sends ``total`` bytes with no Content-Length (HTTP/1.0, close)."""

    def __init__(self, total: int) -> None:
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                chunk = b"x" * 65536
                sent = 0
                try:
                    while sent < outer.total:
                        self.wfile.write(chunk)
                        sent += len(chunk)
                except OSError:
                    pass

        self.total = total
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/big.bin"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_download_larger_than_its_bound_is_stopped_and_leaves_no_partial_file(tmp_path, http_server):
    from biasbench.registry.download import TooLarge, fetch

    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "w.bin").write_bytes(b"y" * 3_000_000)
    url = http_server(tmp_path / "srv")
    dest = tmp_path / "dl" / "w.bin"
    with pytest.raises(TooLarge, match="announces 3,000,000 bytes"):  # refused before a byte is kept
        fetch(f"{url}/w.bin", dest, None, max_bytes=1_000_000)
    assert not dest.exists() and not list(dest.parent.glob("*.part"))
    endless = _Endless(8 << 20)
    try:
        with pytest.raises(TooLarge, match="sent more than the 2,097,152 bytes"):
            fetch(endless.url, dest, None, max_bytes=2 << 20)
    finally:
        endless.close()
    assert not dest.exists() and not list(dest.parent.glob("*.part"))
    assert fetch(f"{url}/w.bin", dest, None, max_bytes=3_000_000).stat().st_size == 3_000_000


def test_a_failed_download_names_a_partial_file_only_when_one_exists(tmp_path):
    from biasbench.registry.download import DownloadError, fetch

    with pytest.raises(DownloadError) as ex:
        fetch("http://127.0.0.1:9/none.bin", tmp_path / "none.bin", None, timeout=2)
    assert "kept for a resume" not in str(ex.value) and not list(tmp_path.glob("*.part"))


def test_a_full_disk_while_a_job_is_written_stops_the_run_and_records_no_job_failure(
    tmp_path, monkeypatch, one_thread
):
    import duckdb

    import biasbench
    from biasbench.harness.store import DiskFull

    reg = demo_registry(tmp_path, n=2)
    db = tmp_path / "r.duckdb"
    calls = []

    def full(self, key, items):
        calls.append(key)
        raise duckdb.IOException(
            'IO Error: {"exception_type":"IO","exception_message":"No space left on device"}'
        )

    monkeypatch.setattr(Store, "_write_items_tmp", full)
    with pytest.raises(DiskFull, match="the disk is full"):
        biasbench.run([str(reg)], ["accuracy"], db=db, cache_dir=tmp_path / "c")
    assert len(calls) == 1  # stopped at the first: the second checkpoint was not tried
    with Store(db, read_only=True) as s:
        assert s.failures().empty and s.results().empty
        assert list(s.runs()["status"]) == ["interrupted"]


def test_a_tag_with_control_characters_is_refused_by_the_registry_as_the_readme_says(tmp_path):
    reg = tmp_path / "ctl.toml"
    reg.write_text(
        '[[checkpoint]]\nid = "a"\narch = "timm:resnet18"\nweights = "/x/w.pth"\ntags = { note = "a\\u001b[2Jb" }\n'
    )
    r = bench(["ls", "checkpoints", str(reg)], tmp_path)
    assert r.returncode == 2 and "contains control characters" in r.stderr
    assert "\x1b" not in r.stdout + r.stderr


def test_torchvision_and_timm_downloads_stay_in_biasbench_cache_when_it_is_set(
    tmp_path, http_server, monkeypatch
):
    import hashlib

    from biasbench.registry import download

    srv = tmp_path / "srv"
    srv.mkdir()
    body = b"weights" * 1000
    name = f"net-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    (srv / name).write_bytes(body)
    base = http_server(srv)
    monkeypatch.setenv("BIASBENCH_CACHE", str(tmp_path / "ours"))
    got = download.download_url_to_hub_cache(f"{base}/{name}")
    assert got == tmp_path / "ours" / "weights" / "hub" / "checkpoints" / name and got.read_bytes() == body


def test_a_dry_run_estimates_times_from_another_databases_history_and_says_where_from(tmp_path):
    reg = demo_registry(tmp_path, n=1)
    hist = tmp_path / "history.duckdb"
    # history is kept per device and thread count: fix the threads (a load-based default can differ
    # between the run and the dry run)
    base = ["run", str(reg), "-m", "accuracy", "--cache-dir", str(tmp_path / "c"), "--threads", "1"]
    assert bench([*base, "--db", str(hist)], tmp_path).returncode == 0
    fresh = tmp_path / "fresh.duckdb"
    bare = bench([*base, "--dry-run", "--db", str(fresh)], tmp_path)
    assert (
        f"timing history: 0 stored job(s) of {fresh} (--db" in bare.stdout and "time unknown" in bare.stdout
    )
    told = bench([*base, "--dry-run", "--db", str(fresh), "--history", str(hist)], tmp_path)
    assert f"timing history: 1 stored job(s) of {hist} (--history)" in told.stdout
    assert "time unknown" not in told.stdout and "(from 1 stored job of timm:test_resnet)" in told.stdout
    missing = bench(
        [*base, "--dry-run", "--db", str(fresh), "--history", str(tmp_path / "none.duckdb")], tmp_path
    )
    assert missing.returncode == 2 and "--history: no results database" in missing.stderr
