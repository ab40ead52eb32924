"""What a plan will cost (``bench run --dry-run``): images × conditions per metric and in total, and a
time estimated from the stored timings of similar jobs.

Work is counted in *images × conditions* (forward-pass equivalents): for each job, the metric's
:meth:`~biasbench.metrics.base.Metric.work` of every dataset role it evaluates (an OOD set, one
ImageNet-C corruption cell: its images after subsampling, times the passes per image). It is found
without decoding or generating anything: a stored job of the same metric on the same datasets (name,
manifest, preprocessing) recorded it; else each dataset's size is read from its decoded cache file's
header, or by counting the image files where it lives; a dataset that is not on disk yet is counted by
its published size (``DatasetEntry.published_size``: such a job is sized and estimated, and the line
says that a run now would fail it), and a generated set no run has used yet by the size it will have
(the demo world's splits declare it); one that declares none cannot be sized (a dry run never renders
it).

Every job a run stores records its own images × conditions and group size in ``jobs.timings``
(:data:`IMAGES_X_CONDITIONS`). The estimate of a job is its images ×
conditions times the median seconds per image × condition of the stored jobs of the same metric on
the same device class (``runs.device``), on the same architecture when there are such, else on any.
With no such history the estimate says so instead of guessing.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biasbench.core.preprocess import preprocess_key
from biasbench.harness.datasets import catalog
from biasbench.harness.datasets.imagenet_files import IMAGE_EXTENSIONS
from biasbench.harness.plan import ABSENT, CheckpointPlan, PlannedJob, ResolvedDataset
from biasbench.harness.status import PlanStatus
from biasbench.metrics.base import WORK_DONE

#: the `jobs.timings` key of a job's images × conditions (written by the executor; a metric may give
#: its own count when it shared work with an earlier job)
IMAGES_X_CONDITIONS = WORK_DONE


@dataclass(frozen=True)
class Rate:
    """Seconds per image × condition of one stored job."""

    metric: str
    arch: str | None
    device: str
    seconds_per_unit: float


@dataclass
class History:
    """What the store says about past jobs: their rates, and the images × conditions of each (metric,
    datasets) they ran on."""

    rates: list[Rate] = field(default_factory=list)
    units: dict[tuple[str, str], float] = field(default_factory=dict)


def _canonical(datasets: Any) -> str:
    return json.dumps(json.loads(json.dumps(datasets)), sort_keys=True)


@dataclass
class MetricCost:
    metric: str
    checkpoints: int = 0
    units: float = 0.0
    seconds: float = 0.0
    estimated: int = 0  # jobs with an estimate
    unsized: int = 0  # jobs whose datasets could not be sized
    unplanned: int = 0  # jobs that could not be planned (weights missing; data missing and unsized)
    absent: int = 0  # jobs sized by published sizes: a dataset is not on disk yet
    basis: set[str] = field(default_factory=set)


@dataclass
class PlanCost:
    device: str
    metrics: dict[str, MetricCost]

    @property
    def units(self) -> float:
        return sum(m.units for m in self.metrics.values())

    @property
    def seconds(self) -> float:
        return sum(m.seconds for m in self.metrics.values())

    @property
    def complete(self) -> bool:
        return all(m.estimated == m.checkpoints and not m.unplanned for m in self.metrics.values())


def count_images(folder: Path) -> int:
    """Image files under ``folder`` (recursively), by extension."""
    n = 0
    for _, _, files in os.walk(folder):
        n += sum(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for f in files)
    return n


def dataset_size(rd: ResolvedDataset, data_root: Path, cache_dir: Path) -> int | None:
    """Images in a planned dataset, without decoding it; ``None`` when it cannot be told. A dataset that
    is not on disk (manifest :data:`~biasbench.harness.plan.ABSENT`): its published size."""
    if rd.manifest == ABSENT:
        try:
            return catalog.get(rd.request.name).published_size
        except Exception:  # noqa: BLE001 - an estimate never fails the dry run
            return None
    pattern = f"*-{rd.manifest}-{preprocess_key(rd.preprocess)}.npy"
    for f in sorted((Path(cache_dir) / "datasets").glob(pattern)):
        try:
            return int(np.load(f, mmap_mode="r").shape[0])
        except (OSError, ValueError):
            continue
    try:
        entry = catalog.get(rd.request.name)
        if entry.location is None:
            return entry.published_size  # generated: the size it will have (None: unknown)
        where = entry.location(Path(data_root))
        return count_images(where) if where.is_dir() else None
    except Exception:  # noqa: BLE001 - an estimate never fails the dry run
        return None


def load_history(timings: pd.DataFrame) -> History:
    """Seconds per image × condition of every stored job that recorded its images × conditions, and
    those images × conditions by (metric, datasets); ``timings``: :meth:`Store.timing_rows`."""
    df = timings
    out = History()
    for row in df.itertuples(index=False):
        try:
            units = float(json.loads(row.timings).get(IMAGES_X_CONDITIONS, 0))
            datasets = _canonical(json.loads(row.datasets)) if isinstance(row.datasets, str) else None
        except (TypeError, ValueError):
            continue
        if units <= 0:
            continue
        if datasets is not None:
            out.units[(row.metric, datasets)] = units
        if row.seconds is not None and row.seconds > 0:
            arch = row.arch if isinstance(row.arch, str) else None
            out.rates.append(Rate(row.metric, arch, str(row.device), float(row.seconds) / units))
    return out


def rate_for(rates: list[Rate], metric: str, arch: str, device: str) -> tuple[float, str] | None:
    """The median seconds per image × condition of ``metric`` on ``device``: of ``arch`` when stored,
    else of any architecture; ``None`` without history."""
    same_dev = [r for r in rates if r.metric == metric and r.device == device]
    same_arch = [r.seconds_per_unit for r in same_dev if r.arch == arch]
    if same_arch:
        return statistics.median(same_arch), f"{_jobs(len(same_arch))} of {arch}"
    if same_dev:
        rate = statistics.median(r.seconds_per_unit for r in same_dev)
        return rate, f"{_jobs(len(same_dev))} of any architecture"
    return None


def estimate(
    plans: list[CheckpointPlan], history: History, device: str, data_root: Path, cache_dir: Path
) -> PlanCost:
    """The cost of the plans' todo jobs, per metric."""
    sizes: dict[tuple[str, Any, str], int | None] = {}
    cost = PlanCost(device, {})
    for cp in plans:
        for job in cp.jobs:
            if job.status not in (PlanStatus.TODO, PlanStatus.ERROR):
                continue
            mc = cost.metrics.setdefault(job.metric.name, MetricCost(job.metric.name))
            absent = any(rd.manifest == ABSENT for rd in job.datasets.values())
            if job.status == PlanStatus.ERROR and not absent:
                mc.unplanned += 1
                continue
            units = history.units.get(
                (job.metric.name, _canonical({r: rd.describe() for r, rd in job.datasets.items()}))
            )
            if units is None:
                units = _size_job(job, sizes, data_root, cache_dir)
            if units is None and absent:
                mc.unplanned += 1  # missing, and no published size to count it by
                continue
            mc.checkpoints += 1
            mc.absent += absent
            if units is None:
                mc.unsized += 1
                continue
            mc.units += units
            got = rate_for(history.rates, job.metric.name, cp.spec.arch, device)
            if got is not None:
                mc.estimated += 1
                mc.seconds += units * got[0]
                mc.basis.add(got[1])
    return cost


def _size_job(
    job: PlannedJob, sizes: dict[tuple[str, Any, str], int | None], data_root: Path, cache_dir: Path
) -> float | None:
    """A job's images × conditions from its datasets' sizes (``None``: one cannot be sized)."""
    units = 0.0
    for role, rd in job.datasets.items():
        key = (rd.request.name, rd.preprocess, rd.manifest)
        if key not in sizes:
            sizes[key] = dataset_size(rd, data_root, cache_dir)
        if sizes[key] is None:
            return None
        units += job.metric.work(role, sizes[key] or 0, job.spec.labels)
    return units


def human_count(n: float) -> str:
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _jobs(n: int) -> str:
    return f"{n} stored job{'s' if n != 1 else ''}"


def human_time(seconds: float) -> str:
    if seconds >= 3600 * 1000:
        return f"{seconds / 3600:,.0f} hours"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} hours"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def describe(cost: PlanCost) -> list[str]:
    """One line per metric and a total, e.g. ``48 checkpoints × ood: 457 M images × conditions, ~31 hours
    on cuda:NVIDIA H200``; ``no history`` where no stored job of the metric ran on this device."""
    lines = []
    for m in cost.metrics.values():
        if m.unplanned:
            lines.append(
                f"{m.unplanned} checkpoint{'s' if m.unplanned != 1 else ''} × {m.metric}: cannot be planned "
                "(a dataset or the weights are missing; the plan's note says which), cost unknown"
            )
        if not m.checkpoints:
            continue
        head = f"{m.checkpoints} checkpoint{'s' if m.checkpoints != 1 else ''} × {m.metric}: "
        if m.unsized == m.checkpoints:
            head += "images × conditions unknown (a dataset could not be sized: generated, and no run used it yet)"
        else:
            head += f"{human_count(m.units)} images × conditions"
        if m.unsized and m.unsized < m.checkpoints:
            head += f" ({m.unsized} job(s) with a dataset that could not be sized)"
        if m.absent:
            head += (
                f" ({'all' if m.absent == m.checkpoints else m.absent} by published sizes: a dataset is not "
                "on disk yet, and a run now would fail "
                f"{'them' if m.absent != 1 else 'it'}; the plan's note says which)"
            )
        if m.estimated == 0:
            lines.append(f"{head}, time unknown: no history of {m.metric} on {cost.device}")
        else:
            part = "" if m.estimated == m.checkpoints else f" for {m.estimated} of {m.checkpoints} jobs"
            basis = "; ".join(sorted(m.basis))
            lines.append(f"{head}, ~{human_time(m.seconds)}{part} on {cost.device} (from {basis})")
    if not cost.metrics:
        return ["nothing to compute"]
    if not any(m.checkpoints for m in cost.metrics.values()):
        return lines
    checkpoints = sum(m.checkpoints for m in cost.metrics.values())
    unsized = sum(m.unsized for m in cost.metrics.values())
    if unsized == checkpoints:
        total = "total: images × conditions unknown"
    else:
        total = f"total: {human_count(cost.units)} images × conditions"
        if unsized:
            total += f" for the {checkpoints - unsized} job(s) that could be sized"
    if any(m.estimated for m in cost.metrics.values()):
        known = "" if cost.complete else " for the jobs with history"
        total += f", ~{human_time(cost.seconds)}{known}"
    else:
        total += ", time unknown (no history on this device)"
    return [*lines, total]
