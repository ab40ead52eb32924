"""Thread and batch defaults of a run: threads from the CPUs other processes leave free, one inter-op
thread, OpenMP waiting passively under ``bench``, and a batch size chosen for the input size."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from biasbench.core.errors import InputError
from biasbench.harness import environment
from biasbench.harness.environment import default_threads, free_between, threads_for
from biasbench.harness.executor import auto_batch_size
from tests.conftest import missing_prerequisite


def test_threads_follow_the_whole_cpus_that_are_free():
    assert threads_for(2.0, 2) == 2  # a quiet 2-core machine: both
    assert threads_for(1.8, 2) == 2  # 3/4 of a CPU free counts as one
    assert threads_for(1.5, 2) == 1  # a busy loop on one core: the other only
    assert threads_for(0.0, 2) == 1  # fully loaded: one, never none
    assert threads_for(7.9, 4) == 4  # never more than the usable CPUs


def test_free_cpus_are_the_idle_share_plus_this_process_own_cpu_time():
    # 2 CPUs over 1 s: 100 of 200 jiffies idle (one CPU's worth) and 0.5 s of our own CPU time
    assert free_between((0, 0), (100, 200), own_cpu=0.5, seconds=1.0, n_cpus=2) == pytest.approx(1.5)
    # nothing idle, another process took the rest: only what we used ourselves
    assert free_between((50, 100), (50, 300), own_cpu=0.25, seconds=1.0, n_cpus=2) == pytest.approx(0.25)
    # bounded by the CPU count
    assert free_between((0, 0), (200, 200), own_cpu=1.0, seconds=1.0, n_cpus=2) == 2.0


def test_a_child_process_cpu_time_is_this_process_own_not_other_load():
    """The fork server of a run's workers imports torch while the run counts its free CPUs: its CPU
    time (any live child's) is read from /proc and counted as the run's own."""
    if not os.path.exists("/proc/self/stat"):
        missing_prerequisite("the children's CPU time is read from /proc (Linux)")
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ninput()"
    child = subprocess.Popen([sys.executable, "-c", busy], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while environment._children_cpu().get(child.pid, 0.0) < 0.6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert environment._children_cpu()[child.pid] >= 0.6  # the child's burnt CPU, counted
    finally:
        child.communicate(b"\n", timeout=30)
    assert child.pid not in environment._children_cpu()  # gone: os.times() counts it from now on


def test_biasbench_threads_overrides_the_measurement(monkeypatch):
    monkeypatch.setenv("BIASBENCH_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("BIASBENCH_THREADS", "zero")
    with pytest.raises(InputError, match="BIASBENCH_THREADS"):
        default_threads()


def test_default_threads_take_every_usable_cpu_when_all_are_free(monkeypatch):
    monkeypatch.delenv("BIASBENCH_THREADS", raising=False)
    monkeypatch.setattr(environment, "usable_cpus", lambda: 4)
    monkeypatch.setattr(environment.FreeCpus, "sample", lambda self: 4.0)
    assert default_threads(probe=0.01) == 4
    monkeypatch.setattr(environment.FreeCpus, "sample", lambda self: 1.1)
    assert default_threads(probe=0.01) == 1


def test_the_batch_size_follows_the_image_size():
    assert auto_batch_size((32, 32)) == 256  # the demo world
    assert auto_batch_size((64, 64)) == 64
    assert auto_batch_size((224, 224)) == 64  # ImageNet: the former fixed default
    assert auto_batch_size((8, 8)) == 256  # never above 256


def test_bench_bounds_openmps_spin_before_torch_loads():
    # OpenMP reads the variables when torch's library loads: importing the CLI sets them, loads no torch
    code = (
        "import os, sys, biasbench.cli; "
        "print(os.environ['GOMP_SPINCOUNT'], os.environ['KMP_BLOCKTIME'], 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["10000", "1", "False"]
    # explicit settings win
    env.update(GOMP_SPINCOUNT="0", KMP_BLOCKTIME="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0", "False"]
