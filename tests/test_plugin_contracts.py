"""Contract tests, parametrized over every installed plugin (timm-style): what any metric, dataset,
weight source and label space must do, whoever wrote it.

Metrics (ours, and a third-party one from ``tests/plugins``) run on the demo world with the shipped
``zoo-plain`` checkpoint: the result validates (scalars, declared item columns, headline keys), does
not change with the batch size or on a rerun with the same seed, and a bad parameter is rejected when
the metric is built (before any model loads), naming the parameter. Datasets: each loads (or, when
absent, says where it looked and how to get it), its labels lie in its label space, and its manifest
hash is stable and equals the loaded set's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from biasbench.core import labels
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets import catalog
from biasbench.harness.executor import wrap_model
from biasbench.metrics.base import EvalContext, Metric, MetricResult, ParamError
from biasbench.metrics.discovery import all_metrics
from biasbench.registry import loading, sources
from biasbench.registry.registry_files import resolve_targets
from tests.harness_fixtures import bench
from tests.plugins.probes import MeanConfidence

#: every installed metric plus the third-party test plugin
METRICS: dict[str, type[Metric]] = {**all_metrics(), MeanConfidence.name: MeanConfidence}

#: parameters that keep each metric's demo-world run to a few seconds on 2 cores (keys that exist)
FAST = {"n_images": 48, "max_per_set": 48, "pgd_n_images": 8}
FAST_SIS = {"n_images": 6}


def fast_params(cls: type[Metric]) -> dict:
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    wanted = FAST_SIS if cls.name in ("sis", "regions") else FAST  # BackSelect: a few images
    return {k: v for k, v in wanted.items() if k in fields}


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    (spec,) = [s for s in resolve_targets(["demo"]) if s.id == "zoo-plain"]
    loaded = loading.load_checkpoint(spec, cache_dir=tmp_path_factory.mktemp("cache"))
    return wrap_model(loaded, torch.device("cpu")), loaded


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets")


def evaluate(metric: Metric, model, cache: Path, batch_size: int, seed: int = 0) -> MetricResult:
    data = {}
    for role, req in metric.datasets(model.label_space).items():
        entry = catalog.get(req.name)
        data[role] = entry.load(Path("."), None if entry.as_stored else req.preprocess, cache)
    torch.manual_seed(1234)  # a metric must not depend on the global RNG; this makes a violation visible
    return metric.evaluate(model, data, EvalContext(batch_size=batch_size, seed=seed, channels_last=True))


# ----------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_returns_valid_results_that_do_not_depend_on_batch_size_or_rerun(name, demo_model, demo_cache):
    cls = METRICS[name]
    model, _ = demo_model
    metric = cls(**fast_params(cls))
    first = evaluate(metric, model, demo_cache, batch_size=64)
    first.validate(cls.name, cls.item_columns)
    assert set(cls.headline) <= set(first.scalars), "headline keys must be scalars of the result"
    for key in first.scalars:
        assert first.n_for(key) >= 0
    if first.items is not None:
        assert len(first.items) > 0 and first.items["item"].notna().all()
    again = evaluate(metric, model, demo_cache, batch_size=64)
    assert again.scalars == first.scalars, "a rerun with the same seed must give the same scalars"
    other_batch = evaluate(metric, model, demo_cache, batch_size=7)
    assert other_batch.scalars.keys() == first.scalars.keys()
    for key in first.scalars:
        # calibration keys read the probabilities themselves: float32 logits move by ~1e-7 with the
        # batch arrangement (no decision does), so ECE/NLL/Brier agree to 1e-5, accuracies exactly
        rel = 1e-5 if any(m in key for m in ("_ece", "_nll", "_brier")) else 1e-6
        assert other_batch.scalars[key] == pytest.approx(first.scalars[key], rel=rel, abs=1e-9), (
            key,
            "batch 7 vs 64",
        )


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_rejects_bad_parameters_when_built_naming_the_parameter(name):
    cls = METRICS[name]
    with pytest.raises(ParamError, match="no parameter no_such_param"):
        cls(no_such_param=1)
    for f in dataclasses.fields(cls.Params):
        with pytest.raises(ParamError, match=rf"\b{f.name}\b"):
            cls(**{f.name: {"not": "a valid value"}})
    cls()  # the defaults are valid


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_declares_datasets_for_the_demo_world_or_is_not_applicable(name):
    metric = METRICS[name]()
    requests = metric.datasets(labels.DEMO_WORLD)
    assert requests, "a metric that applies must ask for at least one dataset"
    for req in requests.values():
        assert catalog.get(req.name).label_space in labels.known()


def test_a_bad_parameter_stops_bench_run_before_any_checkpoint_is_resolved(tmp_path):
    reg = tmp_path / "r.toml"
    reg.write_text('[[checkpoint]]\nid = "x"\narch = "timm:test_resnet"\nweights = "/nonexistent/w.pth"\n')
    r = bench(
        ["run", str(reg), "-m", "sis", "-p", "sis.tau=high", "--dry-run", "--db", str(tmp_path / "b.duckdb")],
        tmp_path,
    )
    assert r.returncode == 2
    assert "parameter tau = 'high'" in r.stderr and "w.pth" not in r.stderr
    assert not (tmp_path / "b.duckdb").exists()


# ----------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------

DATASETS = sorted(catalog.catalog())
#: one preprocessing for the datasets that are decoded per checkpoint (small: decoding is the cost)
SMALL = Preprocess(resize=72, crop=64)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_loads_in_its_label_space_with_a_stable_manifest(name, shared_data, demo_cache):
    entry = catalog.get(name)
    space = labels.get(entry.label_space)
    pre = None if entry.as_stored else SMALL
    try:
        manifest = entry.manifest(shared_data, pre)
    except catalog.DatasetMissing as e:  # absent from ../shared/data: the message must help
        assert entry.location is not None, "a generated dataset can never be missing"
        text = str(e)
        assert str(entry.location(shared_data).resolve()) in text or entry.location(shared_data).name in text
        assert "bench data fetch" in text or "Get " in text or "put them" in text
        return
    assert entry.manifest(shared_data, pre) == manifest, "the manifest hash must be stable"
    ds = entry.load(shared_data, pre, demo_cache)
    assert ds.manifest_hash == manifest and ds.name == name and ds.label_space == space.name
    assert len(ds) > 0 and ds.images.dtype == torch.uint8 and ds.images.shape[1] == 3
    assert list(ds.class_names) == list(space.class_names)
    assert int(ds.labels.min()) >= -1 and int(ds.labels.max()) < space.num_classes
    assert (ds.labels >= 0).any()


def test_every_label_space_is_consistent():
    for name in labels.known():
        space = labels.get(name)
        assert space.name == name and len(space.class_names) == space.num_classes
        assert len(set(space.class_ids)) == space.num_classes
        for purpose, dataset in space.datasets.items():
            assert catalog.get(dataset).label_space in labels.known(), (name, purpose)
        for target in space.decisions:
            groups = space.decision_groups(target)
            assert len(groups) == labels.get(target).num_classes
            assert all(0 <= i < space.num_classes for g in groups for i in g)
        for subset in space.subsets:
            idx = space.subset(subset)
            assert len(idx) == len(set(idx)) and all(0 <= i < space.num_classes for i in idx)


def test_imagenet_label_space_carries_timms_subsets_and_real_labels():
    space = labels.get(labels.IMAGENET_1K)
    assert len(space.subset("imagenet-a")) == 200 and len(space.subset("imagenet-r")) == 200
    real = space.multi_label("real")
    assert len(real) == 50000 and real[1] == (970, 795) and real[0] == ()
    assert space.class_ids[0] == "n01440764" and space.class_names[0] == "tench"
    assert len(space.decision_groups(labels.IMAGENET16)) == 16


def test_every_weight_source_declares_its_syntax_and_parses_it():
    found = sources.SOURCES.all()
    assert {"path", "https", "http", "timm", "torchvision", "hf-hub", "package", "zoo"} <= set(found)
    for scheme, src in found.items():
        assert src.syntax and src.summary(), scheme
    assert sources.parse_weights("http://h/w.pth", "c").kind == "https"
    assert sources.parse_weights("zoo:plain", "c") == sources.WeightSource("zoo", "plain")
    assert sources.parse_weights("./w.pth", "c").kind == sources.PATH_KIND
