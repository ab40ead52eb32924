"""Hostile inputs (issue 14, "Reliability"): archives that try to write outside their target or to
exhaust the disk, and checkpoint files that are not what they claim to be. Everything is built here,
in temporary folders; nothing touches the network.

* :func:`fetch.safe_extract` (tar of any compression, and zip): ``..``, absolute and drive-letter
  names, backslashes, symlinks and hard links, device files, FIFOs and encrypted members are refused
  before anything is written; decompression bombs (too many bytes, members, or too high a
  compression ratio) are refused before or while extracting, leaving nothing behind.
* Checkpoints: NaN/Inf weights and integer tensors where the architecture has floats are a
  :class:`CheckpointError` naming the checkpoint and the tensors; float64/float16/bfloat16 weights are
  cast. A text file, an HTML page or a Git LFS pointer given as ``.pth``, a directory or a FIFO given as
  weights: clear messages naming the path and what it is.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from safetensors.torch import save_file

from biasbench.harness.datasets import download_spec as S
from biasbench.harness.datasets import downloadable as D
from biasbench.harness.datasets import extract as X
from biasbench.harness.datasets import fetch as F
from biasbench.harness.datasets import verify as V
from biasbench.registry import loading, sources
from biasbench.registry.download import DownloadError
from biasbench.registry.registry_files import RegistryError, load_registry_file, resolve_targets
from biasbench.registry.spec import CheckpointError, CheckpointSpec

ARCH = "timm:test_resnet"


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# ----------------------------------------------------------------------------------------------------
# Archives: members that escape, links, devices
# ----------------------------------------------------------------------------------------------------


def add_tar(tar: tarfile.TarFile, name: str, data: bytes = b"x", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def add_zip(
    zf: zipfile.ZipFile, name: str, data: bytes = b"x", *, mode: int | None = None, flags: int = 0
) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    zf.writestr(info, data)
    if flags:
        zf.infolist()[-1].flag_bits |= flags  # written into the central directory on close


TAR_UNSAFE = {
    "dotdot": ("data/../../evil.png", {}),
    "dotdot-deep": ("data/a/../../../evil.png", {}),
    "absolute": ("/tmp/biasbench-evil.png", {}),
    "drive-letter": ("C:/evil.png", {}),
    "backslash": ("data\\..\\..\\evil.png", {}),
    "symlink-absolute": ("data/link.png", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
    "symlink-relative-out": ("data/up", {"type": tarfile.SYMTYPE, "linkname": "../../.."}),
    "symlink-inside": ("data/same.png", {"type": tarfile.SYMTYPE, "linkname": "ok.png"}),
    "hardlink-out": ("data/hard.png", {"type": tarfile.LNKTYPE, "linkname": "../../outside.png"}),
    "hardlink-absolute": ("data/hard.png", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}),
    "char-device": ("data/null", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
    "block-device": ("data/sda", {"type": tarfile.BLKTYPE, "devmajor": 8, "devminor": 0}),
    "fifo": ("data/fifo", {"type": tarfile.FIFOTYPE}),
    "name-too-long": ("data/" + "n" * 300 + ".png", {}),
    "control-character": ("data/a\nb.png", {}),
}

ZIP_UNSAFE = {
    "dotdot": ("data/../../evil.png", {}),
    "absolute": ("/tmp/biasbench-evil.png", {}),
    "drive-letter": ("C:/evil.png", {}),
    "backslash": ("data\\..\\..\\evil.png", {}),
    "symlink": ("data/link.png", {"mode": stat.S_IFLNK | 0o777}),
    "char-device": ("data/null", {"mode": stat.S_IFCHR | 0o666}),
    "block-device": ("data/sda", {"mode": stat.S_IFBLK | 0o666}),
    "fifo": ("data/fifo", {"mode": stat.S_IFIFO | 0o644}),
    "socket": ("data/sock", {"mode": stat.S_IFSOCK | 0o644}),
    "encrypted": ("data/secret.png", {"flags": 0x1}),
    "name-too-long": ("data/" + "n" * 300 + ".png", {}),
}


def _assert_nothing_written(tmp_path: Path, dest: Path, archive: Path) -> None:
    assert not dest.exists()  # checked before anything was written
    assert tree(tmp_path) == [archive.name]  # and nothing anywhere else


@pytest.mark.parametrize("kind", sorted(TAR_UNSAFE))
@pytest.mark.parametrize("compression", ["", "gz"])
def test_unsafe_tar_members_are_refused_before_anything_is_written(kind, compression, tmp_path):
    archive = tmp_path / f"a.tar{'.' + compression if compression else ''}"
    name, kw = TAR_UNSAFE[kind]
    with tarfile.open(archive, f"w:{compression}", format=tarfile.PAX_FORMAT) as tar:
        add_tar(tar, "data/ok.png", b"fine")
        add_tar(tar, name, b"evil", **kw)
    dest = tmp_path / "out"
    with pytest.raises(X.UnsafeArchive, match="refused") as e:
        X.safe_extract(archive, dest, strip_prefix="data/")
    assert str(archive) in str(e.value)
    _assert_nothing_written(tmp_path, dest, archive)


@pytest.mark.parametrize("kind", sorted(ZIP_UNSAFE))
def test_unsafe_zip_members_are_refused_before_anything_is_written(kind, tmp_path):
    archive = tmp_path / "a.zip"
    name, kw = ZIP_UNSAFE[kind]
    with zipfile.ZipFile(archive, "w") as zf:
        add_zip(zf, "data/ok.png", b"fine")
        add_zip(zf, name, b"evil", **kw)
    dest = tmp_path / "out"
    with pytest.raises(X.UnsafeArchive, match="refused") as e:
        X.safe_extract(archive, dest, strip_prefix="data/")
    assert str(archive) in str(e.value)
    _assert_nothing_written(tmp_path, dest, archive)


def test_zip_archives_extract_with_prefix_and_directories(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/", b"")
        add_zip(zf, "data/dnn/a.png", b"a", mode=stat.S_IFREG | 0o644)
        add_zip(zf, "data/dnn/b.png", b"b" * 10_000)
        add_zip(zf, "README", b"outside the prefix")
    names = X.safe_extract(archive, tmp_path / "d", strip_prefix="data/")
    assert sorted(names) == ["dnn/a.png", "dnn/b.png"]
    assert (tmp_path / "d" / "dnn" / "b.png").read_bytes() == b"b" * 10_000
    assert tree(tmp_path / "d") == ["dnn", "dnn/a.png", "dnn/b.png"]
    # the format can be forced; a tar named as zip is not silently read as something else
    assert X.safe_extract(archive, tmp_path / "e", format="zip") == [
        "data/dnn/a.png",
        "data/dnn/b.png",
        "README",
    ]
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w") as t:
        add_tar(t, "a.png")
    with pytest.raises(DownloadError, match="is not a readable zip archive"):
        X.safe_extract(tar, tmp_path / "f", format="zip")
    assert not (tmp_path / "f").exists()


def test_corrupt_and_truncated_archives_are_download_errors(tmp_path):
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        for i in range(20):
            add_tar(tar, f"d/{i}.bin", os.urandom(5000))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DownloadError, match=r"truncated or corrupt|not a readable"):
        X.safe_extract(cut, tmp_path / "out")
    noise = tmp_path / "noise.zip"
    noise.write_bytes(b"PK\x03\x04" + os.urandom(500))
    with pytest.raises(DownloadError, match="not a readable zip archive"):
        X.safe_extract(noise, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------
# Decompression bombs
# ----------------------------------------------------------------------------------------------------

BOMB = 20 * 2**20  # 20 MiB of zeros: ~20 KiB compressed


def tar_bomb(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        add_tar(tar, "data/ok.png", b"fine")
        add_tar(tar, "data/zeros.bin", bytes(BOMB))
    return path


def test_tar_bomb_is_refused_before_extracting(tmp_path):
    archive = tar_bomb(tmp_path / "bomb.tar.gz")
    assert archive.stat().st_size < 200_000
    dest = tmp_path / "out"
    with pytest.raises(
        X.ArchiveTooLarge, match=r"would expand to more than 1048576 bytes .*decompression bomb"
    ):
        X.safe_extract(archive, dest, max_bytes=2**20)
    _assert_nothing_written(tmp_path, dest, archive)
    # under a limit it fits, it extracts (the limit is what refused it)
    assert sorted(X.safe_extract(archive, dest, max_bytes=BOMB + 100)) == ["data/ok.png", "data/zeros.bin"]


def test_tar_member_header_claiming_huge_size_is_refused_at_its_header(tmp_path):
    # a 100 GB member, declared in a header whose data never follows: refused when the header is read,
    # with the default limits, without decompressing (or waiting for) any data
    info = tarfile.TarInfo("data/huge.bin")
    info.size = 100 * 2**30
    archive = tmp_path / "huge.tar.gz"
    archive.write_bytes(gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT) + bytes(4096)))
    dest = tmp_path / "out"
    with pytest.raises(
        X.ArchiveTooLarge, match=r"would expand to more than \d+ bytes \(at member 'data/huge.bin'\)"
    ):
        X.safe_extract(archive, dest)
    _assert_nothing_written(tmp_path, dest, archive)


def test_compression_ratio_limit_refuses_a_bomb_under_the_size_limit(tmp_path):
    info = tarfile.TarInfo("data/big.bin")
    info.size = 80 * 2**20  # 80 MiB declared from a ~1 KiB archive
    archive = tmp_path / "ratio.tar.gz"
    archive.write_bytes(gzip.compress(info.tobuf() + bytes(1024)))
    dest = tmp_path / "out"
    with pytest.raises(X.ArchiveTooLarge, match=r"more than 100 times its own \d+ bytes"):
        X.safe_extract(archive, dest)
    _assert_nothing_written(tmp_path, dest, archive)


def test_zip_bomb_is_refused_before_extracting(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", b"fine")
        zf.writestr("zeros.bin", bytes(BOMB))
    assert archive.stat().st_size < 200_000
    dest = tmp_path / "out"
    with pytest.raises(X.ArchiveTooLarge, match="decompression bomb"):
        X.safe_extract(archive, dest, max_bytes=2**20)
    _assert_nothing_written(tmp_path, dest, archive)


def liar_zip(path: Path) -> Path:
    """A zip whose headers say its second member has 1000 bytes; the deflated data holds 20 MiB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/first.png", b"first")
        zf.writestr("a/zeros.bin", bytes(BOMB))
    data = bytearray(path.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory entry
        at = data.rfind(sig) + offset  # the uncompressed-size field of zeros.bin
        assert int.from_bytes(data[at : at + 4], "little") == BOMB
        data[at : at + 4] = (1000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def test_zip_whose_headers_understate_the_size_is_stopped_while_extracting(tmp_path):
    archive = liar_zip(tmp_path / "liar.zip")
    dest = tmp_path / "out"
    with pytest.raises(DownloadError, match=r"zeros.bin"):
        X.safe_extract(archive, dest, max_bytes=10_000)
    _assert_nothing_written(tmp_path, dest, archive)  # first.png, written before, was removed too


def test_too_many_members_is_refused(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(50):
            zf.writestr(f"f{i}", b"")
    dest = tmp_path / "out"
    with pytest.raises(X.ArchiveTooLarge, match="more than 10 members"):
        X.safe_extract(archive, dest, max_members=10)
    _assert_nothing_written(tmp_path, dest, archive)


def test_archive_larger_than_the_free_disk_space_is_refused(tmp_path, monkeypatch):
    archive = tar_bomb(tmp_path / "bomb.tar.gz")
    monkeypatch.setattr(
        X.shutil, "disk_usage", lambda _p: SimpleNamespace(total=10**6, used=10**6 - 1000, free=1000)
    )
    dest = tmp_path / "out"
    with pytest.raises(DownloadError, match=r"needs \d+ bytes but .* has only 1000 free"):
        X.safe_extract(archive, dest)
    _assert_nothing_written(tmp_path, dest, archive)


def test_existing_target_keeps_its_files_when_extraction_fails(tmp_path):
    archive = liar_zip(tmp_path / "liar.zip")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(DownloadError):
        X.safe_extract(archive, dest, strip_prefix="a/")
    assert tree(dest) == ["mine.txt"]  # what the failed extraction wrote is gone, the rest stays


def test_zip_dataset_fetched_through_a_manifest(tmp_path, http_server, monkeypatch):
    """A manifest with ``format = "zip"``: downloaded, verified and extracted by the real fetch code."""
    served = tmp_path / "mirror"
    served.mkdir()
    archive = served / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"set/img{i}.png", bytes([i]) * 10)
    digest = sources.sha256_file(archive)
    m = S.parse_download_spec(
        '{"name": "zipset", "archive": {"url": "https://e.org/set.zip", "format": "zip", "strip_prefix": "set/", '
        f'"n_files": 3, "sha256": "{digest}"}}}}',
        "manifest zipset.json",
    )
    monkeypatch.setattr(D, "download_specs", lambda: {"zipset": m})
    out = F.fetch_dataset("zipset", tmp_path / "data", mirror=http_server(served), log=lambda _m: None)
    assert tree(out) == [S.LOCAL_RECORD, "img0.png", "img1.png", "img2.png"]
    assert V.verify_dataset("zipset", tmp_path / "data") == []


def test_zip_bomb_through_fetch_leaves_nothing_behind(tmp_path, http_server, monkeypatch):
    served = tmp_path / "mirror"
    served.mkdir()
    with zipfile.ZipFile(served / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("set/zeros.png", bytes(BOMB))
    digest = sources.sha256_file(served / "bomb.zip")
    m = S.parse_download_spec(
        '{"name": "bombset", "archive": {"url": "https://e.org/bomb.zip", "format": "zip", '
        f'"sha256": "{digest}"}}}}',
        "manifest bombset.json",
    )
    monkeypatch.setattr(D, "download_specs", lambda: {"bombset": m})
    monkeypatch.setattr(X, "MAX_EXTRACT_BYTES", 2**20)
    root = tmp_path / "data"
    with pytest.raises(X.ArchiveTooLarge):
        F.fetch_dataset("bombset", root, mirror=http_server(served), log=lambda _m: None)
    assert tree(root) == [S.DOWNLOADS_DIR, f"{S.DOWNLOADS_DIR}/bomb.zip"]  # only the verified download


# ----------------------------------------------------------------------------------------------------
# Checkpoints: dtypes and non-finite values
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd0() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False).state_dict()


def spec(path: Path, cid: str = "hostile") -> CheckpointSpec:
    return CheckpointSpec(id=cid, arch=ARCH, weights=str(path))


def load(path: Path, cache_dir: Path, cid: str = "hostile"):
    return loading.load_checkpoint(spec(path, cid), cache_dir=cache_dir)


def save(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


def _map_floats(sd, fn):
    return {k: (fn(v) if v.is_floating_point() else v) for k, v in sd.items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_weights_are_refused_naming_checkpoint_and_first_tensors(
    tmp_path, cache_dir, sd0, bad, suffix
):
    sd = dict(sd0)
    keys = [k for k, v in sd.items() if v.is_floating_point()]
    for k in keys[3:10]:  # seven bad tensors: the message names the first five and the count
        sd[k] = sd[k].clone()
        sd[k].view(-1)[0] = float(bad)
    path = save(tmp_path / f"w{suffix}", sd)
    with pytest.raises(CheckpointError) as e:
        load(path, cache_dir)
    msg = str(e.value)
    assert msg.startswith("checkpoint 'hostile': the weights (local file ") and str(path) in msg
    assert f"non-finite values in 7 of {len(sd)} tensors" in msg and "refusing to load them" in msg
    named = [k for k in keys[3:10] if repr(k) in msg]  # the first five in the file's order
    assert len(named) == 5 and "…" in msg
    assert ("1 NaN, 0 Inf" if bad == "nan" else "0 NaN, 1 Inf") in msg


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64])
def test_integer_bool_or_complex_tensors_for_float_weights_are_refused(tmp_path, cache_dir, sd0, dtype):
    sd = dict(sd0)
    victims = [k for k, v in sd.items() if v.is_floating_point()][:2]
    for k in victims:
        sd[k] = sd[k].to(dtype)
    path = save(tmp_path / "w.pth", sd)
    with pytest.raises(CheckpointError) as e:
        load(path, cache_dir)
    msg = str(e.value)
    short = str(dtype).replace("torch.", "")
    assert msg.startswith(f"checkpoint 'hostile': the weights do not fit arch {ARCH!r}: 2 of ")
    assert f"{victims[0]} ({short}, arch float32)" in msg and f"{victims[1]} ({short}, arch float32)" in msg


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_float64_float16_and_bfloat16_weights_are_cast(tmp_path, cache_dir, sd0, dtype, suffix):
    path = save(tmp_path / f"w{suffix}", _map_floats(sd0, lambda v: v.to(dtype)))
    lc = load(path, cache_dir)
    got = lc.net.state_dict()
    n_float = sum(v.is_floating_point() for v in sd0.values())
    for k, v in sd0.items():
        assert got[k].dtype == v.dtype
        if v.is_floating_point():
            assert torch.equal(got[k], v.to(dtype).to(v.dtype))
    short = str(dtype).replace("torch.", "")
    assert f"cast {n_float} tensors {short} -> float32" in lc.notes


def test_float64_values_that_would_overflow_float32_are_refused(tmp_path, cache_dir, sd0):
    sd = _map_floats(sd0, lambda v: v.double())
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = 1e300  # finite in float64, Inf after the cast
    with pytest.raises(
        CheckpointError, match=rf"{key} \(float64, arch float32; values up to 1e\+300 overflow float32\)"
    ):
        load(save(tmp_path / "w.pth", sd), cache_dir)


def test_integer_buffers_take_whole_floats_but_not_fractions(tmp_path, cache_dir, sd0):
    tracked = [k for k in sd0 if k.endswith("num_batches_tracked")]
    assert tracked
    whole = {k: (v.to(torch.float32) if k in tracked else v) for k, v in sd0.items()}
    assert load(save(tmp_path / "whole.pth", whole), cache_dir)
    frac = {k: (v.to(torch.float32) + 0.5 if k in tracked else v) for k, v in sd0.items()}
    with pytest.raises(CheckpointError, match=rf"{tracked[0]} \(float32, arch int64; fractional values\)"):
        load(save(tmp_path / "frac.pth", frac), cache_dir)


# ----------------------------------------------------------------------------------------------------
# Files that are not checkpoints
# ----------------------------------------------------------------------------------------------------

NOT_CHECKPOINTS = {
    "text": (
        b"hello world\nthis is not a checkpoint\n",
        r"it is a text file, not a checkpoint \(first line: 'hello world'\)",
    ),
    "text-numbers": (b"1 2 3\n4 5 6\n", r"it is a text file, not a checkpoint \(first line: '1 2 3'\)"),
    "empty-lines": (b"\n\n", r"it is a text file"),
    "html": (
        b"<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>",
        r"it is an HTML page, not a checkpoint",
    ),
    "git-lfs": (
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 123\n",
        r"it is a Git LFS pointer, not the weights \(fetch the real file, e\.g\. `git lfs pull`\)",
    ),
    "empty": (b"", r"the file is empty \(0 bytes\)"),
    "utf8": ("gewichte: äöü €\n".encode(), r"it is a text file"),
}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
@pytest.mark.parametrize("kind", sorted(NOT_CHECKPOINTS))
def test_text_files_given_as_weights_say_what_they_are(tmp_path, cache_dir, kind, suffix):
    # was (text as .pth): "cannot read weights file …: IndexError: pop from empty list" / "KeyError: 101"
    data, pattern = NOT_CHECKPOINTS[kind]
    path = tmp_path / f"w{suffix}"
    path.write_bytes(data)
    with pytest.raises(
        CheckpointError, match=rf"^checkpoint 'hostile': cannot read weights file {path}: {pattern}"
    ):
        load(path, cache_dir)


def test_binary_garbage_is_not_called_a_text_file(tmp_path, cache_dir):
    path = tmp_path / "w.pth"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match=rf"cannot read weights file {path}: \w+Error") as e:
        load(path, cache_dir)
    assert "text file" not in str(e.value)


def test_a_directory_given_as_weights_says_it_is_a_directory(tmp_path, cache_dir):
    # was: "weights file … not found"
    d = tmp_path / "weights.pth"
    d.mkdir()
    with pytest.raises(
        CheckpointError, match=rf"checkpoint 'hostile': weights file {d} is a directory, not a file"
    ):
        load(d, cache_dir)
    with pytest.raises(CheckpointError, match=rf"weights file {d} is a directory, not a file"):
        sources.read_weights_file(d, "hostile")
    with pytest.raises(
        RegistryError, match=rf"command line target .*: weights file {d} is a directory, not a file"
    ):
        resolve_targets([f"{ARCH}@{d}"])
    with pytest.raises(RegistryError, match=r"is a directory; give a registry \.toml file"):
        resolve_targets([str(tmp_path)])


def test_a_fifo_given_as_weights_is_refused_without_blocking(tmp_path, cache_dir):
    fifo = tmp_path / "w.pth"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def attempt() -> None:
        try:
            load(fifo, cache_dir)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result.append(e)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():  # unblock the reader so that the thread can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("loading a FIFO blocked")
    assert isinstance(result[0], CheckpointError)
    assert f"weights file {fifo} is a FIFO (named pipe), not a regular file" in str(result[0])
    with pytest.raises(CheckpointError, match="is a FIFO"):
        sources.read_weights_file(fifo, "hostile")


def test_a_character_device_given_as_weights_is_refused(cache_dir):
    with pytest.raises(
        CheckpointError, match=r"weights file /dev/zero is a character device, not a regular file"
    ):
        load(Path("/dev/zero"), cache_dir)


def test_registry_file_that_is_a_directory_or_fifo_is_a_registry_error(tmp_path):
    d = tmp_path / "r.toml"
    d.mkdir()
    with pytest.raises(RegistryError, match=rf"cannot read registry file {d}: it is a directory"):
        load_registry_file(d)
    with pytest.raises(RegistryError, match=rf"registry file {d} is a directory"):
        resolve_targets([str(d)])
    fifo = tmp_path / "f.toml"
    os.mkfifo(fifo)
    with pytest.raises(RegistryError, match=rf"cannot read registry file {fifo}: it is a FIFO"):
        load_registry_file(fifo)


@pytest.mark.parametrize(
    "files", [["a.png"], {"../../../etc/passwd": "0" * 64}, {"a.png": 3}, {"/abs.png": "0" * 64}]
)
def test_a_hostile_checksum_record_is_reported_not_followed(tmp_path, files):
    # was: dict(list) -> ValueError, and '../' keys were hashed outside the dataset folder
    target = tmp_path / "stylized-16"
    target.mkdir()
    (target / S.LOCAL_RECORD).write_text(json.dumps({"archive_sha256": "0" * 64, "files": files}))
    (problem,) = V.verify_dataset("stylized-16", tmp_path)
    assert "the checksum record is malformed" in problem and str(target / S.LOCAL_RECORD) in problem


def test_a_checksum_record_that_is_not_an_object_counts_as_missing(tmp_path):
    # was: AttributeError ('list' object has no attribute 'get')
    target = tmp_path / "stylized-16"
    target.mkdir()
    (target / S.LOCAL_RECORD).write_text("[1, 2]")
    (problem,) = V.verify_dataset("stylized-16", tmp_path)
    assert "cannot be verified" in problem
