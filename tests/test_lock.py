"""Pins and lock files: an unpinned URL is refused until `bench lock` (or `--allow-unpinned`) records its
sha256; a later mismatch is refused; the shipped ResNet-50 zoo lists and plans without network."""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path

import duckdb
import pytest

from biasbench.harness.plan import PlanOptions, plan
from biasbench.metrics.discovery import all_metrics
from biasbench.registry import lock, sources
from biasbench.registry.registry_files import RegistryError, load_registry_file, resolve_targets
from tests.harness_fixtures import DEMO_PREPROCESS, bench, tiny_checkpoint

ACC = ["-m", "accuracy", "-p", "accuracy.dataset=demo-world/test"]


@pytest.fixture()
def env(tmp_path):
    empty = tmp_path / "empty-data-root"
    empty.mkdir()
    return {"BIASBENCH_CACHE": str(tmp_path / "cache"), "BIASBENCH_DATA": str(empty)}


@pytest.fixture()
def served(tmp_path, http_server):
    """A tiny demo-world checkpoint served over HTTP from 127.0.0.1, and a registry naming its URL
    without a sha256; returns (registry, served file)."""
    w = tiny_checkpoint(tmp_path / "srv" / "w.pth", num_classes=10)
    url = http_server(tmp_path / "srv")
    reg = tmp_path / "reg" / "r.toml"
    reg.parent.mkdir()
    reg.write_text(
        f'[[checkpoint]]\nid = "t"\narch = "timm:test_resnet"\nweights = "{url}/w.pth"\n'
        f'labels = "demo-world"\n{DEMO_PREPROCESS}'
    )
    return reg, w


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def test_an_unpinned_url_with_no_lock_is_refused_naming_bench_lock_and_allow_unpinned(served, tmp_path, env):
    reg, _ = served
    r = bench(["run", str(reg), *ACC, "--db", str(tmp_path / "b.duckdb")], tmp_path, env)
    assert r.returncode == 2
    assert f"`bench lock {reg}`" in r.stderr and "--allow-unpinned" in r.stderr
    assert not reg.with_suffix(".lock").exists()
    assert not (tmp_path / "cache" / "weights").exists()  # nothing was downloaded


def test_allow_unpinned_records_the_observed_hash_in_the_lock_and_the_store(served, tmp_path, env):
    reg, w = served
    db = tmp_path / "b.duckdb"
    r = bench(["run", str(reg), *ACC, "--allow-unpinned", "--db", str(db)], tmp_path, env)
    assert r.returncode == 0, r.stderr
    [entry] = lock.read_lock(reg.with_suffix(".lock")).values()
    assert (entry.id, entry.part, entry.sha256, entry.size) == ("t", 1, _sha(w), w.stat().st_size)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT id, weights_sha256 FROM checkpoints").fetchall() == [("t", _sha(w))]
    again = bench(["run", str(reg), *ACC, "--db", str(db)], tmp_path, env)  # the lock pins it now
    assert again.returncode == 0 and "Nothing to compute" in again.stdout


def test_a_flipped_byte_after_locking_is_refused_even_with_allow_unpinned(served, tmp_path, env):
    reg, w = served
    out = bench(["lock", str(reg)], tmp_path, env)
    assert out.returncode == 0, out.stderr
    assert f"t part 1: sha256 {_sha(w)}" in out.stdout
    locked = _sha(w)
    _flip(w)  # the server now serves other bytes
    for cached in (tmp_path / "cache" / "weights").rglob("w.pth"):
        _flip(cached)  # and the cached copy rotted too
    db = tmp_path / "b.duckdb"
    r = bench(["run", str(reg), *ACC, "--allow-unpinned", "--db", str(db)], tmp_path, env)
    assert r.returncode == 1
    with duckdb.connect(str(db), read_only=True) as con:
        [(error,)] = con.execute("SELECT error FROM failures").fetchall()
    assert "sha256 mismatch" in error and locked in error
    assert lock.read_lock(reg.with_suffix(".lock"))[("t", 1)].sha256 == locked  # the lock is not rewritten


def test_bench_lock_downloads_each_unpinned_file_once(served, tmp_path, env):
    reg, _ = served
    assert bench(["lock", str(reg)], tmp_path, env).returncode == 0
    second = bench(["lock", str(reg)], tmp_path, env)
    assert second.returncode == 0 and "0 files to lock" in second.stderr and second.stdout.strip() == ""


def test_a_file_whose_name_carries_another_hash_prefix_is_not_locked(tmp_path, http_server):
    srv = tmp_path / "srv"
    srv.mkdir()
    (srv / "w-deadbeef.pth").write_bytes(b"not the file its name promises")
    reg = tmp_path / "p.toml"
    reg.write_text(
        f'[[checkpoint]]\nid = "p"\narch = "timm:x"\nweights = "{http_server(srv)}/w-deadbeef.pth"\n'
    )
    _, missing = lock.apply_locks(load_registry_file(reg))
    with pytest.raises(RegistryError, match=r"does not start with the prefix deadbeef in its file name"):
        lock.lock_files(missing, tmp_path / "cache")
    assert not reg.with_suffix(".lock").exists()


def test_each_part_of_a_multi_file_checkpoint_is_locked_and_a_changed_source_unpins_it(tmp_path, http_server):
    srv = tmp_path / "srv"
    srv.mkdir()
    (srv / "a.pth").write_bytes(b"backbone")
    (srv / "b.pth").write_bytes(b"head")
    url = http_server(srv)
    reg = tmp_path / "m.toml"
    reg.write_text(
        f'[[checkpoint]]\nid = "m"\narch = "timm:test_resnet"\n'
        f'weights = [{{ source = "{url}/a.pth" }}, {{ source = "{url}/b.pth", adapter = "strip-prefix:x." }}]\n'
    )
    specs = load_registry_file(reg)
    assert lock.pin_status(specs[0]) == "UNPINNED+UNPINNED"
    _, missing = lock.apply_locks(specs)
    lock.lock_files(missing, tmp_path / "cache")
    entries = lock.read_lock(reg.with_suffix(".lock"))
    assert {k: e.sha256 for k, e in entries.items()} == {
        ("m", 1): hashlib.sha256(b"backbone").hexdigest(),
        ("m", 2): hashlib.sha256(b"head").hexdigest(),
    }
    pinned, missing = lock.apply_locks(specs)
    assert missing == [] and [p.sha256 for p in pinned[0].parts] == [e.sha256 for e in entries.values()]
    assert lock.pin_status(specs[0]) == "locked+locked"
    reg.write_text(reg.read_text().replace("b.pth", "c.pth"))  # the registry now names another head
    _, missing = lock.apply_locks(load_registry_file(reg))
    assert [(u.spec.id, u.part) for u in missing] == [("m", 2)]


def test_a_shipped_registry_is_locked_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = resolve_targets(["resnet50-zoo"])[0]
    assert lock.lock_path(spec.registry) == tmp_path / "resnet50-zoo.lock"
    assert lock.lock_path(tmp_path / "x" / "r.toml") == tmp_path / "x" / "r.lock"


@pytest.fixture()
def no_network(monkeypatch):
    """Any connection to a host other than 127.0.0.1 fails the test."""
    real = socket.socket.connect

    def guarded(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access to {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def test_ls_checkpoints_groups_the_zoo_into_its_7_categories_with_pin_status(tmp_path, no_network):
    r = bench(["ls", "checkpoints", "resnet50-zoo"], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "resnet50-zoo: 48 checkpoints in 7 categories"
    groups = dict(m.groups() for line in lines if (m := re.fullmatch(r"(\w+) \((\d+)\)", line.strip())))
    assert groups == {
        "baseline": "1",
        "training_recipes": "10",
        "adversarial_training": "15",
        "stylized": "3",
        "augmentation": "12",
        "freezing": "1",
        "contrastive": "6",
    }
    heads = [
        line.split() for line in lines[1:] if line and not line.startswith(" ") and len(line.split()) >= 4
    ]
    status = {h[0]: " ".join(h[3:]) for h in heads}
    assert len(status) == 48
    assert status["tv_resnet50"] == "hash prefix" and status["resnet50.a1_in1k"] == "hub"
    assert status["robust_resnet50_l2_eps3"] == "UNPINNED" and status["resnet50_swav"] == "UNPINNED+UNPINNED"
    assert sum(s.startswith("UNPINNED") for s in status.values()) == 37


def test_dry_run_of_the_zoo_plans_48_times_the_metrics_without_fetching(
    tmp_path, env, no_network, monkeypatch
):
    fetched = []
    real = sources.resolve_weights
    monkeypatch.setattr(sources, "resolve_weights", lambda *a, **k: fetched.append(a) or real(*a, **k))
    r = bench(["run", "resnet50-zoo", "--dry-run", "--db", str(tmp_path / "b.duckdb")], tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert "weight file(s) of 37 checkpoint(s) are not pinned" in r.stderr  # said, not refused
    specs = resolve_targets(["resnet50-zoo"])
    metrics = [cls() for cls in all_metrics().values()]
    opts = PlanOptions(tmp_path / "empty-data-root", tmp_path / "cache", dry_run=True)
    plans = plan(specs, metrics, opts, set())
    assert len(plans) == 48 and all(len(cp.jobs) == len(metrics) for cp in plans)
    assert all(cp.error is None for cp in plans)
    assert fetched == []
