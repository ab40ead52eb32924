"""Planning: checkpoints × metrics − what the store already holds.

Every job has a content key, ``config_hash``, over: the checkpoint's weight bytes (sha256), its
resolved preprocessing and label space, the metric's name, version and parameters, the seed, and each
dataset's name, manifest hash and effective preprocessing. A job whose key is stored is skipped
(unless ``force``); a job whose metric does not apply to the label space is ``n/a``; a job that cannot
even be planned (weights missing, dataset missing) is ``error`` and will be recorded as a failure.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biasbench.core import labels
from biasbench.core.hashing import config_hash
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets import catalog
from biasbench.harness.status import PlanStatus
from biasbench.harness.store import JobKey
from biasbench.metrics.base import DatasetRequest, Metric, NotApplicable
from biasbench.registry import loading
from biasbench.registry.spec import CheckpointSpec


@dataclass(frozen=True)
class ResolvedDataset:
    request: DatasetRequest
    preprocess: Preprocess | None  # effective (None: as stored)
    manifest: str

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.request.name,
            "manifest": self.manifest,
            "preprocess": self.preprocess.to_json() if self.preprocess else "as-stored",
        }


@dataclass
class PlannedJob:
    spec: CheckpointSpec
    metric: Metric
    status: PlanStatus
    key: JobKey | None = None
    datasets: dict[str, ResolvedDataset] = field(default_factory=dict)
    reason: str = ""
    trace: str = ""


@dataclass
class CheckpointPlan:
    spec: CheckpointSpec
    jobs: list[PlannedJob]
    preprocess: Preprocess | None = None
    weights_sha256: str | None = None
    error: str | None = None

    @property
    def todo(self) -> list[PlannedJob]:
        return [j for j in self.jobs if j.status == PlanStatus.TODO]


@dataclass(frozen=True)
class PlanOptions:
    data_root: Path
    cache_dir: Path
    trust: bool = False
    force: bool = False
    seed: int = 0
    #: plan without fetching: weights that are remote or come from code are not resolved (their jobs
    #: are listed as todo without a config hash)
    dry_run: bool = False


#: a dry run's manifest of a dataset that is not on disk (the job is an error; it is sized by the
#: dataset's ``published_size``)
ABSENT = "absent"


class DatasetsMissing(catalog.DatasetMissing):
    """A dry run's job whose datasets are not all on disk; ``datasets`` holds every role resolved
    (the absent ones with the manifest :data:`ABSENT`), so the cost estimate can still size it."""

    def __init__(self, message: str, datasets: dict[str, ResolvedDataset]) -> None:
        super().__init__(message)
        self.datasets = datasets


@dataclass
class _Lookups:
    """What one plan looks up once, whatever the number of checkpoints: each dataset's catalog entry (a
    family builds every member for each lookup: the ResNet-50 zoo's 48 checkpoints × OOD's ~100
    ImageNet-C cells took 7 of a dry run's 18 s) and each (dataset, preprocessing)'s manifest."""

    entries: dict[str, catalog.DatasetEntry] = field(default_factory=dict)
    manifests: dict[tuple[str, Any], str] = field(default_factory=dict)

    def entry(self, name: str) -> catalog.DatasetEntry:
        if name not in self.entries:
            self.entries[name] = catalog.get(name)
        return self.entries[name]


def _resolve_datasets(
    metric: Metric, label_space: str, ckpt_pre: Preprocess, opts: PlanOptions, lookups: _Lookups
) -> dict[str, ResolvedDataset]:
    """Every role's dataset with its manifest. A missing dataset raises its :class:`DatasetMissing`;
    in a dry run only once every role is resolved, as :class:`DatasetsMissing`."""
    out: dict[str, ResolvedDataset] = {}
    manifests = lookups.manifests
    for role, req in metric.datasets(label_space).items():
        entry = lookups.entry(req.name)
        pre = None if entry.as_stored else (req.preprocess or ckpt_pre)
        mkey = (req.name, pre)
        if mkey not in manifests:
            try:
                manifests[mkey] = entry.manifest(opts.data_root, pre)
            except catalog.DatasetMissing as e:
                if not opts.dry_run:
                    raise
                manifests[mkey] = ABSENT
                manifests[(req.name, ABSENT)] = str(e)  # the message, for every job that needs it
        out[role] = ResolvedDataset(req, pre, manifests[mkey])
    absent = sorted({rd.request.name for rd in out.values() if rd.manifest == ABSENT})
    if absent:
        first = manifests.get((absent[0], ABSENT), f"dataset {absent[0]!r} not found")
        more = f" (and {len(absent) - 1} more missing: {', '.join(absent[1:4])}…)" if len(absent) > 1 else ""
        raise DatasetsMissing(first + more, out)
    return out


def job_hash(
    spec: CheckpointSpec,
    weights_sha256: str,
    pre: Preprocess,
    metric: Metric,
    datasets: dict[str, ResolvedDataset],
    seed: int,
) -> str:
    parts = {
        "weights": weights_sha256,
        "preprocess": pre.to_json(),
        "labels": spec.labels,
        "metric": metric.name,
        "version": metric.version,
        "params": metric.params_json(),
        "seed": seed,
        "datasets": {role: d.describe() for role, d in sorted(datasets.items())},
    }
    space = labels.find(spec.labels)
    if space is not None and space.defaults_version:  # the label space's defaults resolve None params
        parts["defaults_version"] = space.defaults_version
    return config_hash(parts)


def _unresolved_plan(
    cp: CheckpointPlan, metrics: list[Metric], opts: PlanOptions, lookups: _Lookups
) -> CheckpointPlan:
    """A dry run's plan of a checkpoint whose weights it may not fetch (remote or from code)."""
    note = "dry run: weights not fetched (remote or from code), so the job's config hash is unknown"
    for m in metrics:
        job = PlannedJob(cp.spec, m, PlanStatus.TODO, reason=note)
        try:
            job.datasets = _resolve_datasets(m, cp.spec.labels, cp.preprocess, opts, lookups)
        except NotApplicable as e:
            job.status, job.reason = PlanStatus.NOT_APPLICABLE, str(e)
        except Exception as e:  # noqa: BLE001 - a missing dataset shows up in the plan
            job.status, job.reason = PlanStatus.ERROR, str(e)
            job.datasets = getattr(e, "datasets", {})
        cp.jobs.append(job)
    return cp


def plan(
    specs: list[CheckpointSpec], metrics: list[Metric], opts: PlanOptions, stored: set[JobKey]
) -> list[CheckpointPlan]:
    plans: list[CheckpointPlan] = []
    lookups = _Lookups()
    for spec in specs:
        cp = CheckpointPlan(spec=spec, jobs=[])
        try:
            cp.preprocess = loading.resolve_preprocess(spec, trust=opts.trust)
            if opts.dry_run and not loading.resolves_locally(spec):
                plans.append(_unresolved_plan(cp, metrics, opts, lookups))
                continue
            cp.weights_sha256 = loading.weights_fingerprint(spec, cache_dir=opts.cache_dir, trust=opts.trust)
        except Exception as e:  # noqa: BLE001 - any failure here fails every job of this checkpoint
            cp.error = str(e)
            cp.jobs = [
                PlannedJob(spec, m, PlanStatus.ERROR, reason=str(e), trace=traceback.format_exc())
                for m in metrics
            ]
            plans.append(cp)
            continue
        for m in metrics:
            job = PlannedJob(spec, m, PlanStatus.TODO)
            try:
                job.datasets = _resolve_datasets(m, spec.labels, cp.preprocess, opts, lookups)
            except NotApplicable as e:
                job.status, job.reason = PlanStatus.NOT_APPLICABLE, str(e)
            except Exception as e:  # noqa: BLE001 - a missing dataset fails this job only
                job.status, job.reason, job.trace = PlanStatus.ERROR, str(e), traceback.format_exc()
                job.datasets = getattr(e, "datasets", {})
            else:
                h = job_hash(spec, cp.weights_sha256, cp.preprocess, m, job.datasets, opts.seed)
                job.key = JobKey(spec.id, m.name, h)
                if job.key in stored and not opts.force:
                    job.status = PlanStatus.STORED
            cp.jobs.append(job)
        plans.append(cp)
    return plans
