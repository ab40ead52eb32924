"""``bench data fetch`` for the ImageNet OOD sets: their manifests, and fetches through the real code from
a local HTTP mirror (127.0.0.1) of small archives built here in each set's real archive layout (the
top folder of imagenetv2-matched-frequency.tar.gz, imagenet-a.tar, imagenet-r.tar, ImageNet-Sketch.zip
and imagenet_c_bar.tar.gz; ImageNet-C's per-family tars that unpack side by side), each then read by
its dataset plugin. The manifests' own archives hold 10^4-10^6 images, so each test pins its small
stand-in's digest and image count in a copy of the real manifest (same URL file name, format, prefix,
target)."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from biasbench.core import labels
from biasbench.core.imagenet_corruptions import IMAGENET_C_EXTRA, IMAGENET_C_STANDARD
from biasbench.core.labels import IMAGENET_1K
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets import catalog
from biasbench.harness.datasets import download_spec as S
from biasbench.harness.datasets import downloadable as D
from biasbench.harness.datasets import fetch as F
from biasbench.harness.datasets import verify as V
from biasbench.harness.datasets.imagenet_ood import IMAGENET_C_TARS
from biasbench.registry.download import ChecksumMismatch, DownloadError, sha256_file
from tests.harness_fixtures import bench

SMALL = Preprocess(resize=40, crop=32)
OOD = ("imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-c-bar")
C_PARTS = (
    "imagenet-c-noise",
    "imagenet-c-blur",
    "imagenet-c-weather",
    "imagenet-c-digital",
    "imagenet-c-extra",
)


def quiet(_msg: str) -> None:
    pass


def jpeg(value: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value % 256, 40, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def tar_of(path: Path, members: dict[str, bytes], mode: str = "w") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pin(monkeypatch: pytest.MonkeyPatch, name: str, sha256: str | None, n_files: int) -> S.DownloadSpec:
    """The real manifest ``name`` with a small stand-in archive's digest and image count."""
    real = D.download_specs()
    m = real[name]
    arch = m.archive.model_copy(update={"sha256": sha256, "n_files": n_files})
    real[name] = m.model_copy(update={"archive": arch})
    monkeypatch.setattr(D, "download_specs", lambda: real)
    return real[name]


def wnids(subset: str | None = None) -> list[str]:
    space = labels.get(IMAGENET_1K)
    if subset is None:
        return list(space.class_ids)
    return [space.class_ids[i] for i in sorted(space.subset(subset))]


# ----------------------------------------------------------------------------------------------------
# The manifests
# ----------------------------------------------------------------------------------------------------


def test_ood_manifests_pin_the_published_digests_or_say_why_not() -> None:
    ms = D.download_specs()
    for name in (*OOD, *C_PARTS):
        arch = ms[name].archive
        assert arch is not None and arch.sha256_note, name
        if arch.sha256 is None:  # unpinned: the note says so and how to pass a digest
            assert "no sha256" in arch.sha256_note or "no checksum" in arch.sha256_note
            assert f"bench data fetch {name} --sha256" in arch.sha256_note
        else:  # pinned from TensorFlow Datasets' checksum list, with its size
            assert re.fullmatch(r"[0-9a-f]{64}", arch.sha256) and arch.size > 0
            assert "tensorflow_datasets/datasets/" in ms[name].source["checksum_source"]
    assert [n for n in (*OOD, *C_PARTS) if ms[n].archive.sha256] == [
        "imagenet-v2",
        "imagenet-a",
        "imagenet-r",
        "imagenet-sketch",
    ]
    # each lands where its dataset plugin looks
    for name in OOD:
        assert ms[name].target == name
        assert catalog.families()[name].location(Path("/r")) == Path("/r") / ms[name].target
    assert ms["imagenet-sketch"].archive.filename == "ImageNet-Sketch.zip"
    assert ms["imagenet-sketch"].archive_url("http://m") == "http://m/ImageNet-Sketch.zip"


def test_imagenet_c_parts_cover_the_19_corruptions_once() -> None:
    ms = D.download_specs()
    assert D.download_parts("imagenet-c") == sorted(C_PARTS)
    by_tar: dict[str, list[str]] = {}
    for c, tar in IMAGENET_C_TARS.items():
        by_tar.setdefault(tar, []).append(c)
    assert sorted(by_tar.values(), key=len) and sum(map(len, by_tar.values())) == 19
    assert set(IMAGENET_C_TARS) == {*IMAGENET_C_STANDARD, *IMAGENET_C_EXTRA}
    assert catalog.families()["imagenet-c"].location(Path("/r")) == Path("/r/imagenet-c")
    for name in C_PARTS:
        m = ms[name]
        assert m.target == "imagenet-c" and m.archive.merge and m.archive.sha256 is None
        cs = by_tar[m.archive.filename]
        assert m.archive.n_files == len(cs) * 5 * 50_000  # 50,000 val images x 5 severities
        assert all(c in m.description for c in cs)
        assert m.record_name == f".biasbench-files.{name}.json"
    with pytest.raises(KeyError, match="fetched in parts.*imagenet-c-noise"):
        D.get_download_spec("imagenet-c")


def test_a_member_of_a_family_fetched_in_parts_is_told_the_parts() -> None:
    with pytest.raises(KeyError, match=r"'imagenet-c/gaussian_noise-3' is a member of imagenet-c.*in parts"):
        D.get_download_spec("imagenet-c/gaussian_noise-3")


# ----------------------------------------------------------------------------------------------------
# Single-archive sets
# ----------------------------------------------------------------------------------------------------


def test_imagenet_v2_fetched_from_its_tar_gz_layout(tmp_path, http_server, monkeypatch, cache_dir) -> None:
    served = tmp_path / "mirror"
    top = "imagenetv2-matched-frequency-format-val"
    members = {f"{top}/{folder}/{k}.jpeg": jpeg(k) for k, folder in enumerate(["10", "2", "0", "10"])}
    members[f"{top}/10/9.jpeg"] = jpeg(9)
    digest = tar_of(served / "imagenetv2-matched-frequency.tar.gz", members, "w:gz")
    root = tmp_path / "data"
    url = http_server(served)
    with pytest.raises(ChecksumMismatch):  # the real pinned digest: the stand-in is refused
        F.fetch_dataset("imagenet-v2", root, mirror=url, log=quiet)
    assert not (root / "imagenet-v2").exists()
    assert not (root / S.DOWNLOADS_DIR / "imagenetv2-matched-frequency.tar.gz").exists()
    pin(monkeypatch, "imagenet-v2", digest, 5)
    out = F.fetch_dataset("imagenet-v2", root, mirror=url, log=quiet)
    assert out == root / "imagenet-v2" and V.verify_dataset("imagenet-v2", root) == []
    ds = catalog.get("imagenet-v2").load(root, SMALL, cache_dir)
    assert ds.labels.tolist() == [0, 2, 10, 10, 10]  # folder names are class indices, numeric order
    assert ds.item_ids == ["0/2.jpeg", "2/1.jpeg", "10/0.jpeg", "10/3.jpeg", "10/9.jpeg"]


def test_the_image_count_is_checked(tmp_path, http_server, monkeypatch) -> None:
    served = tmp_path / "mirror"
    w = wnids("imagenet-a")[0]
    digest = tar_of(served / "imagenet-a.tar", {f"imagenet-a/{w}/a.jpg": jpeg(1)})
    pin(monkeypatch, "imagenet-a", digest, 2)
    with pytest.raises(DownloadError, match="holds 1 images under imagenet-a/, expected 2"):
        F.fetch_dataset("imagenet-a", tmp_path / "data", mirror=http_server(served), log=quiet)
    assert not (tmp_path / "data" / "imagenet-a").exists()


@pytest.mark.parametrize("name", ["imagenet-a", "imagenet-r"])
def test_imagenet_a_and_r_fetched_from_their_tar_layout(
    name, tmp_path, http_server, monkeypatch, cache_dir
) -> None:
    served = tmp_path / "mirror"
    chosen = wnids(name)[:3]
    members = {f"{name}/README.txt": b"readme"}
    members.update({f"{name}/{w}/{i}.jpg": jpeg(i) for i, w in enumerate(chosen)})
    digest = tar_of(served / f"{name}.tar", members)
    pin(monkeypatch, name, digest, 3)
    root = tmp_path / "data"
    F.fetch_dataset(name, root, mirror=http_server(served), log=quiet)
    assert V.verify_dataset(name, root) == []
    assert (root / name / "README.txt").read_bytes() == b"readme"
    ds = catalog.get(name).load(root, SMALL, cache_dir)
    space = labels.get(IMAGENET_1K)
    assert ds.labels.tolist() == [space.class_ids.index(w) for w in chosen]


def test_imagenet_sketch_fetched_from_its_zip_layout(tmp_path, http_server, monkeypatch, cache_dir) -> None:
    served = tmp_path / "mirror"
    served.mkdir()
    chosen = wnids()[:2]
    with zipfile.ZipFile(served / "ImageNet-Sketch.zip", "w") as zf:  # the name from the manifest
        for i, w in enumerate(chosen):
            zf.writestr(f"sketch/{w}/sketch_{i}.JPEG", jpeg(i))
    digest = sha256_file(served / "ImageNet-Sketch.zip")
    pin(monkeypatch, "imagenet-sketch", digest, 2)
    root = tmp_path / "data"
    F.fetch_dataset("imagenet-sketch", root, mirror=http_server(served), log=quiet)
    assert V.verify_dataset("imagenet-sketch", root) == []
    ds = catalog.get("imagenet-sketch").load(root, SMALL, cache_dir)
    assert ds.labels.tolist() == [0, 1] and ds.item_ids == [
        f"{w}/sketch_{i}.JPEG" for i, w in enumerate(chosen)
    ]


def test_imagenet_c_bar_needs_a_digest_and_unpacks_cbar_download(
    tmp_path, http_server, monkeypatch, cache_dir
) -> None:
    served = tmp_path / "mirror"
    w = wnids()[5]
    members = {
        f"cbar_download/{c}/{s}/{w}/x.JPEG": jpeg(s, 224)
        for c in ("sparkles", "plasma_noise")
        for s in (1, 2)
    }
    digest = tar_of(served / "imagenet_c_bar.tar.gz", members, "w:gz")
    root = tmp_path / "data"
    url = http_server(served)
    with pytest.raises(F.UnverifiedSource, match="imagenet-c-bar --sha256"):
        F.fetch_dataset("imagenet-c-bar", root, mirror=url, log=quiet)
    F.fetch_dataset("imagenet-c-bar", root, mirror=url, log=quiet, sha256=digest)
    assert V.verify_dataset("imagenet-c-bar", root) == []
    ds = catalog.get("imagenet-c-bar/sparkles-2").load(root, None, cache_dir)
    assert ds.labels.tolist() == [5] and ds.meta["severity"].tolist() == [2]
    assert tuple(ds.images.shape) == (1, 3, 224, 224)


# ----------------------------------------------------------------------------------------------------
# ImageNet-C: five tars merged into one folder
# ----------------------------------------------------------------------------------------------------


def c_tar(path: Path, corruptions: list[str], w: str, value: int) -> str:
    return tar_of(
        path,
        {
            f"{c}/{s}/{w}/ILSVRC2012_val_00000001.JPEG": jpeg(value + s, 224)
            for c in corruptions
            for s in range(1, 6)
        },
    )


def test_imagenet_c_parts_merge_side_by_side(tmp_path, http_server, monkeypatch, cache_dir) -> None:
    served = tmp_path / "mirror"
    w = wnids()[0]
    noise = ["gaussian_noise", "shot_noise", "impulse_noise"]
    blur = ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur"]
    d_noise = c_tar(served / "noise.tar", noise, w, 10)
    d_blur = c_tar(served / "blur.tar", blur, w, 20)
    pin(monkeypatch, "imagenet-c-noise", None, 15)
    real = D.download_specs()
    real["imagenet-c-blur"] = real["imagenet-c-blur"].model_copy(
        update={"archive": real["imagenet-c-blur"].archive.model_copy(update={"n_files": 20})}
    )
    root = tmp_path / "data"
    url = http_server(served)

    with pytest.raises(F.UnverifiedSource, match="md5"):  # Zenodo publishes md5 only: no digest, no fetch
        F.fetch_dataset("imagenet-c-noise", root, mirror=url, log=quiet)
    with pytest.raises(ChecksumMismatch):
        F.fetch_dataset("imagenet-c-noise", root, mirror=url, log=quiet, sha256=d_blur)
    assert not (root / "imagenet-c").exists()

    F.fetch_dataset("imagenet-c-noise", root, mirror=url, log=quiet, sha256=d_noise)
    F.fetch_dataset("imagenet-c-blur", root, mirror=url, log=quiet, sha256=d_blur)
    target = root / "imagenet-c"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [*noise, *blur, ".biasbench-files.imagenet-c-noise.json", ".biasbench-files.imagenet-c-blur.json"]
    )
    assert (
        V.verify_dataset("imagenet-c-noise", root) == [] and V.verify_dataset("imagenet-c-blur", root) == []
    )
    ds = catalog.get("imagenet-c/glass_blur-3").load(root, None, cache_dir)
    assert ds.labels.tolist() == [0] and ds.meta["corruption"] == ["glass_blur"]

    # a damaged file is reported by its own part only; refetching that part repairs it, the other stays
    victim = target / "shot_noise" / "4" / w / "ILSVRC2012_val_00000001.JPEG"
    victim.write_bytes(b"broken")
    (problem,) = V.verify_dataset("imagenet-c-noise", root)
    assert "sha256 mismatch" in problem and "shot_noise/4" in problem
    assert V.verify_dataset("imagenet-c-blur", root) == []
    F.fetch_dataset("imagenet-c-noise", root, mirror=url, log=quiet, sha256=d_noise)
    assert (
        V.verify_dataset("imagenet-c-noise", root) == [] and V.verify_dataset("imagenet-c-blur", root) == []
    )
    assert not [p for p in root.iterdir() if p.name.startswith(".") and p.name != S.DOWNLOADS_DIR]


def test_cli_names_the_parts_of_imagenet_c(tmp_path) -> None:
    r = bench(["data", "fetch", "imagenet-c", "--data-root", str(tmp_path)], tmp_path)
    assert r.returncode == 2 and "imagenet-c-noise" in r.stderr and "fetched in parts" in r.stderr


def test_every_fetch_command_a_missing_set_suggests_exists() -> None:
    named = set()
    for entry in [*catalog.catalog().values(), *catalog.families().values()]:
        for cmd in re.findall(r"bench data fetch ([a-z0-9-]+(?:<[a-z|]+>)?)", entry.how_to_get or ""):
            if "<" in cmd:  # imagenet-c-<noise|blur|…>
                stem, alts = cmd.split("<")
                named.update(stem + a for a in alts.rstrip(">").split("|"))
            else:
                named.add(cmd)
    assert named >= {"imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-c-bar", *C_PARTS}
    assert named <= set(D.download_specs())
