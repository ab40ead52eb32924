"""One error hierarchy: every exception class of biasbench derives from BiasbenchError, and `bench`
ends each with one ``error:`` line and the exit code its class names — no traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import biasbench
from biasbench.core.errors import BiasbenchError, InputError, StateError, WorkFailed
from tests.harness_fixtures import bench, bench_subprocess


def _our_exception_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(biasbench.__path__, "biasbench."):
        mod = importlib.import_module(info.name)  # an import error here is a failure, not a skip
        for obj in vars(mod).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found.append(obj)
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


CLASSES = _our_exception_classes()


def _make(cls: type[BaseException], message: str) -> BaseException:
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    extra = [{} for p in params if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    return cls(message, *extra)


def test_every_exception_class_of_the_package_derives_from_biasbench_error():
    assert len(CLASSES) >= 25  # the walk found the package's classes (StoreError, PluginError, …)
    strays = [f"{c.__module__}.{c.__qualname__}" for c in CLASSES if not issubclass(c, BiasbenchError)]
    assert strays == []


def test_the_families_keep_the_builtin_exception_they_refine():
    """``except ValueError`` around our code keeps working: input errors are ValueErrors, states
    RuntimeErrors; a failed part of the work exits 1, everything else 2."""
    assert issubclass(InputError, ValueError) and issubclass(StateError, RuntimeError)
    assert {c.exit_code for c in CLASSES} <= {1, 2}
    assert WorkFailed.exit_code == 1 and BiasbenchError.exit_code == 2


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__qualname__)
def test_each_error_class_ends_a_command_with_its_exit_code_and_one_line(cls, tmp_path, monkeypatch):
    from biasbench.harness import session

    message = f"boom from {cls.__qualname__} [/x] \x1b[2J"

    def fail(*_a, **_k):
        raise _make(cls, message)

    monkeypatch.setattr(session, "resolve", fail)
    r = bench(["run", "--dry-run", "--db", str(tmp_path / "b.duckdb")], tmp_path)
    assert r.returncode == cls.exit_code
    assert r.stderr.strip() == f"error: boom from {cls.__qualname__} [/x] \\x1b[2J"
    assert "Traceback" not in r.stdout + r.stderr


def test_the_real_entry_point_ends_a_missing_database_in_one_line_and_exit_2(tmp_path):
    r = bench_subprocess(["results", "--db", str(tmp_path / "none.duckdb")], tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: no results database at") and "Traceback" not in r.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_a_read_only_store_on_a_missing_file_raises_our_error(tmp_path):
    from biasbench.harness.store import Store, StoreError, StoreMissing

    with pytest.raises(StoreMissing, match="no results database") as e:
        Store(tmp_path / "none.duckdb", read_only=True)
    assert isinstance(e.value, StoreError) and isinstance(e.value, BiasbenchError)


def test_a_run_finishes_only_with_a_run_status(tmp_path):
    from biasbench.harness.status import RunStatus
    from biasbench.harness.store import Store

    with Store(tmp_path / "b.duckdb") as s:
        run = s.start_run(argv=[], git_sha=None, versions={}, device="cpu")
        with pytest.raises(ValueError, match="'done' is not a valid RunStatus"):
            s.finish_run(run, "done")  # an outcome, not a run status
        with pytest.raises(InputError, match="not running"):
            s.finish_run(run, RunStatus.RUNNING)
        s.finish_run(run, RunStatus.OK)
        assert s.runs()["status"].tolist() == ["ok"]
