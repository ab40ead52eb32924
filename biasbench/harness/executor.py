"""Execution: load each checkpoint once, run all its pending metrics, write each job atomically.

The model runs in channels_last memory format on every device (oneDNN's fast path on the CPU too:
1.2× for resnet18, 2× for efficientnet-lite0, 1.7× for the demo zoo measured on 2 cores) and in bf16
autocast on CUDA (inference_mode inside the metrics' ``ctx.predict``); the batch size halves on out-of-memory. A job that raises is recorded in
``failures`` with its error and traceback, and the run goes on; a checkpoint that fails to load fails
all its pending jobs. Datasets are loaded once per (name, preprocessing) and shared by all
checkpoints of the run.

The store is shared: another ``bench run`` may write to the same database meanwhile. A job that it
stored since this run planned is skipped (checked before each checkpoint loads, and again inside
the job's write transaction), so no job is computed into the database twice unless ``--force`` asked
for it. A database problem (:class:`~biasbench.harness.store.StoreError`: a lock held too long, a
file that cannot be written) is not a job failure: it ends the run with its message.
"""

from __future__ import annotations

import gc
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from biasbench.core import labels
from biasbench.core.images import ImageSet
from biasbench.harness.datasets import catalog
from biasbench.harness.plan import CheckpointPlan, PlannedJob, ResolvedDataset
from biasbench.harness.progress import RunUI
from biasbench.harness.store import JobKey, Store, StoreError
from biasbench.metrics.base import EvalContext, ModelWrapper
from biasbench.registry import loading
from biasbench.registry.spec import LoadedCheckpoint


@dataclass
class ExecOptions:
    data_root: Path
    cache_dir: Path
    device: torch.device
    batch_size: int = 64
    trust: bool = False
    seed: int = 0


@dataclass
class JobOutcome:
    checkpoint: str
    metric: str
    status: str  # done | failed | stored | n/a
    seconds: float = 0.0
    summary: str = ""


@dataclass
class RunSummary:
    outcomes: list[JobOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        return self.count("failed")


class DatasetCache:
    """ImageSets loaded once per (name, effective preprocessing) for the whole run."""

    def __init__(self, data_root: Path, cache_dir: Path) -> None:
        self.data_root, self.cache_dir = data_root, cache_dir
        self._sets: dict[tuple[str, Any], ImageSet] = {}

    def get(self, rd: ResolvedDataset) -> ImageSet:
        key = (rd.request.name, rd.preprocess)
        if key not in self._sets:
            entry = catalog.get(rd.request.name)
            self._sets[key] = entry.load(self.data_root, rd.preprocess, self.cache_dir)
        return self._sets[key]


def wrap_model(loaded: LoadedCheckpoint, device: torch.device) -> ModelWrapper:
    model = ModelWrapper(
        loaded.net,
        mean=loaded.preprocess.mean,
        std=loaded.preprocess.std,
        # the label space's class count (the logits are checked against it); a label space no plugin
        # declares: the checkpoint's own num_classes
        num_classes=labels.num_classes(loaded.label_space) or loaded.num_classes,
        label_space=loaded.label_space,
        checkpoint_id=loaded.spec.id,
    )
    model.eval().requires_grad_(False).to(device)
    return model.to(memory_format=torch.channels_last)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return f"{type(e).__name__}: {text}" if not isinstance(e, (RuntimeError, ValueError, OSError)) else text


def execute(
    plans: list[CheckpointPlan], opts: ExecOptions, store: Store, run_id: str, ui: RunUI
) -> RunSummary:
    summary = RunSummary()
    data = DatasetCache(opts.data_root, opts.cache_dir)
    # a todo job whose key is stored now is a forced recompute; one stored later came from another run
    known = store.stored_jobs()
    for cp in plans:
        for job in cp.jobs:
            if job.status in ("stored", "n/a"):
                summary.outcomes.append(
                    JobOutcome(cp.spec.id, job.metric.name, job.status, summary=job.reason)
                )
            elif job.status == "error":
                _fail(store, run_id, ui, summary, job, job.reason, job.trace)
        todo = _not_stored_meanwhile(cp.todo, known, store, ui, summary)
        if not todo:
            continue
        ui.print(f"[bold]{escape(cp.spec.id)}[/bold]: {escape(', '.join(j.metric.name for j in todo))}")
        try:
            loaded = loading.load_checkpoint(cp.spec, cache_dir=opts.cache_dir, trust=opts.trust)
            model = wrap_model(loaded, opts.device)
            store.upsert_checkpoint(
                {
                    **cp.spec.to_row(),
                    "weights_sha256": loaded.weights_sha256,
                    "identity": loaded.identity,
                    "preprocess": _json(loaded.preprocess.to_json()),
                }
            )
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - a checkpoint that cannot load fails its jobs only
            tb = traceback.format_exc()
            for job in todo:
                _fail(store, run_id, ui, summary, job, _first_line(e), tb)
            continue
        for job in todo:
            _run_job(job, model, data, opts, store, run_id, ui, summary, known)
        del model, loaded
        gc.collect()
        if opts.device.type == "cuda":
            torch.cuda.empty_cache()
    return summary


def _not_stored_meanwhile(
    todo: list[PlannedJob], known: set[JobKey], store: Store, ui: RunUI, summary: RunSummary
) -> list[PlannedJob]:
    """``todo`` less the jobs another run stored since this one started."""
    if not todo:
        return todo
    now = store.stored_jobs()
    keep = []
    for job in todo:
        if job.key is not None and job.key in now and job.key not in known:
            ui.print(
                f"  [dim]{escape(job.spec.id)} · {escape(job.metric.name)}: stored meanwhile by another "
                "run[/dim]"
            )
            summary.outcomes.append(
                JobOutcome(job.spec.id, job.metric.name, "stored", summary="stored meanwhile by another run")
            )
        else:
            keep.append(job)
    return keep


def _run_job(
    job: PlannedJob,
    model: ModelWrapper,
    data: DatasetCache,
    opts: ExecOptions,
    store: Store,
    run_id: str,
    ui: RunUI,
    summary: RunSummary,
    known: set[JobKey],
) -> None:
    assert job.key is not None
    tasks: list[Any] = []

    def task(description: str, total: int) -> Any:
        t = ui.task(f"  {job.spec.id} · {description}", total)
        tasks.append(t)
        return t

    ctx = EvalContext(
        device=opts.device,
        batch_size=opts.batch_size,
        amp_dtype=torch.bfloat16 if opts.device.type == "cuda" else None,
        channels_last=True,
        seed=opts.seed,
        task=task,
    )
    t0 = time.perf_counter()
    try:
        inputs = {role: data.get(rd) for role, rd in job.datasets.items()}
        result = job.metric.evaluate(model, inputs, ctx)
        result.validate(job.metric.name, job.metric.item_columns)
        seconds = time.perf_counter() - t0
        n = {k: result.n_for(k) for k in result.scalars}
        written = store.write_job(
            job.key,
            metric_version=job.metric.version,
            params=job.metric.params_json(),
            datasets={role: rd.describe() for role, rd in job.datasets.items()},
            scalars={k: float(v) for k, v in result.scalars.items()},
            n=n,
            items=result.items,
            flags=result.flags,
            seconds=seconds,
            run_id=run_id,
            timings={k: float(v) for k, v in result.timings.items()},
            if_absent=job.key not in known,  # a forced recompute replaces; otherwise another run's copy stays
        )
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - the run goes on; the failure is recorded
        _fail(store, run_id, ui, summary, job, _first_line(e), traceback.format_exc())
        return
    finally:
        for t in tasks:
            ui.finish_task(t)
    if not written:
        ui.print(
            f"  [dim]{escape(job.spec.id)} · {escape(job.metric.name)}: stored meanwhile by another run "
            "(its copy kept)[/dim]"
        )
        summary.outcomes.append(
            JobOutcome(job.spec.id, job.metric.name, "stored", seconds, "stored meanwhile by another run")
        )
        return
    keys = [k for k in job.metric.headline if k in result.scalars] or list(result.scalars)[:3]
    head = ", ".join(f"{k}={result.scalars[k]:.4g}" for k in keys)
    flags = f" [yellow]flags: {escape('; '.join(result.flags))}[/yellow]" if result.flags else ""
    ui.print(f"  [green]✓[/green] {escape(job.metric.name)} ({seconds:.1f}s) {escape(head)}{flags}")
    summary.outcomes.append(JobOutcome(job.spec.id, job.metric.name, "done", seconds, head))


def _fail(
    store: Store, run_id: str, ui: RunUI, summary: RunSummary, job: PlannedJob, error: str, tb: str
) -> None:
    store.record_failure(
        job.spec.id, job.metric.name, job.key.config_hash if job.key else None, error, tb, run_id
    )
    ui.print(f"  [red]✗[/red] {escape(job.spec.id)} · {escape(job.metric.name)}: {escape(error)}")
    summary.outcomes.append(JobOutcome(job.spec.id, job.metric.name, "failed", summary=error))


def _json(v: Any) -> str:
    import json

    return json.dumps(v, sort_keys=True)
