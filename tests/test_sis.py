"""SIS sufficiency (Carter et al.): BackSelect traces, SIS_τ, scalars recomputed from traces."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from biasbench.core.labels import DEMO_WORLD, IMAGENET_1K
from biasbench.metrics.base import (
    EvalContext,
    ImageSet,
    MetricError,
    ModelWrapper,
    NotApplicable,
    ParamError,
    seeded_subset,
)
from biasbench.metrics.sis import SIS, default_k, default_tau, random_subset
from biasbench.metrics.sis_backselect import batched_gradient_backselect, exact_backselect, select_largest
from biasbench.metrics.sis_traces import (
    scalars_from_traces,
    sis_mask,
    subset_size,
    threshold_step,
    top_subset,
)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class TwoClassLinear(nn.Module):
    """Logits ``[w·x̄ + b, 0]`` with ``x̄`` = per-pixel channel mean: softmax prob of class 0 = σ(w·x̄ + b)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.float().clone())  # (H, W) or (3, H, W)
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = x.mean(dim=1) if self.w.ndim == 2 else x
        z0 = (feat * self.w).flatten(1).sum(1) + self.b
        return torch.stack([z0, torch.zeros_like(z0)], dim=1)


def wrap(
    net: nn.Module, num_classes: int = 2, mean: float = 0.0, std: float = 1.0, space: str = "toy"
) -> ModelWrapper:
    return ModelWrapper(
        net, mean=(mean,) * 3, std=(std,) * 3, num_classes=num_classes, label_space=space
    ).eval()


def imageset(x: torch.Tensor, labels: list[int] | None = None, space: str = "toy") -> ImageSet:
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    n = u8.shape[0]
    return ImageSet(
        name="toy",
        images=u8,
        labels=torch.tensor(labels if labels is not None else [0] * n, dtype=torch.long),
        class_names=[str(i) for i in range(10)],
        label_space=space,
        item_ids=[f"img{i:03d}" for i in range(n)],
        manifest_hash="toy",
    )


def small_convnet(num_classes: int = 3, seed: int = 0, scale: float = 40.0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )
    with torch.no_grad():
        net[-1].weight.mul_(scale)
    return net


ZERO = torch.zeros(1, 3, 1, 1)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------------
# The hand-checked example
# ----------------------------------------------------------------------------------------------------

# 4 features (a 1×4 image, every channel = 1, baseline 0), f = σ(b + Σ_{i unmasked} w_i) with
# w = (3, −1, 2, 1), b = −2. Clean: s = −2 + 3 − 1 + 2 + 1 = 3, f = σ(3) = 0.9526 (c0 = class 0).
# Exact BackSelect masks, at each step, the pixel whose removal keeps f highest:
#   step 0, s = 3: mask 0 → σ(0), mask 1 → σ(4), mask 2 → σ(1), mask 3 → σ(2)  ⇒ pixel 1, f = σ(4)
#   step 1, s = 4: mask 0 → σ(1), mask 2 → σ(2), mask 3 → σ(3)                 ⇒ pixel 3, f = σ(3)
#   step 2, s = 3: mask 0 → σ(0), mask 2 → σ(1)                                ⇒ pixel 2, f = σ(1)
#   step 3, s = 1: mask 0 → σ(−2)                                              ⇒ pixel 0, f = σ(−2)
# order = [3, 0, 2, 1]; conf (before each step, then fully masked) = σ([3, 4, 3, 1, −2])
#                                                               = [.9526, .9820, .9526, .7311, .1192].
# SIS_0.9:  t* = max{t : conf[t] ≥ .9} = 2 → SIS = {order ≥ 2} = {0, 2}; f({0,2}) = σ(3) ≥ .9 and
#           dropping pixel 2 (order t* = 2) gives σ(1) = .73 < .9.
# SIS_0.7:  t* = 3 → {0} (f = σ(1) = .731).
# SIS_0.97: conf[0] = .9526 < .97 → not covered, although conf[1] = σ(4) = .982 ≥ .97: a SIS exists only
#           when the clean image reaches τ (Carter et al.'s convention), and t* is never looked for.
# SIS_0.1:  t* = 4 = T → empty SIS: the fully masked image (σ(−2) = .119) already reaches τ (flagged).
# SIS_0.99: conf[0] = .9526 < .99 → not covered (no SIS even though nothing gets to .99 later either).
# Batched Gradient: g_i = ∂f/∂M_i = σ'(s)·(0 − 1)·w_i ∝ −w_i, so the ranking is the same at every step:
# k = 1 gives the exact order; k = 2 masks {1, 3} (largest −w) at step 0, then {0, 2}:
# order = [1, 0, 1, 0], conf = σ([3, 3, −2]) → SIS_0.9 = {order ≥ 1} = {0, 2} as well.

HAND_W = torch.tensor([[3.0, -1.0, 2.0, 1.0]])
HAND_B = -2.0
HAND_X = torch.ones(1, 3, 1, 4)


def test_hand_checked_exact_backselect_order_conf_and_sis():
    model = wrap(TwoClassLinear(HAND_W, HAND_B))
    tr = exact_backselect(model, HAND_X, ZERO)
    assert tr.c0.tolist() == [0]
    assert tr.order[0].tolist() == [3, 0, 2, 1]
    expected = [sigmoid(z) for z in (3, 4, 3, 1, -2)]
    np.testing.assert_allclose(tr.conf[0].numpy(), expected, rtol=1e-6)
    order, conf = tr.order[0].numpy(), tr.conf[0].numpy()
    assert threshold_step(conf, 0.9) == 2
    assert np.flatnonzero(sis_mask(order, conf, 0.9)).tolist() == [0, 2]
    assert sis_mask(order, conf, 0.97) is None and threshold_step(conf, 0.97) is None
    assert np.flatnonzero(sis_mask(order, conf, 0.7)).tolist() == [0]
    assert threshold_step(conf, 0.1) == 4 and not sis_mask(order, conf, 0.1).any()
    assert sis_mask(order, conf, 0.99) is None


def test_hand_checked_batched_gradient_k1_and_k2():
    model = wrap(TwoClassLinear(HAND_W, HAND_B))
    tr1 = batched_gradient_backselect(model, HAND_X, ZERO, k=1)
    assert tr1.order[0].tolist() == [3, 0, 2, 1]
    np.testing.assert_allclose(tr1.conf[0].numpy(), [sigmoid(z) for z in (3, 4, 3, 1, -2)], rtol=1e-6)
    tr2 = batched_gradient_backselect(model, HAND_X, ZERO, k=2)
    assert tr2.order[0].tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(tr2.conf[0].numpy(), [sigmoid(z) for z in (3, 3, -2)], rtol=1e-6)
    assert np.flatnonzero(sis_mask(tr2.order[0].numpy(), tr2.conf[0].numpy(), 0.9)).tolist() == [0, 2]
    assert (tr1.n_forward, tr1.n_backward) == (5, 4) and (tr2.n_forward, tr2.n_backward) == (3, 2)


def test_hand_checked_example_through_the_metric():
    model = wrap(TwoClassLinear(HAND_W, HAND_B))
    data = {"images": imageset(HAND_X)}
    res = SIS(method="exact", tau=0.9, q=0.5).evaluate(model, data, EvalContext())
    row = res.items.iloc[0]
    assert row["order"].dtype == np.int16 and row["order"].tolist() == [3, 0, 2, 1]
    assert row["conf"].dtype == np.float32 and len(row["conf"]) == 5
    assert res.scalars["coverage"] == 1.0
    assert res.scalars["sis_frac_median"] == 0.5
    assert res.scalars["sufficiency_rate"] == 1.0  # 2/4 ≤ q = 0.5
    # top-q subset with q = 0.5: the 2 pixels masked last = {0, 2} → f = σ(−2 + 3 + 2) = σ(3)
    assert row["backselect_subset_conf"] == pytest.approx(sigmoid(3), rel=1e-6)
    assert row["n_forward"] == 1 + 4 * 5 // 2 + 2 and row["n_backward"] == 0
    assert res.flags == []
    # τ = 0.1: the fully masked image reaches τ → empty SIS, scalar and flag
    low = scalars_from_traces(res.items, 0.1, 0.05)
    assert low["fully_masked_conf_ge_tau"] == 1.0 and low["sis_frac_median"] == 0.0
    res_low = SIS(method="exact", tau=0.1).evaluate(model, data, EvalContext())
    assert res_low.scalars["fully_masked_conf_ge_tau"] == 1.0
    assert any("fully masked" in f for f in res_low.flags)
    # τ = 0.99: not covered → only coverage-type keys, never NaN
    high = scalars_from_traces(res.items, 0.99, 0.05)
    assert high["coverage"] == 0.0 and "sis_frac_median" not in high
    assert all(not math.isnan(v) for v in high.values())


# ----------------------------------------------------------------------------------------------------
# Batched Gradient (k = 1) = exact BackSelect on a linear model
# ----------------------------------------------------------------------------------------------------


def test_batched_gradient_k1_equals_exact_backselect_on_two_class_linear_model():
    # Why this must hold: with two classes, softmax prob of class 0 is σ(s), s = z0 − z1 = w·x̃ + b,
    # linear in the mask: masking pixel u adds Δ_u = Σ_c w[c,u]·(baseline_c − x[c,u]) to s, whatever
    # else is masked. Exact BackSelect picks argmax_u σ(s + Δ_u) = argmax_u Δ_u (σ is increasing);
    # the gradient is ∂σ(s)/∂M_u = σ'(s)·Δ_u with one positive factor σ'(s) for all u, so its argmax
    # is argmax_u Δ_u too — at every step, so the orders agree and, as both evaluate f on the same
    # states, so do the confidences. (With C > 2 classes the softmax of a linear model is NOT a
    # monotone function of one linear score: first-order and exact rankings can differ, so the test
    # uses 2 classes.) The test keeps the Δ_u well separated (no near-ties) and |s| moderate, so fp32
    # rounding (σ saturating to 1) cannot merge two candidates' values in the exact search.
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 6, 6, generator=g)
    w = torch.randn(3, 6, 6, generator=g) * 0.6
    baseline = torch.full((1, 3, 1, 1), 0.5)
    deltas = (w * (baseline[0] - x)).sum(1).flatten(1)  # (B, P): Δ_u per image
    gaps = deltas.sort(dim=1).values.diff(dim=1)
    assert float(gaps.min()) > 1e-4  # no near-ties: the ranking is unambiguous in fp32
    model = wrap(TwoClassLinear(w, 0.5))
    ex = exact_backselect(model, x, baseline)
    bg = batched_gradient_backselect(model, x, baseline, k=1)
    assert torch.equal(ex.c0, bg.c0)
    assert torch.equal(ex.order, bg.order)
    np.testing.assert_allclose(ex.conf.numpy(), bg.conf.numpy(), rtol=1e-5, atol=1e-6)
    # and the order is the ranking of Δ (for c0 = 0, ascending order = descending Δ)
    for b in range(3):
        sign = 1.0 if int(ex.c0[b]) == 0 else -1.0
        expected = torch.argsort(-sign * deltas[b], stable=True)
        assert ex.order[b][expected].tolist() == list(range(36))


# ----------------------------------------------------------------------------------------------------
# A model that reads one pixel
# ----------------------------------------------------------------------------------------------------


class OnePixel(nn.Module):
    """Logits [3·z[0, i, j], 0] on the normalised input z: only pixel (i, j) matters."""

    def __init__(self, i: int, j: int) -> None:
        super().__init__()
        self.i, self.j = i, j
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z0 = 3.0 * z[:, 0, self.i, self.j] + self.dummy
        return torch.stack([z0, torch.zeros_like(z0)], dim=1)


@pytest.mark.parametrize(("method", "k"), [("exact", None), ("batched-gradient", 1), ("batched-gradient", 3)])
def test_model_reading_one_pixel_has_that_pixel_as_sis(method, k):
    # 8×8 = 64 pixels; the pixel (5, 2) is 1.0 in channel 0 → z = (1 − .5)/.25 = 2 → f = σ(6) = .9975;
    # at the baseline (the pixel mean .5) z = 0 → f = σ(0) = .5 < τ. Every other pixel changes nothing
    # (gradient exactly 0, exact candidates tie): it is masked first, lowest index first; the pixel is
    # masked last. With k = 3 the last step holds 64 − 21·3 = 1 pixel, so the SIS is exactly it too.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    x[:, 0, 5, 2] = 1.0
    model = wrap(OnePixel(5, 2), mean=0.5, std=0.25)
    res = SIS(method=method, k=k, tau=0.99).evaluate(model, {"images": imageset(x)}, EvalContext())
    for _, row in res.items.iterrows():
        sis = np.flatnonzero(sis_mask(row["order"], row["conf"], 0.99))
        assert sis.tolist() == [5 * 8 + 2]
    assert res.scalars["sis_frac_median"] == pytest.approx(1 / 64)
    assert res.scalars["fully_masked_conf_max"] == pytest.approx(0.5)


def test_model_reading_one_pixel_with_a_larger_last_group_contains_that_pixel():
    # k = 5: the last step masks 64 − 12·5 = 4 pixels at once — the pixel and the 3 highest-index
    # zero-gradient pixels (ties → lowest index first masked) — so the SIS is those 4 pixels.
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[:, 0, 5, 2] = 1.0
    model = wrap(OnePixel(5, 2), mean=0.5, std=0.25)
    tr = batched_gradient_backselect(model, x, torch.full((1, 3, 1, 1), 0.5), k=5)
    sis = np.flatnonzero(sis_mask(tr.order[0].numpy(), tr.conf[0].numpy(), 0.99))
    assert sis.tolist() == [42, 61, 62, 63]


# ----------------------------------------------------------------------------------------------------
# SIS_τ from the trace = a direct check with the model
# ----------------------------------------------------------------------------------------------------


def _f(model: nn.Module, img: torch.Tensor, c0: int) -> float:
    with torch.no_grad():
        return float(model(img[None]).float().softmax(1)[0, c0])


@pytest.mark.parametrize(("method", "k"), [("exact", 1), ("batched-gradient", 1), ("batched-gradient", 7)])
def test_sis_from_trace_matches_direct_check_with_the_model(method, k):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(8, 3, 8, 8, generator=g)
    model = wrap(small_convnet(3, seed=3, scale=80.0), num_classes=3, mean=0.45, std=0.25)
    base = model.pixel_mean
    if method == "exact":
        tr = exact_backselect(model, x, base)
    else:
        tr = batched_gradient_backselect(model, x, base, k=k)
    checked = 0
    for b in range(8):
        order, conf, c0 = tr.order[b].numpy(), tr.conf[b].numpy(), int(tr.c0[b])
        # a τ half-way between two recorded confidences (robust to fp32 differences between batches)
        levels = np.unique(conf[conf <= conf[0]])
        for lo, hi in zip(levels[:-1], levels[1:], strict=True):
            if hi - lo < 1e-4:
                continue
            tau = float((lo + hi) / 2)
            t_star = threshold_step(conf, tau)
            sis = torch.from_numpy(sis_mask(order, conf, tau)).view(1, 8, 8)
            sis_only = torch.where(sis, x[b], base[0])
            assert _f(model, sis_only, c0) >= tau
            assert _f(model, sis_only, c0) == pytest.approx(float(conf[t_star]), abs=1e-5)
            if t_star < len(conf) - 1:
                # drop the group added to the SIS last (order == t*): below τ, as conf[t* + 1] says
                smaller = sis & torch.from_numpy(order != t_star).view(1, 8, 8)
                dropped = _f(model, torch.where(smaller, x[b], base[0]), c0)
                assert dropped < tau
                assert dropped == pytest.approx(float(conf[t_star + 1]), abs=1e-5)
            checked += 1
    assert checked >= 8


# ----------------------------------------------------------------------------------------------------
# Traces recompute scalars; batching does not change traces
# ----------------------------------------------------------------------------------------------------


def _toy_run(batch_size: int = 4, **params) -> tuple[SIS, ImageSet, object]:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(10, 3, 8, 8, generator=g)
    ds = imageset(x, labels=[i % 3 for i in range(10)])
    model = wrap(small_convnet(3, seed=4), num_classes=3, mean=0.45, std=0.25)
    m = SIS(**{"k": 3, "n_images": 8, "tau": 0.6, **params})
    res = m.evaluate(model, {"images": ds}, EvalContext(batch_size=batch_size))
    return m, ds, res


def test_traces_recompute_scalars_identically_for_any_tau_and_q():
    _, _, res = _toy_run()
    items = res.items
    assert len(items) == 8 and items["item"].is_unique
    assert scalars_from_traces(items, 0.6, 0.05) == res.scalars
    # round trip through plain lists (as a store might keep them) changes nothing
    stored = items.assign(order=items["order"].map(list), conf=items["conf"].map(lambda c: c.tolist()))
    assert scalars_from_traces(stored, 0.6, 0.05) == res.scalars
    # the run's timing is a job timing, not a scalar (it would differ between reruns)
    assert "seconds_per_image" not in res.scalars and res.timings["seconds_per_image"] > 0
    # another τ and q from the traces = a fresh run with that τ and q
    _, _, res2 = _toy_run(tau=0.5, q=0.2)
    re = scalars_from_traces(items, 0.5, 0.2)
    fresh = dict(res2.scalars)
    # the subset keys stay at the evaluated q (0.05 vs 0.2), everything else must agree
    for key in list(fresh):
        if "subset" in key:
            re.pop(key, None), fresh.pop(key)
    assert re == fresh
    assert re["tau"] == 0.5 and re["q"] == 0.2


def test_batch_of_many_images_gives_the_same_traces_as_one_at_a_time():
    _, _, many = _toy_run(batch_size=8)
    _, _, one = _toy_run(batch_size=1)
    for (_, a), (_, b) in zip(many.items.iterrows(), one.items.iterrows(), strict=True):
        assert a["item"] == b["item"] and a["c0"] == b["c0"]
        np.testing.assert_array_equal(a["order"], b["order"])
        np.testing.assert_allclose(a["conf"], b["conf"], rtol=1e-5, atol=1e-6)
    x = torch.rand(5, 3, 6, 6, generator=torch.Generator().manual_seed(9))
    model = wrap(small_convnet(4, seed=1), num_classes=4, mean=0.45, std=0.25)
    ex_all = exact_backselect(model, x, model.pixel_mean, chunk_size=64)
    for b in range(5):
        ex_one = exact_backselect(model, x[b : b + 1], model.pixel_mean)
        assert torch.equal(ex_all.order[b], ex_one.order[0])


def test_stochastic_model_is_refused():
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = small_convnet(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(nn.functional.dropout(x, 0.5, training=True))  # dropout even in eval

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = wrap(Noisy(), num_classes=3)
    with pytest.raises(MetricError, match="stochastic in eval mode"):
        SIS(k=4).evaluate(model, {"images": imageset(x)}, EvalContext())


# ----------------------------------------------------------------------------------------------------
# Conventions and parameters
# ----------------------------------------------------------------------------------------------------


def test_select_largest_breaks_ties_by_lowest_index():
    g = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0, 5.0, float("-inf")]])
    assert select_largest(g, 2).tolist() == [[1, 2], [0, 4]]
    assert select_largest(g, 1).tolist() == [[1], [4]]
    assert sorted(select_largest(g, 4)[0].tolist()) == [1, 2, 4, 5]


def test_trace_length_and_last_partial_step():
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    model = wrap(small_convnet(3), num_classes=3)
    tr = batched_gradient_backselect(model, x, ZERO, k=7)  # 25 pixels: steps of 7, 7, 7, 4
    assert tr.conf.shape == (2, 5)
    for b in range(2):
        counts = np.bincount(tr.order[b].numpy(), minlength=4)
        assert counts.tolist() == [7, 7, 7, 4]
    # conf[T] is the fully masked image
    with torch.no_grad():
        full = model(ZERO.expand(2, 3, 5, 5)).softmax(1).gather(1, tr.c0[:, None]).squeeze(1)
    np.testing.assert_allclose(tr.conf[:, -1].numpy(), full.numpy(), rtol=1e-6)
    # parameters still trainable afterwards (frozen only during the call)
    assert all(p.requires_grad for p in model.parameters())
    # a harness that runs metrics under inference_mode / no_grad gets the same trace
    with torch.inference_mode():
        tr_inf = batched_gradient_backselect(model, x.clone(), ZERO, k=7)
    assert torch.equal(tr_inf.order, tr.order)


def test_top_subset_and_random_subset_conventions():
    order = np.array([2, 0, 2, 1, 2, 0], dtype=np.int16)
    assert top_subset(order, 2).tolist() == [0, 2]  # highest order; ties → lower flat index
    assert top_subset(order, 4).tolist() == [0, 2, 4, 3]
    assert subset_size(100, 0.05) == 5 and subset_size(50176, 0.05) == 2509 and subset_size(4, 0.05) == 1
    a = random_subset(1024, 52, seed=0, item="x")
    assert len(set(a.tolist())) == 52 and np.array_equal(a, random_subset(1024, 52, seed=0, item="x"))
    assert not np.array_equal(a, random_subset(1024, 52, seed=0, item="y"))
    assert seeded_subset(10, 20, 0).tolist() == list(range(10))
    s = seeded_subset(1000, 5, 3)
    assert len(s) == 5 and np.all(np.diff(s) > 0) and np.array_equal(s, seeded_subset(1000, 5, 3))


def test_defaults_by_label_space_and_datasets():
    assert default_tau(IMAGENET_1K) == 0.9 and default_tau(DEMO_WORLD) == 0.99
    assert default_k(IMAGENET_1K, 224, 224) == 100
    assert default_k(IMAGENET_1K, 64, 64) == 8
    assert default_k(DEMO_WORLD, 32, 32) == 20
    assert SIS().datasets(IMAGENET_1K)["images"].name == "imagenet-val"
    assert SIS(dataset="imagenet-sample").datasets(IMAGENET_1K)["images"].name == "imagenet-sample"
    assert SIS().datasets(DEMO_WORLD)["images"].name == "demo-world/test"
    with pytest.raises(NotApplicable):
        SIS().datasets("other")


def test_exact_refuses_large_inputs_and_bad_params():
    x = torch.rand(1, 3, 33, 33)
    model = wrap(small_convnet(3), num_classes=3)
    with pytest.raises(MetricError, match="1024 pixels"):
        SIS(method="exact").evaluate(model, {"images": imageset(x)}, EvalContext())
    for bad in ({"method": "greedy"}, {"baseline": "blue"}, {"k": 0}, {"tau": 1.5}, {"q": 0.0}):
        with pytest.raises(ParamError, match=f"parameter {next(iter(bad))}"):
            SIS(**bad)  # rejected when built, before any model or data


def test_scalars_rest_on_covered_images_and_count_them():
    _, _, res = _toy_run()
    items: pd.DataFrame = res.items
    covered = np.array([c[0] >= 0.6 for c in items["conf"]])
    assert res.scalars["coverage"] == pytest.approx(covered.mean())
    assert res.n_for("sis_frac_median") == covered.sum()
    assert res.n_for("coverage") == len(items)
    assert res.scalars["clean_conf"] == pytest.approx(items["clean_conf"][covered].mean())
    steps = -(-64 // 3)
    assert res.scalars["forward_passes_per_image"] == steps + 1 + 2
    assert res.scalars["backward_passes_per_image"] == steps
    res.validate("sis")
