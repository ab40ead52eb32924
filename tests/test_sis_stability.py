"""SIS reproducibility (issue 17): the robust ranking, the two-path stability rerun, fp64, and the
bootstrap CI of the SIS scalars."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from biasbench.core.statistics import bootstrap_ci
from biasbench.metrics.base import EvalContext, ImageSet, ModelWrapper, ParamError
from biasbench.metrics.sis import SIS, model_as, other_memory_format
from biasbench.metrics.sis_backselect import batched_gradient_backselect, rounded_scores, select_largest
from biasbench.metrics.sis_stability import first_divergence, pair_stats, stability_scalars
from biasbench.metrics.sis_traces import scalars_from_traces, sis_fractions
from tests.test_sis import small_convnet

pytestmark = pytest.mark.usefixtures("one_thread")

ROBUST_TOL = 1e-4  # the tolerance the README's measurements were made with


def wrap(net: nn.Module, num_classes: int, mean: float = 0.0, std: float = 1.0) -> ModelWrapper:
    return ModelWrapper(
        net, mean=(mean,) * 3, std=(std,) * 3, num_classes=num_classes, label_space="toy"
    ).eval()


def imageset(x: torch.Tensor) -> ImageSet:
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    n = u8.shape[0]
    return ImageSet(
        name="toy",
        images=u8,
        labels=torch.zeros(n, dtype=torch.long),
        class_names=[str(i) for i in range(10)],
        label_space="toy",
        item_ids=[f"img{i:03d}" for i in range(n)],
        manifest_hash="toy",
    )


class BatchNoisyLinear(nn.Module):
    """Logits ``[Σ w·x̄, 0]`` (``x̄`` = channel mean) with ``w[p2]`` scaled by ``1 ± rel`` depending on the
    batch size's parity: a stand-in for batch-dependent floating-point noise, ``rel`` relative."""

    def __init__(self, w: torch.Tensor, p2: int, rel: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.p2, self.rel = p2, rel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.w.flatten().clone()
        w[self.p2] = w[self.p2] * (1 + (self.rel if x.shape[0] % 2 else -self.rel))
        z = (x.mean(dim=1).flatten(1) * w).sum(1)
        return torch.stack([z, torch.zeros_like(z)], dim=1)


# ----------------------------------------------------------------------------------------------------
# Robust ranking
# ----------------------------------------------------------------------------------------------------


def test_rounded_scores_use_a_power_of_two_scale_and_tie_below_the_tolerance():
    # max |g| = 3 → scale 4 → grid 0.4 at rank_tol 0.1: 2.9 → 7, 3.0 → 8 (7.5 half-to-even), 0.41 → 1
    g = torch.tensor([[3.0, 2.9, 0.41, -3.0, 0.39]], dtype=torch.float64)
    removed = torch.tensor([[False, False, False, False, True]])
    out = rounded_scores(g, removed, 0.1)
    assert out[0, :4].tolist() == [8.0, 7.0, 1.0, -8.0] and out[0, 4] == -math.inf
    # all zero: scale 1, every unmasked pixel ties at 0 (and then ranks by index)
    z = rounded_scores(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), 0.1)
    assert z.tolist() == [[0.0, 0.0, 0.0]]
    # rank_tol 0: the raw gradient
    assert torch.equal(rounded_scores(g, removed, 0.0)[0, :4], g[0, :4])


def test_near_tie_of_1e_9_relative_is_ranked_by_index_whatever_the_batch():
    # 4×4 image of ones, baseline 0: ∂ log p / ∂M_i = (1 − p)·(−w_i), so pixels 5 and 6 (w = −1, the
    # largest gradient) go first; pixel 6's weight moves by ±1e-9 relative with the batch size's parity
    w = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)
    w[5] = w[6] = -1.0
    model = wrap(BatchNoisyLinear(w.view(4, 4), p2=6, rel=1e-9), 2).double()
    x = torch.ones(3, 3, 4, 4, dtype=torch.float64)
    base = torch.zeros(1, 3, 1, 1, dtype=torch.float64)

    def first_pixel(bsz: int, tol: float) -> list[int]:
        tr = batched_gradient_backselect(model, x[:bsz], base, 1, rank_tol=tol, max_steps=2)
        return [int(torch.nonzero(tr.order[b] == 0)) for b in range(bsz)]

    # the raw gradient follows the noise: pixel 6 first in odd batches, pixel 5 in even ones
    assert first_pixel(1, 0.0) == [6] and first_pixel(2, 0.0) == [5, 5] and first_pixel(3, 0.0) == [6, 6, 6]
    # rounded to 1e-4 of the scale they tie, and the lower index goes first in every batch
    for bsz in (1, 2, 3):
        assert first_pixel(bsz, ROBUST_TOL) == [5] * bsz
        tr = batched_gradient_backselect(model, x[:bsz], base, 1, rank_tol=ROBUST_TOL)
        ref = batched_gradient_backselect(model, x[:1], base, 1, rank_tol=ROBUST_TOL)
        assert all(torch.equal(tr.order[b], ref.order[0]) for b in range(bsz))


def test_traces_do_not_depend_on_the_runs_batch_size_but_on_the_sis_batch_parameter():
    # the near-tie model above: pixel 6 goes first in odd-sized batches, pixel 5 in even-sized ones
    w = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)
    w[5] = w[6] = -1.0
    model = wrap(BatchNoisyLinear(w.view(4, 4), p2=6, rel=1e-9), 2).double()
    data = {"images": imageset(torch.ones(6, 3, 4, 4))}

    def first_pixels(run_batch: int, **params) -> list[int]:
        ctx = EvalContext(batch_size=run_batch, seed=0)
        res = SIS(tau=0.5, k=1, precision="fp64", baseline="black", **params).evaluate(model, data, ctx)
        return [int(np.flatnonzero(o == 0)[0]) for o in res.items["order"]]

    # sis.batch = 2 (even): pixel 5 first for every image, whatever --batch-size the run was given
    assert first_pixels(3, batch=2) == first_pixels(4, batch=2) == first_pixels(64, batch=2) == [5] * 6
    # sis.batch = 3 (odd): pixel 6 first; the parameter, part of the job's key, decides
    assert first_pixels(2, batch=3) == first_pixels(64, batch=3) == [6] * 6
    with pytest.raises(ParamError, match="batch"):
        SIS(batch=0)


def test_robust_ranking_keeps_the_order_of_well_separated_gradients():
    # gradients 1e-2 apart relative are far above the tolerance: the raw and the rounded ranking agree
    g = torch.tensor([[0.50, 0.51, 0.52, 0.53, 0.54, 0.55]], dtype=torch.float64)
    removed = torch.zeros_like(g, dtype=torch.bool)
    for n in (1, 2, 3):
        assert torch.equal(select_largest(rounded_scores(g, removed, ROBUST_TOL), n), select_largest(g, n))


# ----------------------------------------------------------------------------------------------------
# Pair statistics
# ----------------------------------------------------------------------------------------------------


def test_first_divergence_is_the_first_step_whose_removal_sets_differ():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert first_divergence(a, a.copy(), 3) == 3  # identical: T
    assert first_divergence(a, np.array([0, 0, 1, 2, 1, 2]), 3) == 1  # step 1 removes {2,3} vs {2,4}
    assert first_divergence(a, np.array([0, 1, 0, 1, 2, 2]), 3) == 0
    assert first_divergence(a, np.array([0, 0, 1, 1, 2, 2])[::-1].copy(), 3) == 0


def test_pair_stats_size_ratio_and_jaccard_by_hand():
    # T = 3 steps of 2 pixels; τ = 0.9. Path a: conf ≥ τ until t* = 2 → SIS = {order ≥ 2} = {4, 5};
    # path b: t* = 1 → SIS = {order ≥ 1} = {2, 3, 4, 5} with order (0,0,1,2,1,2) → {2,3,4,5} too.
    conf_a = np.array([0.95, 0.94, 0.92, 0.5], dtype=np.float32)
    conf_b = np.array([0.95, 0.93, 0.6, 0.5], dtype=np.float32)
    oa, ob = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 2, 1, 2])
    ps = pair_stats(oa, conf_a, 3, ob, conf_b, 3, 0.9)
    assert ps["first_divergence"] == 1.0
    assert ps["size_ratio"] == 4 / 2 and ps["jaccard"] == 2 / 4
    # another clean prediction: diverged from the start
    assert pair_stats(oa, conf_a, 3, oa, conf_a, 4, 0.9)["first_divergence"] == 0.0
    # not covered on one path: no SIS to compare
    low = np.array([0.5, 0.4, 0.3, 0.2], dtype=np.float32)
    assert math.isnan(pair_stats(oa, conf_a, 3, oa, low, 3, 0.9)["jaccard"])


# ----------------------------------------------------------------------------------------------------
# The metric: stability rerun, fp64, CI
# ----------------------------------------------------------------------------------------------------


def _run(stability: int, channels_last: bool = True, **params) -> tuple[ModelWrapper, pd.DataFrame, dict]:
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    model = wrap(small_convnet(seed=0), 3, mean=0.45, std=0.25)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ctx = EvalContext(batch_size=4, channels_last=channels_last, seed=5)
    res = SIS(tau=0.6, k=4, stability=stability, **params).evaluate(model, {"images": imageset(x)}, ctx)
    return model, res.items, res.scalars


def test_stability_rerun_stores_both_traces_and_scalars_recomputable_from_them():
    model, items, scalars = _run(stability=4)
    rerun = [len(o) > 0 for o in items["alt_order"]]
    assert sum(rerun) == 4
    # each rerun trace is a fresh run of that image alone, in the other memory format
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    x = (x.clamp(0, 1) * 255).round() / 255
    for j in np.flatnonzero(rerun):
        with model_as(model, torch.float32, other_memory_format(True), restore_format=torch.channels_last):
            tr = batched_gradient_backselect(model, x[j : j + 1].contiguous(), model.pixel_mean, 4)
        np.testing.assert_array_equal(items["alt_order"][j], tr.order[0].numpy())
        # first divergence by walking the steps: the first t whose removal sets differ
        a, b = items["order"][j], items["alt_order"][j]
        steps = len(items["conf"][j]) - 1
        walk = next((t for t in range(steps) if not np.array_equal(a == t, b == t)), steps)
        assert items["first_divergence"][j] == walk
    # the model is back in fp32 and channels-last
    conv = model.net[0].weight
    assert conv.dtype == torch.float32 and conv.is_contiguous(memory_format=torch.channels_last)
    # every stability scalar is there and is recomputed from the stored traces alone
    for key in (
        "stability_n_images",
        "stability_identical_frac",
        "stability_first_divergence_median",
        "stability_first_divergence_frac_median",
    ):
        assert key in scalars
    assert scalars["stability_n_images"] == 4
    assert scalars_from_traces(items, 0.6, 0.05) == scalars
    ok = items[rerun]
    assert scalars["stability_first_divergence_median"] == np.median(ok["first_divergence"])


def test_stability_scalars_by_hand_from_constructed_traces():
    # three images, T = 2 steps of 2 pixels (P = 4), τ = 0.5
    conf = np.array([0.9, 0.7, 0.2], dtype=np.float32)  # t* = 1: SIS = order ≥ 1 (2 pixels)
    conf_b = np.array([0.9, 0.4, 0.2], dtype=np.float32)  # t* = 0: SIS = all 4 pixels
    o = np.array([0, 0, 1, 1], dtype=np.int16)
    traces = pd.DataFrame(
        {
            "item": ["a", "b", "c", "d"],
            "c0": [1, 1, 1, 1],
            "order": [o, o, o, o],
            "conf": [conf, conf, conf, conf],
            "alt_order": [o, np.array([0, 1, 0, 1], np.int16), o, np.zeros(0, np.int16)],
            "alt_conf": [conf, conf, conf_b, np.zeros(0, np.float32)],
            "alt_c0": [1, 1, 1, -1],
        }
    )
    s = stability_scalars(traces, 0.5)
    # a: identical (divergence 2, Δ 0); b: diverges at step 0, SIS {2,3} vs {1,3}: Δ 0, Jaccard 1/3;
    # c: same order, SIS 2 vs 4 pixels: Δ 0.5, Jaccard 0.5, divergence 2; d: not rerun
    assert s["stability_n_images"] == 3
    assert s["stability_identical_frac"] == pytest.approx(2 / 3)
    assert s["stability_first_divergence_median"] == 2
    assert s["stability_first_divergence_frac_median"] == 1.0
    assert s["stability_abs_dsis_frac_median"] == 0.0
    assert s["stability_jaccard_median"] == 0.5
    assert "stability_sis_size_spearman" not in s  # sizes constant on path a: ρ undefined


def test_fp64_runs_the_model_in_float64_and_hands_it_back_in_float32():
    seen: list[torch.dtype] = []
    model, items, scalars = _run(stability=2, precision="fp64")
    model.net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model(torch.rand(1, 3, 8, 8))
    assert seen == [torch.float32]
    _, items32, _ = _run(stability=0)
    # the same algorithm in another precision: same clean predictions, confidences within fp32 rounding
    assert (items["c0"] == items32["c0"]).all()
    np.testing.assert_allclose(
        np.stack(items["conf"].map(lambda c: c[0])), np.stack(items32["conf"].map(lambda c: c[0])), rtol=1e-5
    )
    assert scalars["stability_identical_frac"] == 1.0


def test_sis_scalars_carry_the_bootstrap_ci_of_the_report_statistics():
    _, items, scalars = _run(stability=0)
    frac = sis_fractions(items, 0.6)
    frac = frac[np.isfinite(frac)]
    assert (scalars["sis_frac_median_ci_low"], scalars["sis_frac_median_ci_high"]) == bootstrap_ci(frac)
    assert (
        scalars["sis_frac_median_ci_low"] <= scalars["sis_frac_median"] <= scalars["sis_frac_median_ci_high"]
    )
    assert (scalars["sufficiency_rate_ci_low"], scalars["sufficiency_rate_ci_high"]) == bootstrap_ci(
        (frac <= 0.05).astype(float), np.mean
    )


def test_new_parameters_are_checked():
    for bad in ({"precision": "fp16"}, {"rank_tol": -1e-3}, {"rank_tol": 1.0}, {"stability": -1}):
        with pytest.raises(ParamError):
            SIS(**bad)


def test_key_roles_declare_the_bias_keys_and_the_stability_keys():
    roles = SIS.key_roles
    assert roles["sis_frac_median"].role == roles["sufficiency_rate"].role == "bias"
    assert roles["sis_frac_median_ci_*"].role == "stability"
    assert roles["stability_abs_dsis_frac_median"].role == "stability"


# ----------------------------------------------------------------------------------------------------
# The demo world, end to end: `bench run` (channels-last, batched) vs the rerun (alone, contiguous)
# ----------------------------------------------------------------------------------------------------


def test_demo_world_two_paths_give_identical_traces_under_the_robust_ranking(tmp_path):
    from biasbench.core import world
    from biasbench.harness.executor import wrap_model
    from biasbench.harness.store import JobKey, JobRecord, Store
    from biasbench.registry import loading
    from biasbench.registry.registry_files import resolve_targets

    # the demo zoo's plain checkpoint as the harness runs it: channels-last, batches of 4
    spec = next(s for s in resolve_targets(["demo"]) if s.id == "zoo-plain")
    model = wrap_model(loading.load_checkpoint(spec, cache_dir=tmp_path / "cache"), torch.device("cpu"))
    ds = world.generate("test", world.WorldConfig(n_test=20))
    ctx = EvalContext(batch_size=4, channels_last=True, seed=0)
    # 6 images, k = 64 (16 steps at 32 px) keep it to seconds
    metric = SIS(n_images=6, stability=6, k=64, rank_tol=ROBUST_TOL)
    res = metric.evaluate(model, {"images": ds}, ctx)

    # through the store and back: the stored items alone give the stored scalars
    store = Store(tmp_path / "b.duckdb")
    store.write_job(
        JobKey("plain", "sis", "h"),
        JobRecord(
            metric_version=metric.version,
            params=metric.params_json(),
            scalars=res.scalars,
            n=res.n,
            items=res.items,
            flags=res.flags,
            run_id="r",
        ),
    )
    items = store.items("plain", "sis")
    steps = items["conf"].map(len) - 1
    assert len(items) == 6 and (items["alt_order"].map(len) == items["order"].map(len)).all()
    for a, b in zip(items["order"], items["alt_order"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert (items["first_divergence"] == steps).all()
    assert res.scalars["stability_identical_frac"] == 1.0 and res.scalars["stability_n_images"] == 6
    assert scalars_from_traces(items, res.scalars["tau"], res.scalars["q"]) == res.scalars
