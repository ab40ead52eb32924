"""Calibration (ECE, NLL, Brier) from logits, and as keys of the ``ood`` metric: known answers derived
by hand (a perfectly calibrated bin, a confident coin-flipper, uniform logits, one-hot predictions, the
bin edges) and an independent re-implementation of Guo et al.'s binning loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from biasbench.core import labels
from biasbench.core.labels import DEMO_WORLD, IMAGENET_1K
from biasbench.metrics.base import EvalContext
from biasbench.metrics.calibration import (
    N_BINS,
    brier_score,
    calibration,
    confidence_bins,
    ece_from_confidences,
    expected_calibration_error,
    negative_log_likelihood,
)
from biasbench.metrics.ood import OOD
from biasbench.reports.roles import key_role
from tests.test_ood import ConstantLogits, image_set, wrap

MEASURES = ("ece", "nll", "brier")


def reference_ece(logits: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    """Guo et al.'s reference loop (gpleiss/temperature_scaling): bins (lower, upper] from linspace."""
    p = torch.softmax(logits.double(), dim=1)
    conf, pred = p.max(dim=1)
    acc = (pred == y).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += float(inside.double().mean()) * abs(float(acc[inside].mean()) - float(conf[inside].mean()))
    return ece


# ----------------------------------------------------------------------------------------------------
# ECE
# ----------------------------------------------------------------------------------------------------


def test_a_bin_whose_confidence_equals_its_accuracy_has_ece_zero():
    """Two classes, logits (log 3, 0): p = (3/4, 1/4) for every item, one bin; 3 of 4 labels are class 0,
    so accuracy 0.75 = confidence 0.75."""
    logits = torch.tensor([[math.log(3.0), 0.0]] * 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    assert torch.softmax(logits.double(), 1).max(1).values.tolist() == pytest.approx([0.75] * 4, abs=1e-15)
    assert expected_calibration_error(logits, y) == pytest.approx(0.0, abs=1e-12)


def test_an_always_certain_coin_flipper_has_ece_one_half():
    """A logit margin of 100: confidence 1 − e^−100 ≈ 1 on every item, half of them right: |0.5 − 1|."""
    logits = torch.tensor([[100.0, 0.0]] * 6)
    y = torch.tensor([0, 1] * 3)
    assert expected_calibration_error(logits, y) == pytest.approx(0.5, abs=1e-6)


def test_bins_are_fifteen_equal_width_and_right_closed():
    assert N_BINS == 15
    conf = torch.tensor(
        [1e-9, 1 / 15, 1 / 15 + 1e-12, 0.2, 0.2 + 1e-12, 0.5, 14 / 15, 1.0], dtype=torch.float64
    )
    assert confidence_bins(conf).tolist() == [0, 0, 1, 2, 3, 7, 13, 14]
    # an edge value 0.2 = 3/15 belongs to the bin below it: in a bin with 0.2 − 1e-9 (0.3 = |0.5 − 0.2|) …
    same = ece_from_confidences(torch.tensor([0.2 - 1e-9, 0.2], dtype=torch.float64), torch.tensor([1, 0]))
    assert same == pytest.approx(0.3, abs=1e-8)
    # … not with 0.2 + 1e-9: two bins, ½ |1 − 0.2| + ½ |0 − 0.2| = 0.5
    split = ece_from_confidences(torch.tensor([0.2, 0.2 + 1e-9], dtype=torch.float64), torch.tensor([1, 0]))
    assert split == pytest.approx(0.5, abs=1e-8)


def test_ece_equals_guo_et_als_binning_loop_on_random_logits():
    g = torch.Generator().manual_seed(0)
    for k, scale in ((2, 1.0), (10, 3.0), (200, 8.0)):
        logits = scale * torch.randn(500, k, generator=g)
        y = torch.randint(0, k, (500,), generator=g)
        assert expected_calibration_error(logits, y) == pytest.approx(reference_ece(logits, y), abs=1e-12)


def test_ece_takes_the_callers_top1_correctness():
    logits = torch.zeros(4, 3)  # uniform: confidence 1/3, argmax class 0
    y = torch.tensor([0, 1, 2, 0])
    assert expected_calibration_error(logits, y) == pytest.approx(abs(0.5 - 1 / 3), abs=1e-12)
    hit = torch.tensor([True, True, True, True])
    assert expected_calibration_error(logits, y, correct=hit) == pytest.approx(2 / 3, abs=1e-12)


# ----------------------------------------------------------------------------------------------------
# NLL and Brier
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 10, 200, 1000])
def test_uniform_logits_have_nll_log_k_and_brier_one_minus_one_over_k(k):
    logits = torch.full((7, k), 3.5)
    y = torch.arange(7) % k
    assert negative_log_likelihood(logits, y) == pytest.approx(math.log(k), abs=1e-12)
    # (1 − 1/K)² + (K − 1)/K² = 1 − 1/K
    assert brier_score(logits, y) == pytest.approx(1 - 1 / k, abs=1e-12)


def test_one_hot_predictions_have_brier_zero_when_right_and_two_when_wrong():
    logits = torch.tensor([[1000.0, 0.0, 0.0]])  # p = (1, 0, 0) exactly in float64
    assert brier_score(logits, torch.tensor([0])) == 0.0
    assert brier_score(logits, torch.tensor([2])) == 2.0
    assert brier_score(logits.repeat(2, 1), torch.tensor([0, 1])) == 1.0


def test_nll_is_the_float64_cross_entropy_and_finite_beyond_float32_underflow():
    g = torch.Generator().manual_seed(1)
    logits, y = 4 * torch.randn(300, 10, generator=g), torch.randint(0, 10, (300,), generator=g)
    ce = float(F.cross_entropy(logits.double(), y))
    assert negative_log_likelihood(logits, y) == pytest.approx(ce, abs=1e-12)
    # a margin of 200: the float32 softmax of the true class underflows to 0 (−log 0 = inf)
    far = torch.tensor([[200.0, 0.0]])
    assert float(torch.softmax(far, 1)[0, 1]) == 0.0
    assert negative_log_likelihood(far, torch.tensor([1])) == pytest.approx(200.0, abs=1e-9)
    # … and beyond float64's (e^−2000 = 0): log_softmax never takes the log of an underflowed p
    assert negative_log_likelihood(torch.tensor([[2000.0, 0.0]]), torch.tensor([1])) == 2000.0


def test_brier_equals_the_one_hot_sum_written_out():
    g = torch.Generator().manual_seed(2)
    logits, y = 2 * torch.randn(50, 6, generator=g), torch.randint(0, 6, (50,), generator=g)
    p = torch.softmax(logits.double(), 1)
    want = float(((p - F.one_hot(y, 6).double()) ** 2).sum(1).mean())
    assert brier_score(logits, y) == pytest.approx(want, abs=1e-12)


def test_items_with_a_negative_label_are_excluded_from_all_three():
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(20, 5, generator=g), torch.randint(0, 5, (20,), generator=g)
    extra = torch.cat([logits, 10 * torch.randn(6, 5, generator=g)])
    y_extra = torch.cat([y, torch.full((6,), -1)])
    a, b = calibration(logits, y), calibration(extra, y_extra)
    assert b.n == 20 and (a.ece, a.nll, a.brier) == pytest.approx((b.ece, b.nll, b.brier), abs=1e-15)
    empty = calibration(logits[:3], torch.full((3,), -1))
    assert empty.n == 0 and all(math.isnan(v) for v in empty.as_dict().values())


def test_a_label_outside_the_logits_is_refused():
    with pytest.raises(ValueError, match="classes"):
        calibration(torch.zeros(2, 3), torch.tensor([0, 3]))


# ----------------------------------------------------------------------------------------------------
# In the ood metric
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory):
    from biasbench.harness.datasets import catalog

    tmp = tmp_path_factory.mktemp("calibration-demo")
    return {r: catalog.get(q.name).load(tmp, None, tmp) for r, q in OOD().datasets(DEMO_WORLD).items()}


def _calibration_keys(scalars: dict) -> dict[str, float]:
    return {k: v for k, v in scalars.items() if any(f"_{m}" in k for m in MEASURES)}


def test_uniform_logits_on_the_demo_world_give_nll_log_k_and_ece_the_gap_to_one_over_k(demo_data):
    k = labels.get(DEMO_WORLD).num_classes
    model = wrap(ConstantLogits(torch.zeros(k)), DEMO_WORLD)
    res = OOD(sets=("imagenet", "c", "edges")).evaluate(model, demo_data, EvalContext(batch_size=128))
    sets = ["imagenet", "edges"] + [key.split("@")[1] for key in res.scalars if key.startswith("c_top1@")]
    assert len(sets) == 2 + 40
    for s in sets:
        top1, stem, at = (f"{s}_top1", s, "") if "-" not in s else (f"c_top1@{s}", "c", f"@{s}")
        assert res.scalars[f"{stem}_nll{at}"] == pytest.approx(math.log(k), abs=1e-12)
        # the stored top-1 is a float32 mean (±1e-8); the ECE is computed in float64
        assert res.scalars[f"{stem}_ece{at}"] == pytest.approx(abs(res.scalars[top1] - 1 / k), abs=1e-7)
        assert res.scalars[f"{stem}_brier{at}"] == pytest.approx(1 - 1 / k, abs=1e-12)
        assert res.n_for(f"{stem}_ece{at}") == res.n_for(top1)
    assert (
        res.scalars["c_nll_mean"] == pytest.approx(math.log(k), abs=1e-12) and res.n_for("c_nll_mean") == 40
    )
    assert res.scalars["id_nll"] == res.scalars["imagenet_nll"]
    assert res.scalars["robustness_ece"] == res.scalars["c_ece_mean"]


def test_uniform_logits_on_an_unbalanced_set_have_ece_the_gap_between_accuracy_and_one_over_k():
    """Every image gets the same (tied) top-1 class, the one the stored accuracy counts — which one is up
    to ``topk``'s tie-breaking (it differs from ``argmax``'s): 7 of the 10 labelled images are class 0
    and 3 class 1, so the accuracy is 0.7, 0.3 or 0 and the ECE |accuracy − 0.1| = 0.6, 0.2 or 0.1; the
    unlabelled images (−1) count for neither."""
    ds = image_set(12, [0] * 7 + [1] * 3 + [-1, -1], DEMO_WORLD)
    res = OOD(sets=("imagenet",)).evaluate(
        wrap(ConstantLogits(torch.zeros(10)), DEMO_WORLD), {"imagenet": ds}, EvalContext()
    )
    acc = res.scalars["imagenet_top1"]
    assert acc in (pytest.approx(0.7), pytest.approx(0.3), 0.0) and res.n_for("imagenet_ece") == 10
    assert res.scalars["imagenet_ece"] == pytest.approx(abs(acc - 0.1), abs=1e-7)
    assert res.scalars["imagenet_nll"] == pytest.approx(math.log(10), abs=1e-12)
    said = " ".join(res.flags)
    assert "'robustness_ece' not stored: missing c_ece_mean" in said


def test_imagenet_a_calibration_is_over_its_two_hundred_classes_and_id_is_imagenet_with_v2():
    subset = labels.get(IMAGENET_1K).subset("imagenet-a")
    model = wrap(ConstantLogits(torch.zeros(1000)), IMAGENET_1K)
    data = {
        "a": image_set(200, list(subset), IMAGENET_1K),
        "imagenet": image_set(10, list(range(10)), IMAGENET_1K),
        "v2": image_set(4, [0, 0, 5, 6], IMAGENET_1K),
    }
    res = OOD(sets=("imagenet", "v2", "a")).evaluate(model, data, EvalContext())
    assert res.scalars["a_nll"] == pytest.approx(math.log(200), abs=1e-12)
    assert res.scalars["a_ece"] == pytest.approx(0.0, abs=1e-12)  # accuracy 1/200 = confidence 1/200
    assert res.scalars["a_brier"] == pytest.approx(1 - 1 / 200, abs=1e-12)
    assert res.scalars["v2_ece"] == pytest.approx(0.5 - 1 / 1000, abs=1e-12)
    for m in MEASURES:  # ReaL has no calibration: id's is mean(imagenet, v2)
        want = (res.scalars[f"imagenet_{m}"] + res.scalars[f"v2_{m}"]) / 2
        assert res.scalars[f"id_{m}"] == pytest.approx(want, abs=1e-15)
        assert f"robustness_{m}" not in res.scalars
    assert "id" not in res.scalars  # the accuracy aggregate still needs real


def test_a_trained_looking_model_on_the_demo_world_stores_plausible_calibration_keys(demo_data):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10)
    )
    res = OOD(pgd_n_images=4).evaluate(wrap(net, DEMO_WORLD), demo_data, EvalContext(batch_size=128))
    cal = _calibration_keys(res.scalars)
    # 3 sets (clean, edges, silhouettes) + 40 cells + the family mean, × 3; id and robustness × 3
    assert len(cal) == 3 * (3 + 40 + 1) + 6 and not res.flags
    assert not any(k.startswith(("pgd40_", "concepts_", "adversarial_")) for k in cal)
    for key, v in cal.items():
        assert math.isfinite(v), key
        if "_ece" in key:
            assert 0.0 <= v <= 1.0, key
        elif "_nll" in key:
            assert v >= 0.0, key
        else:
            assert 0.0 <= v <= 2.0, key
    for m in MEASURES:
        cells = [v for k, v in res.scalars.items() if k.startswith(f"c_{m}@")]
        assert res.scalars[f"c_{m}_mean"] == pytest.approx(sum(cells) / 40, abs=1e-12)
        assert res.scalars[f"robustness_{m}"] == res.scalars[f"c_{m}_mean"]
        assert res.scalars[f"id_{m}"] == res.scalars[f"imagenet_{m}"]


def test_calibration_keys_declare_their_roles_lower_is_better():
    for agg in ("id", "robustness"):
        for m in MEASURES:
            role = key_role("ood", f"{agg}_{m}")
            # ECE joins the report's columns; NLL and Brier are there on request (--generalization)
            expected = "generalization" if m == "ece" else "diagnostic"
            assert role.role == expected and role.higher_is_better is False and role.label
    for key in ("imagenet_ece", "c_nll@blur-3", "c19_brier_mean", "c_ece_mean"):
        role = key_role("ood", key)
        assert role.role == "diagnostic" and role.higher_is_better is False, key
    assert key_role("ood", "c_mean").higher_is_better is True  # accuracy keys as before
    assert key_role("ood", "c_top1@blur-3").higher_is_better is True
