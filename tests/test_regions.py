"""Sufficiency of pixel regions and where the SIS pixels lie (``regions``): known answers from models
that read one known pixel, the frame geometry, the vectorised SIS masks against the per-trace
reference, agreement with ``sis``'s traces, recomputation at another τ, and the declared heat map."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from biasbench.core.errors import InputError
from biasbench.metrics.base import EvalContext, ImageSet, MetricError, ModelWrapper, ParamError
from biasbench.metrics.regions import Regions
from biasbench.metrics.sis import SIS
from biasbench.metrics.sis_common import random_subset
from biasbench.metrics.sis_regions import (
    frame_mask,
    frame_share,
    frame_width,
    grid_cells,
    scalars_from_items,
    sis_masks,
)
from biasbench.metrics.sis_sets import sis_mask
from biasbench.metrics.sis_traces import subset_size

pytestmark = pytest.mark.usefixtures("one_thread")


class OnePixel(nn.Module):
    """Reads one pixel only: ``z = scale·x[0, row, col]`` of the normalised input, logits ``[z, −z]``.

    With the wrapper's mean 0.5 (the SIS baseline) a masked pixel gives ``z = 0``: equal logits, so the
    argmax is class 0 (the first maximum) and the clean prediction's probability is exactly 0.5. A bright
    pixel (1.0) gives class 0, a dark one (0.0) class 1, each with probability σ(scale) ≈ 1."""

    def __init__(self, row: int, col: int, scale: float = 20.0) -> None:
        super().__init__()
        self.row, self.col, self.scale = row, col, scale
        self.dummy = nn.Parameter(torch.zeros(()))  # the harness and BackSelect expect parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scale * x[:, 0, self.row, self.col] + 0.0 * self.dummy
        return torch.stack([z, -z], dim=1)


def wrap(net: nn.Module) -> ModelWrapper:
    return ModelWrapper(net, mean=(0.5,) * 3, std=(1.0,) * 3, num_classes=2, label_space="toy").eval()


def one_pixel_world(n: int, size: int, row: int, col: int, seed: int = 0) -> tuple[ImageSet, np.ndarray]:
    """``n`` noise images of ``size × size``; pixel (row, col) is white for label 0 and black for label 1
    (so the one-pixel model is always right on the clean image). Returns the set and the labels."""
    g = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 2, (n,), generator=g)
    u8[:, :, row, col] = torch.where(labels == 0, 255, 0).to(torch.uint8)[:, None]
    ds = ImageSet(
        name="toy",
        images=u8,
        labels=labels.long(),
        class_names=["bright", "dark"],
        label_space="toy",
        item_ids=[f"img{i:04d}" for i in range(n)],
        manifest_hash="toy",
    )
    return ds, labels.numpy()


# ----------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------


def test_the_frame_is_the_thinnest_that_reaches_the_share_and_its_share_is_exact():
    """224²: w = 2 holds 1 − 220²/224² = 3.54 %, w = 3 holds 1 − 218²/224² = 5.29 % ⇒ w = 3 at 5 %;
    32²: w = 1 already holds 1 − 30²/32² = 12.1 %; the frame mask counts HW − (H−2w)(W−2w) pixels."""
    assert frame_width(224, 224, 0.05) == 3
    assert frame_share(224, 224, 3) == pytest.approx(1 - 218**2 / 224**2)
    assert frame_width(224, 224, 1 - 220**2 / 224**2) == 2  # exactly reached counts
    assert frame_width(32, 32, 0.05) == 1 and frame_share(32, 32, 1) == pytest.approx(124 / 1024)
    assert frame_width(299, 299, 0.05) == 4
    m = frame_mask(6, 9, 2).reshape(6, 9)
    assert m.sum() == 6 * 9 - 2 * 5
    assert m[:2].all() and m[-2:].all() and m[:, :2].all() and m[:, -2:].all() and not m[2:4, 2:7].any()


def test_a_frame_that_leaves_no_centre_is_refused_with_the_widest_possible():
    """5×5: the widest frame with a centre is 2 px (24 of 25 pixels = 96 %), so 99 % is refused."""
    with pytest.raises(InputError, match="the widest, 2 px, holds 96.0%"):
        frame_width(5, 5, 0.99)
    with pytest.raises(ParamError, match="frame_share must be in"):
        Regions(frame_share=1.0)


def test_grid_cells_cover_the_image_in_row_major_blocks():
    """8×8 on a 4×4 grid: 2×2 blocks; 10×10 on 4: rows 0-2 | 3-4 | 5-7 | 8-9 (row·4 // 10)."""
    c = grid_cells(8, 8, 4).reshape(8, 8)
    assert c[0, 0] == 0 and c[1, 1] == 0 and c[0, 2] == 1 and c[7, 7] == 15 and c[2, 0] == 4
    assert np.bincount(grid_cells(8, 8, 4)).tolist() == [4] * 16
    rows = grid_cells(10, 10, 4).reshape(10, 10)[:, 0] // 4
    assert rows.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]


def test_vectorised_sis_masks_equal_the_per_trace_reference():
    """Random traces (some uncovered, some with an empty SIS): every row equals sis_sets.sis_mask."""
    rng = np.random.default_rng(3)
    n, p, steps = 40, 30, 6
    orders = np.stack([rng.permutation(np.repeat(np.arange(steps), p // steps)) for _ in range(n)])
    confs = rng.uniform(0.5, 1.0, (n, steps + 1)).astype(np.float32)
    confs[::7, -1] = 0.999  # fully masked image reaches τ: empty SIS
    for tau in (0.6, 0.9, 0.99):
        covered, masks = sis_masks(orders, confs, tau)
        for i in range(n):
            ref = sis_mask(orders[i], confs[i], tau)
            assert covered[i] == (ref is not None)
            assert np.array_equal(masks[i], ref if ref is not None else np.zeros(p, bool))


# ----------------------------------------------------------------------------------------------------
# Known answers: a model that reads one border pixel, one that reads the centre pixel
# ----------------------------------------------------------------------------------------------------

SIZE = 12  # P = 144; frame width 1 holds 1 − 10²/12² = 44/144 of the pixels


def _run(row: int, col: int, n: int = 24, **params) -> tuple[dict, pd.DataFrame, np.ndarray]:
    ds, labels = one_pixel_world(n, SIZE, row, col)
    res = Regions(n_images=n, tau=0.9, **params).evaluate(
        wrap(OnePixel(row, col)), {"images": ds}, EvalContext()
    )
    return res.scalars, res.items, labels


def test_a_model_reading_one_border_pixel_keeps_its_accuracy_on_the_frame_and_its_sis_lies_there():
    """Pixel (0, 5) is in the 1-px frame. Frame: the pixel is kept ⇒ top-1 = full top-1 = 1, confidence
    = the clean confidence. Centre: the pixel is at the baseline ⇒ equal logits ⇒ class 0 for every
    image, f = 0.5 exactly, top-1 = the share of label-0 images. Top-q BackSelect keeps the pixel
    (exact BackSelect masks it last) ⇒ top-1 = 1. SIS = {the pixel} ⇒ border share 1, enrichment =
    1 / frame share = 144/44; the heat map is 0 everywhere but the pixel's cell, whose density is
    (1/1) / (|cell| / P) = 144/9 on a 4×4 grid of 3×3 cells."""
    s, items, labels = _run(0, 5, method="exact", grid=4)
    share0 = float(np.mean(labels == 0))
    assert s["full_top1"] == 1.0 and s["frame_top1"] == 1.0 and s["backselect_top1"] == 1.0
    assert s["frame_conf"] == pytest.approx(s["full_conf"]) and s["frame_agree"] == 1.0
    assert s["centre_top1"] == pytest.approx(share0) and s["centre_agree"] == pytest.approx(share0)
    assert s["centre_conf"] == pytest.approx(0.5, abs=1e-7)
    assert s["frame_width"] == 1 and s["frame_share"] == pytest.approx(44 / 144)
    assert s["coverage"] == 1.0 and s["sis_frac_median"] == pytest.approx(1 / 144)
    assert s["sis_border_share_mean"] == 1.0
    assert s["border_enrichment"] == pytest.approx(144 / 44)
    assert s["border_enrichment_median"] == pytest.approx(144 / 44)
    dens = {k: v for k, v in s.items() if k.startswith("sis_density@")}
    assert len(dens) == 16 and dens["sis_density@0_1"] == pytest.approx(144 / 9)  # col 5 → cell 5·4//12 = 1
    assert sum(v for k, v in dens.items() if k != "sis_density@0_1") == 0.0
    assert (items["sis_border_share"] == 1.0).all()
    assert all(np.asarray(c)[1] == 1 and np.asarray(c).sum() == 1 for c in items["sis_cells"])


def test_a_model_reading_the_centre_pixel_is_the_reverse():
    """Pixel (6, 6): the frame alone gives class 0 everywhere (top-1 = share of label 0, f = 0.5), the
    centre keeps the full accuracy, and no SIS pixel lies in the frame (enrichment 0)."""
    s, _, labels = _run(6, 6, method="exact", grid=4)
    share0 = float(np.mean(labels == 0))
    assert s["centre_top1"] == 1.0 and s["centre_conf"] == pytest.approx(s["full_conf"])
    assert s["frame_top1"] == pytest.approx(share0) and s["frame_conf"] == pytest.approx(0.5, abs=1e-7)
    assert s["border_enrichment"] == 0.0 and s["sis_border_share_mean"] == 0.0
    assert s["sis_density@2_2"] == pytest.approx(144 / 9)  # row 6 → cell 6·4//12 = 2


def test_the_random_condition_is_right_exactly_when_it_keeps_the_pixel_or_the_label_is_class_0():
    """Random q keeps ceil(q·P) pixels drawn from the documented seeded generator (run seed, item id).
    The one-pixel model is right iff the pixel is kept or (it is masked and) the label is 0, and its f is
    the clean confidence or 0.5. Over many images the rate of keeping it is ceil(q·P)/P: with q = 0.25,
    36 of 144 — so top-1 ≈ 1/4 + 3/4 · P(label 0) (binomial tolerance)."""
    n = 400
    s, items, labels = _run(0, 5, n=n, q=0.25, k=36)  # batched gradient: the random subset needs no SIS
    n_q = subset_size(SIZE * SIZE, 0.25)
    kept = np.array(
        [0 * SIZE + 5 in set(random_subset(SIZE * SIZE, n_q, 0, it).tolist()) for it in items["item"]]
    )
    lab = items["label"].to_numpy()
    assert s["random_top1"] == pytest.approx(float(np.mean(kept | (lab == 0))))
    clean = items["clean_conf"].to_numpy()
    assert s["random_conf"] == pytest.approx(float(np.mean(np.where(kept, clean, 0.5))), abs=1e-6)
    expect = n_q / 144 + (1 - n_q / 144) * float(np.mean(labels == 0))
    sd = math.sqrt(expect * (1 - expect) / n)
    assert abs(s["random_top1"] - expect) < 4 * sd
    assert abs(kept.mean() - n_q / 144) < 4 * math.sqrt(0.25 * 0.75 / n)


# ----------------------------------------------------------------------------------------------------
# Consistency with sis, recomputation, refusals
# ----------------------------------------------------------------------------------------------------


def small_convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 2),
    )
    with torch.no_grad():
        net[-1].weight.mul_(40.0)
    return net


def test_with_sis_parameters_the_traces_and_the_subsets_are_sis_own():
    """Same τ, k, images and seed: regions' BackSelect traces are sis's, and its top-q and random
    conditions predict what sis's backselect and random subsets predict."""
    ds, _ = one_pixel_world(10, 10, 0, 0, seed=1)
    model = wrap(small_convnet())
    ctx = EvalContext(seed=5)
    a = SIS(n_images=8, tau=0.6, k=10).evaluate(model, {"images": ds}, ctx).items
    b = Regions(n_images=8, tau=0.6, k=10).evaluate(model, {"images": ds}, ctx).items
    assert list(a["item"]) == list(b["item"])
    for oa, ob in zip(a["order"], b["order"], strict=True):
        assert np.array_equal(oa, ob)
    assert list(a["backselect_subset_pred"]) == list(b["backselect_pred"])
    assert list(a["random_subset_pred"]) == list(b["random_pred"])
    assert np.allclose(a["random_subset_conf"], b["random_conf"], atol=1e-5)


def test_recompute_at_another_tau_equals_a_run_at_that_tau():
    ds, _ = one_pixel_world(12, 10, 0, 0, seed=2)
    model = wrap(small_convnet(1))
    run = {
        t: Regions(n_images=12, tau=t, k=10).evaluate(model, {"images": ds}, EvalContext())
        for t in (0.6, 0.9)
    }
    scalars, n = Regions.recompute(run[0.9].items, run[0.9].scalars, {"tau": 0.6})
    assert scalars.keys() == run[0.6].scalars.keys()
    for k, v in run[0.6].scalars.items():
        assert scalars[k] == pytest.approx(v), k
    assert n == run[0.6].n
    assert scalars_from_items(run[0.9].items.iloc[:0], 0.9, 8) == {
        "tau": 0.9,
        "grid": 8.0,
        "n_images": 0.0,
        "coverage": 0.0,
        "n_covered": 0.0,
    }


def test_a_small_image_frame_is_flagged_and_a_too_fine_grid_refused():
    ds, _ = one_pixel_world(4, SIZE, 0, 0)
    res = Regions(n_images=4, k=36).evaluate(wrap(OnePixel(0, 0)), {"images": ds}, EvalContext())
    assert any("holds 30.6% of the pixels, more than the asked 5.0%" in f for f in res.flags)
    with pytest.raises(MetricError, match="grid = 13 cells a side exceeds the 12×12"):
        Regions(n_images=4, k=36, grid=13).evaluate(wrap(OnePixel(0, 0)), {"images": ds}, EvalContext())


def test_a_stochastic_model_is_refused():
    class Noisy(OnePixel):
        def forward(self, x):
            return 0.0 * super().forward(x) + torch.randn(x.shape[0], 2)

    ds, _ = one_pixel_world(4, SIZE, 0, 0)
    with pytest.raises(MetricError, match="stochastic in eval mode"):
        Regions(n_images=4).evaluate(wrap(Noisy(0, 0)), {"images": ds}, EvalContext())


# ----------------------------------------------------------------------------------------------------
# The report: roles and the declared heat map
# ----------------------------------------------------------------------------------------------------


def test_the_keys_declare_their_roles_and_the_heat_map_is_drawn_from_stored_keys():
    """border_enrichment, frame_top1 and backselect_top1 are bias rows; the density cells diagnostic;
    the declared KeyGrid draws one 2×2 map per checkpoint with the stored values in place."""
    import biasbench
    from biasbench.reports import figures
    from biasbench.reports.roles import key_role

    assert key_role("regions", "border_enrichment").role == "bias"
    assert key_role("regions", "frame_top1").role == "bias"
    assert key_role("regions", "backselect_top1").role == "bias"
    assert key_role("regions", "random_top1").role == "diagnostic"
    assert key_role("regions", "sis_density@3_1").role == "diagnostic"
    rows = []
    for i in range(4):
        keys = {"border_enrichment": 1.0 + i, "frame_top1": 0.2 * i, "ood_like": 0.0}
        keys.update({f"sis_density@{r}_{c}": 1.0 + i * (r - c) for r in range(2) for c in range(2)})
        rows += [
            {"checkpoint": f"c{i}", "metric": "regions", "key": k, "value": v, "n": 8}
            for k, v in keys.items()
        ]
    rep = biasbench.report(pd.DataFrame(rows), resamples=50)
    (fig,) = [f for f in figures.declared_figures(rep) if f.stem == "regions_sis_density"]
    maps = [ax for ax in fig.figure.axes if ax.images]
    assert len(maps) == 4
    c3 = next(ax for ax in maps if ax.get_title() == "c3").images[0].get_array()
    assert np.asarray(c3).tolist() == [[1.0, -2.0], [4.0, 1.0]]
