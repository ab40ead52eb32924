"""How worker processes start: forked from a server that imported their modules while the run planned.

A fresh Python process on the 2-core development machine needs ~4 s of CPU to import torch, ~3.5 s
more for timm (torchvision, sympy, …) and ~1.5 s for the metrics (scipy). ``spawn`` workers did all
of that after the run had planned, each on its own: on a slice of the demo (2 checkpoints × every
metric, warm cache, ``bench run --workers 2``, timestamped) the plan was ready at 7.4 s and the first
job ended at ~16 s. With the ``forkserver`` start method one server process imports :func:`preload`
once, and each worker is a ``fork`` of it. ``bench run`` starts that server as it starts
(:func:`warm`), so its imports run beside the run's own import of torch and its planning, on another
CPU: the same slice's first job ended at 12.8 s (13.5 s with timm alone preloaded, 15.0 s with only the
workers' module). The server never runs a torch operation, so no thread pool is copied into a fork; it
exits when the run's process does. Where ``forkserver`` does not exist (Windows), workers are spawned.

The server keeps the environment of the moment it started: ``bench run`` starts it after setting its
OpenMP variables (``cli.py``). Its CPU time is the run's own when the run counts the CPUs that other
processes leave free (:class:`~biasbench.harness.environment.FreeCpus`), so it lowers neither the run's
threads nor its workers. A run whose plan turns out to need no worker (a small plan, a busy machine)
leaves it idle until the run ends: its imports ran on a spare CPU, or beside other load.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.context import BaseContext

from biasbench.core.counts import auto_or_int, env_count
from biasbench.core.errors import InputError

#: the entry-point group of metric plugins (``biasbench.metrics.discovery.GROUP``)
METRICS_GROUP = "biasbench.metrics"


def preload() -> list[str]:
    """What the fork server imports before any worker forks from it: the workers' module (torch with
    it), timm (it builds most architectures, the demo's too) and biasbench's own metric plugins (scipy
    with some): a worker imported timm and the metrics itself before (~3.5 s and ~1.5 s of CPU here).
    Third-party plugins are left to the workers: one that fails to import must fail its own jobs, not
    the server. Last, :mod:`~biasbench.harness.fork_server`, which makes the server exit at once when
    the run has ended."""
    from biasbench.core.plugins import declared_modules

    own = [m for m in declared_modules(METRICS_GROUP) if m.startswith("biasbench.")]
    return ["biasbench.harness.workers", "timm", *own, "biasbench.harness.fork_server"]


def context() -> BaseContext:
    """The multiprocessing context of worker processes: ``forkserver`` (preloading :func:`preload`)
    where it exists, else ``spawn``."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload())
    return ctx


def warm() -> bool:
    """Start the fork server now (it imports :func:`preload` meanwhile); nothing where workers spawn.
    Returns whether it started one."""
    if context().get_start_method() != "forkserver":
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


def serial_only(device: str, group: str | int, compile: bool) -> bool:
    """Whether a run's options keep it in one process: a CUDA device (``device``: a device type or
    ``--device``'s text), ``--group`` other than 1, or ``--compile``."""
    return device.startswith("cuda") or str(group) != "1" or compile


def may_fork_workers(requested: str | int, *, device: str, group: str | int, compile: bool) -> bool:
    """Whether a run asked for ``requested`` workers (``--workers``) may start worker processes, as
    far as its options tell before torch loads (the plan's size decides ``auto`` later): not with
    ``--workers 1``, ``$BIASBENCH_WORKERS=1`` under auto, a CUDA device, ``--group`` or ``--compile``."""
    if requested == "auto":
        if env_workers() == 1:
            return False
    elif int(requested) <= 1:
        return False
    return not serial_only(device, group, compile)
