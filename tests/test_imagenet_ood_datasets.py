"""The ImageNet OOD dataset plugins (``biasbench/harness/datasets/imagenet_ood.py``), each in the layout
of its canonical download: tiny trees built in temporary folders from the real photos in
``../shared/data/imagenet-sample`` (``<wnid>_<name>.JPEG``); nothing touches the network."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biasbench.core import labels
from biasbench.core.labels import IMAGENET_1K
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets import catalog
from biasbench.harness.datasets.catalog import DatasetFamily, DatasetMissing
from biasbench.harness.datasets.imagenet_ood import (
    IMAGENET_C_BAR,
    IMAGENET_C_EXTRA,
    IMAGENET_C_STANDARD,
    SEVERITIES,
)
from tests.harness_fixtures import bench

#: small decoding keeps the tests fast (decoding is the cost)
SMALL = Preprocess(resize=40, crop=32)


def space():
    return labels.get(IMAGENET_1K)


@pytest.fixture(scope="module")
def photos(shared_data) -> dict[str, Path]:
    """wnid -> one real ImageNet photo of that class."""
    files = sorted((shared_data / "imagenet-sample").glob("n*_*.JPEG"))
    assert len(files) >= 20
    return {f.name[:9]: f for f in files}


def index_of(wnid: str) -> int:
    return space().class_ids.index(wnid)


def put(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def load(name: str, root: Path, cache: Path, pre: Preprocess | None = SMALL, options=None):
    entry = catalog.get(name)
    ds = entry.load_set(root, None if entry.as_stored else pre, cache, options)
    assert ds.manifest_hash == entry.manifest(root, pre) == entry.manifest(root, pre)
    assert ds.name == name and ds.label_space == IMAGENET_1K
    assert ds.class_names == list(space().class_names)
    assert ds.images.dtype == torch.uint8
    return ds


# ----------------------------------------------------------------------------------------------------
# ImageNetV2: folders named by class index, read as numbers
# ----------------------------------------------------------------------------------------------------


def test_imagenet_v2_folders_are_class_indices_in_numeric_order(tmp_path, photos):
    root = tmp_path / "data"
    some = list(photos.values())
    for k, folder in enumerate(["100", "10", "2", "0"]):  # created out of order on purpose
        put(some[k], root / "imagenet-v2" / folder / f"img{k}.jpeg")
    put(some[4], root / "imagenet-v2" / "10" / "extra.jpeg")
    ds = load("imagenet-v2", root, tmp_path / "cache")
    assert not catalog.get("imagenet-v2").as_stored
    assert ds.labels.tolist() == [0, 2, 10, 10, 100]  # numeric, not "0, 10, 100, 2"
    assert ds.item_ids == ["0/img3.jpeg", "2/img2.jpeg", "10/extra.jpeg", "10/img1.jpeg", "100/img0.jpeg"]
    assert tuple(ds.images.shape) == (5, 3, 32, 32)


@pytest.mark.parametrize("bad", ["1000", "n01440764", "-1", "x7"])
def test_imagenet_v2_refuses_a_folder_that_is_not_a_class_index(tmp_path, photos, bad):
    root = tmp_path / "data"
    put(next(iter(photos.values())), root / "imagenet-v2" / "3" / "a.jpeg")
    put(next(iter(photos.values())), root / "imagenet-v2" / bad / "a.jpeg")
    with pytest.raises(ValueError, match=rf"folder name '{bad}' is not an ImageNet-1k class index 0\.\.999"):
        catalog.get("imagenet-v2").manifest(root, SMALL)


# ----------------------------------------------------------------------------------------------------
# ImageNet-A / -R: 200-class subsets, labels in the 1000-class space
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imagenet-a", "imagenet-r"])
def test_imagenet_a_and_r_label_by_wnid_in_the_1000_class_space(tmp_path, photos, name):
    subset = set(space().subset(name))
    inside = sorted(w for w in photos if index_of(w) in subset)[:3]
    assert len(inside) == 3
    root = tmp_path / "data"
    for w in inside:
        put(photos[w], root / name / w / f"{w}_1.jpg")
    (root / name / "README.txt").write_text("the canonical tarball has one; it is not an image folder")
    ds = load(name, root, tmp_path / "cache")
    assert ds.labels.tolist() == [index_of(w) for w in inside]
    assert all(i in subset for i in ds.labels.tolist())
    assert ds.item_ids == [f"{w}/{w}_1.jpg" for w in inside]

    outside = next(w for w in sorted(photos) if index_of(w) not in subset)
    put(photos[outside], root / name / outside / "x.jpg")
    with pytest.raises(ValueError, match=rf"{outside}.*not one of the 200 classes of {name}"):
        catalog.get(name).manifest(root, SMALL)


@pytest.mark.parametrize(
    "name, prefix", [("imagenet-a", "imagenet_a"), ("imagenet-r", "imagenet_r")], ids=["a", "r"]
)
def test_imagenet_a_and_r_class_masks_match_timms_files_index_by_index(name, prefix):
    info = resources.files("timm.data").joinpath("_info")
    indices = [int(v) for v in info.joinpath(f"{prefix}_indices.txt").read_text().split()]
    synsets = info.joinpath(f"{prefix}_synsets.txt").read_text().split()
    assert len(indices) == len(synsets) == 200
    subset = space().subset(name)
    assert list(subset) == indices
    mask = torch.zeros(1000, dtype=torch.bool)
    mask[list(subset)] = True
    wanted = set(indices)
    for i in range(1000):
        assert bool(mask[i]) == (i in wanted), i
    for k, (i, wnid) in enumerate(zip(indices, synsets, strict=True)):
        assert space().class_ids[i] == wnid, k


# ----------------------------------------------------------------------------------------------------
# ImageNet-Sketch
# ----------------------------------------------------------------------------------------------------


def test_imagenet_sketch_labels_by_wnid(tmp_path, photos):
    wnids = sorted(photos)[:2]
    root = tmp_path / "data"
    put(photos[wnids[0]], root / "imagenet-sketch" / wnids[0] / "sketch_1.JPEG")
    put(photos[wnids[0]], root / "imagenet-sketch" / wnids[0] / "sketch_2.JPEG")
    put(photos[wnids[1]], root / "imagenet-sketch" / wnids[1] / "sketch_1.JPEG")
    ds = load("imagenet-sketch", root, tmp_path / "cache")
    assert ds.labels.tolist() == [index_of(wnids[0]), index_of(wnids[0]), index_of(wnids[1])]
    assert tuple(ds.images.shape) == (3, 3, 32, 32)

    (root / "imagenet-sketch" / "not-a-wnid").mkdir()
    with pytest.raises(ValueError, match="'not-a-wnid' is not an ImageNet-1k WordNet id"):
        catalog.get("imagenet-sketch").manifest(root, SMALL)


# ----------------------------------------------------------------------------------------------------
# ImageNet ReaL: the val images with multi-labels matched by the number in the file name
# ----------------------------------------------------------------------------------------------------


def real_tree(tmp_path: Path, photos: dict[str, Path]) -> tuple[Path, list[str]]:
    root = tmp_path / "data"
    wnids = sorted(photos)[:2]
    put(photos[wnids[0]], root / "imagenet" / "val" / wnids[0] / "ILSVRC2012_val_00000002.JPEG")
    put(photos[wnids[1]], root / "imagenet" / "val" / wnids[1] / "ILSVRC2012_val_00000001.JPEG")
    return root, wnids


def test_imagenet_real_carries_the_real_labels_of_each_val_file(tmp_path, photos):
    root, wnids = real_tree(tmp_path, photos)
    ds = load("imagenet-real", root, tmp_path / "cache")
    assert not catalog.get("imagenet-real").as_stored
    assert ds.item_ids == [
        f"{wnids[0]}/ILSVRC2012_val_00000002.JPEG",
        f"{wnids[1]}/ILSVRC2012_val_00000001.JPEG",
    ]
    assert ds.meta["real"] == [(970, 795), ()]  # val 2: two labels; val 1: no ReaL label
    assert ds.labels.tolist() == [index_of(w) for w in wnids]  # the original single labels
    sub = ds.subset([1])
    assert sub.meta["real"] == [()]


def test_imagenet_real_shares_the_decoded_cache_with_imagenet_val_but_not_its_manifest(tmp_path, photos):
    root, _ = real_tree(tmp_path, photos)
    cache = tmp_path / "cache"
    real = load("imagenet-real", root, cache)
    cached = sorted((cache / "datasets").glob("*.npy"))
    assert len(cached) == 1 and cached[0].name.startswith("imagenet-val-")
    val = load("imagenet-val", root, cache)
    assert sorted((cache / "datasets").glob("*.npy")) == cached  # val found real's decode: one file
    assert torch.equal(val.images, real.images) and val.item_ids == real.item_ids
    assert real.manifest_hash != val.manifest_hash
    assert catalog.get("imagenet-real").manifest(root, SMALL) != catalog.get("imagenet-val").manifest(
        root, SMALL
    )
    load("imagenet-real", root, cache, Preprocess(resize=36, crop=24))  # another preprocessing: its own file
    assert len(list((cache / "datasets").glob("*.npy"))) == 2


def test_imagenet_real_over_the_cache_budget_is_streamed_with_the_cached_pixels(tmp_path, photos):
    from biasbench.core.streaming import LoadOptions, StreamedImages

    root, _ = real_tree(tmp_path, photos)
    # nothing fits: like ImageNet val on a small disk
    streamed = load("imagenet-real", root, tmp_path / "streamed", options=LoadOptions(cache_budget=0))
    assert isinstance(streamed.images, StreamedImages)
    assert not list((tmp_path / "streamed").glob("datasets/*.npy"))  # nothing written
    cached = load("imagenet-real", root, tmp_path / "cache")
    assert torch.equal(streamed.images.materialize(), cached.images)
    assert streamed.meta["real"] == cached.meta["real"]


@pytest.mark.parametrize(
    "fname", ["n01440764_1.JPEG", "ILSVRC2012_val_00050001.JPEG", "ILSVRC2012_val_1.JPEG"]
)
def test_imagenet_real_refuses_a_file_name_without_a_val_number(tmp_path, photos, fname):
    root, wnids = real_tree(tmp_path, photos)
    put(photos[wnids[0]], root / "imagenet" / "val" / wnids[0] / fname)
    with pytest.raises(ValueError, match=rf"{fname}: the file name must be ILSVRC2012_val_<n>"):
        catalog.get("imagenet-real").manifest(root, SMALL)


# ----------------------------------------------------------------------------------------------------
# ImageNet-C and ImageNet-C-bar: families of <corruption>-<severity>, 224 px as stored
# ----------------------------------------------------------------------------------------------------


def write_224(src: Path, dst: Path, size: int = 224) -> np.ndarray:
    """A ``size``-px image made from a real photo, saved as PNG or JPEG by suffix; returns its pixels."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").resize((size, size), Image.BILINEAR).save(dst)
    with Image.open(dst) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def test_corruption_constants_and_family_members():
    assert len(IMAGENET_C_STANDARD) == 15 and len(IMAGENET_C_EXTRA) == 4 and len(IMAGENET_C_BAR) == 10
    assert len(set(IMAGENET_C_STANDARD) | set(IMAGENET_C_EXTRA)) == 19
    assert {"gaussian_noise", "jpeg_compression", "elastic_transform"} <= set(IMAGENET_C_STANDARD)
    assert set(IMAGENET_C_EXTRA) == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    families = catalog.families()
    for fam, corruptions in [
        ("imagenet-c", (*IMAGENET_C_STANDARD, *IMAGENET_C_EXTRA)),
        ("imagenet-c-bar", IMAGENET_C_BAR),
    ]:
        assert isinstance(families[fam], DatasetFamily) and families[fam].label_space == IMAGENET_1K
        members = {n for n in catalog.catalog() if n.startswith(f"{fam}/")}
        assert members == {f"{fam}/{c}-{s}" for c in corruptions for s in range(1, 6)}
        assert all(catalog.get(m).as_stored for m in members)


def test_corruption_lists_agree_with_the_label_spaces_ood_families():
    """Where the label space names corruption families (``defaults["ood"]["families"]``), they are
    exactly our family members: the plugins cannot import each other, so the lists are checked here."""
    ours = {"imagenet-c": (*IMAGENET_C_STANDARD, *IMAGENET_C_EXTRA), "imagenet-c-bar": IMAGENET_C_BAR}
    for fam in (space().defaults.get("ood") or {}).get("families", {}).values():
        if fam.get("family") in ours:
            assert tuple(fam["corruptions"]) == ours[fam["family"]]
            assert tuple(fam["severities"]) == SEVERITIES


@pytest.mark.parametrize(
    "family, corruption",
    [("imagenet-c", "gaussian_noise"), ("imagenet-c", "saturate"), ("imagenet-c-bar", "blue_noise_sample")],
)
def test_corruption_member_loads_as_stored_at_224_px(tmp_path, photos, family, corruption):
    wnids = sorted(photos)[:2]
    root = tmp_path / "data"
    folder = root / family / corruption / "3"
    want = [
        write_224(photos[wnids[0]], folder / wnids[0] / "ILSVRC2012_val_00000007.png"),
        write_224(photos[wnids[1]], folder / wnids[1] / "ILSVRC2012_val_00000003.JPEG"),
    ]
    name = f"{family}/{corruption}-3"
    entry = catalog.get(name)
    assert entry.location(root) == folder
    ds = load(name, root, tmp_path / "cache", pre=None)
    assert entry.manifest(root, SMALL) == ds.manifest_hash  # preprocessing is ignored
    assert tuple(ds.images.shape) == (2, 3, 224, 224)
    assert np.array_equal(ds.images[0].numpy(), want[0])  # PNG: the stored pixels, untouched
    assert np.array_equal(ds.images[1].numpy(), want[1])
    assert ds.labels.tolist() == [index_of(w) for w in wnids]
    assert ds.meta["corruption"] == [corruption, corruption] and ds.meta["severity"].tolist() == [3, 3]

    absent = catalog.get(f"{family}/{corruption}-4")
    with pytest.raises(DatasetMissing) as e:
        absent.manifest(root, None)
    assert str((root / family / corruption / "4").resolve()) in str(e.value)
    assert f"bench data fetch {family}" in str(e.value)  # how to get it


def test_corruption_member_refuses_images_that_are_not_224_px(tmp_path, photos):
    wnid = sorted(photos)[0]
    root = tmp_path / "data"
    write_224(photos[wnid], root / "imagenet-c" / "fog" / "1" / wnid / "a.JPEG", size=256)
    with pytest.raises(ValueError, match=r"'imagenet-c/fog-1': images are 256x256; expected 224x224"):
        catalog.get("imagenet-c/fog-1").load(root, None, tmp_path / "cache")


# ----------------------------------------------------------------------------------------------------
# Absent sets: where it looked and how to get it; `bench ls datasets`
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, where, how",
    [
        ("imagenet-v2", "imagenet-v2", "imagenetv2-matched-frequency.tar.gz"),
        ("imagenet-a", "imagenet-a", "people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar"),
        ("imagenet-r", "imagenet-r", "people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"),
        ("imagenet-sketch", "imagenet-sketch", "github.com/HaohanWang/ImageNet-Sketch"),
        ("imagenet-real", "imagenet/val", "image-net.org"),
        ("imagenet-c/snow-2", "imagenet-c/snow/2", "zenodo.org/record/2235448"),
        ("imagenet-c/spatter-5", "imagenet-c/spatter/5", "extra.tar"),
        (
            "imagenet-c-bar/sparkles-1",
            "imagenet-c-bar/sparkles/1",
            "facebookresearch/augmentation-corruption",
        ),
    ],
)
def test_an_absent_set_says_where_it_looked_and_how_to_get_it(tmp_path, name, where, how):
    entry = catalog.get(name)
    assert entry.location(tmp_path) == tmp_path / where
    for call in (lambda: entry.manifest(tmp_path, SMALL), lambda: entry.load(tmp_path, SMALL, tmp_path)):
        with pytest.raises(DatasetMissing) as e:
            call()
        assert str((tmp_path / where).resolve()) in str(e.value) and how in str(e.value)
    (tmp_path / where).mkdir(parents=True)  # a folder without images is just as absent
    (tmp_path / where / "README.txt").write_text("x")
    with pytest.raises(DatasetMissing, match="no .* images in"):
        entry.manifest(tmp_path, SMALL)


def test_bench_ls_datasets_lists_the_ood_sets(tmp_path, photos):
    wnid = sorted(w for w in photos if index_of(w) in set(space().subset("imagenet-a")))[0]
    put(photos[wnid], tmp_path / "data" / "imagenet-a" / wnid / "a.jpg")
    r = bench(["ls", "datasets", "--data-root", str(tmp_path / "data")], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for name in ["imagenet-v2", "imagenet-r", "imagenet-sketch", "imagenet-real"]:
        assert any(line.split()[:1] == [name] and "missing" in line for line in lines), name
    assert any(line.split()[:1] == ["imagenet-a"] and "present" in line for line in lines)
    for fam in ["imagenet-c", "imagenet-c-bar"]:
        assert any(line.split()[:1] == [f"{fam}/<split>"] for line in lines), fam
    assert "gaussian_noise-3" in r.stdout and "blue_noise_sample-3" in r.stdout
