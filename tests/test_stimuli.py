"""The 16-class stimulus datasets load from ../shared/data with the right counts and labels; missing or
incomplete sets raise DatasetMissing with a clear message."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biasbench.core.cue_conflict import parse_cue_conflict_name
from biasbench.core.label_spaces.imagenet import categories16
from biasbench.core.labels import IMAGENET16
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets import catalog
from biasbench.harness.datasets.catalog import DatasetMissing

CATS = categories16()


def load(name: str, root: Path, cache: Path, pre: Preprocess | None = None):
    return catalog.get(name).load(root, pre, cache)


@pytest.fixture(scope="module")
def cue(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    return load("cue-conflict", shared_data, tmp_path_factory.mktemp("cache"))


def test_registered_in_catalog() -> None:
    from biasbench.harness.datasets import catalog

    for name in ("cue-conflict", "edges", "filled-silhouettes", "stylized-16"):
        entry = catalog.get(name)
        assert entry is catalog.get(name)
        assert entry.as_stored and entry.label_space == IMAGENET16
        assert f"bench data fetch {name}" in entry.how_to_get


def test_cue_conflict(cue, shared_data: Path) -> None:
    assert len(cue) == 1280
    assert cue.images.dtype == torch.uint8 and tuple(cue.images.shape[1:]) == (3, 224, 224)
    assert cue.class_names == CATS and cue.label_space == IMAGENET16
    texture = cue.meta["texture"]
    assert int((cue.labels == texture).sum()) == 80  # same-class images, dropped by shape bias
    assert torch.bincount(cue.labels, minlength=16).tolist() == [80] * 16
    for item, label, tex in zip(cue.item_ids, cue.labels.tolist(), texture.tolist(), strict=True):
        shape, texture_name = parse_cue_conflict_name(item)
        assert item.split("/")[0] == shape == CATS[label] and texture_name == CATS[tex]
    # decoded as stored: byte-identical to PIL's RGB decode
    i = cue.item_ids.index("cat/cat7-elephant1.png")
    with Image.open(shared_data / "cue-conflict" / "cat" / "cat7-elephant1.png") as im:
        ref = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(cue.images[i].numpy(), ref)


@pytest.mark.parametrize("name", ["edges", "filled-silhouettes"])
def test_shape_only_sets(name: str, shared_data: Path, cache_dir: Path) -> None:
    ds = load(name, shared_data, cache_dir)
    assert len(ds) == 160 and tuple(ds.images.shape[1:]) == (3, 224, 224)
    assert torch.bincount(ds.labels, minlength=16).tolist() == [10] * 16
    assert all(
        CATS[lab] == item.split("/")[0] for item, lab in zip(ds.item_ids, ds.labels.tolist(), strict=True)
    )
    # used as stored: a preprocessing is ignored; the second load reads the cache
    again = load(name, shared_data, cache_dir, Preprocess(resize=64, crop=32))
    assert torch.equal(again.images, ds.images) and again.manifest_hash == ds.manifest_hash
    assert any((cache_dir / "datasets").glob(f"{name}-*.npy"))


def test_manifest_hash_is_cheap_and_stable(shared_data: Path) -> None:
    entry = catalog.get("edges")
    assert entry.manifest(shared_data, None) == entry.manifest(shared_data, Preprocess())


def test_missing_dataset(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(DatasetMissing) as e:
        load("cue-conflict", tmp_path, cache_dir)
    msg = str(e.value)
    assert str((tmp_path / "cue-conflict").resolve()) in msg and "bench data fetch cue-conflict" in msg
    with pytest.raises(DatasetMissing, match="--sha256"):
        catalog.get("stylized-16").manifest(tmp_path, None)


def test_incomplete_or_extra_files(shared_data: Path, tmp_path: Path, cache_dir: Path) -> None:
    shutil.copytree(shared_data / "edges", tmp_path / "edges")
    (tmp_path / "edges" / "cat" / "cat7.png").unlink()
    with pytest.raises(
        DatasetMissing, match=r"incomplete: 1 of its 160 images are missing .*bench data verify edges"
    ):
        load("edges", tmp_path, cache_dir)
    shutil.copy(shared_data / "edges" / "cat" / "cat7.png", tmp_path / "edges" / "cat" / "cat7.png")
    shutil.copy(shared_data / "edges" / "cat" / "cat7.png", tmp_path / "edges" / "cat" / "cat11.png")
    with pytest.raises(DatasetMissing, match="1 images are not part of it"):
        load("edges", tmp_path, cache_dir)
    (tmp_path / "edges" / "cat" / "cat11.png").unlink()
    assert len(load("edges", tmp_path, cache_dir)) == 160


def tiny_png(value: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def stylized_names() -> list[str]:
    """800 names in model-vs-human's stylized layout (50 per category)."""
    out, n = [], 0
    for c in CATS:
        for j in range(50):
            n += 1
            out.append(f"{n:04d}_sty_dnn_0_{c}_00_{c}-{j:04d}-ILSVRC2012-val-{n:08d}.png")
    return out


def test_stylized_layout(tmp_path: Path, cache_dir: Path) -> None:
    session = tmp_path / "stylized-16" / "dnn" / "session-1"
    session.mkdir(parents=True)
    png = tiny_png()
    names = stylized_names()
    for name in names:
        (session / name).write_bytes(png)
    ds = load("stylized-16", tmp_path, cache_dir)
    assert len(ds) == 800 and torch.bincount(ds.labels, minlength=16).tolist() == [50] * 16
    assert ds.item_ids[0] == f"dnn/session-1/{names[0]}" and ds.labels[0] == 0
    (session / names[-1]).unlink()
    with pytest.raises(DatasetMissing, match="holds 799 images"):
        load("stylized-16", tmp_path, cache_dir)
