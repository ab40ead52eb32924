"""How worker processes start: forked from a server that imported torch while the run was planning.

A fresh Python process needs ~4.5 s of CPU on the 2-core development machine to import torch, and a
``spawn`` worker imports it after the run has planned: every worker run began ~4.4 s after its plan
(``bench run -m accuracy --workers 2`` on the demo, timestamped: plan ready at 5.5 s, first worker line
at 9.9 s). With the ``forkserver`` start method, one server process imports torch and the workers'
module (:data:`PRELOAD`) once, and each worker is a ``fork`` of it: ready at once. ``bench run`` starts
that server as it starts (:func:`warm`), so the server's import runs beside the run's own import of
torch and its planning, on another CPU, and the workers fork the moment the plan is ready. The server
never runs a torch operation, so no thread pool is copied into a fork; it exits when the run's process
does. Where ``forkserver`` does not exist (Windows), workers are spawned as before.

The server keeps the environment of the moment it started: ``bench run`` starts it after setting its
OpenMP variables (``cli.py``). It starts only where a CPU is free for it (the 1-minute load average),
and its CPU time is the run's own when the run counts the CPUs other processes leave free
(:class:`~biasbench.harness.environment.FreeCpus`), so it lowers neither the run's threads nor its
workers. A run whose plan turns out to need no worker leaves it idle until the run ends (one import of
torch on a spare CPU).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing.context import BaseContext

from biasbench.core.counts import auto_or_int, env_count, usable_cpus
from biasbench.core.errors import InputError

#: what the fork server imports before any worker forks from it: the workers' module (torch with it)
#: and timm, which builds most architectures (the demo's too: ~2.5 s of a worker's first job before)
PRELOAD = ["biasbench.harness.workers", "timm"]


def context() -> BaseContext:
    """The multiprocessing context of worker processes: ``forkserver`` (preloading :data:`PRELOAD`)
    where it exists, else ``spawn``."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm() -> bool:
    """Start the fork server now (it imports :data:`PRELOAD` meanwhile) when the machine has a CPU free
    for it: a 1-minute load average of at most the usable CPUs less one, since beside other load the
    run gets fewer threads and workers and the server's import would only slow the run's own. Nothing
    where workers spawn. Returns whether it started one."""
    if context().get_start_method() != "forkserver":
        return False
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    if busy > usable_cpus() - 1:
        return False
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True


def env_workers() -> int | None:
    """``$BIASBENCH_WORKERS`` as a whole number ≥ 1, or None when unset."""
    return env_count("BIASBENCH_WORKERS")


def parse_workers(value: str | int) -> int | str:
    """``--workers``: "auto" or a whole number ≥ 1."""
    n = auto_or_int(value)
    if n is None or (n != "auto" and int(n) < 1):
        raise InputError(f"--workers must be auto or a whole number ≥ 1, got {value!r}")
    return n


def may_fork_workers(requested: str | int, *, device: str, group: str | int, compile: bool) -> bool:
    """Whether a run asked for ``requested`` workers (``--workers``) may start worker processes, as
    far as its options tell before torch loads (the plan's size decides ``auto`` later): not with
    ``--workers 1``, ``$BIASBENCH_WORKERS=1`` under auto, a CUDA device, ``--group`` or ``--compile``."""
    if requested == "auto":
        if env_workers() == 1:
            return False
    elif int(requested) <= 1:
        return False
    return not device.startswith("cuda") and str(group) == "1" and not compile
