"""``Metric.work`` counts the forward-pass equivalents a job really runs (a backward ≈ 2 forwards):
checked by a network that counts the images it sees forwards and backwards, on the demo world's
32-px images and label-space defaults (``benchmarks/demo_floor.py``'s efficiency rests on it)."""

from __future__ import annotations

import torch
from torch import nn

from biasbench.core.labels import DEMO_WORLD
from biasbench.metrics.base import WORK_DONE, EvalContext, ModelWrapper
from biasbench.metrics.critical_band import CriticalBand
from biasbench.metrics.regions import Regions
from biasbench.metrics.sis import SIS
from biasbench.metrics.spectral import Spectral
from tests.harness_fixtures import image_set

N_CLASSES = 10  # the demo world's


class CountingNet(nn.Module):
    """A small convnet that counts the images of every forward and of every backward through it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, N_CLASSES),
        )
        self.forwards = 0
        self.backwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += x.shape[0]
        out = self.body(x)
        if out.requires_grad:
            out.register_hook(lambda g: self._backward(g.shape[0]))
        return out

    def _backward(self, n: int) -> None:
        self.backwards += n


def _counted(metric, n_images: int, batch_size: int = 64) -> tuple[float, float]:
    """(``metric.work`` for the set, forward equivalents the evaluation ran) on ``n_images`` random
    32-px demo-world-labelled images (a fresh net each time: nothing is shared with an earlier job)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n_images) % N_CLASSES
    net = CountingNet()
    model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.28,) * 3, num_classes=N_CLASSES, label_space=DEMO_WORLD)
    model.eval()
    ds = image_set(images, labels, DEMO_WORLD, N_CLASSES)
    metric.evaluate(model, {"images": ds}, EvalContext(batch_size=batch_size))
    return metric.work("images", n_images, DEMO_WORLD), net.forwards + 2.0 * net.backwards


def test_critical_band_work_counts_every_band_and_noise_level_of_the_demo_grid() -> None:
    # 32 px gives a 4-level pyramid (32, 16, 8, 4) = 4 bands; the demo world's 12 third-octave noise
    # levels; plus the clean condition: 49 conditions per image (8 images here, the demo's 155 below)
    work, ran = _counted(CriticalBand(n_images=8, levels="grid"), 20)
    assert ran == 8 * (1 + 4 * 12)
    assert work == ran
    assert CriticalBand().work("images", 1000, DEMO_WORLD) == 155 * (1 + 4 * 12)


def test_critical_bands_descending_series_records_the_conditions_it_ran() -> None:
    """A net that always answers class 0, on images all labelled 0: every band's strongest level passes,
    so the descending series runs the clean condition and one level per band; ``Metric.work`` stays the
    grid's (the most it can run) and the job records what ran."""
    images = torch.randint(
        0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    net = CountingNet()
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.copy_(torch.arange(N_CLASSES, 0, -1).float())  # class 0 always
    model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.28,) * 3, num_classes=N_CLASSES, label_space=DEMO_WORLD)
    metric = CriticalBand(levels="descending")
    result = metric.evaluate(
        model.eval(),
        {"images": image_set(images, torch.zeros(8, dtype=torch.long), DEMO_WORLD, N_CLASSES)},
        EvalContext(),
    )
    assert net.forwards == 8 * (1 + 4) == result.timings[WORK_DONE]
    assert metric.work("images", 8, DEMO_WORLD) == 8 * (1 + 4 * 12)


def test_sis_work_counts_backselect_steps_backward_passes_and_subset_checks() -> None:
    # k = round(1024 / 50) = 20 pixels per step, T = ceil(1024 / 20) = 52 steps: per image 53 forwards
    # + 52 backwards (2 forwards each) + the top-q and random subset forwards = 159; the stochasticity
    # check runs up to 8 images twice (4 images here; the demo's 32 below)
    work, ran = _counted(SIS(n_images=4), 10)
    assert ran == 4 * (53 + 2 * 52 + 2) + 2 * 4
    assert work == ran
    assert SIS().work("images", 1000, DEMO_WORLD) == 32 * 159 + 2 * 8


def test_spectral_work_counts_the_clean_pass_and_every_filter() -> None:
    work, ran = _counted(Spectral(n_images=20), 30)
    assert ran == 20 * (1 + 2 * 11)
    assert work == ran


def test_regions_work_counts_backselect_and_its_four_masked_conditions() -> None:
    # the same BackSelect as sis (159 − 2 = 157 per image) + frame, centre, top-q and random-q forwards
    work, ran = _counted(Regions(n_images=4), 10)
    assert ran == 4 * (53 + 2 * 52 + 4) + 2 * 4
    assert work == ran
    assert Regions().work("images", 1000, DEMO_WORLD) == 32 * 161 + 2 * 8
