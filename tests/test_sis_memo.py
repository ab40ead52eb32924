"""``sis`` and ``regions`` share one BackSelect per model and batch (:mod:`biasbench.metrics.sis_memo`):
the second metric stores exactly what it would have computed alone and records only its own forwards;
anything that can change a trace's bits (the weights, the images, the baseline, the settings, the
thread count) makes it compute afresh."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from biasbench.metrics.base import WORK_DONE, EvalContext, ImageSet, ModelWrapper
from biasbench.metrics.regions import Regions
from biasbench.metrics.sis import SIS
from biasbench.metrics.sis_common import run_backselect
from biasbench.metrics.sis_memo import forget

pytestmark = pytest.mark.usefixtures("one_thread")

N, SIZE = 12, 8


def small_net(seed: int = 0) -> ModelWrapper:
    """A random conv net whose BackSelect traces depend on every weight (no known answer needed here:
    the test compares a reused trace with a recomputed one)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(6 * SIZE * SIZE, 3))
    return ModelWrapper(net, mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=3, label_space="toy").eval()


def noise_set(seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(
        name="toy",
        images=torch.randint(0, 256, (N, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        labels=torch.randint(0, 3, (N,), generator=g),
        class_names=["a", "b", "c"],
        label_space="toy",
        item_ids=[f"img{i:03d}" for i in range(N)],
        manifest_hash="toy",
    )


PARAMS = dict(n_images=N, tau=0.5, k=4, batch=5)


def test_regions_after_sis_stores_what_regions_alone_stores_and_records_only_its_own_forwards():
    model, ds = small_net(), noise_set()
    forget(model)
    alone = Regions(**PARAMS).evaluate(model, {"images": ds}, EvalContext())
    forget(model)
    sis = SIS(**PARAMS).evaluate(model, {"images": ds}, EvalContext())
    after = Regions(**PARAMS).evaluate(model, {"images": ds}, EvalContext())

    assert after.scalars.keys() == alone.scalars.keys()
    for key, value in alone.scalars.items():
        assert after.scalars[key] == pytest.approx(value, abs=0, nan_ok=True), key
    for column in ("order", "conf", "c0", "frame_conf", "backselect_conf", "random_pred"):
        for a, b in zip(alone.items[column], after.items[column], strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the same traces as sis's, image by image
    for a, b in zip(sis.items["order"], after.items["order"], strict=True):
        np.testing.assert_array_equal(a, b)
    # regions alone: BackSelect (T + 1 forwards, T backwards at 2 each) + 4 conditions per image + the
    # stochasticity check's 2 x 8; after sis, only the 4 conditions and the check
    steps = int(alone.items["n_backward"].iloc[0])
    assert alone.timings[WORK_DONE] == N * (3 * steps + 1 + 4) + 16
    assert after.timings[WORK_DONE] == N * 4 + 16
    assert sis.timings[WORK_DONE] == N * (3 * steps + 1 + 2) + 16


def test_an_in_place_weight_change_a_new_image_or_another_k_computes_afresh():
    model, ds = small_net(), noise_set()
    forget(model)
    x = (ds.images[:4].float() / 255).contiguous()
    base = torch.full((1, 3, 1, 1), 0.5)
    first = run_backselect(model, x, base, 4, method="batched-gradient", rank_tol=0.0)
    assert not first.reused
    again = run_backselect(model, x.clone(), base, 4, method="batched-gradient", rank_tol=0.0)
    assert again.reused and torch.equal(again.order, first.order)

    other_k = run_backselect(model, x, base, 8, method="batched-gradient", rank_tol=0.0)
    assert not other_k.reused
    other_image = x.clone()
    other_image[0, 0, 0, 0] += 1e-3
    assert not run_backselect(model, other_image, base, 4, method="batched-gradient", rank_tol=0.0).reused
    assert not run_backselect(model, x, base * 0, 4, method="batched-gradient", rank_tol=0.0).reused

    with torch.no_grad():
        next(model.parameters()).mul_(-1.0)  # an in-place update: same storage, new version
    changed = run_backselect(model, x, base, 4, method="batched-gradient", rank_tol=0.0)
    assert not changed.reused
    assert not torch.equal(changed.conf, first.conf)


def test_another_thread_count_computes_afresh():
    model, ds = small_net(), noise_set()
    forget(model)
    x = ds.images[:4].float() / 255
    base = torch.full((1, 3, 1, 1), 0.5)
    run_backselect(model, x, base, 4, method="batched-gradient", rank_tol=0.0)
    torch.set_num_threads(2)  # the one_thread fixture restores the count
    assert not run_backselect(model, x, base, 4, method="batched-gradient", rank_tol=0.0).reused


def test_a_different_model_object_with_equal_weights_does_not_share():
    a, b, ds = small_net(), small_net(), noise_set()
    forget(a)
    forget(b)
    x = ds.images[:4].float() / 255
    base = torch.full((1, 3, 1, 1), 0.5)
    run_backselect(a, x, base, 4, method="batched-gradient", rank_tol=0.0)
    assert not run_backselect(b, x, base, 4, method="batched-gradient", rank_tol=0.0).reused
