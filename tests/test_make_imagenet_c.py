"""``bench data make imagenet-c``: a real ImageNet-C tree from ImageNet photos (two real photos of
``../shared/data/imagenet-sample``, two corruptions), read back by the ``imagenet-c`` dataset family.
Known answers: the crop is Resize(256) + CenterCrop(224) (computed here with PIL alone), ImageNet-C's
``contrast`` is the closed form of Hendrycks & Dietterich (2019) ``(x - mean) * c + mean`` with
c = 0.4 … 0.05, and Gaussian noise's RMS grows with its severity's sigma (0.08 … 0.38)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biasbench.core import labels
from biasbench.core.labels import IMAGENET_1K
from biasbench.harness.datasets import catalog
from biasbench.harness.datasets.make_imagenet_c import make_imagenet_c, source_files
from tests.harness_fixtures import bench

CONTRAST = [0.4, 0.3, 0.2, 0.1, 0.05]  # Hendrycks' contrast(): c per severity
NOISE_SIGMA = [0.08, 0.12, 0.18, 0.26, 0.38]  # gaussian_noise(): sigma per severity


def quiet(_msg: str) -> None:
    pass


@pytest.fixture()
def photos(shared_data: Path, tmp_path: Path) -> Path:
    """A flat imagenet-sample-style folder with two real photos."""
    src = tmp_path / "src"
    src.mkdir()
    for f in sorted((shared_data / "imagenet-sample").glob("n*_*.JPEG"))[:2]:
        shutil.copyfile(f, src / f.name)
    return src


def crop_224(path: Path) -> np.ndarray:
    """Short side to 256 (bilinear), center 224 x 224 crop - with PIL only."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - 224) / 2.0)), int(round((nh - 224) / 2.0))
    return np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float64)


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (224, 224)
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def test_make_imagenet_c_through_the_cli(photos: Path, tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "data"
    r = bench(
        [
            "data", "make", "imagenet-c", "--from", str(photos), "--to", str(root),
            "--corruptions", "contrast,gaussian_noise", "--severities", "1,5",
        ],
        tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    made = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.JPEG"))
    sources = sorted(photos.iterdir())
    assert made == sorted(
        f"imagenet-c/{c}/{s}/{f.name[:9]}/{f.stem}.JPEG"
        for c in ("contrast", "gaussian_noise")
        for s in (1, 5)
        for f in sources
    )
    space = labels.get(IMAGENET_1K)
    for s in (1, 5):
        ds = catalog.get(f"imagenet-c/contrast-{s}").load(root, None, cache_dir)
        assert ds.labels.tolist() == [space.class_ids.index(f.name[:9]) for f in sources]
        assert ds.meta["severity"].tolist() == [s, s] and tuple(ds.images.shape) == (2, 3, 224, 224)

    for f in sources:
        clean = crop_224(f) / 255.0
        for s in (1, 5):  # contrast: the closed form, to JPEG-quality-85 precision
            c = CONTRAST[s - 1]
            mean = clean.mean(axis=(0, 1), keepdims=True)
            expected = np.clip((clean - mean) * c + mean, 0, 1) * 255
            got = read(root / "imagenet-c" / "contrast" / str(s) / f.name[:9] / f"{f.stem}.JPEG")
            assert np.abs(got - expected).mean() < 3.0  # a wrong c is off by > 10
        rms = [
            np.sqrt(
                (
                    (
                        read(root / "imagenet-c" / "gaussian_noise" / str(s) / f.name[:9] / f"{f.stem}.JPEG")
                        / 255
                        - clean
                    )
                    ** 2
                ).mean()
            )
            for s in (1, 5)
        ]
        # the noise is clipped to [0, 1] and smoothed a little by the JPEG: below sigma, but it grows with it
        assert rms[0] < NOISE_SIGMA[0] + 0.02 and rms[1] > 2 * rms[0]


def test_a_second_make_is_the_same_bytes_and_a_rerun_keeps_files(photos: Path, tmp_path: Path) -> None:
    kw = dict(corruptions=["gaussian_noise"], severities=[3], log=quiet)
    a = make_imagenet_c(photos, tmp_path / "a", **kw)
    b = make_imagenet_c(photos, tmp_path / "b", **kw)
    assert a.written == b.written == 2 and set(a.seconds) == {"gaussian_noise"}
    for p in (tmp_path / "a").rglob("*.JPEG"):  # seeded per (file, corruption, severity)
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    make_imagenet_c(photos, tmp_path / "c", **kw)
    assert np.random.rand() == expected  # NumPy's global generator is left as it was
    again = make_imagenet_c(photos, tmp_path / "a", **kw)
    assert (again.written, again.kept) == (0, 2)


def test_wnid_folders_and_per_class(photos: Path, tmp_path: Path) -> None:
    src = tmp_path / "val"
    first = sorted(photos.iterdir())[0]
    for i in range(3):
        (src / first.name[:9]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, src / first.name[:9] / f"ILSVRC2012_val_0000000{i + 1}.JPEG")
    assert len(source_files(src)) == 3 and len(source_files(src, per_class=2)) == 2
    rep = make_imagenet_c(
        src, tmp_path / "d", corruptions=["pixelate"], severities=[2], per_class=2, log=quiet
    )
    assert rep.written == 2
    assert sorted(
        p.name for p in (tmp_path / "d" / "imagenet-c" / "pixelate" / "2" / first.name[:9]).iterdir()
    ) == [
        "ILSVRC2012_val_00000001.JPEG",
        "ILSVRC2012_val_00000002.JPEG",
    ]


def test_bad_requests_are_clear_errors(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown ImageNet-C corruption 'fisheye'"):
        make_imagenet_c(photos, tmp_path, corruptions=["fisheye"], log=quiet)
    with pytest.raises(ValueError, match="severity must be one of"):
        make_imagenet_c(photos, tmp_path, severities=[6], log=quiet)
    r = bench(["data", "make", "imagenet-c", "--from", str(tmp_path / "nowhere")], tmp_path)
    assert r.returncode == 2 and "no such folder" in r.stderr
    r = bench(["data", "make", "imagenet-c-bar", "--from", str(photos)], tmp_path)
    assert r.returncode == 2 and "imagenet-c only" in r.stderr
