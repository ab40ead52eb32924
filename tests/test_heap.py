"""The garbage collector around a run (biasbench/harness/heap.py): a run's execution and a worker
see the objects alive at their start frozen, a notebook's heap is unfrozen again afterwards, a process
that freezes its heap itself is left alone, and `bench` freezes everything as it returns (the
interpreter's last collection then walks nothing)."""

from __future__ import annotations

import gc
import sys

import pytest

import biasbench
from biasbench import cli
from biasbench.harness import executor
from biasbench.harness.heap import frozen_heap


@pytest.fixture(autouse=True)
def _unfrozen():
    """Each test starts and ends with nothing frozen (the pytest process is shared)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _collectable(obj: object) -> bool:
    """Whether ``obj`` is in one of the collector's generations (the frozen ones are in none)."""
    return any(o is obj for o in gc.get_objects())


def test_the_block_sees_the_objects_alive_at_its_start_frozen_and_nothing_after():
    before = {"a": []}  # a container object, tracked by the collector
    assert gc.get_freeze_count() == 0 and _collectable(before)
    with frozen_heap():
        assert gc.get_freeze_count() > 0 and not _collectable(before)
        made_inside = {"b": []}
        assert _collectable(made_inside)  # what the block allocates stays collectable
    assert gc.get_freeze_count() == 0 and _collectable(before)


def test_a_process_that_freezes_its_heap_itself_is_left_alone():
    gc.freeze()
    mine = gc.get_freeze_count()
    with frozen_heap():
        pass
    assert gc.get_freeze_count() == mine  # not unfrozen, not frozen again


def test_a_run_executes_with_the_heap_frozen_and_unfreezes_after(tmp_path, monkeypatch):
    seen = []
    real = executor.execute

    def spy(*args, **kwargs):
        seen.append(gc.get_freeze_count())
        return real(*args, **kwargs)

    monkeypatch.setattr(executor, "execute", spy)  # session imports it at the call
    summary = biasbench.run(
        ["demo"],
        ["accuracy"],
        db=tmp_path / "b.duckdb",
        where=["recipe=plain"],
        threads=1,
        data_root=tmp_path / "data",
        cache_dir=tmp_path / "cache",
    )
    assert summary.failed == 0 and len(seen) == 1 and seen[0] > 0
    assert gc.get_freeze_count() == 0


def test_bench_freezes_every_object_as_it_returns(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench", "--help"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 0 and "bench run" in capsys.readouterr().out
    assert gc.get_freeze_count() > 0
