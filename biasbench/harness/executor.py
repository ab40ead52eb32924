"""Execution: load each checkpoint once, run all its pending metrics, write each job atomically.

The batch size, unless ``--batch-size`` sets it, follows the input size (:func:`auto_batch_size`: 256 for
the demo world's 32-px images; 64 from 64 px up, as before). The model runs in channels_last memory format on every device (oneDNN's fast path on the CPU too:
1.2× for resnet18, 2× for efficientnet-lite0, 1.7× for the demo zoo measured on 2 cores) and in bf16
autocast on CUDA (inference_mode inside the metrics' ``ctx.predict``), with ``--compile`` its
inference forwards through ``torch.compile`` (:mod:`biasbench.harness.compiling`); the batch size
halves on out-of-memory. A job that raises is recorded in ``failures`` with its error and traceback,
and the run goes on; a checkpoint that fails to load fails all its pending jobs. Datasets are loaded
once per (name, preprocessing) and shared by all checkpoints of the run.

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
from biasbench.core.errors import StateError
from biasbench.core.images import ImageSet
from biasbench.core.streaming import LoadOptions
from biasbench.harness import grouping
from biasbench.harness.datasets import catalog
from biasbench.harness.environment import FreeCpus, threads_for, usable_cpus
from biasbench.harness.estimate import IMAGES_X_CONDITIONS
from biasbench.harness.forward_memo import SHARED_FORWARDS, ForwardMemo, shared_member_ids
from biasbench.harness.plan import CheckpointPlan, PlannedJob, ResolvedDataset
from biasbench.harness.progress import RunUI
from biasbench.harness.status import Outcome, PlanStatus
from biasbench.harness.store import JobKey, JobRecord, Store, StoreError, disk_full, is_space_error
from biasbench.metrics import stimulus_memo
from biasbench.metrics.base import EvalContext, MetricResult, ModelWrapper
from biasbench.registry import loading
from biasbench.registry.spec import LoadedCheckpoint

#: ``jobs.timings`` keys the harness adds: the job's images × conditions (what ``--dry-run`` estimates
#: from), and its group size
GROUP_SIZE = "run.group_size"
#: ``jobs.timings`` key: the CPU threads the job's model ran with (``torch.get_num_threads()``)
THREADS = "run.threads"
#: ``jobs.timings`` key: 1 when the job's model ran its inference forwards compiled (``--compile``), else 0
COMPILED = "run.compiled"


@dataclass
class ExecOptions:
    data_root: Path
    cache_dir: Path
    device: torch.device
    #: images per forward; None: :func:`auto_batch_size` for each job's images (256 at the demo's 32 px)
    batch_size: int | None = None
    trust: bool = False
    seed: int = 0
    #: checkpoints per group (dataset-major execution, ``--group``): 1 = checkpoint-major, or "auto"
    group: int | str = 1
    #: decoded-dataset cache budget in bytes (``--cache-budget``); None: the default
    cache_budget: int | None = None
    #: the models' inference forwards through ``torch.compile`` (``--compile``); an execution option,
    #: like the batch size: not part of a job's content key
    compile: bool = False
    #: re-choose the CPU threads before each checkpoint from the CPUs other processes leave free
    #: (:class:`~biasbench.harness.environment.FreeCpus`); off when ``--threads`` or
    #: ``$BIASBENCH_THREADS`` fixes them, and on CUDA
    adaptive_threads: bool = False


@dataclass
class JobOutcome:
    checkpoint: str
    metric: str
    status: Outcome
    seconds: float = 0.0
    summary: str = ""


@dataclass
class RunSummary:
    outcomes: list[JobOutcome] = field(default_factory=list)

    def count(self, status: Outcome) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        return self.count(Outcome.FAILED)


class DatasetCache:
    """ImageSets loaded once per (name, effective preprocessing) for the whole run."""

    def __init__(self, data_root: Path, cache_dir: Path, options: LoadOptions | None = None) -> None:
        self.data_root, self.cache_dir, self.options = data_root, cache_dir, options or LoadOptions()
        self._sets: dict[tuple[str, Any], ImageSet] = {}

    def get(self, rd: ResolvedDataset) -> ImageSet:
        key = (rd.request.name, rd.preprocess)
        if key not in self._sets:
            entry = catalog.get(rd.request.name)
            self._sets[key] = entry.load_set(self.data_root, rd.preprocess, self.cache_dir, self.options)
        return self._sets[key]


def has_work(cp: CheckpointPlan) -> bool:
    """Whether a plan has jobs to compute or to record as failures (todo or error jobs)."""
    return bool(cp.todo) or any(j.status == PlanStatus.ERROR for j in cp.jobs)


def idle_outcomes(plans: list[CheckpointPlan], busy: list[list[CheckpointPlan]]) -> list[JobOutcome]:
    """The job outcomes of the plans not in ``busy`` (nothing to compute), as :func:`execute` says them:
    for an executor that hands the busy ones elsewhere (Ray tasks, worker processes)."""
    handed = {id(cp) for chunk in busy for cp in chunk}
    return [
        JobOutcome(cp.spec.id, j.metric.name, j.status, summary=j.reason)
        for cp in plans
        if id(cp) not in handed
        for j in cp.jobs
    ]


def new_dataset_cache(opts: ExecOptions) -> DatasetCache:
    return DatasetCache(opts.data_root, opts.cache_dir, LoadOptions(cache_budget=opts.cache_budget))


def wrap_model(loaded: LoadedCheckpoint, device: torch.device, compile: bool = False) -> ModelWrapper:
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
    model = model.to(memory_format=torch.channels_last)
    if compile:
        from biasbench.harness.compiling import compile_model

        compile_model(model)
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return f"{type(e).__name__}: {text}" if not isinstance(e, (RuntimeError, ValueError, OSError)) else text


def execute(
    plans: list[CheckpointPlan],
    opts: ExecOptions,
    store: Store,
    run_id: str,
    ui: RunUI,
    *,
    data: DatasetCache | None = None,
    forget_stimuli: bool = True,
) -> RunSummary:
    """Run the plans' pending jobs, writing each to ``store``. ``data``: datasets already loaded by an
    earlier call (a worker's next checkpoints); ``forget_stimuli=False`` keeps critical band's last
    stimuli for the next call."""
    summary = RunSummary()
    if data is None:
        data = new_dataset_cache(opts)
    # a todo job whose key is stored now is a forced recompute; one stored later came from another run
    known = store.stored_jobs()
    env = _Env(opts, data, store, run_id, ui, summary, known)
    if opts.device.type == "cpu" and not opts.compile:  # an ensemble's members reuse their own forwards
        env.shared = shared_member_ids([cp.spec for cp in plans if cp.todo])
        env.memo = ForwardMemo() if env.shared else None
    if opts.compile:  # before anything loads: one message when torch.compile cannot work here
        from biasbench.harness.compiling import check_available

        check_available(opts.device)
    # the modules and plan loaded so far live for the whole run: later collections need not scan them
    gc.freeze()
    try:
        if opts.group == 1:  # checkpoint-major: load one, run all its jobs, free it
            for cp in plans:
                member = _load_member(cp, env)
                if member is not None:
                    _adapt_threads(env)
                    _run_group([member], env)
                    _release([member], opts.device)
            return summary
        for bucket in grouping.preprocess_buckets(plans):  # dataset-major: K with one preprocessing
            k = None if opts.group == "auto" else int(opts.group)
            group: list[_Member] = []
            for cp in bucket:
                member = _load_member(cp, env)
                if member is None:
                    continue
                if k is None:
                    crop = cp.preprocess.crop if cp.preprocess is not None else 224
                    bs = opts.batch_size or auto_batch_size((crop, crop))
                    k = grouping.auto_group_size(opts.device, member.model, bs, (3, crop, crop))
                    ui.print(f"  [dim]--group auto: {k} checkpoint(s) per group[/dim]")
                group.append(member)
                if len(group) >= k:
                    _adapt_threads(env)
                    _run_group(group, env)
                    _release(group, opts.device)
                    group = []
            if group:
                _adapt_threads(env)
                _run_group(group, env)
                _release(group, opts.device)
    finally:
        gc.unfreeze()
        if forget_stimuli:
            stimulus_memo.forget()  # the run's last stimuli (up to 256 MB, on the device) go with it
    return summary


@dataclass
class _Env:
    """What every job of a run shares."""

    opts: ExecOptions
    data: DatasetCache
    store: Store
    run_id: str
    ui: RunUI
    summary: RunSummary
    known: set[JobKey]
    cpus: FreeCpus | None = None
    #: outputs of ensemble members' own forwards, served to the ensemble (None: no ensemble shares a
    #: member with the run, or not on the CPU); ``shared``: the checkpoints that record theirs
    memo: ForwardMemo | None = None
    shared: set[str] = field(default_factory=set)


def _adapt_threads(env: _Env) -> None:
    """With ``adaptive_threads``: the CPU threads for the next checkpoint from the CPUs that were free
    since the last one (:func:`~biasbench.harness.environment.threads_for`)."""
    if not env.opts.adaptive_threads or env.opts.device.type != "cpu":
        return
    if env.cpus is None:  # the first checkpoint: the run's start already chose (default_threads)
        env.cpus = FreeCpus()
        return
    n = threads_for(env.cpus.sample(), usable_cpus())
    if n != torch.get_num_threads():
        torch.set_num_threads(n)


@dataclass
class _Member:
    """A loaded checkpoint and its pending jobs."""

    plan: CheckpointPlan
    model: ModelWrapper
    todo: list[PlannedJob]


def _load_member(cp: CheckpointPlan, env: _Env) -> _Member | None:
    """Record the plan's stored / n/a / error jobs, load the checkpoint when it has jobs to do. A
    checkpoint that fails to load fails its own jobs only (``None``)."""
    store, ui, summary = env.store, env.ui, env.summary
    for job in cp.jobs:
        if job.status in (PlanStatus.STORED, PlanStatus.NOT_APPLICABLE):
            summary.outcomes.append(JobOutcome(cp.spec.id, job.metric.name, job.status, summary=job.reason))
        elif job.status == PlanStatus.ERROR:
            fail_job(store, env.run_id, ui, summary, job, job.reason, job.trace)
    todo = _not_stored_meanwhile(cp.todo, env.known, store, ui, summary)
    if not todo:
        return None
    ui.print(f"[bold]{escape(cp.spec.id)}[/bold]: {escape(', '.join(j.metric.name for j in todo))}")
    try:
        loaded = loading.load_checkpoint(cp.spec, cache_dir=env.opts.cache_dir, trust=env.opts.trust)
        model = wrap_model(loaded, env.opts.device, env.opts.compile)
        if env.memo is not None:
            env.memo.attach(loaded, model, record=cp.spec.id in env.shared)
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
        if is_space_error(e):  # not this job's failure: no job can be written now
            raise disk_full(e) from e
        tb = traceback.format_exc()
        for job in todo:
            fail_job(store, env.run_id, ui, summary, job, _first_line(e), tb)
        return None
    return _Member(cp, model, todo)


#: released models of this many bytes (parameters and buffers) or more are collected at once; smaller
#: ones are left to Python's collector (a full collection took ~0.1 s after each demo checkpoint)
COLLECT_BYTES = 64 * 2**20


def _release(members: list[_Member], device: torch.device) -> None:
    size = sum(
        t.numel() * t.element_size() for m in members for t in (*m.model.parameters(), *m.model.buffers())
    )
    for m in members:
        del m.model
    members.clear()
    if device.type == "cuda" or size >= COLLECT_BYTES:
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _run_group(members: list[_Member], env: _Env) -> None:
    """Every pending job of the loaded ``members``: the jobs of one metric on the same datasets run
    together through ``evaluate_group`` when the metric shares batches, one by one otherwise."""
    units: dict[tuple[int, str], list[tuple[_Member, PlannedJob]]] = {}
    for m in members:
        for job in m.todo:
            inputs = _json({role: rd.describe() for role, rd in job.datasets.items()})
            units.setdefault((id(job.metric), inputs), []).append((m, job))
    for pairs in units.values():
        metric = pairs[0][1].metric
        if len(pairs) > 1 and metric.shares_batches:
            _run_shared(pairs, env)
        else:
            for m, job in pairs:
                _run_job(job, m.model, env)


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
                JobOutcome(
                    job.spec.id, job.metric.name, Outcome.STORED, summary="stored meanwhile by another run"
                )
            )
        else:
            keep.append(job)
    return keep


#: images × pixels per batch that :func:`auto_batch_size` aims at (256 images of 32 × 32)
AUTO_BATCH_PIXELS = 256 * 32 * 32
AUTO_BATCH_MIN, AUTO_BATCH_MAX = 64, 256


def auto_batch_size(side: tuple[int, int]) -> int:
    """The batch size for (H, W) images when ``--batch-size`` is not given: the power of two nearest
    below :data:`AUTO_BATCH_PIXELS` / (H·W), within 64 … 256 — 256 at 32 px (the demo net's best batch
    with 2 threads on a quiet 2-core machine: ~3,100 img/s against 1,600–2,350 at batch 64, issue 26;
    with 1 thread the rate is flat from 64 to 256 within the noise), 64 from 64 px up (the former fixed
    default, so ImageNet runs are unchanged)."""
    h, w = side
    fit = max(1, AUTO_BATCH_PIXELS // max(1, h * w))
    return max(AUTO_BATCH_MIN, min(AUTO_BATCH_MAX, 1 << (fit.bit_length() - 1)))


def job_batch_size(opts: ExecOptions, inputs: dict[str, ImageSet]) -> int:
    """``--batch-size`` when given, else :func:`auto_batch_size` of the job's largest images."""
    if opts.batch_size:
        return opts.batch_size
    sides = [tuple(ds.images.shape[-2:]) for ds in inputs.values() if len(ds.images.shape) == 4]
    return auto_batch_size(max(sides, key=lambda s: s[0] * s[1])) if sides else AUTO_BATCH_MIN


def _context(label: str, env: _Env) -> tuple[EvalContext, list[Any]]:
    tasks: list[Any] = []

    def task(description: str, total: int) -> Any:
        t = env.ui.task(f"  {label} · {description}", total)
        tasks.append(t)
        return t

    ctx = EvalContext(
        device=env.opts.device,
        batch_size=env.opts.batch_size or AUTO_BATCH_MIN,  # set per job from its images (job_batch_size)
        amp_dtype=torch.bfloat16 if env.opts.device.type == "cuda" else None,
        channels_last=True,
        seed=env.opts.seed,
        task=task,
    )
    return ctx, tasks


def _run_job(job: PlannedJob, model: ModelWrapper, env: _Env) -> None:
    assert job.key is not None
    if env.memo is not None:  # count only this job's served forwards
        env.memo.take_served()
    ctx, tasks = _context(job.spec.id, env)
    t0 = time.perf_counter()
    try:
        inputs = {role: env.data.get(rd) for role, rd in job.datasets.items()}
        ctx.batch_size = job_batch_size(env.opts, inputs)
        result = job.metric.evaluate(model, inputs, ctx)
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - the run goes on; the failure is recorded
        if is_space_error(e):  # not this job's failure: no job can be written now
            raise disk_full(e) from e
        fail_job(env.store, env.run_id, env.ui, env.summary, job, _first_line(e), traceback.format_exc())
        return
    finally:
        for t in tasks:
            env.ui.finish_task(t)
    shared = env.memo.take_served() if env.memo is not None else 0
    _finish(
        job, result, time.perf_counter() - t0, work_units(job, inputs), 1, env, _ran_compiled(model), shared
    )


def _run_shared(pairs: list[tuple[_Member, PlannedJob]], env: _Env) -> None:
    """One metric's jobs for several loaded checkpoints on the same datasets, each decoded batch shared
    (``Metric.evaluate_group``). A model's exception fails its own job; an exception of the group's
    evaluation as a whole reruns the jobs one by one, so every failure is recorded against its job."""
    metric = pairs[0][1].metric
    ctx, tasks = _context(f"group of {len(pairs)}", env)
    t0 = time.perf_counter()
    try:
        inputs = {role: env.data.get(rd) for role, rd in pairs[0][1].datasets.items()}
        ctx.batch_size = job_batch_size(env.opts, inputs)
        results = metric.evaluate_group([m.model for m, _ in pairs], inputs, ctx)
        if len(results) != len(pairs):
            raise StateError(
                f"{metric.name}.evaluate_group returned {len(results)} results for {len(pairs)} models"
            )
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - not one model's failure: each job on its own
        if is_space_error(e):
            raise disk_full(e) from e
        for m, job in pairs:
            _run_job(job, m.model, env)
        return
    finally:
        for t in tasks:
            env.ui.finish_task(t)
    seconds = (time.perf_counter() - t0) / len(pairs)  # the group's wall time, shared evenly
    if env.memo is not None:  # the group's served forwards are not told apart by job
        env.memo.take_served()
    units = work_units(pairs[0][1], inputs)
    for (m, job), res in zip(pairs, results, strict=True):
        if isinstance(res, BaseException):
            tb = "".join(traceback.format_exception(res))
            fail_job(env.store, env.run_id, env.ui, env.summary, job, _first_line(res), tb)
        else:
            _finish(job, res, seconds, units, len(pairs), env, _ran_compiled(m.model))


def work_units(job: PlannedJob, inputs: dict[str, ImageSet]) -> float:
    """Images × conditions of a job: the metric's :meth:`~biasbench.metrics.base.Metric.work` summed
    over its dataset roles (an OOD set, a corruption cell)."""
    space = job.spec.labels
    return float(sum(job.metric.work(role, len(ds), space) for role, ds in inputs.items()))


def _ran_compiled(model: ModelWrapper) -> bool:
    """The model has a compiled inference forward (``--compile``) that did not fall back to eager
    (:func:`biasbench.harness.compiling.is_compiled`, imported only when compile is on)."""
    if model.compiled_net is None:
        return False
    from biasbench.harness.compiling import is_compiled

    return is_compiled(model)


def _finish(
    job: PlannedJob,
    result: MetricResult,
    seconds: float,
    units: float,
    group: int,
    env: _Env,
    compiled: bool = False,
    shared: int = 0,
) -> None:
    """Validate and store a job's result (``jobs.timings`` gains its images × conditions, group size
    and whether it ran compiled, what ``bench run --dry-run`` estimates from), print its line."""
    assert job.key is not None
    store, ui, summary = env.store, env.ui, env.summary
    try:
        result.validate(job.metric.name, job.metric.item_columns)
        n = {k: result.n_for(k) for k in result.scalars}
        timings = {k: float(v) for k, v in result.timings.items()}
        timings.setdefault(IMAGES_X_CONDITIONS, units)  # the metric's own count when it shared work
        timings.update({GROUP_SIZE: float(group), COMPILED: float(compiled)})
        timings[THREADS] = float(torch.get_num_threads())
        if shared:
            timings[SHARED_FORWARDS] = float(shared)
        record = JobRecord(
            metric_version=job.metric.version,
            params=job.metric.params_json(),
            datasets={role: rd.describe() for role, rd in job.datasets.items()},
            scalars={k: float(v) for k, v in result.scalars.items()},
            n=n,
            items=result.items,
            flags=result.flags,
            seconds=seconds,
            run_id=env.run_id,
            timings=timings,
        )
        written = store.write_job(
            job.key,
            record,
            if_absent=job.key
            not in env.known,  # a forced recompute replaces; otherwise another run's copy stays
        )
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - the run goes on; the failure is recorded
        if is_space_error(e):  # not this job's failure: no job can be written now
            raise disk_full(e) from e
        fail_job(store, env.run_id, ui, summary, job, _first_line(e), traceback.format_exc())
        return
    if not written:
        ui.print(
            f"  [dim]{escape(job.spec.id)} · {escape(job.metric.name)}: stored meanwhile by another run "
            "(its copy kept)[/dim]"
        )
        summary.outcomes.append(
            JobOutcome(
                job.spec.id, job.metric.name, Outcome.STORED, seconds, "stored meanwhile by another run"
            )
        )
        return
    keys = [k for k in job.metric.headline if k in result.scalars] or list(result.scalars)[:3]
    head = ", ".join(f"{k}={result.scalars[k]:.4g}" for k in keys)
    flags = f" [yellow]flags: {escape('; '.join(result.flags))}[/yellow]" if result.flags else ""
    who = f"{escape(job.spec.id)} · " if group > 1 else ""
    ui.print(f"  [green]✓[/green] {who}{escape(job.metric.name)} ({seconds:.1f}s) {escape(head)}{flags}")
    summary.outcomes.append(JobOutcome(job.spec.id, job.metric.name, Outcome.DONE, seconds, head))


def fail_job(
    store: Store, run_id: str, ui: RunUI, summary: RunSummary, job: PlannedJob, error: str, tb: str
) -> None:
    """Record ``job`` as failed with ``error`` (and traceback ``tb``), say so, and count it."""
    store.record_failure(
        job.spec.id, job.metric.name, job.key.config_hash if job.key else None, error, tb, run_id
    )
    ui.print(f"  [red]✗[/red] {escape(job.spec.id)} · {escape(job.metric.name)}: {escape(error)}")
    summary.outcomes.append(JobOutcome(job.spec.id, job.metric.name, Outcome.FAILED, summary=error))


def _json(v: Any) -> str:
    import json

    return json.dumps(v, sort_keys=True)
