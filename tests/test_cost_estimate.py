"""``bench run --dry-run`` estimates its cost: images × conditions per metric and in total, and a time
from the stored timings of similar jobs (``no history`` when there are none)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
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
        history = load_history(s.timing_rows())
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
    assert "from 4 stored jobs of timm:test_resnet" in describe(cost)[0]
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
    assert rate_for(rates, "ood", "timm:resnet50", "gpu") == (3.0, "2 stored jobs of timm:resnet50")
    assert rate_for(rates, "ood", "timm:convnext", "gpu") == (4.0, "3 stored jobs of any architecture")
    assert rate_for(rates, "accuracy", "timm:resnet50", "gpu") is None


def _dry_run_without_data(tmp: Path, args: Callable[[Path], list[str]]) -> str:
    """The output (whitespace folded) of a dry run whose data root is an empty folder."""
    (tmp / "empty").mkdir()
    r = bench(args(tmp / "empty"), tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    return " ".join(r.stdout.split())


def test_a_dry_run_whose_data_is_missing_says_the_jobs_cannot_be_planned(setup):
    reg, _, tmp, _ = setup
    text = _dry_run_without_data(tmp, lambda data: _args(reg, data, tmp / "fresh.duckdb", "--dry-run"))
    assert f"{N_CHECKPOINTS} checkpoints × accuracy: cannot be planned" in text
    assert "nothing to compute" not in text


def _ood_args(reg: Path, data: Path, db: Path, *params: str) -> list[str]:
    run = ["run", str(reg), "-m", "ood", *[a for p in params for a in ("-p", p)]]
    return [*run, "--data-root", str(data), "--db", str(db), "--dry-run"]


def test_a_dry_run_sizes_absent_imagenet_sets_by_their_published_sizes(setup):
    reg, _, tmp, _ = setup
    text = _dry_run_without_data(
        tmp, lambda data: _ood_args(reg, data, tmp / "fresh.duckdb", "ood.sets=v2,a,c")
    )
    # the papers' sizes: ImageNetV2 10,000; ImageNet-A 7,500; ImageNet-C 19 corruptions × 5 × 50,000
    per_checkpoint = 10_000 + 7_500 + 19 * 5 * 50_000
    assert per_checkpoint == 4_767_500
    total = N_CHECKPOINTS * per_checkpoint  # 19.07 M
    assert f"{N_CHECKPOINTS} checkpoints × ood: 19.1 M images × conditions (all by published sizes" in text
    assert "a run now would fail them" in text and "cannot be planned" not in text
    assert f"total: {total / 1e6:.3g} M images × conditions" in text
    # the plan's note still says which set is missing and how to get it
    assert "imagenet-a" in text and "not found" in text.lower()


def test_pgd_images_count_their_passes_and_max_per_set_subsamples_the_work(setup):
    reg, _, tmp, _ = setup
    params = ("ood.sets=v2,pgd40", "ood.max_per_set=100", "ood.pgd_n_images=8")
    text = _dry_run_without_data(tmp, lambda data: _ood_args(reg, data, tmp / "fresh.duckdb", *params))
    # v2: 100 of 10,000 images; PGD-40: 8 images × (40 forward + 40 backward ≈ 2 forwards each + 1) = 968
    per_checkpoint = 100 + 8 * (40 * 3 + 1)
    assert f"{N_CHECKPOINTS * per_checkpoint / 1e3:.3g} k images × conditions" in text


def test_published_sizes_agree_with_the_download_specs_image_counts():
    from biasbench.harness.datasets import catalog
    from biasbench.harness.datasets.downloadable import get_download_spec

    for name in ("imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch", "cue-conflict", "edges"):
        m = get_download_spec(name)
        published = m.archive.n_files if m.archive and m.archive.n_files else m.n_files
        assert catalog.get(name).published_size == published, name


def test_a_dry_run_sizes_the_demo_worlds_generated_sets_before_any_run_renders_them(tmp_path, cache_dir):
    r = bench(
        ["run", "-m", "accuracy,spectral", "--db", str(tmp_path / "fresh.duckdb"), "--dry-run"], tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    # the demo registry's 13 checkpoints (11 zoo recipes, an ensemble, an input-dropout wrapper); the
    # world's test split holds 1,000 images (WorldConfig.n_test); spectral takes a seeded 200 of them
    # (the demo world's default) through the clean pass and 2 × 11 filter cutoffs
    assert "13 checkpoints × accuracy: 13 k images × conditions" in text
    assert f"13 checkpoints × spectral: {13 * 200 * (1 + 2 * 11) / 1e3:.3g} k images × conditions" in text
    assert not list(cache_dir.rglob("*.npy")), "a dry run renders nothing"
