"""Spectral bias (Gavrikov & Keuper 2024): the box filters, the metric's keys and known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from biasbench.core.labels import DEMO_WORLD, IMAGENET_1K
from biasbench.metrics.base import (
    EvalContext,
    ModelWrapper,
    NotApplicable,
    Preprocess,
)
from biasbench.metrics.fourier_filters import (
    HIGHPASS,
    LOWPASS,
    box_filter,
    box_filter_reference,
    box_half_width,
    shifted_box,
    shifted_mask,
)
from biasbench.metrics.spectral import CUTOFFS, Spectral
from tests.harness_fixtures import image_set

# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def shifted_spectrum(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))


def box_sets(size: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(box, mirrored box) as 2-D boolean masks over fftshift-ed indices (square images)."""
    b1 = shifted_box(size, r)
    box = b1[:, None] & b1[None, :]
    idx = torch.arange(size)
    mirror_idx = (2 * (size // 2) - idx) % size  # index of frequency -k
    mirrored = box[mirror_idx][:, mirror_idx]
    return box, mirrored


# ----------------------------------------------------------------------------------------------------
# the filters
# ----------------------------------------------------------------------------------------------------


def test_box_half_width_is_floor_of_cutoff_times_half_size() -> None:
    assert [box_half_width(c, LOWPASS, 224) for c in CUTOFFS] == [math.floor(c * 112) for c in CUTOFFS]
    assert box_half_width(0.1, LOWPASS, 224) == 11
    assert box_half_width(0.5, LOWPASS, 224) == 56
    assert box_half_width(0.99, HIGHPASS, 224) == 1
    assert box_half_width(0.1, HIGHPASS, 224) == 100  # floor(0.9 · 112)
    # scaled with the image: floor(c · H / 2)
    assert box_half_width(0.1, LOWPASS, 64) == 3
    assert box_half_width(0.5, LOWPASS, 32) == 8
    assert box_half_width(0.01, LOWPASS, 64) == 0


@pytest.mark.parametrize("cutoff", [0.01, 0.1, 0.3, 0.5, 0.9])
def test_lowpass_keeps_exactly_the_box(cutoff: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224)
    r = box_half_width(cutoff, LOWPASS, 224)
    box, mirrored = box_sets(224, r)
    f_in = shifted_spectrum(x)
    f_out = shifted_spectrum(box_filter(x, cutoff, LOWPASS, clip=False))
    tol = 1e-3 * f_in.abs().max()
    # nothing outside the box survives; the box's symmetric core is kept unchanged; the unpaired
    # row/column -r of the box (and its mirror +r) keeps half its amplitude (the .real of the definition)
    assert f_out[..., ~(box | mirrored)].abs().max() < tol
    assert (f_out - f_in)[..., box & mirrored].abs().max() < tol
    assert (f_out - 0.5 * f_in)[..., box ^ mirrored].abs().max() < tol


@pytest.mark.parametrize("cutoff", [0.01, 0.1, 0.5, 0.9, 0.99])
def test_highpass_removes_exactly_the_box(cutoff: float) -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 224, 224)
    r = box_half_width(cutoff, HIGHPASS, 224)
    box, mirrored = box_sets(224, r)
    f_in = shifted_spectrum(x)
    f_out = shifted_spectrum(box_filter(x, cutoff, HIGHPASS, clip=False))
    tol = 1e-3 * f_in.abs().max()
    assert f_out[..., box & mirrored].abs().max() < tol
    assert (f_out - f_in)[..., ~(box | mirrored)].abs().max() < tol
    assert (f_out - 0.5 * f_in)[..., box ^ mirrored].abs().max() < tol


def test_highpass_099_at_224_removes_only_the_2x2_block_around_dc() -> None:
    mask = shifted_mask(224, 224, 0.99, HIGHPASS)
    removed = torch.nonzero(mask == 0).tolist()
    assert sorted(map(tuple, removed)) == [(111, 111), (111, 112), (112, 111), (112, 112)]  # DC = (112, 112)
    torch.manual_seed(2)
    x = torch.rand(1, 3, 224, 224)
    f_in, f_out = shifted_spectrum(x), shifted_spectrum(box_filter(x, 0.99, HIGHPASS, clip=False))
    changed = (f_out - f_in).abs() > 1e-3 * f_in.abs().max()
    # only frequencies within ±1 of DC change (the block and, through .real, its mirror)
    assert not changed[..., :111, :].any() and not changed[..., 114:, :].any()
    assert not changed[..., :, :111].any() and not changed[..., :, 114:].any()
    assert f_out[..., 112, 112].abs().max() < 1e-3  # DC is gone


@pytest.mark.parametrize("kind", [LOWPASS, HIGHPASS])
@pytest.mark.parametrize("size", [(224, 224), (32, 32), (33, 40)])
def test_batched_filter_equals_the_literal_definition(kind: str, size: tuple[int, int]) -> None:
    torch.manual_seed(3)
    x = torch.rand(1, 3, *size)
    for c in CUTOFFS:
        ours = box_filter(x, c, kind).double()
        ref = box_filter_reference(x, c, kind)
        assert (ours - ref).abs().max() < 1e-5, (c, kind)


def test_output_is_clipped_to_unit_range() -> None:
    x = torch.zeros(2, 3, 64, 64)
    x[..., 16:48] = 1.0  # a hard-edged bar: low-pass ringing and the high-pass leave [0, 1] before the clip
    for kind, c in ((LOWPASS, 0.1), (HIGHPASS, 0.5)):
        raw = box_filter(x, c, kind, clip=False)
        assert raw.min() < 0 or raw.max() > 1
        out = box_filter(x, c, kind)
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, raw.clamp(0, 1))


def test_filter_stays_float32_under_autocast() -> None:
    torch.manual_seed(5)
    x = torch.rand(2, 3, 32, 32)
    ctx = EvalContext(amp_dtype=torch.bfloat16)
    fn = Spectral.transform(LOWPASS, 0.3, ctx)
    with ctx.autocast():
        out = fn(x, slice(0, 2))
    assert out.dtype == torch.float32
    assert torch.allclose(out, box_filter(x, 0.3, LOWPASS), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# datasets and keys
# ----------------------------------------------------------------------------------------------------


def test_dataset_requests_follow_the_design() -> None:
    req = Spectral().datasets(IMAGENET_1K)["images"]
    assert req.name == "imagenet-val"
    assert req.preprocess == Preprocess(resize=256, crop=224, interpolation="bilinear")
    assert Spectral(dataset="imagenet-sample").datasets(IMAGENET_1K)["images"].name == "imagenet-sample"
    assert Spectral().datasets(DEMO_WORLD)["images"].name == "demo-world/test"
    # the demo world is used as stored: the planner ignores the fixed geometry of the request
    from biasbench.harness.datasets import catalog

    assert catalog.get(Spectral().datasets(DEMO_WORLD)["images"].name).as_stored
    with pytest.raises(NotApplicable):
        Spectral().datasets("somewhere-else")


class QuadrantWorld:
    """32 px images (the demo world's size) whose class is the bright quadrant, overlaid with a
    Nyquist-frequency checkerboard; label space with one extra class ("dark") that no image has."""

    size = 32
    n_classes = 4

    @classmethod
    def prototypes(cls) -> torch.Tensor:
        s, h = cls.size, cls.size // 2
        protos = torch.full((cls.n_classes + 1, s, s), 0.25)
        for k, (i, j) in enumerate([(0, 0), (0, h), (h, 0), (h, h)]):
            protos[k, i : i + h, j : j + h] = 0.75
        protos[cls.n_classes] = 0.0  # "dark"
        return protos

    @classmethod
    def images(cls, per_class: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        protos = cls.prototypes()[: cls.n_classes]
        yy, xx = torch.meshgrid(torch.arange(cls.size), torch.arange(cls.size), indexing="ij")
        checker = ((yy + xx) % 2).float() * 2 - 1
        labels = torch.arange(cls.n_classes).repeat(per_class)
        amp = 0.05 + 0.05 * torch.rand(len(labels), generator=g)
        offset = 0.04 * (torch.rand(len(labels), generator=g) - 0.5)
        x = protos[labels] + amp[:, None, None] * checker + offset[:, None, None]
        u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return u8[:, None].expand(-1, 3, -1, -1).contiguous(), labels


class LowpassTemplateNet(nn.Module):
    """Low-pass filters its own input (box, c = 0.1), then matches it against low-passed class
    templates (nearest template wins)."""

    def __init__(self, templates: torch.Tensor, cutoff: float = 0.1) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("templates", box_filter(templates, cutoff, LOWPASS, clip=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = box_filter(x.mean(dim=1), self.cutoff, LOWPASS, clip=False)
        return -(low[:, None] - self.templates[None]).square().sum(dim=(-2, -1))


def test_model_that_lowpasses_its_input_has_lpp_one_and_hpp_zero() -> None:
    images, labels = QuadrantWorld.images()
    ds = image_set(images, labels, "quadrants", QuadrantWorld.n_classes + 1)
    net = LowpassTemplateNet(QuadrantWorld.prototypes())
    model = ModelWrapper(net, mean=(0, 0, 0), std=(1, 1, 1), num_classes=5, label_space="quadrants")
    result = Spectral().evaluate(model, {"images": ds}, EvalContext(batch_size=5))
    s = result.scalars
    assert s["clean_acc"] == 1.0
    assert s["LPP"] == pytest.approx(1.0, abs=1e-9)
    assert s["HPP"] == pytest.approx(0.0, abs=1e-9)
    assert s["spectral_bias"] == pytest.approx(0.0, abs=1e-9)
    # every condition is stored, and ratios are accuracies over clean accuracy
    for kind in ("lowpass", "highpass"):
        for c in CUTOFFS:
            key = f"{c:g}"
            assert s[f"{kind}_ratio@{key}"] == pytest.approx(s[f"{kind}_acc@{key}"] / s["clean_acc"])
    assert len([k for k in s if k.endswith(tuple(f"@{c:g}" for c in CUTOFFS))]) == 4 * len(CUTOFFS)
    assert set(result.items.columns) >= {
        "item",
        "label",
        "prediction",
        "correct_clean",
        "correct_lowpass@0.1",
    }
    result.validate("spectral")


def test_results_do_not_depend_on_batch_size() -> None:
    images, labels = QuadrantWorld.images(per_class=2)
    ds = image_set(images, labels, "quadrants", 5)
    torch.manual_seed(0)
    net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 5))
    model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=5, label_space="quadrants")
    a = Spectral(cutoffs=(0.1, 0.9)).evaluate(model, {"images": ds}, EvalContext(batch_size=3))
    b = Spectral(cutoffs=(0.1, 0.9)).evaluate(model, {"images": ds}, EvalContext(batch_size=8))
    assert a.scalars == b.scalars


# ----------------------------------------------------------------------------------------------------
# the demo world
# ----------------------------------------------------------------------------------------------------


class MemorisingLowpassNet(nn.Module):
    """Low-pass filters its input down to the symmetric core of the c = 0.1 box at 32 px — the DC
    term, i.e. the mean colour — and recalls the label of the memorised image with the nearest mean
    colour, or answers an extra "unknown" class when none lies within ``tol``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, n_classes: int, tol: float) -> None:
        super().__init__()
        self.register_buffer("memory", (images.float() / 255).mean(dim=(-2, -1)))
        self.register_buffer("onehot", nn.functional.one_hot(labels, n_classes + 1).float())
        self.tol = tol

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dc = x.mean(dim=(-2, -1))
        best, idx = torch.cdist(dc.double(), self.memory.double()).min(dim=1)
        logits = self.onehot[idx].clone()
        unknown = best > self.tol
        logits[unknown] = 0.0
        logits[unknown, -1] = 1.0
        return logits


def test_lowpass_model_on_the_demo_world_has_lpp_one_and_hpp_zero() -> None:
    from biasbench.core import world as synthetic

    ds = synthetic.generate("test", synthetic.WorldConfig(n_test=60))
    k = len(ds.class_names)
    net = MemorisingLowpassNet(ds.images, ds.labels, k, tol=0.02)
    model = ModelWrapper(net, mean=(0, 0, 0), std=(1, 1, 1), num_classes=k + 1, label_space=DEMO_WORLD)
    s = Spectral().evaluate(model, {"images": ds}, EvalContext(batch_size=64)).scalars
    assert s["clean_acc"] == 1.0
    assert s["LPP"] == pytest.approx(1.0, abs=0.02)
    assert s["HPP"] == pytest.approx(0.0, abs=0.02)
