"""`bench run --executor ray`: the jobs of a run as Ray tasks on a cluster, the driver the only writer.

The driver plans as the serial path does and submits one Ray task per checkpoint plan (per ``--group K``
checkpoints of one preprocessing when K > 1). A task runs the ordinary serial executor
(:func:`biasbench.harness.executor.execute`) into a private scratch database in a fresh temporary
folder on its worker and returns that database file and its per-item Parquet files as bytes; workers
never open the user's database. The driver takes results as they finish (``ray.wait``), writes each
returned shard to a temporary folder and merges it with :meth:`Store.merge` — one transaction per
shard, idempotent by (checkpoint, metric, config_hash), so a job is never written twice, even when a
retried task's first attempt got further than it seemed. A job's exception is a recorded failure (the
``failures`` rows arrive with the shard), not a retry (``retry_exceptions=False``); a worker that dies
(node lost, OOM-killed) has its task retried up to ``max_retries`` times, and ``runs.retries`` counts
those repeats (a small actor hands each attempt its number). Ctrl-C on the driver cancels the
outstanding tasks; what was merged before is whole jobs only.

Test hook: when ``$BIASBENCH_RAY_TEST_STALL`` (read by the driver) names a file that does not exist,
the first task to start creates it, writes its worker's PID there and sleeps (5 minutes) — for a test
to kill that worker mid-task.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from biasbench.core.errors import StateError
from biasbench.harness import grouping
from biasbench.harness.executor import ExecOptions, RunSummary, execute, fail_job, has_work, idle_outcomes
from biasbench.harness.plan import CheckpointPlan
from biasbench.harness.progress import RunUI
from biasbench.harness.status import PlanStatus
from biasbench.harness.store import Store

RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install 'biasbench[ray]'"
STALL_ENV = "BIASBENCH_RAY_TEST_STALL"
#: the longest the driver waits in one ``ray.wait`` call (Ctrl-C is handled between calls)
WAIT_SECONDS = 0.5
SHARD = "shard.duckdb"


@dataclass
class RayOptions:
    #: ``ray.init`` address: "auto" (a cluster started on this machine with ``ray start``), HOST:PORT,
    #: ray://HOST:PORT; None: $RAY_ADDRESS, else a local one-machine cluster for this run
    address: str | None = None
    gpus_per_task: float = 0.0
    max_retries: int = 2


def import_ray() -> Any:
    """The ``ray`` module, or a RuntimeError naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise StateError(RAY_MISSING) from e
    return ray


class _Attempts:
    """Ray actor: the attempt number of each task (1 on the first run, 2 on the first retry …)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def next(self, task: str) -> int:
        self.seen[task] = self.seen.get(task, 0) + 1
        return self.seen[task]

    def count(self, task: str) -> int:
        return self.seen.get(task, 0)


def _worker_device(device: torch.device, gpus: float) -> torch.device:
    """The worker's device: CUDA when the task holds GPUs (Ray sets CUDA_VISIBLE_DEVICES), the driver's
    choice otherwise, the CPU when that is CUDA and this node has none."""
    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return device


def run_task(
    plans: list[CheckpointPlan], opts: ExecOptions, run_id: str, gpus: float, attempts: Any, stall: str | None
) -> dict[str, Any]:
    """A Ray task's body (on a worker): the serial executor into a scratch store; returns its files
    (path relative to the scratch folder → bytes), the job outcomes, the log and the attempt number."""
    import ray

    attempt = ray.get(attempts.next.remote(plans[0].spec.id))
    if stall and attempt == 1:  # test hook: the first task to get here stalls, to be killed
        try:
            with open(stall, "x") as f:
                f.write(str(os.getpid()))
        except FileExistsError:
            pass
        else:
            time.sleep(300)
    log = io.StringIO()
    console = Console(file=log, width=200, force_terminal=False, no_color=True, highlight=False)
    with tempfile.TemporaryDirectory(prefix="biasbench-ray-") as tmp:
        with RunUI(console, live=False) as ui:
            summary = execute(
                plans,
                replace(opts, device=_worker_device(opts.device, gpus)),
                Store(Path(tmp) / SHARD),
                run_id,
                ui,
            )
        files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
    return {"files": files, "outcomes": summary.outcomes, "log": log.getvalue(), "attempt": attempt}


def _chunks(plans: list[CheckpointPlan], group: int | str) -> list[list[CheckpointPlan]]:
    """The plans with something to do (todo or error jobs), one per task, or ``group`` checkpoints of
    one preprocessing per task."""
    busy = [cp for cp in plans if has_work(cp)]
    if not isinstance(group, int) or group <= 1:
        return [[cp] for cp in busy]
    out: list[list[CheckpointPlan]] = []
    for bucket in grouping.preprocess_buckets(busy):
        out += [bucket[i : i + group] for i in range(0, len(bucket), group)]
    return out


def execute_on_ray(
    plans: list[CheckpointPlan], opts: ExecOptions, store: Store, run_id: str, ui: RunUI, ray_opts: RayOptions
) -> RunSummary:
    """Run the plans' pending jobs as Ray tasks, merging each task's shard into ``store`` as it
    finishes. Connects to ``ray_opts.address`` unless this process already holds a Ray connection."""
    ray = import_ray()
    summary = RunSummary()
    chunks = _chunks(plans, opts.group)
    summary.outcomes += idle_outcomes(plans, chunks)  # nothing to compute: said here
    started = not ray.is_initialized()
    if started:
        ray.init(address=ray_opts.address, include_dashboard=False, log_to_driver=False)
    retries = 0
    try:
        attempts = ray.remote(num_cpus=0)(_Attempts).remote()
        task = ray.remote(run_task).options(
            num_cpus=1,
            num_gpus=ray_opts.gpus_per_task,
            max_retries=ray_opts.max_retries,
            retry_exceptions=False,
        )
        stall = os.environ.get(STALL_ENV) or None
        refs = {task.remote(c, opts, run_id, ray_opts.gpus_per_task, attempts, stall): c for c in chunks}
        ui.print(f"{len(refs)} Ray task(s) on {_describe_cluster(ray)}", markup=False)
        bar = ui.task("Ray tasks", len(refs))
        pending = list(refs)
        try:
            while pending:
                # a bounded wait: a Ctrl-C is handled between two calls, not after the next task ends
                done, pending = ray.wait(pending, num_returns=1, timeout=WAIT_SECONDS)
                for ref in done:
                    retries += _consume(ray, ref, refs[ref], attempts, store, run_id, ui, summary)
                    bar.advance()
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            ui.print(f"cancelled {len(pending)} outstanding Ray task(s)", markup=False)
            raise
        finally:
            ui.finish_task(bar)
            store.record_retries(run_id, retries)
    finally:
        if started:
            ray.shutdown()
    return summary


def _describe_cluster(ray: Any) -> str:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    gpus = f", {res['GPU']:g} GPU(s)" if res.get("GPU") else ""
    return f"{len(nodes)} node(s), {res.get('CPU', 0):g} CPU(s){gpus}"


def _consume(
    ray: Any,
    ref: Any,
    chunk: list[CheckpointPlan],
    attempts: Any,
    store: Store,
    run_id: str,
    ui: RunUI,
    summary: RunSummary,
) -> int:
    """Merge a finished task's shard into ``store`` and report its jobs; a task that failed as a whole
    (its worker died more often than retried, an error outside the executor) fails its jobs. Returns
    the task's retries."""
    try:
        out = ray.get(ref)
    except Exception as e:  # noqa: BLE001 - the task's jobs fail; the run goes on
        error = f"Ray task failed: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        tb = traceback.format_exc()
        for cp in chunk:
            for job in cp.jobs:
                if job.status in (PlanStatus.TODO, PlanStatus.ERROR):
                    fail_job(store, run_id, ui, summary, job, error, tb)
        return max(0, ray.get(attempts.count.remote(chunk[0].spec.id)) - 1)
    with tempfile.TemporaryDirectory(prefix="biasbench-shard-") as tmp:
        for rel, data in out["files"].items():
            path = Path(tmp) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        store.merge(Path(tmp) / SHARD)
    for line in out["log"].splitlines():
        ui.print(line, markup=False, highlight=False)
    summary.outcomes += out["outcomes"]
    retried = int(out["attempt"]) - 1
    if retried:
        ui.print(f"  (task of {chunk[0].spec.id} retried {retried}× after its worker died)", markup=False)
    return retried
