"""OOD accuracy (issue 10): known answers for PGD, the 200-class restriction, ReaL scoring, input-blind
models, stratified subsampling and aggregates that are never partial."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from biasbench.core import labels
from biasbench.core.images import ImageSet
from biasbench.core.labels import DEMO_WORLD, IMAGENET_1K
from biasbench.metrics.base import EvalContext, ModelWrapper, ParamError
from biasbench.metrics.ood import OOD, stratified_subset
from biasbench.metrics.pgd import pgd_linf
from tests.conftest import require_module


def image_set(n: int, labels_: list[int], space: str, size: int = 8, **meta) -> ImageSet:
    g = torch.Generator().manual_seed(n)
    return ImageSet(
        name=f"fixture-{space}",
        images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
        labels=torch.tensor(labels_, dtype=torch.long),
        class_names=list(labels.get(space).class_names),
        label_space=space,
        item_ids=[f"i{k}" for k in range(n)],
        manifest_hash="fixture",
        meta=meta,
    )


class ConstantLogits(nn.Module):
    """Ignores its input: the same logits for every image (ties broken by the lowest index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone(), requires_grad=False)
        self.scale = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + self.scale * x.mean()


def wrap(net: nn.Module, space: str) -> ModelWrapper:
    return ModelWrapper(
        net, mean=(0.0,) * 3, std=(1.0,) * 3, num_classes=labels.get(space).num_classes, label_space=space
    ).eval()


# ----------------------------------------------------------------------------------------------------
# PGD
# ----------------------------------------------------------------------------------------------------


def test_pgd_stays_in_the_eps_ball_and_in_pixel_range_and_eps_zero_is_the_clean_image():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    )
    x = torch.rand(6, 3, 12, 12)
    x[:, :, 0, 0] = 0.0  # pixels at the bounds
    x[:, :, 0, 1] = 1.0
    y = torch.randint(0, 5, (6,))
    eps = 8 / 255
    xa = pgd_linf(net, x, y, eps=eps, step=2 / 255, steps=10, generator=torch.Generator().manual_seed(1))
    assert (xa - x).abs().max() <= eps + 1e-7 and xa.min() >= 0 and xa.max() <= 1
    assert not torch.equal(xa, x)
    assert torch.equal(pgd_linf(net, x, y, eps=0.0, step=2 / 255, steps=10), x)


def test_pgd_reaches_the_analytic_worst_case_of_a_linear_model():
    """Two classes, f(x) = W x: the cross-entropy gradient's sign is sign(w1 - w0) at every pixel, so
    the attack on class 0 ends at x0 + eps * sign(w1 - w0) (inside [0, 1] here)."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2, bias=False))
    x = 0.25 + 0.5 * torch.rand(3, 3, 4, 4)
    y = torch.zeros(3, dtype=torch.long)
    eps = 0.05
    xa = pgd_linf(lin, x, y, eps=eps, step=0.02, steps=40, generator=torch.Generator().manual_seed(2))
    w = lin[1].weight.detach()
    direction = torch.sign(w[1] - w[0]).view(1, 3, 4, 4)
    torch.testing.assert_close(xa, x + eps * direction, atol=1e-6, rtol=0)


def test_pgd_equals_foolbox_linf_pgd_without_random_start():
    """The study evaluates with foolbox's LinfPGD(steps=40, abs_stepsize=2/255) at eps 0.5/255: with the
    random start off, ours produces the same adversarial images (fp32, CPU)."""
    fb = require_module("foolbox")
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).eval()  # fmt: skip
    x = torch.rand(8, 3, 16, 16)
    y = net(x).argmax(dim=1)
    eps = 0.5 / 255
    ours = pgd_linf(net, x, y, eps=eps, step=2 / 255, steps=40, random_start=False)
    attack = fb.attacks.LinfPGD(steps=40, abs_stepsize=2 / 255, random_start=False)
    theirs = attack.run(fb.PyTorchModel(net, bounds=(0, 1)), x, fb.criteria.Misclassification(y), epsilon=eps)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert (ours - x).abs().max() > eps / 2  # the attack moved the images


# ----------------------------------------------------------------------------------------------------
# Sets
# ----------------------------------------------------------------------------------------------------


def test_a_constant_model_scores_one_in_two_hundred_on_a_balanced_imagenet_a_set_not_one_in_a_thousand():
    subset = labels.get(IMAGENET_1K).subset("imagenet-a")
    ds = image_set(200, list(subset), IMAGENET_1K)
    model = wrap(ConstantLogits(torch.zeros(1000)), IMAGENET_1K)
    res = OOD(sets=("a",)).evaluate(model, {"a": ds}, EvalContext())
    assert res.scalars["a_top1"] == pytest.approx(1 / 200) and res.n_for("a_top1") == 200
    assert res.flags and "robustness" in " ".join(res.flags)  # never a partial aggregate


def test_real_counts_a_hit_in_the_label_list_and_skips_images_without_labels():
    ds = image_set(3, [1, 2, 3], IMAGENET_1K, real=[(), (3,), (5, 7)])
    logits = torch.zeros(1000)
    logits[5] = 1.0
    res = OOD(sets=("real",)).evaluate(wrap(ConstantLogits(logits), IMAGENET_1K), {"real": ds}, EvalContext())
    assert res.scalars["real_top1"] == 0.5 and res.n_for("real_top1") == 2


def test_an_input_blind_model_scores_the_same_on_every_demo_set_and_aggregates_form(tmp_path):
    from biasbench.harness.datasets import catalog

    metric = OOD()
    data = {
        r: catalog.get(q.name).load(tmp_path, None, tmp_path) for r, q in metric.datasets(DEMO_WORLD).items()
    }
    logits = torch.zeros(10)
    logits[3] = 1.0
    res = metric.evaluate(wrap(ConstantLogits(logits), DEMO_WORLD), data, EvalContext(batch_size=128))
    calibration = ("_ece", "_nll", "_brier")  # version 2's calibration keys (tests/test_calibration.py)
    accs = {
        k: v
        for k, v in res.scalars.items()
        if (k.endswith(("_top1", "_mean")) or "@" in k) and not any(c in k for c in calibration)
    }
    # the demo world's defaults: 200 per set = 20 per class, so the constant answer (class 3) is right 1
    # time in 10; 25 per corruption cell = 2 per class plus one more for classes 0 … 4, so 3/25 in every
    # cell and their mean; PGD's 16 images are 1 per class plus one more for classes 0 … 5, so 2/16
    # (and no gradient to follow)
    assert accs.pop("pgd40_top1") == pytest.approx(2 / 16)
    cells = {k: v for k, v in accs.items() if k.startswith("c_")}
    assert len(cells) == 41 and all(v == pytest.approx(3 / 25) for v in cells.values())
    assert {res.n[k] for k in cells if "@" in k} == {25}
    sets = {k: v for k, v in accs.items() if k not in cells}
    assert len(sets) >= 3 and all(v == pytest.approx(0.1) for v in sets.values())
    assert {res.n[k] for k in sets} == {200}
    for agg in ("id", "concepts"):
        assert res.scalars[agg] == pytest.approx(0.1)
    assert res.scalars["robustness"] == pytest.approx(3 / 25)
    assert res.scalars["adversarial"] == pytest.approx(2 / 16)
    assert not res.flags


def test_an_explicit_max_per_set_also_sizes_the_corruption_cells(tmp_path):
    from biasbench.harness.datasets import catalog

    metric = OOD(max_per_set=30, sets=("imagenet", "c"))
    data = {
        r: catalog.get(q.name).load(tmp_path, None, tmp_path) for r, q in metric.datasets(DEMO_WORLD).items()
    }
    assert metric.work("c:gaussian_blur-3", 500, DEMO_WORLD) == 30
    assert OOD().work("c:gaussian_blur-3", 500, DEMO_WORLD) == 25  # the demo world's per-cell default
    assert OOD().work("imagenet", 1000, DEMO_WORLD) == 200
    res = metric.evaluate(wrap(ConstantLogits(torch.zeros(10)), DEMO_WORLD), data, EvalContext())
    assert {res.n[k] for k in res.scalars if k.startswith("c_top1@")} == {30}
    assert res.n["imagenet_top1"] == 30


def test_narrowed_sets_leave_aggregates_absent_and_flagged():
    ds = image_set(20, [k % 10 for k in range(20)], DEMO_WORLD)
    res = OOD(sets=("imagenet",)).evaluate(
        wrap(ConstantLogits(torch.zeros(10)), DEMO_WORLD), {"imagenet": ds}, EvalContext()
    )
    assert res.scalars["id"] == res.scalars["imagenet_top1"]
    assert "robustness" not in res.scalars and "adversarial" not in res.scalars
    said = " ".join(res.flags)
    assert "'robustness' not stored: missing c_mean" in said and "pgd40_top1" in said


def test_stratified_subset_is_balanced_seeded_and_whole_when_large():
    y = torch.tensor([k % 4 for k in range(40)] + [0] * 20)
    pick = stratified_subset(y, 8, seed=0, salt="x")
    assert torch.bincount(y[pick], minlength=4).tolist() == [2, 2, 2, 2]
    assert torch.equal(pick, stratified_subset(y, 8, seed=0, salt="x"))
    assert not torch.equal(pick, stratified_subset(y, 8, seed=1, salt="x"))
    assert torch.equal(stratified_subset(y, None, 0, "x"), torch.arange(60))


def test_bad_ood_parameters_are_refused_naming_them():
    for bad, name in (
        ({"sets": "v2,nope"}, "sets"),
        ({"max_per_set": 0}, "max_per_set"),
        ({"pgd_n_images": -1}, "pgd_n_images"),
    ):
        with pytest.raises(ParamError, match=name):
            OOD(**bad)
    assert OOD(sets="v2, a,v2").params.sets == ("v2", "a")
