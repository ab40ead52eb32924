"""The Python API: one run's lifecycle, used by ``bench run`` and by a notebook alike.

``run(targets, metrics, params, db=…)`` does what ``bench run`` does — resolve the targets, filter by
``where``, pin unpinned weights from the lock files, plan against the store, start a recorded run,
execute, finish the run — so the two store identical rows (same plan, content keys, resume, failures
table). ``evaluate(model, …)`` benchmarks a ``torch.nn.Module`` that exists only in this process
(:mod:`biasbench.registry.in_memory`: its identity is the sha256 of its state dict in sorted key
order, plus its preprocessing). ``results(db)`` reads the long table back.

The layer sits between the CLI and the harness: ``cli → harness.session → harness.plan / executor /
store → metrics / registry``. It raises our errors (:class:`RunInputError`, ``StoreError``,
``CheckpointError``, ``PluginError``, ``ParamError``) and prints nothing unless ``progress=True``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from biasbench.core.errors import InputError, UnknownNameError
from biasbench.core.paths import default_cache_dir, default_data_root
from biasbench.core.preprocess import Preprocess
from biasbench.harness.executor import ExecOptions, RunSummary
from biasbench.harness.heap import frozen_heap
from biasbench.harness.plan import CheckpointPlan, PlanOptions, plan
from biasbench.harness.status import PlanStatus, RunStatus
from biasbench.harness.store import Store, StoreError

__all__ = [
    "Results",
    "RunInputError",
    "RunOptions",
    "StoreStatus",
    "evaluate",
    "merge",
    "record_import",
    "results",
    "run",
    "status",
]

DEFAULT_DB = "bench.duckdb"


class RunInputError(InputError):
    """A run's inputs are wrong (a metric parameter, a metric list, no checkpoint): nothing ran."""


@dataclass(frozen=True)
class RunOptions:
    """Everything about a run besides its targets, metrics and parameters (``bench run``'s options)."""

    data_root: Path | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    batch_size: int | None = None  # None: chosen per job from the input size (executor.auto_batch_size)
    force: bool = False
    trust_checkpoints: bool = False
    seed: int = 0
    where: tuple[str, ...] = ()
    allow_unpinned: bool = False
    lock_file: Path | None = None
    threads: int | None = None
    group: int | str = 1
    cache_budget: int | None = None
    compile: bool = False
    #: worker processes (:mod:`biasbench.harness.workers`): a number, or "auto" (``bench run``'s default);
    #: 1 runs every job in this process
    workers: int | str = 1

    @property
    def root(self) -> Path:
        return Path(self.data_root) if self.data_root is not None else default_data_root()

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()


@dataclass
class Results:
    """What a run stored for its checkpoints: the long table (checkpoint, metric, key, value, n — the
    columns of ``bench results --format csv``) and the run's job outcomes."""

    frame: pd.DataFrame
    summary: RunSummary | None = None
    db: Path | None = None

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def value(self, metric: str, key: str, checkpoint: str | None = None) -> float:
        """One stored scalar (``checkpoint`` may be left out when there is one)."""
        f = self.frame[(self.frame["metric"] == metric) & (self.frame["key"] == key)]
        if checkpoint is not None:
            f = f[f["checkpoint"] == checkpoint]
        if len(f) != 1:
            raise UnknownNameError(
                f"{len(f)} stored values for {metric}.{key}" + (f" of {checkpoint}" if checkpoint else "")
            )
        return float(f["value"].iloc[0])


def parse_params(items: Sequence[str], flag: str = "--param") -> dict[str, dict[str, Any]]:
    """``METRIC.KEY=VALUE`` strings (values parsed as JSON, else kept as strings) by metric."""
    import json

    params: dict[str, dict[str, Any]] = {}
    for item in items:
        name, eq, value = item.partition("=")
        metric, dot, key = name.partition(".")
        if not (metric and key and dot and eq):
            raise RunInputError(f"{flag} {item!r}: expected METRIC.KEY=VALUE, e.g. sis.n_images=16")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        params.setdefault(metric, {})[key] = parsed
    return params


def build_metrics(names: Sequence[str] | None, params: Mapping[str, Mapping[str, Any]] | None) -> list[Any]:
    """The metrics of a run with their parameters, checked now (a bad parameter is an error before any
    checkpoint is resolved): ``names`` None = every installed metric."""
    from biasbench.metrics.discovery import all_metrics, load_metric

    params = params or {}
    if names is not None and not list(names):
        raise RunInputError("--metrics names no metric")
    classes = [load_metric(n) for n in names] if names else list(all_metrics().values())
    unknown = set(params) - {c.name for c in classes}
    if unknown:
        raise RunInputError(f"--param for metrics not in this run: {', '.join(sorted(unknown))}")
    return [cls(**dict(params.get(cls.name, {}))) for cls in classes]


def resolve(targets: Sequence[str] | None, where: Sequence[str] = ()) -> list[Any]:
    """Checkpoint specs of the targets (none: the demo registry), filtered by ``where`` tags."""
    from biasbench.registry.registry_files import resolve_targets
    from biasbench.registry.select import parse_where, select

    targets = list(targets) if targets else ["demo"]
    specs = resolve_targets(targets)
    if not specs:
        raise RunInputError(f"no checkpoints in {', '.join(targets)}: nothing to benchmark")
    return select(specs, parse_where(list(where))) if where else specs


def pin(
    specs: list[Any],
    opts: RunOptions,
    *,
    dry_run: bool = False,
    note: Callable[[str], None] = lambda _m: None,
) -> list[Any]:
    """Pin unpinned weights from the registries' lock files. Still unpinned: refused (naming `bench
    lock` and --allow-unpinned), or with ``allow_unpinned`` downloaded now and recorded in the lock. A
    dry run fetches nothing and only says (``note``) how many are unpinned."""
    from biasbench.registry import lock

    specs, missing = lock.apply_locks(specs, opts.lock_file)
    if not missing:
        return specs
    if dry_run:
        note(f"note: {lock.refusal(missing)}")
        return specs
    if not opts.allow_unpinned:
        raise RunInputError(lock.refusal(missing))
    lock.lock_files(
        missing,
        opts.cache,
        lambda e, f: note(f"locked {e.id} part {e.part}: sha256 {e.sha256} ({e.size} bytes) in {f}"),
    )
    return lock.apply_locks(specs, opts.lock_file)[0]


def plan_jobs(store: Store, specs: list[Any], metrics: list[Any], opts: RunOptions, *, dry_run: bool = False):
    """The plan of ``specs`` × ``metrics`` against what ``store`` holds; a real run also refreshes the
    stored tags of the checkpoints (a registry's edited tags reach the store even when nothing runs)."""
    plans = plan(
        specs,
        metrics,
        PlanOptions(opts.root, opts.cache, opts.trust_checkpoints, opts.force, opts.seed, dry_run),
        store.stored_jobs(),
    )
    if not dry_run:
        store.update_tags({s.id: s.to_row()["tags"] for s in specs})
    return plans


def exec_options(opts: RunOptions, device: Any) -> ExecOptions:
    from biasbench.harness.environment import env_threads

    return ExecOptions(
        opts.root,
        opts.cache,
        device,
        opts.batch_size,
        opts.trust_checkpoints,
        opts.seed,
        opts.group,
        opts.cache_budget,
        compile=opts.compile,
        adaptive_threads=opts.threads is None and env_threads() is None,
    )


def execute_recorded(
    store: Store,
    plans: list[CheckpointPlan],
    exec_opts: ExecOptions,
    *,
    console: Console,
    argv: list[str] | None = None,
    ray_opts: Any = None,
    workers: int | str = 1,
    started: Callable[[str, int, int, int], None] = lambda _r, _t, _s, _e: None,
) -> RunSummary | None:
    """Run the planned jobs as one recorded run (``runs`` row: running → ok | failed | interrupted), on
    Ray with ``ray_opts``, in worker processes with ``workers`` (:mod:`biasbench.harness.workers`);
    ``None`` when there is nothing to compute. ``started(run_id, todo, stored, errors)`` is told when
    the run begins (``errors``: jobs that cannot run and will be recorded as failures)."""
    import torch

    from biasbench.harness.environment import describe_device, git_sha, hostname, package_versions
    from biasbench.harness.executor import execute
    from biasbench.harness.progress import RunUI
    from biasbench.harness.workers import execute_in_workers, planned_workers

    n_todo = sum(len(cp.todo) for cp in plans)
    n_stored = sum(j.status == PlanStatus.STORED for cp in plans for j in cp.jobs)
    n_err = sum(j.status == PlanStatus.ERROR for cp in plans for j in cp.jobs)
    if n_todo == 0 and n_err == 0:
        return None
    threads = torch.get_num_threads()
    if ray_opts is not None:
        if workers not in ("auto", 1):
            raise RunInputError(
                f"--workers {workers} and --executor ray do not go together (Ray has its own)"
            )
        n_workers = 1
    else:
        n_workers = planned_workers(workers, plans, exec_opts, threads)
    run_id = store.start_run(
        argv=list(sys.argv if argv is None else argv),
        git_sha=git_sha(),
        versions=package_versions(),
        device=describe_device(exec_opts.device),
        host=hostname(),
    )
    started(run_id, n_todo, n_stored, n_err)
    status = RunStatus.INTERRUPTED
    try:
        with frozen_heap(), RunUI(console) as ui:
            if n_workers > 1:
                summary = execute_in_workers(plans, exec_opts, store, run_id, ui, n_workers, threads)
            elif ray_opts is None:
                summary = execute(plans, exec_opts, store, run_id, ui)
            else:
                from biasbench.harness.ray_executor import execute_on_ray

                summary = execute_on_ray(plans, exec_opts, store, run_id, ui, ray_opts)
        status = RunStatus.FAILED if summary.failed else RunStatus.OK
    finally:
        store.finish_run(run_id, status)
    return summary


def prepare_torch(opts: RunOptions, cpus: Any = None) -> Any:
    """The run's device, and its CPU threads (``opts.threads``, else the CPUs free: over ``cpus``'s
    interval when given, an :class:`~biasbench.harness.environment.FreeCpus` started earlier)."""
    from biasbench.harness.environment import default_threads, select_device, set_torch_threads

    dev = select_device(opts.device)
    set_torch_threads(opts.threads or default_threads(meter=cpus))
    return dev


def _options(options: RunOptions | None, kw: dict[str, Any]) -> RunOptions:
    import dataclasses

    base = options or RunOptions()
    known = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise TypeError(f"unknown run option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "where" in kw and kw["where"] is not None:
        kw["where"] = tuple(kw["where"])
    return dataclasses.replace(base, **kw)


def plan_and_execute(
    db: str | Path,
    specs: list[Any],
    metric_objs: list[Any],
    opts: RunOptions,
    device: Any,
    *,
    console: Console,
    ray_opts: Any = None,
    started: Callable[[str, int, int, int], None] = lambda _r, _t, _s, _e: None,
) -> tuple[list[CheckpointPlan], RunSummary | None]:
    """Plan ``specs`` × ``metric_objs`` against ``db`` and execute the plan as one recorded run (see
    :func:`execute_recorded`); the summary is ``None`` when every job was already stored."""
    with Store(db) as store:
        plans = plan_jobs(store, specs, metric_objs, opts)
        summary = execute_recorded(
            store,
            plans,
            exec_options(opts, device),
            console=console,
            ray_opts=ray_opts,
            workers=opts.workers,
            started=started,
        )
    return plans, summary


def dry_run(
    db: str | Path,
    specs: list[Any],
    metric_objs: list[Any],
    opts: RunOptions,
    device: Any,
    history: str | Path | None = None,
) -> tuple[list[CheckpointPlan], list[str]]:
    """The plan of a run and its few summary lines (job counts by status and cause, the datasets it
    reads, its cost from the timing history of ``db`` or of ``history``); computes and downloads
    nothing."""
    from biasbench.harness.plan_summary import dataset_lines, status_lines

    with Store(db) as store:
        plans = plan_jobs(store, specs, metric_objs, opts, dry_run=True)
        lines = [*status_lines(plans), *dataset_lines(plans, opts.root, opts.cache)]
        lines += dry_run_cost(store, plans, device, opts, history)
    return plans, lines


def _run_specs(
    specs: list[Any],
    metrics: Sequence[str] | None,
    params: Mapping[str, Mapping[str, Any]] | None,
    db: str | Path,
    opts: RunOptions,
    progress: bool,
) -> RunSummary:
    metric_objs = build_metrics(metrics, params)
    dev = prepare_torch(opts)
    console = Console(stderr=True, emoji=False, quiet=not progress)
    plans, summary = plan_and_execute(db, specs, metric_objs, opts, dev, console=console)
    if summary is None:  # nothing to compute: every job is stored
        from biasbench.harness.executor import JobOutcome

        summary = RunSummary(
            [
                JobOutcome(cp.spec.id, j.metric.name, j.status, summary=j.reason)
                for cp in plans
                for j in cp.jobs
            ]
        )
    return summary


def run(
    targets: Sequence[str] | str | None = None,
    metrics: Sequence[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    db: str | Path = DEFAULT_DB,
    options: RunOptions | None = None,
    progress: bool = False,
    **option_overrides: Any,
) -> RunSummary:
    """Benchmark ``targets`` (registry names, registry files, timm names, ``ARCH@WEIGHTS``; none: the
    demo registry) × ``metrics`` (none: every installed metric) with ``params`` (``{"sis":
    {"n_images": 16}}``) into ``db``, exactly as ``bench run`` does; jobs already stored are skipped.
    ``option_overrides`` are :class:`RunOptions` fields (``seed=1``, ``data_root=…``, ``where=[…]``).
    Returns the job outcomes (``summary.failed`` counts failed jobs; their errors are in ``failures``)."""
    opts = _options(options, option_overrides)
    specs = resolve([targets] if isinstance(targets, str) else targets, opts.where)
    specs = pin(specs, opts)
    return _run_specs(specs, metrics, params, db, opts, progress)


def module_preprocess(model: Any) -> Preprocess:
    """A module's preprocessing when none is given: timm's data config for a timm model (its
    ``pretrained_cfg``), else the classic ImageNet recipe (:class:`Preprocess` defaults: 256 / 224)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg:
        return Preprocess()
    from timm.data import resolve_data_config

    from biasbench.registry.preprocessing import data_config_preprocess

    return data_config_preprocess(resolve_data_config({}, model=model))


def evaluate(
    model: Any,
    *,
    labels: str = "imagenet-1k",
    preprocess: Preprocess | Mapping[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    name: str = "model",
    db: str | Path | None = None,
    tags: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    progress: bool = False,
    **option_overrides: Any,
) -> Results:
    """Benchmark a ``torch.nn.Module`` that exists only in this process, as checkpoint ``name``.

    Its identity is the sha256 of its state dict (sorted keys; dtypes, shapes and bytes) plus its
    ``preprocess`` (a :class:`Preprocess`, a mapping of its fields, or none: :func:`module_preprocess`)
    and ``labels``; a copy of the module is evaluated (in eval mode, on the run's device), so the
    caller's module is left as it is. ``db=None``: the results come back and no file is left; with
    ``db`` they are stored (the checkpoint row's source says it came from Python) and a second call
    computes nothing. A wrong class count or NaN outputs fail the job with the same message a file
    would get (``Results.summary`` and, with ``db``, the ``failures`` table)."""
    from biasbench.core import names
    from biasbench.registry.in_memory import SCHEME, register_module, unregister_module
    from biasbench.registry.spec import CheckpointSpec

    problem = names.id_problem(name)
    if problem:
        raise RunInputError(f"name {name!r}: {problem}")
    if preprocess is None:
        pre = module_preprocess(model)
    elif isinstance(preprocess, Preprocess):
        pre = preprocess
    else:
        pre = Preprocess.from_mapping(dict(preprocess))
    register_module(name, model)
    spec = CheckpointSpec(
        id=name,
        arch=f"{SCHEME}:{name}",
        weights=f"{SCHEME}:{name}",
        preprocess=pre,
        labels=labels,
        num_classes=num_classes,
        tags=dict(tags or {}),
        source="python (biasbench.evaluate)",
    )
    opts = _options(None, option_overrides)
    try:
        if db is not None:
            summary = _run_specs([spec], metrics, params, db, opts, progress)
            return Results(results(db, checkpoints=[name]), summary, Path(db))
        with tempfile.TemporaryDirectory(prefix="biasbench-evaluate-") as tmp:
            path = Path(tmp) / "results.duckdb"
            summary = _run_specs([spec], metrics, params, path, opts, progress)
            return Results(results(path, checkpoints=[name]), summary, None)
    finally:
        unregister_module(name)  # biasbench holds no reference to the caller's model after the call


def results(
    db: str | Path = DEFAULT_DB,
    *,
    metrics: Sequence[str] | None = None,
    checkpoints: Sequence[str] | None = None,
    latest: bool = True,
    recompute: Mapping[str, Mapping[str, float]] | None = None,
    keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The stored results as a long table: checkpoint, metric, key, value, n, variant, datasets (newest
    job of each variant unless ``latest=False``) — the rows of ``bench results --format csv``.
    ``keys``: only rows whose ``key`` or ``metric.key`` matches (wildcards allowed). ``recompute``
    (``{"sis": {"tau": 0.8}}``): a metric's rows as it would have stored them with other values of its
    recomputable parameters, from its stored per-item rows — no model (``Metric.recompute``)."""
    with Store(db, read_only=True) as store:
        df = store.results(
            latest=latest,
            metrics=list(metrics) if metrics else None,
            checkpoints=list(checkpoints) if checkpoints else None,
        )
        for metric, changes in (recompute or {}).items():
            df = _recomputed(store, df, metric, dict(changes))
    df = _with_variants(df)
    if keys:
        df = df[_key_match(df, keys)]
    return df[RESULT_COLUMNS].reset_index(drop=True)


#: the columns of :func:`results`: a row's variant (the parameters its metric's stored sets differ in,
#: ``""`` when the metric has one) and the dataset names its job read
RESULT_COLUMNS = ["checkpoint", "metric", "key", "value", "n", "variant", "datasets"]


def _with_variants(df: pd.DataFrame) -> pd.DataFrame:
    """``variant`` per row (:func:`biasbench.core.variants.variant_labels` over each metric's stored
    parameter sets) and ``datasets``: the job's dataset names (``imported:SOURCE`` for an import; more
    than three: the first and the count — ``bench report``'s provenance lists them all)."""
    from biasbench.core.variants import variant_labels

    df = df.copy()
    params = df["params"].astype(object).where(df["params"].notna(), None)
    df["variant"] = ""
    for _, grp in df.groupby("metric"):
        labels = variant_labels(list(params[grp.index]))
        df.loc[grp.index, "variant"] = [labels[p] for p in params[grp.index]]

    def names(text: object) -> str:
        if not isinstance(text, str) or not text:
            return ""
        found = json.loads(text) or {}
        if "import" in found:
            return f"imported:{found['import'].get('source', '?')}"
        sets = sorted({str(d.get("name")) for d in found.values() if isinstance(d, dict)})
        return ",".join(sets) if len(sets) <= 3 else f"{sets[0]},… ({len(sets)} sets)"

    df["datasets"] = df["datasets"].map(names)
    return df


def _key_match(df: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Rows whose ``key`` or ``metric.key`` matches one of ``keys`` (shell wildcards allowed:
    ``top1``, ``ood.id``, ``ood.*_ece``)."""
    from fnmatch import fnmatchcase

    full = df["metric"] + "." + df["key"]
    hit = pd.Series(False, index=df.index)
    for k in keys:
        hit |= df["key"].map(lambda v, k=k: fnmatchcase(v, k)) | full.map(lambda v, k=k: fnmatchcase(v, k))
    return hit


def wide_results(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`results` as one row per checkpoint and one column per ``metric[variant].key``."""
    col = df["metric"] + df["variant"] + "." + df["key"]
    wide = df.assign(column=col).pivot_table(
        index="checkpoint", columns="column", values="value", aggfunc="last"
    )
    wide.columns.name = None
    return wide.reset_index()


def parse_recompute(items: Sequence[str]) -> dict[str, dict[str, float]]:
    """``METRIC.KEY=VALUE`` strings (``sis.tau=0.8``) as ``{metric: {key: value}}``, numbers only."""
    out: dict[str, dict[str, float]] = {}
    for metric, changes in parse_params(items, "--recompute").items():
        for key, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RunInputError(f"--recompute {metric}.{key}={value!r}: the value must be a number")
            out.setdefault(metric, {})[key] = float(value)
    return out


def _recomputed(store: Store, df: pd.DataFrame, metric: str, changes: dict[str, float]) -> pd.DataFrame:
    """``metric``'s rows of each checkpoint replaced by :meth:`Metric.recompute` of its stored
    per-item rows with ``changes``."""
    from biasbench.metrics.discovery import load_metric

    cls = load_metric(metric)
    unknown = sorted(set(changes) - set(cls.recomputable))
    if unknown:
        can = ", ".join(cls.recomputable) or "no parameter"
        raise RunInputError(
            f"--recompute {metric}.{unknown[0]}: {metric} recomputes {can} from its stored rows, not {unknown[0]}"
        )
    cls(**changes)  # the values pass the metric's own parameter checks (a ParamError), before any row is read
    rows = []
    for ckpt in sorted(df.loc[df.metric == metric, "checkpoint"].unique()):
        mine = df[(df.checkpoint == ckpt) & (df.metric == metric)]
        scalars, n = cls.recompute(
            store.items(ckpt, metric), dict(zip(mine["key"], mine["value"], strict=True)), changes
        )
        job = {c: mine[c].iloc[0] for c in ("params", "datasets") if c in mine}  # the job they come from
        rows += [
            {"checkpoint": ckpt, "metric": metric, "key": k, "value": float(v), "n": int(n.get(k, 0)), **job}
            for k, v in scalars.items()
        ]
    return pd.concat([df[df.metric != metric], pd.DataFrame(rows)], ignore_index=True).sort_values(
        ["checkpoint", "metric", "key"]
    )


@dataclass
class StoreStatus:
    """``bench status``: rows per table, the recent runs and the latest failures."""

    path: Path
    counts: dict[str, int]
    runs: pd.DataFrame
    failures: pd.DataFrame


def status(db: str | Path = DEFAULT_DB, *, runs: int = 5, failures: int = 10) -> StoreStatus:
    """What ``db`` holds; a ``running`` run on this host whose process is gone is marked
    ``interrupted`` (when the file is writable)."""
    with Store(db, read_only=True) as store:
        store.mark_interrupted()
        return StoreStatus(
            store.path, store.counts(), store.runs().tail(runs), store.failures().tail(failures)
        )


def merge(
    shards: Sequence[str | Path],
    db: str | Path = DEFAULT_DB,
    merged: Callable[[str | Path, dict[str, int]], None] = lambda _s, _c: None,
) -> list[dict[str, int]]:
    """Merge shard databases into ``db`` (created when missing); every shard is checked whole and
    read-only before anything is written, and a target that is not ours is refused unwritten. Returns
    what each shard added, per table (also told to ``merged`` as each shard is merged)."""
    from biasbench.harness.store import check_shard_file

    target = Path(db)
    store = Store(target) if target.exists() else None
    for shard in shards:
        check_shard_file(shard)
    added = []
    with store or Store(target) as s:
        for shard in shards:
            added.append(s.merge(shard))
            merged(shard, added[-1])
    return added


def record_import(
    db: str | Path,
    results: pd.DataFrame,
    tags: Mapping[str, Mapping[str, Any]],
    provenance: Mapping[str, Any],
    source: str,
    *,
    argv: list[str] | None = None,
) -> str:
    """Store a published table's values (``results``: checkpoint, metric, key, value) as one recorded
    run: one job per (checkpoint, metric) whose key hashes the table's and the mapping's sha256,
    flagged ``imported``; a checkpoint not measured here gets a row with ``tags`` and source
    ``import:<source>``. Returns the run id."""
    import json

    from biasbench.core.hashing import config_hash
    from biasbench.harness.environment import git_sha, hostname, package_versions
    from biasbench.harness.store import JobKey, JobRecord

    prov = dict(provenance)
    job_hash = config_hash({"import": source, "sha256": prov["sha256"], "mapping": prov["mapping_sha256"]})
    with Store(db) as store:
        known = store.checkpoint_ids()
        run_id = store.start_run(
            argv=list(sys.argv if argv is None else argv),
            git_sha=git_sha(),
            versions=package_versions(),
            device="import",
            host=hostname(),
        )
        status = RunStatus.FAILED
        try:
            with store.held():  # one connection for the whole table, not one per job
                for ckpt, t in tags.items():
                    if ckpt not in known:  # a measured checkpoint keeps its own row
                        store.upsert_checkpoint(
                            {"id": ckpt, "source": f"import:{source}", "tags": json.dumps(t)}
                        )
                for (ckpt, metric), grp in results.groupby(["checkpoint", "metric"]):
                    record = JobRecord(
                        metric_version="import",
                        params=None,  # imported: no parameters (reports put them beside the measured variant)
                        datasets={"import": prov},
                        scalars=dict(zip(grp["key"], grp["value"], strict=True)),
                        flags=["imported"],
                        run_id=run_id,
                    )
                    store.write_job(JobKey(ckpt, metric, job_hash), record)
            status = RunStatus.OK
        finally:
            store.finish_run(run_id, status)
    return run_id


def dry_run_cost(
    store: Store, plans: list[CheckpointPlan], device: Any, opts: RunOptions, history: str | Path | None
) -> list[str]:
    """A dry run's cost lines: where the timing history comes from (``db``, or the ``history``
    database), then images × conditions per metric and in total, and the time they take."""
    import torch

    from biasbench.harness.environment import describe_device
    from biasbench.harness.estimate import describe, estimate, human_time, load_history
    from biasbench.harness.workers import planned_workers

    source = store
    if history is not None:
        try:
            source = Store(history, read_only=True)
        except StoreError as e:
            raise type(e)(f"--history: {e}") from e
    hist = load_history(source.timing_rows())
    head = f"timing history: {len(hist.rates)} stored job(s) of {source.path}" + (
        " (--history)" if history is not None else " (--db; --history DB reads another)"
    )
    cost = estimate(plans, hist, describe_device(device), opts.root, opts.cache)
    lines = [head, *describe(cost)]
    workers = planned_workers(opts.workers, plans, exec_options(opts, device), torch.get_num_threads())
    if workers > 1 and any(m.estimated for m in cost.metrics.values()):
        # the estimate adds up job seconds; the workers run their jobs side by side
        lines.append(
            f"in {workers} worker processes (--workers): about {human_time(cost.seconds / workers)} of wall "
            "time, when the history's jobs ran with the threads each worker gets"
        )
    return lines
