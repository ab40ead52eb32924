"""Critical band's descending series (``levels = "descending"``, the demo world's default): each band's noise
levels from the strongest down, stopping at its threshold — the grid's thresholds, fits and accuracies
from fewer conditions, checked against the whole grid and against a model whose answer is known."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
import torch

import biasbench
from biasbench.core.labels import DEMO_WORLD
from biasbench.harness.store import Store
from biasbench.metrics.base import WORK_DONE, EvalContext, ModelWrapper
from biasbench.metrics.critical_band import CriticalBand, pil_grayscale, reduce_contrast
from biasbench.metrics.laplacian_pyramid import LaplacianBands
from tests.harness_fixtures import image_set
from tests.test_critical_band import BandBlindNet

ZOO = 'arch = "zoo:resnet50-w8"\nlabels = "demo-world"\n'
SDS = (0.02, 0.04, 0.08, 0.16)


def test_a_band_blind_model_is_asked_one_level_in_its_blind_band_and_every_level_elsewhere() -> None:
    """Blind to band 0's noise: 100 % there at the strongest level (threshold 0, the first level asked
    passes), chance-free failure at every level of the other bands (threshold 4: all four asked)."""
    size, k = 32, 8
    g = torch.Generator().manual_seed(7)
    gray_u8 = (128 + torch.randint(-12, 13, (k, size, size), generator=g)).to(torch.uint8)
    images = gray_u8[:, None].expand(-1, 3, -1, -1).contiguous()
    bands = LaplacianBands(size, size)
    templates = reduce_contrast(pil_grayscale(images.float() / 255))
    net = BandBlindNet(templates, bands, bands.levels - 1, tol=0.02)  # band 0 = the coarsest level
    model = ModelWrapper(net, mean=(0, 0, 0), std=(1, 1, 1), num_classes=k + 1, label_space="gray")
    data = {"images": image_set(images, torch.arange(k), "gray", k + 1)}

    desc = CriticalBand(levels="descending").evaluate(model, data, EvalContext(batch_size=3))
    grid = CriticalBand(levels="grid").evaluate(model, data, EvalContext(batch_size=3))

    acc_keys = {key for key in desc.scalars if key.startswith("acc@")}
    assert acc_keys == {"acc@f0_sd0.16"} | {f"acc@f{f}_sd{sd:g}" for f in (1, 2, 3) for sd in SDS}
    assert desc.timings[WORK_DONE] == k * (1 + 1 + 3 * 4)  # clean, band 0's one level, 12 others
    assert grid.timings[WORK_DONE] == k * 17
    for key, value in grid.scalars.items():
        if key in desc.scalars and not key.endswith("pixel_fraction"):
            assert desc.scalars[key] == value, key
    assert [desc.scalars[f"threshold_raw@f{f}"] for f in range(4)] == [0, 4, 4, 4]
    assert {c for c in desc.items.columns if c.startswith("correct_")} == {
        "correct_clean",
        "correct_f0_sd0.16",
        *(f"correct_f{f}_sd{sd:g}" for f in (1, 2, 3) for sd in SDS),
    }
    desc.validate("critical_band")


@pytest.fixture()
def zoo_registry(tmp_path):
    reg = tmp_path / "zoo.toml"
    reg.write_text(
        f'[[checkpoint]]\nid = "p"\n{ZOO}weights = "zoo:plain"\n'
        f'[[checkpoint]]\nid = "b"\n{ZOO}weights = "zoo:blur"\n'
        '[[checkpoint]]\nid = "pb"\nensemble = ["p", "b"]\n'
    )
    return reg


def _stored(db) -> tuple[dict[tuple[str, str], float], dict[str, dict]]:
    with Store(db, read_only=True) as s:
        df = s.results()
    with duckdb.connect(str(db), read_only=True) as con:
        jobs = con.execute("SELECT checkpoint_id, timings FROM jobs").fetchall()
    values = {(c, k): v for c, k, v in zip(df["checkpoint"], df["key"], df["value"], strict=True)}
    return values, {c: json.loads(t) for c, t in jobs}


def test_the_descending_series_stores_the_grids_thresholds_fits_and_accuracies_on_the_demo_zoo(
    tmp_path, zoo_registry, cache_dir, one_thread
) -> None:
    """Two trained demo nets and their ensemble, the demo world's 12-level grid: the descending run
    stores every key the grid run stores, equal, except the levels below each band's threshold (which
    the grid's own accuracies say where they start) and the two pixel fractions over the conditions."""
    params = {"critical_band": {"n_images": 60}}
    dbs = {}
    for levels in ("grid", "descending"):
        dbs[levels] = tmp_path / f"{levels}.duckdb"
        p = {"critical_band": {**params["critical_band"], "levels": levels}}
        summary = biasbench.run(
            [str(zoo_registry)], ["critical_band"], p, db=dbs[levels], cache_dir=cache_dir, threads=1
        )
        assert summary.failed == 0, [o.summary for o in summary.outcomes]
    grid, grid_jobs = _stored(dbs["grid"])
    desc, desc_jobs = _stored(dbs["descending"])
    assert set(desc) <= set(grid)
    sds = sorted({float(k.split("_sd")[1]) for _, k in grid if k.startswith("acc@f0_sd")})
    assert len(sds) == 12  # the demo world's grid
    for (ckpt, key), value in grid.items():
        if key.endswith("pixel_fraction"):
            continue
        if not key.startswith("acc@"):
            assert desc[(ckpt, key)] == value, (ckpt, key)  # thresholds, fits, clean accuracy
    asked = {}
    for ckpt in ("p", "b", "pb"):
        n_asked = 0
        for f in range(4):
            # from the grid's own accuracies: its levels from the strongest down to the first > 50 %
            expect = []
            for sd in reversed(sds):
                expect.append(f"acc@f{f}_sd{sd:g}")
                if grid[(ckpt, expect[-1])] > 0.5:
                    break
            got = sorted(k for c, k in desc if c == ckpt and k.startswith(f"acc@f{f}_"))
            assert got == sorted(expect), (ckpt, f)
            assert all(desc[(ckpt, k)] == grid[(ckpt, k)] for k in expect)
            n_asked += len(expect)
        asked[ckpt] = n_asked
        assert desc_jobs[ckpt][WORK_DONE] == 60 * (1 + n_asked)
        assert grid_jobs[ckpt][WORK_DONE] == 60 * 49
    assert sum(asked.values()) < 3 * 48  # something was saved
    # the ensemble's members served it every condition they evaluated themselves
    assert desc_jobs["pb"]["run.shared_forwards"] > 0
    thresholds = [grid[("p", f"threshold_raw@f{f}")] for f in range(4)]
    assert len(set(thresholds)) > 1 and max(thresholds) < 12  # a real channel, not a flat fit


def test_the_demo_world_defaults_to_the_descending_series_and_imagenet_to_the_grid() -> None:
    from biasbench.core.labels import IMAGENET_1K
    from biasbench.metrics.common import space_default

    assert space_default("critical_band", DEMO_WORLD, "levels", "grid") == "descending"
    assert space_default("critical_band", IMAGENET_1K, "levels", "grid") == "grid"
    assert np.isclose(CriticalBand().work("images", 1000, DEMO_WORLD), 155 * 49)  # at most
