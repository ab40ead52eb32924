"""The synthetic shape–texture world and the corruption module (issue 3)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from biasbench.core import corruptions as C
from biasbench.core import world as W
from biasbench.core.labels import DEMO_WORLD
from biasbench.harness.datasets import catalog

SMALL = W.WorldConfig(
    n_train=64, n_test=100, n_per_pair=2, n_silhouette=40, n_texture_only=40, n_edges=40, n_corrupt=40
)


# ----------------------------------------------------------------------------------------------------
# World
# ----------------------------------------------------------------------------------------------------


def test_class_tables() -> None:
    assert W.NUM_CLASSES == len(W.SHAPE_NAMES) == len(W.TEXTURE_NAMES) == len(W.CLASS_NAMES) >= 8
    assert len(set(W.SHAPE_NAMES)) == len(set(W.TEXTURE_NAMES)) == W.NUM_CLASSES
    assert W.CLASS_NAMES[0] == f"{W.SHAPE_NAMES[0]}/{W.TEXTURE_NAMES[0]}"


def test_every_shape_lies_inside_the_unit_disc_and_has_area() -> None:
    t = (torch.arange(600, dtype=torch.float64) + 0.5) / 600 * 2.4 - 1.2
    v, u = torch.meshgrid(t, t, indexing="ij")
    for k in range(W.NUM_CLASSES):
        inside = W.shape_inside(k, u, v)
        assert inside.any(), W.SHAPE_NAMES[k]
        assert float((u**2 + v**2).sqrt()[inside].max()) <= 1.0, W.SHAPE_NAMES[k]


@pytest.mark.parametrize("split", W.BASE_SPLITS)
def test_split_shapes_dtypes_labels(split: str) -> None:
    ds = W.generate(split, SMALL)
    n = len(ds)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (n, 3, SMALL.size, SMALL.size)
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
    assert ds.label_space == DEMO_WORLD and ds.class_names == W.CLASS_NAMES
    assert ds.name == f"demo-world/{split}" and len(set(ds.item_ids)) == n
    shape, texture = ds.meta["shape"], ds.meta["texture"]
    assert shape.dtype == texture.dtype == torch.int64
    if split == "texture-only":
        assert (shape == -1).all() and torch.equal(ds.labels, texture)
    elif split in ("silhouette", "edges"):
        assert (texture == -1).all() and torch.equal(ds.labels, shape)
    elif split == "cue-conflict":
        assert torch.equal(ds.labels, shape) and (shape != texture).all()
    else:
        assert torch.equal(shape, texture) and torch.equal(ds.labels, shape)
    if split != "cue-conflict":  # balanced: classes cycle
        assert torch.equal(ds.labels, torch.arange(n) % W.NUM_CLASSES)


def test_cue_conflict_is_every_ordered_pair_balanced() -> None:
    ds = W.generate("cue-conflict", SMALL)
    k = W.NUM_CLASSES
    assert len(ds) == k * (k - 1) * SMALL.n_per_pair
    counts = torch.zeros(k, k, dtype=torch.long)
    counts.index_put_(
        (ds.meta["shape"], ds.meta["texture"]), torch.ones(len(ds), dtype=torch.long), accumulate=True
    )
    assert (counts.diagonal() == 0).all()
    off = counts[~torch.eye(k, dtype=torch.bool)]
    assert (off == SMALL.n_per_pair).all()


def test_deterministic_from_seed_and_split() -> None:
    a = W.generate("test", SMALL)
    b = W.generate("test", SMALL)
    assert torch.equal(a.images, b.images)
    other_seed = W.generate("test", W.WorldConfig(**{**SMALL.to_json(), "seed": 1}))
    assert not torch.equal(a.images, other_seed.images)
    train = W.generate("train", SMALL)
    assert not torch.equal(a.images[:64], train.images[:64])  # splits draw independently
    # a prefix render equals the full split's prefix (chunked seeds)
    assert torch.equal(W.to_uint8(W.render_split("test", SMALL, limit=30).images), a.images[:30])


def test_manifest_hash_depends_on_parameters_split_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    h = W.manifest_hash("test", SMALL)
    assert h == W.manifest_hash("test", W.WorldConfig(**SMALL.to_json()))
    assert h != W.manifest_hash("train", SMALL)
    assert h != W.manifest_hash("test", W.WorldConfig(**{**SMALL.to_json(), "n_test": 101}))
    monkeypatch.setattr(W, "WORLD_VERSION", W.WORLD_VERSION + "x")
    assert h != W.manifest_hash("test", SMALL)


def test_render_geometry_and_colours() -> None:
    g = torch.Generator().manual_seed(0)
    k = W.NUM_CLASSES
    ids = torch.arange(400) % k
    r = W.render(ids, ids, g, 32)
    # shapes stay inside the frame with a 1-px background border
    border = torch.ones(32, 32, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert float(r.mask[:, border].max()) == 0.0
    assert float(r.mask.sum(dim=(1, 2)).min()) > 40  # every shape has a real area
    # every fill colour (the segment c1-c2) is >= 0.4 from the background, and c1, c2 differ
    b, c1, c2 = r.background, r.colours[:, 0], r.colours[:, 1]
    assert float(W._segment_distance(b, c1, c2).min()) >= W.MIN_COLOUR_DIST - 1e-6
    assert float((c1 - c2).norm(dim=1).min()) >= W.MIN_COLOUR_DIST - 1e-6
    # same generator state, other mode: same pose and colours
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, s = W.render(ids[:50], ids[:50], g1, 32), W.render(ids[:50], ids[:50], g2, 32, "silhouette")
    assert torch.equal(a.pose, s.pose) and torch.equal(a.colours, s.colours)
    assert torch.equal(a.mask, s.mask)


def test_generation_speed() -> None:
    """Thousands of images in seconds (vectorised): 2,048 images. ~1 s on an idle core; the bound is
    generous because this box's 2 cores are shared (one thread: spinning OpenMP threads under
    contention cost more than they give)."""
    s = torch.arange(2048) % W.NUM_CLASSES
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        W.render(s[:64], s[:64], torch.Generator().manual_seed(0))  # warm-up
        t = time.perf_counter()
        r = W.render_pool("speed", s, s)
        dt = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
    assert r.images.shape[0] == 2048
    assert dt < 20.0, f"2048 images took {dt:.1f} s"


def test_catalog_registers_every_split(tmp_path) -> None:
    entries = catalog.catalog()
    for split in W.SPLITS:
        e = entries[f"demo-world/{split}"]
        assert e.label_space == DEMO_WORLD and e.as_stored
        assert e.manifest(tmp_path, None) == W.manifest_hash(split)
    assert "demo-world/gaussian_noise-5" in entries and "demo-world/cue-conflict" in entries
    assert len([n for n in entries if n.startswith("demo-world/")]) == len(W.SPLITS)
    assert len(W.SPLITS) == len(W.BASE_SPLITS) + len(C.CORRUPTIONS) * 5


def test_cached_load_is_memory_mapped_and_identical(tmp_path) -> None:
    a = W.generate("silhouette", SMALL, cache_dir=tmp_path)
    files = list((tmp_path / "datasets").glob("demo-world-silhouette-*.npy"))
    assert len(files) == 1 and W.manifest_hash("silhouette", SMALL) in files[0].name
    b = W.generate("silhouette", SMALL, cache_dir=tmp_path)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.images, W.generate("silhouette", SMALL).images)


def test_catalog_load_through_entry(tmp_path) -> None:
    ds = catalog.get("demo-world/test").load(tmp_path, None, tmp_path)
    assert len(ds) == W.WorldConfig().n_test and ds.manifest_hash == W.manifest_hash("test")


def test_corruption_split_is_corrupted_test_prefix() -> None:
    test = W.generate("test", SMALL)
    for name, sev in (("gaussian_noise", 5), ("contrast", 1), ("jpeg", 3)):
        ds = W.generate(f"{name}-{sev}", SMALL)
        assert len(ds) == SMALL.n_corrupt
        assert torch.equal(ds.labels, test.labels[: SMALL.n_corrupt])
        assert ds.meta["corruption"] == [name] * SMALL.n_corrupt and (ds.meta["severity"] == sev).all()
        assert not torch.equal(ds.images, test.images[: SMALL.n_corrupt])
        assert torch.equal(ds.images, W.generate(f"{name}-{sev}", SMALL).images)  # seeded
    with pytest.raises(KeyError):
        W.generate("gaussian_noise-6", SMALL)


# ----------------------------------------------------------------------------------------------------
# Corruptions
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return W.generate("test", SMALL).images[:48].float() / 255.0


@pytest.mark.parametrize("name", list(C.CORRUPTIONS))
def test_corruption_contract(name: str, batch: torch.Tensor) -> None:
    for sev in C.SEVERITIES:
        out = C.corrupt(batch, name, sev, torch.Generator().manual_seed(1))
        assert out.shape == batch.shape and out.dtype == batch.dtype and out.device == batch.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        again = C.corrupt(batch, name, sev, torch.Generator().manual_seed(1))
        assert torch.equal(out, again), "seeded generator must make it deterministic"


@pytest.mark.parametrize("name", list(C.CORRUPTIONS))
def test_corruption_severity_is_monotone(name: str, batch: torch.Tensor) -> None:
    mse = [
        float((C.corrupt(batch, name, s, torch.Generator().manual_seed(2)) - batch).pow(2).mean())
        for s in C.SEVERITIES
    ]
    assert mse[0] > 0
    assert all(b > a for a, b in zip(mse, mse[1:], strict=False)), f"{name}: {mse}"


def test_corruption_definitions() -> None:
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    # blur: sigma in ImageNet-C pixels at 224 px, scaled with the image size
    assert torch.allclose(C.corrupt(x, "gaussian_blur", 1), C.gaussian_blur(x, 1.0).clamp(0, 1))
    small = x[:, :, :32, :32]
    assert torch.allclose(
        C.corrupt(small, "gaussian_blur", 5), C.gaussian_blur(small, 6 * 32 / 224).clamp(0, 1)
    )
    # contrast keeps each image's mean (up to clipping, none here)
    c = C.corrupt(x, "contrast", 3)
    assert torch.allclose(c.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    # brightness: HSV value + c, hue/saturation fixed; black becomes grey c
    black = torch.zeros(1, 3, 4, 4)
    assert torch.allclose(C.corrupt(black, "brightness", 2), torch.full_like(black, 0.2))
    px = torch.tensor([0.2, 0.1, 0.05]).view(1, 3, 1, 1)
    assert torch.allclose(C.corrupt(px, "brightness", 1), px * (0.3 / 0.2))
    # gaussian noise has the table's standard deviation (away from clipping)
    mid = torch.full((1, 3, 64, 64), 0.5)
    sd = float((C.corrupt(mid, "gaussian_noise", 1, torch.Generator().manual_seed(0)) - mid).std())
    assert math.isclose(sd, 0.08, rel_tol=0.05)
    # per-image blur sigmas equal one-sigma blurs
    two = C.gaussian_blur(x[:2, :, :32, :32], torch.tensor([0.0, 1.5]))
    assert torch.equal(two[0], x[0, :, :32, :32])
    assert torch.allclose(two[1], C.gaussian_blur(x[1:2, :, :32, :32], 1.5)[0], atol=1e-6)


def test_corruption_errors(batch: torch.Tensor) -> None:
    with pytest.raises(KeyError, match="unknown corruption"):
        C.corrupt(batch, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(batch, "contrast", 6)
    with pytest.raises(ValueError, match="float"):
        C.corrupt((batch * 255).to(torch.uint8), "contrast", 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_corruptions_run_on_the_device(batch: torch.Tensor) -> None:
    x = batch.cuda()
    for name in C.CORRUPTIONS:
        g = torch.Generator(device="cuda").manual_seed(0)
        out = C.corrupt(x, name, 3, g)
        assert out.is_cuda and out.shape == x.shape


def test_world_statistics_match_preprocess() -> None:
    """zoo.WORLD_PREPROCESS's mean/std are the world's pixel statistics (to 0.03)."""
    from biasbench.registry import zoo

    x = W.generate("test").images.float() / 255.0
    mean = x.mean(dim=(0, 2, 3)).numpy()
    std = x.std(dim=(0, 2, 3)).numpy()
    np.testing.assert_allclose(mean, zoo.WORLD_PREPROCESS.mean, atol=0.03)
    np.testing.assert_allclose(std, zoo.WORLD_PREPROCESS.std, atol=0.03)
