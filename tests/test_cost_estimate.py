"""``bench run --dry-run`` estimates its cost: images × conditions per metric and in total, and a time
from the stored timings of similar jobs (``no history`` when there are none)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from biasbench.harness.estimate import History, Rate, describe, estimate, load_history, rate_for
from biasbench.harness.plan import PlanOptions, plan
from biasbench.harness.store import Store
from biasbench.metrics.accuracy import Accuracy
from biasbench.registry.registry_files import resolve_targets
from tests.harness_fixtures import bench
from tests.test_grouped_execution import N_CHECKPOINTS, N_IMAGES, _data_root, _registry


@pytest.fixture()
def setup(tmp_path: Path, cache_dir: Path):
    return _registry(tmp_path / "reg"), _data_root(tmp_path / "data"), tmp_path, cache_dir


def _args(reg: Path, data: Path, db: Path, *extra: str) -> list[str]:
    run = ["run", str(reg), "-m", "accuracy", "-p", "accuracy.dataset=imagenet-sample"]
    return [*run, "--data-root", str(data), "--db", str(db), "--batch-size", "16", *extra]


def test_a_dry_run_without_history_counts_the_work_and_says_it_has_no_timings(setup):
    reg, data, tmp, _ = setup
    r = bench(_args(reg, data, tmp / "fresh.duckdb", "--dry-run"), tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    # 4 checkpoints × 24 images of imagenet-sample, counted from the folder (nothing decoded yet)
    assert f"{N_CHECKPOINTS} checkpoints × accuracy: {N_CHECKPOINTS * N_IMAGES} images × conditions" in text
    assert "no history of accuracy" in text
    assert "time unknown (no history on this device)" in text


def test_a_dry_run_estimates_from_the_stored_seconds_per_image_of_similar_jobs(setup):
    reg, data, tmp, cache = setup
    db = tmp / "bench.duckdb"
    assert bench(_args(reg, data, db), tmp).returncode == 0  # history: 4 jobs of 24 images each
    with Store(db, read_only=True) as s:
        jobs = s.query("SELECT seconds, CAST(timings AS VARCHAR) AS t FROM jobs")
        device = s.query("SELECT device FROM runs")["device"][0]
        history = load_history(s.query)
    recorded = [json.loads(t)["run.images_x_conditions"] for t in jobs["t"]]
    assert recorded == [N_IMAGES] * N_CHECKPOINTS
    per_image = statistics.median(jobs["seconds"] / N_IMAGES)

    specs = resolve_targets([str(reg)])
    metric = Accuracy(dataset="imagenet-sample")
    plans = plan(specs, [metric], PlanOptions(data, cache, force=True, dry_run=True), set())
    cost = estimate(plans, history, device, data, cache)
    acc = cost.metrics["accuracy"]
    assert acc.checkpoints == N_CHECKPOINTS and acc.estimated == N_CHECKPOINTS
    assert acc.units == N_CHECKPOINTS * N_IMAGES  # the stored jobs on the same datasets recorded it
    # without that record: the size of the decoded cache file (the run wrote it), then the folder
    assert estimate(plans, History(rates=history.rates), device, data, cache).units == acc.units
    assert list((cache / "datasets").glob("*.npy"))
    assert cost.seconds == pytest.approx(N_CHECKPOINTS * N_IMAGES * per_image, rel=1e-9)
    assert "from 4 stored timm:test_resnet jobs" in describe(cost)[0]
    # another device class has no history
    other = estimate(plans, history, "cuda:Some GPU", data, cache)
    assert other.seconds == 0 and "no history of accuracy on cuda:Some GPU" in describe(other)[0]


def test_the_rate_prefers_the_same_architecture_and_falls_back_to_the_metric():
    rates = [
        Rate("ood", "timm:resnet50", "gpu", 2.0),
        Rate("ood", "timm:resnet50", "gpu", 4.0),
        Rate("ood", "timm:vit", "gpu", 10.0),
        Rate("ood", "timm:resnet50", "cpu", 100.0),
    ]
    assert rate_for(rates, "ood", "timm:resnet50", "gpu") == (3.0, "2 stored timm:resnet50 jobs")
    assert rate_for(rates, "ood", "timm:convnext", "gpu") == (4.0, "3 stored jobs")
    assert rate_for(rates, "accuracy", "timm:resnet50", "gpu") is None


def test_a_dry_run_whose_data_is_missing_says_the_jobs_cannot_be_planned(setup):
    reg, _, tmp, _ = setup
    (tmp / "empty").mkdir()
    r = bench(_args(reg, tmp / "empty", tmp / "fresh.duckdb", "--dry-run"), tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert f"{N_CHECKPOINTS} checkpoints × accuracy: cannot be planned" in text
    assert "nothing to compute" not in text
