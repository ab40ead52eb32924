"""``bench run --workers N``: a run's checkpoints shared among N worker processes on this machine.

**Why.** On the CPU, one process's threads wait on each other at every layer of a small network, and
the demo's gradient work runs the demo net on 16–32 images at a time (BackSelect, PGD). Two processes
of one thread each do more work than one process of two threads: measured on the 2-core development
machine (``benchmarks/demo_floor.py``; the demo net, forward-equivalents per second, both cores in
use either way): batch-256 inference 1.2×, batch-32 forward+backward 1.7×, batch-16 2.2×; the whole
warm-cache demo 1.44× (180 s → 125 s), every stored value bit-identical.

**How.** The parent plans and records the run as the serial path does, then starts N processes
(forked from a server that imported torch meanwhile, :mod:`~biasbench.harness.process_start`; spawned
where that start method does not exist), each with ``threads // N`` CPU threads (at least 1). The checkpoints with work to do are cut
into *units*: a checkpoint, or an ensemble together with those of its members that the run computes,
in the plan's order (so its members' forwards are served to it, :mod:`~biasbench.harness.forward_memo`).
Units are handed out largest first by their estimated cost (pending jobs × network calls per
forward: an ensemble's members, an input-dropout wrapper's masks), each to the next free worker
through a shared counter. A worker runs its units with the serial executor
(:func:`~biasbench.harness.executor.execute`, one dataset cache and critical band's stimuli kept
across its units) and writes each job to the run's database itself, under the run's id, as a second
``bench run`` on the same database would: the store's lock, one transaction per job. The parent prints
the workers' lines as they come and counts finished checkpoints.

**Results** are the serial run's: the same jobs, images, batches and arithmetic; only the thread count
differs, which changes no stored demo value (``tests/test_workers.py`` compares a worker run with a
serial one, value for value).

**Failures.** A job that raises is recorded by its worker, as in the serial path. A database problem
in a worker ends the run with its message. A worker that dies (killed, out of memory) fails the jobs
of its unfinished unit that are not stored, with one message naming its exit code; the other workers
take the remaining units. A worker exits when the run's process is gone (checked twice a second), so a
killed ``bench run`` leaves no process behind, and, as in the serial path, only whole jobs.

**When.** ``--workers auto`` (``bench run``'s default): on the CPU, checkpoint-major (``--group 1``),
without ``--compile``, for a plan of at least :data:`MIN_AUTO_WORK` images × conditions: as many
workers as the run's CPU threads (the free CPUs), at most :data:`MAX_AUTO_WORKERS` and at most the
units, each with ``threads // workers`` threads;
``$BIASBENCH_WORKERS`` sets auto's number. The Python API's default is 1 (this process).
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console

from biasbench.core.errors import InputError
from biasbench.harness.executor import (
    ExecOptions,
    RunSummary,
    execute,
    fail_job,
    has_work,
    idle_outcomes,
    new_dataset_cache,
)
from biasbench.harness.heap import frozen_heap
from biasbench.harness.plan import CheckpointPlan
from biasbench.harness.process_start import context, env_workers, serial_only
from biasbench.harness.progress import RunUI
from biasbench.harness.status import PlanStatus
from biasbench.harness.store import Store, StoreError
from biasbench.registry.spec import CheckpointSpec
from biasbench.registry.wrappers import network_calls

#: ``--workers auto`` starts at most this many processes (each holds its own torch and datasets)
MAX_AUTO_WORKERS = 4
#: ``--workers auto`` stays in one process for a plan of fewer images × conditions: a worker's start
#: (Python, torch, timm in each process) costs ~4.5 s on the 2-core machine, and two workers save ~30 %
#: of the jobs' time there, so a plan needs ~15 s of jobs to break even. Measured: 2 demo checkpoints ×
#: every metric (57.8 k) took 28.7 s in 2 workers against 27.6 s in one process (the first job written
#: 8.3 s against 3.8 s after the run's start); the whole demo (~376 k) 136.8 s against 189.2 s
MIN_AUTO_WORK = 150_000
#: how often a worker checks that its parent is alive, and the parent that its workers are (seconds)
POLL_SECONDS = 0.5


def worker_count(
    requested: int | str, opts: ExecOptions, threads: int, units: int, work: float | None = None
) -> int:
    """How many worker processes run the plan (1: the serial path in this process). ``work``: the plan's
    images × conditions (:func:`plan_work`); ``auto`` stays in this process below :data:`MIN_AUTO_WORK`."""
    single = serial_only(opts.device.type, opts.group, opts.compile)
    if requested == "auto":
        if single or (work is not None and work < MIN_AUTO_WORK):
            return 1
        wanted = env_workers() or min(threads, MAX_AUTO_WORKERS)
        return max(1, min(wanted, units))
    n = int(requested)
    if n > 1 and single:
        raise InputError(
            f"--workers {n} runs checkpoints in processes on the CPU, one checkpoint at a time: it cannot "
            "go with a CUDA device, --group or --compile (use --workers 1)"
        )
    return max(1, min(n, units))


def planned_workers(
    requested: int | str, plans: list[CheckpointPlan], opts: ExecOptions, threads: int
) -> int:
    """:func:`worker_count` for ``plans`` (their units, and their work when ``requested`` is auto)."""
    units = len(units_of(plans))
    if not units:
        return 1
    return worker_count(
        requested, opts, threads, units, plan_work(plans, opts) if requested == "auto" else None
    )


def plan_work(plans: list[CheckpointPlan], opts: ExecOptions) -> float:
    """The plans' pending images × conditions, as ``--dry-run`` counts them (nothing is decoded)."""
    from biasbench.harness.estimate import History, estimate

    return estimate(plans, History(), "", opts.data_root, opts.cache_dir).units


def spec_cost(spec: CheckpointSpec) -> int:
    """Network calls per forward of ``spec``: its members' (an ensemble), times its wrappers'."""
    base = sum(spec_cost(m) for m in spec.members) if spec.members else 1
    for w in spec.wrap:
        base *= network_calls(w)
    return base


def units_of(plans: list[CheckpointPlan]) -> list[list[CheckpointPlan]]:
    """The plans with something to do, cut into units (a checkpoint, or an ensemble with the members
    the run computes, in plan order), largest estimated cost first."""
    busy = [cp for cp in plans if has_work(cp)]
    index = {cp.spec.id: i for i, cp in enumerate(busy)}
    parent = list(range(len(busy)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, cp in enumerate(busy):
        for m in cp.spec.members:
            if m.id in index:
                parent[root(index[m.id])] = root(i)
    groups: dict[int, list[CheckpointPlan]] = {}
    for i, cp in enumerate(busy):
        groups.setdefault(root(i), []).append(cp)

    def cost(unit: list[CheckpointPlan]) -> int:
        return sum(max(1, len(cp.todo)) * spec_cost(cp.spec) for cp in unit)

    return sorted(groups.values(), key=cost, reverse=True)  # stable: plan order among equals


class _Lines(io.TextIOBase):
    """A worker's console output, line by line to the parent."""

    def __init__(self, channel: Any, worker: int) -> None:
        self.channel, self.worker, self.buf = channel, worker, ""

    def write(self, text: str) -> int:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self.channel.put(("line", self.worker, line))
        return len(text)

    def flush(self) -> None:
        if self.buf:
            self.channel.put(("line", self.worker, self.buf))
            self.buf = ""


def _watch_parent(run_pid: int) -> None:
    """Exit this worker when the run's process is gone (a killed ``bench run`` leaves no process
    behind): when this process's parent changes (the run, or the fork server that exits with it) or
    the run's process no longer exists."""
    parent = os.getppid()
    while True:
        if os.getppid() != parent or not _alive(run_pid):
            os._exit(1)
        time.sleep(POLL_SECONDS)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: the PID was reused
        return False
    return True


def _worker(
    worker: int,
    units: list[list[CheckpointPlan]],
    next_unit: Any,
    assigned: Any,
    channel: Any,
    opts: ExecOptions,
    db: str,
    run_id: str,
    threads: int,
    run_pid: int,
) -> None:
    """A worker process: take the next unit until none is left; run it; report its outcomes."""
    threading.Thread(target=_watch_parent, args=(run_pid,), daemon=True).start()
    from biasbench.harness.environment import set_torch_threads
    from biasbench.metrics import stimulus_memo

    set_torch_threads(threads)
    lines = _Lines(channel, worker)
    console = Console(file=lines, width=200, force_terminal=False, no_color=True, highlight=False)
    store = Store(db)
    data = new_dataset_cache(opts)
    # forked from the server: its preloads are frozen there already (fork_server.py) and this leaves them;
    # spawned: the modules this worker imported are frozen here
    with frozen_heap():
        try:
            while True:
                with next_unit.get_lock():  # shared memory: the parent knows the unit even if this dies now
                    i = next_unit.value
                    next_unit.value += 1
                    assigned[worker] = i
                if i >= len(units):
                    break
                with RunUI(console, live=False) as ui:
                    summary = execute(units[i], opts, store, run_id, ui, data=data, forget_stimuli=False)
                lines.flush()
                channel.put(("done", worker, i, summary.outcomes))
        except StoreError as e:
            lines.flush()
            channel.put(("store-error", worker, str(e)))
        except KeyboardInterrupt:
            return
        finally:
            stimulus_memo.forget()
    channel.put(("exit", worker))


def execute_in_workers(
    plans: list[CheckpointPlan],
    opts: ExecOptions,
    store: Store,
    run_id: str,
    ui: RunUI,
    workers: int,
    threads: int,
) -> RunSummary:
    """Run the plans' pending jobs in ``workers`` processes of ``threads // workers`` threads each (the
    module docstring); the same outcomes as :func:`~biasbench.harness.executor.execute`."""
    summary = RunSummary()
    units = units_of(plans)
    summary.outcomes += idle_outcomes(plans, units)  # nothing to compute: said here
    each = max(1, threads // workers)
    ui.print(f"  [dim]{workers} worker processes, {each} thread(s) each[/dim]")
    ctx = context()  # forked from the server that ``bench run`` started as it started
    next_unit = ctx.Value("i", 0)
    assigned = ctx.Array("i", [-1] * workers)  # each worker's current unit
    channel = ctx.Queue()
    worker_opts = replace(opts, adaptive_threads=False)
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                w,
                units,
                next_unit,
                assigned,
                channel,
                worker_opts,
                str(store.path),
                run_id,
                each,
                os.getpid(),
            ),
            name=f"biasbench-worker-{w}",
            daemon=True,
        )
        for w in range(workers)
    ]
    state = _Progress(ui, summary, units, ui.task("checkpoints", sum(len(u) for u in units)))
    try:
        for p in procs:
            p.start()
        while len(state.finished) < len(procs):
            try:
                msg = channel.get(timeout=POLL_SECONDS)
            except queue.Empty:
                for w, p in enumerate(procs):
                    if w not in state.finished and not p.is_alive():
                        state.drain(channel)
                        if w not in state.finished:  # died without saying goodbye
                            state.finished.add(w)
                            i = assigned[w]
                            if 0 <= i < len(units) and i not in state.done:
                                _fail_unit(store, run_id, ui, summary, units[i], p.exitcode)
                continue
            state.handle(msg)
        for i in range(next_unit.value, len(units)):  # every worker died before taking these
            _fail_unit(store, run_id, ui, summary, units[i], None, why="no worker process was left to run it")
    except BaseException:
        for p in procs:
            if p.is_alive():
                p.terminate()
        raise
    finally:
        ui.finish_task(state.bar)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    order = {cp.spec.id: i for i, cp in enumerate(plans)}  # the summary in plan order, as the serial path's
    summary.outcomes.sort(key=lambda o: order.get(o.checkpoint, len(order)))
    return summary


@dataclass
class _Progress:
    """What the parent knows of its workers: the units done, the workers that ended, the outcomes."""

    ui: RunUI
    summary: RunSummary
    units: list[list[CheckpointPlan]]
    bar: Any
    done: set[int] = field(default_factory=set)  # units reported finished
    finished: set[int] = field(default_factory=set)  # workers that said goodbye or died

    def handle(self, msg: tuple[Any, ...]) -> None:
        kind, worker = msg[0], msg[1]
        if kind == "line":  # each line tagged with its worker: the workers' lines interleave
            self.ui.print(f"[{worker + 1}] {msg[2]}", markup=False, highlight=False)
        elif kind == "done":
            self.summary.outcomes += msg[3]
            self.done.add(msg[2])
            self.bar.advance(len(self.units[msg[2]]))
        elif kind == "store-error":
            raise StoreError(msg[2])
        elif kind == "exit":
            self.finished.add(worker)

    def drain(self, channel: Any) -> None:
        """Whatever a worker that has ended still had in the queue."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.handle(channel.get(timeout=0.2))


def _fail_unit(
    store: Store,
    run_id: str,
    ui: RunUI,
    summary: RunSummary,
    unit: list[CheckpointPlan],
    exitcode: int | None,
    why: str | None = None,
) -> None:
    """Record the jobs of a unit that a dead worker left unfinished (those not stored) as failures."""
    error = why or f"the worker process running it died (exit code {exitcode})"
    stored = store.stored_jobs()
    for cp in unit:
        for job in cp.jobs:
            if job.status in (PlanStatus.TODO, PlanStatus.ERROR) and job.key not in stored:
                fail_job(store, run_id, ui, summary, job, error, "")
