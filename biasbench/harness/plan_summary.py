"""A plan told in a few lines, at any scale (``bench run --dry-run``; ``--verbose`` lists every job).

* one line of counts by status (todo, stored, n/a, error);
* one line per distinct cause of the jobs that are n/a or errors (or todo with a note, such as a
  dry run's weights not fetched) — the cause's first line, cut to
  :data:`CAUSE_WIDTH` characters — with its count and the first ids (at most :data:`MAX_CAUSES` lines,
  then how many more);
* one line per dataset the jobs to run need: on disk, generated, or absent (then the download it
  takes, from its download manifests' published archive sizes), its images, and the decoded cache it
  fills (images × 3 × crop² bytes per preprocessing, uint8 as cached).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from biasbench.harness.plan import ABSENT, CheckpointPlan
from biasbench.harness.status import PlanStatus

CAUSE_WIDTH = 140
MAX_CAUSES = 12
FIRST_IDS = 3
STATUSES = tuple(PlanStatus)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _cause(reason: str) -> str:
    text = (reason or "").strip()
    first = text.splitlines()[0] if text else "no reason given"
    return first if len(first) <= CAUSE_WIDTH else first[: CAUSE_WIDTH - 1] + "…"


def status_lines(plans: list[CheckpointPlan]) -> list[str]:
    """The counts by status and one line per distinct cause of n/a and error jobs."""
    jobs = [j for cp in plans for j in cp.jobs]
    counts = Counter(j.status for j in jobs)
    n_metrics = len({j.metric.name for j in jobs})
    head = f"plan: {len(jobs)} jobs ({len(plans)} checkpoints × {n_metrics} metrics): " + ", ".join(
        f"{counts.get(s, 0)} {s}" for s in STATUSES
    )
    causes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for j in jobs:
        if j.status in (PlanStatus.NOT_APPLICABLE, PlanStatus.ERROR) or (
            j.status == PlanStatus.TODO and j.reason
        ):
            causes[(j.status, _cause(j.reason))].append(f"{j.spec.id} · {j.metric.name}")
    ordered = sorted(causes.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    lines = [head]
    for (status, cause), ids in ordered[:MAX_CAUSES]:
        first = ", ".join(ids[:FIRST_IDS]) + (", …" if len(ids) > FIRST_IDS else "")
        lines.append(f"  {status} ×{len(ids)}: {cause} (first: {first})")
    if len(ordered) > MAX_CAUSES:
        rest = sum(len(ids) for _, ids in ordered[MAX_CAUSES:])
        lines.append(f"  … {len(ordered) - MAX_CAUSES} more causes ({rest} jobs); --verbose lists every job")
    return lines


def _download_bytes(name: str) -> int | None:
    """Published bytes to download for dataset ``name`` (what its family's entry declares to download;
    None: not known)."""
    from biasbench.harness.datasets import catalog

    try:
        dataset = catalog.families().get(name.split("/", 1)[0])
        specs = catalog.download_specs_of(dataset) if dataset is not None else ()
    except Exception:  # noqa: BLE001 - a summary never fails the dry run
        return None
    sizes = [s.archive.size for s in specs if s.archive is not None and s.archive.size]
    return sum(sizes) if sizes else None


def dataset_lines(plans: list[CheckpointPlan], data_root: Path, cache_dir: Path) -> list[str]:
    """One line per dataset that the jobs to run (todo, or error for want of data) need."""
    from biasbench.harness.estimate import dataset_size

    needed: dict[str, dict[str, Any]] = {}
    for cp in plans:
        for j in cp.jobs:
            if j.status not in (PlanStatus.TODO, PlanStatus.ERROR):
                continue
            for rd in j.datasets.values():
                d = needed.setdefault(rd.request.name, {"absent": False, "crops": set(), "rd": rd})
                d["absent"] |= rd.manifest == ABSENT
                d["crops"].add(rd.preprocess.crop if rd.preprocess is not None else None)
    groups: dict[str, list[str]] = defaultdict(list)  # a family's members are told as one line
    for name in sorted(needed):
        groups[name.split("/", 1)[0] + "/…" if "/" in name else name].append(name)
    lines = []
    for label, members in groups.items():
        sizes = [dataset_size(needed[m]["rd"], data_root, cache_dir) for m in members]
        n = sum(x for x in sizes if x) if all(sizes) else None
        crops = sorted({c for m in members for c in needed[m]["crops"] if c is not None})
        decoded = n * 3 * sum(c * c for c in crops) if n and crops else None
        parts = [f"{n:,} images" if n else "images unknown"]
        if decoded:
            parts.append(f"decoded cache ≈{human_bytes(decoded)} ({', '.join(f'{c}px' for c in crops)})")
        if any(needed[m]["absent"] for m in members):
            dl = _download_bytes(members[0])
            parts.insert(
                0, f"absent, download ≈{human_bytes(dl)}" if dl else "absent, download size not published"
            )
        else:
            parts.insert(0, "present or generated")
        count = f" ({len(members)} members)" if len(members) > 1 else ""
        lines.append(f"  dataset {label}{count}: " + ", ".join(parts))
    if lines:
        return ["datasets:", *lines]
    return []
