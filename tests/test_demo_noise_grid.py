"""The demo world's critical-band noise grid: third-octave levels by default on demo-world models, the
study's four elsewhere, and a peak noise sensitivity that does not depend on the grid's spacing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from biasbench.core.label_spaces.demo_world import DEMO_CRITICAL_BAND_SDS
from biasbench.core.labels import DEMO_WORLD
from biasbench.metrics.band_thresholds import fit_thresholds
from biasbench.metrics.base import EvalContext, ModelWrapper, ParamError
from biasbench.metrics.critical_band import NOISE_SDS, CriticalBand
from tests.test_critical_band import image_set


def test_the_demo_grid_is_third_octaves_up_to_beyond_the_studys_strongest_noise() -> None:
    sds = DEMO_CRITICAL_BAND_SDS
    assert len(sds) == 12 and sds[0] == 0.04 and sds[-1] > 3 * NOISE_SDS[-1]
    for a, b in zip(sds, sds[1:], strict=False):
        assert b / a == pytest.approx(2 ** (1 / 3), rel=1e-3)


def test_a_finer_grid_measures_the_same_channel_as_the_studys() -> None:
    """The thresholds of a channel counted in third-octave steps are three times those in octave steps
    (and so is a_max): the same bandwidth, centre frequency and peak sensitivity come out."""
    coarse = fit_thresholds([1, 2, 3, 3, 3, 3, 3])
    fine = fit_thresholds([3, 6, 9, 9, 9, 9, 9], a_max=12.0, step_octaves=1 / 3)
    assert fine.bandwidth == pytest.approx(coarse.bandwidth, rel=1e-4)
    assert fine.centre_frequency == pytest.approx(coarse.centre_frequency, rel=1e-4)
    assert fine.peak_noise_sensitivity == pytest.approx(coarse.peak_noise_sensitivity, rel=1e-4)
    assert coarse.peak_noise_sensitivity == pytest.approx(0.598, abs=0.01)


def test_demo_world_models_get_the_demo_grid_and_others_the_studys() -> None:
    images = torch.randint(
        0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))

    def sds_of(space: str, **params) -> set[str]:
        model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=10, label_space=space)
        res = CriticalBand(**params).evaluate(
            model, {"images": image_set(images, torch.tensor([0, 1]), space, 10)}, EvalContext()
        )
        return {k.split("_sd")[1] for k in res.scalars if k.startswith("acc@f0_sd")}

    assert sds_of(DEMO_WORLD, levels="grid") == {f"{s:g}" for s in DEMO_CRITICAL_BAND_SDS}
    assert sds_of("toy") == {"0.02", "0.04", "0.08", "0.16"}
    assert sds_of(DEMO_WORLD, noise_sds=(0.1, 0.2)) == {"0.1", "0.2"}  # an explicit grid wins
    with pytest.raises(ParamError, match="noise_sds must be positive"):
        CriticalBand(noise_sds=(0.1, -0.2))
