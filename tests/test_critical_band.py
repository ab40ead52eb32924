"""Critical-band masking (Subramanian et al. 2023): grayscale, the pyramid against pyrtools, RMS equalisation, the
out-of-range rule, thresholds + Gaussian fit, and known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from biasbench.core.labels import DEMO_WORLD, IMAGENET_1K
from biasbench.metrics.band_thresholds import fit_thresholds, thresholds
from biasbench.metrics.base import (
    EvalContext,
    ModelWrapper,
    ParamError,
    Preprocess,
)
from biasbench.metrics.critical_band import (
    CriticalBand,
    CriticalBandTransform,
    apply_out_of_range_rule,
    pil_grayscale,
    reduce_contrast,
)
from biasbench.metrics.laplacian_pyramid import (
    LaplacianBands,
    band_centre_frequency,
    equalised_band_noise,
    pyramid_levels,
    rms,
)
from tests.conftest import require_module
from tests.harness_fixtures import image_set


@pytest.fixture(scope="module")
def pt():
    """pyrtools, the reference implementation (test extras): missing fails under CI=true."""
    return require_module("pyrtools")


# ----------------------------------------------------------------------------------------------------
# stimulus
# ----------------------------------------------------------------------------------------------------


def test_grayscale_equals_pil_convert_L_exactly() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(3, 45, 51, 3), dtype=np.uint8)
    rgb[0, :4, :4] = [[255, 255, 255], [0, 0, 0], [1, 2, 3], [128, 128, 128]]
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0  # as EvalContext.to_device makes it
    ours = (pil_grayscale(x) * 255.0).round().to(torch.uint8).numpy()
    for i in range(len(rgb)):
        ref = np.asarray(Image.fromarray(rgb[i]).convert("L"))
        np.testing.assert_array_equal(ours[i], ref)


def test_contrast_is_reduced_around_the_imagenet_mean() -> None:
    torch.manual_seed(0)
    g = torch.rand(4, 32, 32)
    out = reduce_contrast(g)
    assert torch.allclose(out.mean(dim=(-2, -1)), torch.full((4,), 0.449), atol=1e-6)
    assert torch.allclose(out.std(dim=(-2, -1)), 0.2 * g.std(dim=(-2, -1)), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# the pyramid against pyrtools
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(224, 224), (64, 64), (32, 32), (48, 40), (37, 53)])
def test_pyramid_height_equals_pyrtools_auto_height(size: tuple[int, int], pt) -> None:
    noise = np.random.default_rng(0).standard_normal(size)
    assert pyramid_levels(*size) == pt.pyramids.LaplacianPyramid(noise).num_scales


def test_band_noise_equals_pyrtools_recon_pyr_at_224_px(pt) -> None:
    white = np.random.default_rng(1).standard_normal((2, 224, 224)) * 0.16
    bands = LaplacianBands(224, 224)
    assert bands.levels == 7
    pyrs = [pt.pyramids.LaplacianPyramid(w) for w in white]
    w64 = torch.from_numpy(white)
    w32 = w64.float()
    for f in range(7):
        ref = np.stack([p.recon_pyr(levels=6 - f) for p in pyrs])
        np.testing.assert_allclose(bands.band(w64, 6 - f).numpy(), ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(bands.band(w32, 6 - f).double().numpy(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (40, 48), (37, 53)])
def test_band_noise_equals_pyrtools_recon_pyr_at_small_and_odd_sizes(size: tuple[int, int], pt) -> None:
    white = np.random.default_rng(2).standard_normal(size)
    pyr = pt.pyramids.LaplacianPyramid(white)
    bands = LaplacianBands(*size)
    for k in range(bands.levels):
        np.testing.assert_allclose(
            bands.band(torch.from_numpy(white)[None], k)[0].numpy(),
            pyr.recon_pyr(levels=k),
            rtol=0,
            atol=1e-12,
        )


def test_rms_equalisation_matches_the_level0_band() -> None:
    torch.manual_seed(3)
    w = torch.randn(5, 224, 224) * 0.08
    bands = LaplacianBands(224, 224)
    ref = rms(bands.band(w, 0))
    for level in range(bands.levels):
        n = equalised_band_noise(w, level, bands)
        assert torch.allclose(rms(n), ref, rtol=1e-5)
        # the shape of the band is kept: only the scale changes
        b = bands.band(w, level)
        assert torch.allclose(n, b * (ref / rms(b)), atol=1e-7)


def test_band_centre_frequencies() -> None:
    assert [band_centre_frequency(f, 224, 7) for f in range(7)] == [1.75 * 2**f for f in range(7)]
    assert [band_centre_frequency(f, 32, 4) for f in range(4)] == [2.0, 4.0, 8.0, 16.0]


# ----------------------------------------------------------------------------------------------------
# the out-of-range rule
# ----------------------------------------------------------------------------------------------------


def test_out_of_range_rule_keeps_every_pixel_in_unit_range() -> None:
    g = torch.Generator().manual_seed(4)
    image = 0.249 + 0.4 * torch.rand(4, 64, 64, generator=g)  # the contrast-reduced range
    noise = torch.randn(4, 64, 64, generator=g) * 0.5  # far more than the grid's largest sd
    noise[0, 0, :4] = torch.tensor([-0.95, 0.95, -5.0, 5.0])  # these need redraws (ε − n > 1, 1 − ε − n < 0)
    draws: list[tuple[int, int]] = []

    def draw(i: int, k: int) -> torch.Tensor:
        draws.append((i, k))
        return torch.randn(k, generator=g)

    out, n_oob, n_redraw = apply_out_of_range_rule(image, noise, draw, sd=0.16, epsilon=0.1)
    assert out.min() >= 0 and out.max() <= 1
    noisy = image + noise
    oob = (noisy < 0) | (noisy > 1)
    assert n_oob == int(oob.sum()) and n_redraw >= 4 and draws
    redraw = ((noisy < 0) & (0.1 - noise > 1)) | ((noisy > 1) & (1 - 0.1 - noise < 0))
    # in range: untouched; shifted pixels show exactly ε or 1 − ε; redrawn pixels keep the image value
    assert torch.equal(out[~oob], noisy[~oob])
    low, high = (noisy < 0) & ~redraw, (noisy > 1) & ~redraw
    assert torch.allclose(out[low], torch.full_like(out[low], 0.1), atol=1e-6)
    assert torch.allclose(out[high], torch.full_like(out[high], 0.9), atol=1e-6)
    assert ((out[redraw] - image[redraw]).abs() <= 0.16 * 6).all()


def test_noisy_stimulus_stays_in_unit_range_for_extreme_images() -> None:
    images = torch.zeros(4, 3, 64, 64, dtype=torch.uint8)
    images[1] = 255
    images[2, :, :, :32] = 255  # half black, half white: contrast-reduced to 0.349 / 0.549
    images[3] = torch.randint(
        0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(5), dtype=torch.uint8
    )
    ctx = EvalContext()
    bands = LaplacianBands(64, 64)
    x = images.float() / 255
    for level in range(bands.levels):
        out = CriticalBandTransform(ctx, bands, level, 0.16, list(range(4)), epsilon=0.1)(x, slice(0, 4))
        assert out.shape == (4, 3, 64, 64)
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out[:, 0], out[:, 2])  # gray, stacked to 3 channels


def test_colour_stimulus_adds_the_same_achromatic_noise_to_every_channel() -> None:
    torch.manual_seed(9)
    x = 0.2 + 0.6 * torch.rand(5, 3, 32, 32)  # in range after the noise almost everywhere
    x[4] = torch.rand(3, 32, 32)  # a full-range image: the per-channel rule must act
    bands, ctx = LaplacianBands(32, 32), EvalContext(seed=2)
    gray = CriticalBandTransform(ctx, bands, 0, 0.08, list(range(5)))
    colour = CriticalBandTransform(ctx, bands, 0, 0.08, list(range(5)), colour=True)
    out = colour(x, slice(0, 5))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out[:, 0], out[:, 1])  # colour kept
    # the noise is the gray condition's noise (same generator, same band), shared by the channels
    noise = gray.noise([ctx.generator(gray.salt(i)) for i in range(5)], x.device)
    inside = ((x + noise[:, None]) >= 0) & ((x + noise[:, None]) <= 1)
    expected = (x + noise[:, None])[inside]
    assert torch.allclose(out[inside], expected, atol=1e-6)
    assert (~inside[4]).any()  # and the out-of-range pixels were moved into [0, 1]
    clean = CriticalBandTransform(ctx, bands, 0, 0.0, list(range(5)), colour=True)(x, slice(0, 5))
    assert torch.equal(clean, x)  # the clean colour stimulus is the image as stored


def test_noise_depends_on_the_image_index_not_on_the_batch() -> None:
    torch.manual_seed(6)
    x = torch.rand(6, 3, 32, 32)
    bands, ctx = LaplacianBands(32, 32), EvalContext(seed=3)
    tf = CriticalBandTransform(ctx, bands, 1, 0.08, list(range(6)))
    whole = tf(x, slice(0, 6))
    parts = torch.cat([tf(x[0:4], slice(0, 4)), tf(x[4:6], slice(4, 6))])
    assert torch.equal(whole, parts)
    other_seed = CriticalBandTransform(EvalContext(seed=4), bands, 1, 0.08, list(range(6)))(x, slice(0, 6))
    assert not torch.equal(whole, other_seed)


# ----------------------------------------------------------------------------------------------------
# thresholds and the Gaussian fit
# ----------------------------------------------------------------------------------------------------


def test_fit_maps_resnet50_thresholds_to_the_papers_triple() -> None:
    fit = fit_thresholds([0, 1, 2, 3, 4, 4, 4])
    assert fit.bandwidth == pytest.approx(5.666, abs=0.01)
    assert fit.centre_frequency == pytest.approx(54.68, abs=0.01)
    assert fit.peak_noise_sensitivity == pytest.approx(1.0, abs=0.01)


def test_fit_maps_flatter_thresholds_to_a_wider_weaker_channel() -> None:
    fit = fit_thresholds([1, 2, 3, 3, 3, 3, 3])
    assert fit.bandwidth == pytest.approx(7.468, abs=0.01)
    assert fit.centre_frequency == pytest.approx(32.63, abs=0.01)
    assert fit.peak_noise_sensitivity == pytest.approx(0.598, abs=0.01)


def test_threshold_is_the_first_noise_step_from_the_top_above_criterion() -> None:
    # rows: sd = 0, .02, .04, .08, .16; columns: bands
    acc = np.array(
        [
            [0.8, 0.8, 0.8, 0.8, 0.8],
            [0.8, 0.7, 0.45, 0.6, 0.3],
            [0.8, 0.6, 0.3, 0.45, 0.2],
            [0.7, 0.45, 0.2, 0.35, 0.1],
            [0.6, 0.3, 0.1, 0.3, 0.0],
        ]
    )
    assert thresholds(acc, 0.5).tolist() == [0, 2, 4, 3, 4]
    assert thresholds(acc, 0.5 * 0.8).tolist() == [0, 1, 3, 2, 4]  # normalised: 50 % of clean
    assert thresholds(np.full((5, 3), 0.2), 0.5).tolist() == [4, 4, 4]


# ----------------------------------------------------------------------------------------------------
# known answers through the metric
# ----------------------------------------------------------------------------------------------------


class BandBlindNet(nn.Module):
    """Blind to one pyramid level's noise, sensitive to everything else: projects its (gray) input
    onto the orthogonal complement of the span of that level's reconstructions (Uc ⊗ Uc), then
    recognises the memorised clean stimulus within ``tol`` (else answers an extra "unknown" class)."""

    def __init__(self, templates: torch.Tensor, bands: LaplacianBands, level: int, tol: float) -> None:
        super().__init__()
        rows, cols = (torch.linalg.qr(torch.as_tensor(m)).Q for m in bands.expansion_matrices(level))
        self.register_buffer("pr", (rows @ rows.T).float())
        self.register_buffer("pc", (cols @ cols.T).float())
        self.register_buffer("templates", self.project(templates))
        self.tol = tol

    def project(self, g: torch.Tensor) -> torch.Tensor:
        return g - self.pr @ g @ self.pc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.project(x[:, 0])
        d = (p[:, None] - self.templates[None]).square().sum(dim=(-2, -1))  # (N, K)
        best, idx = d.min(dim=1)
        logits = nn.functional.one_hot(idx, self.templates.shape[0] + 1).float()
        unknown = best > self.tol
        logits[unknown] = 0.0
        logits[unknown, -1] = 1.0
        return logits


def test_model_blind_to_one_band_has_threshold_zero_there() -> None:
    size, k = 32, 8  # the demo world's size: 4 bands
    g = torch.Generator().manual_seed(7)
    gray_u8 = (128 + torch.randint(-12, 13, (k, size, size), generator=g)).to(torch.uint8)
    images = gray_u8[:, None].expand(-1, 3, -1, -1).contiguous()
    labels = torch.arange(k)
    bands = LaplacianBands(size, size)
    blind_band = 0  # the coarsest band: pyramid level n − 1
    templates = reduce_contrast(pil_grayscale(images.float() / 255))
    net = BandBlindNet(templates, bands, bands.levels - 1 - blind_band, tol=0.02)
    model = ModelWrapper(net, mean=(0, 0, 0), std=(1, 1, 1), num_classes=k + 1, label_space="gray")
    result = CriticalBand().evaluate(
        model, {"images": image_set(images, labels, "gray", k + 1)}, EvalContext(batch_size=3)
    )
    s = result.scalars
    assert s["n_bands"] == 4 and s["clean_acc"] == 1.0
    assert s[f"acc@f{blind_band}_sd0.16"] > 0.5
    for suffix in ("raw", "norm"):
        assert s[f"threshold_{suffix}@f{blind_band}"] == 0
        assert all(s[f"threshold_{suffix}@f{f}"] == 4 for f in range(4) if f != blind_band)
    result.validate("critical_band")


def test_all_29_conditions_and_the_fit_are_stored_at_224_px() -> None:
    torch.manual_seed(8)
    images = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    net = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 3))
    model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=3, label_space="toy")
    result = CriticalBand().evaluate(
        model, {"images": image_set(images, torch.tensor([0, 1]), "toy", 3)}, EvalContext()
    )
    s = result.scalars
    acc_keys = [key for key in s if key.startswith("acc@")]
    assert len(acc_keys) == 28 and s["n_bands"] == 7
    assert {f"acc@f{f}_sd{sd}" for f in range(7) for sd in ("0.02", "0.04", "0.08", "0.16")} == set(acc_keys)
    assert len([c for c in result.items.columns if c.startswith("correct_")]) == 29
    for suffix in ("raw", "norm"):
        assert all(f"threshold_{suffix}@f{f}" in s for f in range(7))
        fit_keys = {f"bandwidth_{suffix}", f"centre_frequency_{suffix}", f"peak_noise_sensitivity_{suffix}"}
        flat = len({s[f"threshold_{suffix}@f{f}"] for f in range(7)}) == 1
        # a fit where the thresholds vary; none (and a flag) where they are flat
        assert (fit_keys <= set(s)) != flat
        assert any(f"{suffix} thresholds are flat" in fl for fl in result.flags) == flat
    result.validate("critical_band")


def test_flat_thresholds_store_no_degenerate_fit() -> None:
    """A model that ignores its input (always class 0, always right): no noise level reaches it, so
    every band's threshold is 0 — flat, nothing to fit."""
    images = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    nn.init.zeros_(net[1].weight)
    with torch.no_grad():
        net[1].bias.copy_(torch.tensor([1.0, 0.0]))
    model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=2, label_space="toy")
    result = CriticalBand().evaluate(
        model, {"images": image_set(images, torch.tensor([0, 0, 0, 0]), "toy", 2)}, EvalContext()
    )
    s = result.scalars
    assert s["clean_acc"] == 1.0 and all(s[f"threshold_raw@f{f}"] == 0 for f in range(4))
    assert not any(k.startswith(("bandwidth_", "centre_frequency_", "peak_noise", "fit_")) for k in s)
    assert sum("thresholds are flat" in f for f in result.flags) == 2
    result.validate("critical_band")


def test_demo_world_models_get_the_colour_stimulus_by_default() -> None:
    images = torch.randint(
        0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))
    for space, colour in ((DEMO_WORLD, 1.0), ("toy", 0.0)):
        model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=10, label_space=space)
        result = CriticalBand().evaluate(
            model, {"images": image_set(images, torch.tensor([0, 1]), space, 10)}, EvalContext()
        )
        assert result.scalars["colour_stimulus"] == colour
    model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=10, label_space=DEMO_WORLD)
    gray = CriticalBand(stimulus="gray-low-contrast").evaluate(
        model, {"images": image_set(images, torch.tensor([0, 1]), DEMO_WORLD, 10)}, EvalContext()
    )
    assert gray.scalars["colour_stimulus"] == 0.0
    with pytest.raises(ParamError, match="parameter stimulus = 'sepia' is unknown"):
        CriticalBand(stimulus="sepia")  # when the job is built, before any model or data


def test_dataset_requests_follow_the_design() -> None:
    req = CriticalBand().datasets(IMAGENET_1K)["images"]
    assert req.name == "imagenet-val" and req.preprocess == Preprocess(resize=256, crop=224)
    assert CriticalBand(dataset="imagenet-sample").datasets(IMAGENET_1K)["images"].name == "imagenet-sample"
    assert CriticalBand().datasets(DEMO_WORLD)["images"].name == "demo-world/test"


@pytest.mark.parametrize("levels", ["grid", "descending"])
def test_a_second_model_takes_the_first_ones_stimuli_and_gets_the_results_it_builds_alone(
    monkeypatch, levels: str
) -> None:
    """The stimulus memo (metrics/stimulus_memo.py): model B after model A is served A's noisy images
    (no pyramid is built again) and stores exactly what B measures with the memo emptied — counters of
    out-of-range pixels included; another seed builds its own. Both ways of asking the conditions: the
    grid's joined stream, the descending series' one call per condition (here no level passes, so both
    models are asked every condition)."""
    from biasbench.metrics import critical_band, stimulus_memo

    images = torch.randint(
        0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    data = {"images": image_set(images, torch.tensor([0, 1, 2, 0, 1, 2]), DEMO_WORLD, 10)}

    def model(seed: int) -> ModelWrapper:
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 4, 5, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
        net(torch.zeros(1, 3, 32, 32))
        return ModelWrapper(net, mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=10, label_space=DEMO_WORLD)

    built = []
    noise = critical_band.CriticalBandTransform.noise
    monkeypatch.setattr(
        critical_band.CriticalBandTransform, "noise", lambda self, *a: built.append(1) or noise(self, *a)
    )
    a, b = model(0), model(1)
    metric = CriticalBand(noise_sds=(0.1, 0.3, 0.6), levels=levels)
    stimulus_memo.forget()
    metric.evaluate(a, data, EvalContext(batch_size=8))
    first = len(built)
    assert first >= 4 * 3  # every noisy condition (4 bands × 3 levels), per batch it falls in
    after_a = metric.evaluate(b, data, EvalContext(batch_size=8))
    assert len(built) == first  # served
    stimulus_memo.forget()
    alone = metric.evaluate(b, data, EvalContext(batch_size=8))
    assert len(built) == 2 * first
    assert after_a.scalars == alone.scalars and after_a.scalars["out_of_range_pixel_fraction"] > 0
    pd.testing.assert_frame_equal(after_a.items, alone.items)
    metric.evaluate(b, data, EvalContext(batch_size=8, seed=1))
    assert len(built) == 3 * first
    stimulus_memo.forget()
