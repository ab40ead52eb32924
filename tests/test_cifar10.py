"""CIFAR-10: the label space, the python batches read without unpickling arbitrary objects, the
``cifar10/<split>`` datasets, ImageFolders ``folder:PATH#labels=cifar10``, and ``bench data fetch
cifar10`` from a local HTTP mirror of a synthetic tarball in the official layout.

Known answers come from the format's definition, not from the reader: row ``i`` of ``b'data'`` is
image ``i`` with bytes ``c·1024 + y·32 + x`` = channel ``c`` (R, G, B) at row ``y``, column ``x``;
labels index ``batches.meta``'s ``label_names``. The synthetic files are written opcode by opcode in
Python 2's cPickle layout of the real files (:mod:`tests.cifar_files`), and the standard library's
own unpickler, on these trusted files, is the reference the restricted reader must agree with.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biasbench.core import labels
from biasbench.core.errors import InputError
from biasbench.core.label_spaces.cifar10 import CLASS_NAMES
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets import catalog
from biasbench.harness.datasets import download_spec as S
from biasbench.harness.datasets import downloadable as D
from biasbench.harness.datasets import fetch as F
from biasbench.harness.datasets import verify as V
from biasbench.harness.datasets.cifar_pickle import UnsafePickle, load_restricted, read_batch, read_meta
from biasbench.registry.download import ChecksumMismatch
from tests.cifar_files import BATCHES, batch_dict, meta_dict, py2_pickle, random_batch, write_batches
from tests.harness_fixtures import bench

PUBLISHED_MD5 = "c58f30108f718f92721af3b95e74349a"


def quiet(_msg: str) -> None:
    pass


# ----------------------------------------------------------------------------------------------------
# label space
# ----------------------------------------------------------------------------------------------------


def test_cifar10_label_space_has_the_official_ten_names_in_label_order():
    space = labels.get("cifar10")
    assert space.num_classes == 10
    assert space.class_names == (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    assert space.class_ids == space.class_names  # no separate ids: folders are named by class
    assert space.dataset("clean") == "cifar10/test"
    assert space.dataset("cue-conflict") is None and space.decision_groups("imagenet16") is None
    assert space.default("sis", "tau") == 0.99


# ----------------------------------------------------------------------------------------------------
# the restricted reader
# ----------------------------------------------------------------------------------------------------


def test_python2_layout_batch_decodes_each_pixel_from_its_plane(tmp_path):
    data, labs = random_batch(7, 5)
    data[3, 0 * 1024 + 5 * 32 + 7] = 11  # image 3, row 5, column 7: R, G, B
    data[3, 1 * 1024 + 5 * 32 + 7] = 22
    data[3, 2 * 1024 + 5 * 32 + 7] = 33
    p = tmp_path / "test_batch"
    p.write_bytes(py2_pickle(batch_dict(data, labs, "test_batch")))
    images, got_labels, names = read_batch(p, 10)
    assert images.shape == (5, 3, 32, 32) and images.dtype == np.uint8
    assert images[3, :, 5, 7].tolist() == [11, 22, 33]
    rng = np.random.default_rng(0)
    for _ in range(50):
        i, c, y, x = (int(rng.integers(0, s)) for s in (5, 3, 32, 32))
        assert images[i, c, y, x] == data[i, c * 1024 + y * 32 + x]
    assert got_labels == labs and names[0] == "test_batch_img_000.png"
    reference = pickle.loads(p.read_bytes(), encoding="bytes")  # our own trusted file
    assert np.array_equal(images.reshape(5, -1), reference[b"data"]) and got_labels == reference[b"labels"]


def test_a_batch_repickled_by_python3_reads_the_same(tmp_path):
    data, labs = random_batch(1, 4)
    d = batch_dict(data, labs, "data_batch_1")
    d[b"labels"] = np.array(labs, dtype=np.int64)  # a re-pickled batch may hold its labels as an array
    (tmp_path / "b").write_bytes(pickle.dumps(d, protocol=4))
    images, got_labels, _ = read_batch(tmp_path / "b", 10)
    assert np.array_equal(images.reshape(4, -1), data) and got_labels == labs


def test_meta_gives_the_label_names(tmp_path):
    (tmp_path / "batches.meta").write_bytes(py2_pickle(meta_dict()))
    assert read_meta(tmp_path / "batches.meta") == list(CLASS_NAMES)


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('pathlib').Path('x').touch()",))


def test_a_pickle_that_calls_os_system_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _RunsCommand(f"touch {marker}"), b"labels": []}, protocol=4)
    assert b"system" in evil  # the pickle names it: posix.system (nt.system on Windows)
    (tmp_path / "data_batch_1").write_bytes(evil)
    with pytest.raises(
        UnsafePickle, match=r"names the global (posix|nt)\.system.*without importing or calling"
    ):
        read_batch(tmp_path / "data_batch_1", 10)
    # the classic hand-written form: GLOBAL 'os system', its argument, REDUCE
    classic = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (tmp_path / "m").write_bytes(classic)
    with pytest.raises(UnsafePickle, match=r"os\.system"):
        load_restricted(tmp_path / "m")
    assert not marker.exists()
    pickle.loads(classic)  # the payload is live: the unrestricted unpickler runs the command
    assert marker.exists()


@pytest.mark.parametrize(
    "payload, words",
    [
        (pickle.dumps({b"data": _Evals()}), r"builtins\.eval"),
        (pickle.dumps({b"data": b"x" * 300}, protocol=2), r"_codecs\.encode"),  # py3 bytes at protocol 2
        (b"\x80\x02}(U\x01xcnumpy\nndarray\n(K\x05tRu.", r"not a readable.*not callable"),  # ndarray((5,))
        # numpy.dtype('O'): an object array would hold arbitrary objects
        (b"\x80\x02}(U\x01xcnumpy\ndtype\nU\x02O8K\x00K\x01\x87Ru.", r"dtype b'O8' is not one of"),
        # a dtype state with fields (structured): only plain dtypes
        (
            b"\x80\x02}(U\x01xcnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NN}NK\x01K\x01K\x00tbu.",
            "only plain dtypes",
        ),
        # _reconstruct of a shape other than (0,), or of a subtype other than ndarray
        (
            b"\x80\x02}(U\x01xcnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x09\x85U\x01b\x87Ru.",
            "only a plain",
        ),
        (
            b"\x80\x02}(U\x01xcnumpy.core.multiarray\n_reconstruct\ncnumpy\ndtype\nK\x00\x85U\x01b\x87Ru.",
            "only a plain",
        ),
        # BUILD on an allowed global: the pickle would set attributes of our own objects
        (
            b"\x80\x02}(U\x01xcnumpy\ndtype\n}U\x0c__defaults__(K\x01tsbu.",
            "sets the state of the global numpy.dtype",
        ),
    ],
    ids=[
        "builtins-eval",
        "codecs-encode",
        "ndarray-called",
        "object-dtype",
        "structured-dtype",
        "reconstruct-shape",
        "reconstruct-subtype",
        "build-on-global",
    ],
)
def test_globals_and_numpy_objects_outside_the_format_are_refused(tmp_path, payload, words):
    (tmp_path / "p").write_bytes(payload)
    with pytest.raises(InputError, match=words):
        load_restricted(tmp_path / "p")


def test_an_array_whose_bytes_do_not_fill_its_shape_is_refused(tmp_path):
    data, labs = random_batch(0, 2)
    raw = py2_pickle(batch_dict(data, labs, "b"))
    forged = raw.replace(b"(K\x02J\x00\x0c\x00\x00t", b"(K\x03J\x00\x0c\x00\x00t")  # (2, 3072) -> (3, 3072)
    assert forged != raw
    (tmp_path / "b").write_bytes(forged)
    with pytest.raises(UnsafePickle, match="needs 9216 bytes, the pickle holds 6144"):
        read_batch(tmp_path / "b", 10)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d.pop(b"labels"), r"no b'labels'"),
        (lambda d: d.__setitem__(b"labels", [1, 2, 10]), r"label 10 outside 0\.\.9"),
        (lambda d: d.__setitem__(b"labels", [1]), "3 images but 1 labels"),
        (lambda d: d.__setitem__(b"data", np.zeros((3, 100), np.uint8)), r"uint8 array N x 3072"),
        (lambda d: d.__setitem__(b"filenames", "not a list"), "list of bytes"),
    ],
)
def test_a_batch_with_a_missing_or_malformed_field_names_it(tmp_path, mutate, words):
    data, labs = random_batch(0, 3)
    d = batch_dict(data, labs, "b")
    mutate(d)
    (tmp_path / "b").write_bytes(pickle.dumps(d, protocol=4))
    with pytest.raises(InputError, match=words):
        read_batch(tmp_path / "b", 10)


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"\x80\x02}(U\x04data"])
def test_a_truncated_or_foreign_file_is_one_input_error(tmp_path, content):
    (tmp_path / "b").write_bytes(content)
    with pytest.raises(InputError, match="not a readable CIFAR batch pickle"):
        read_batch(tmp_path / "b", 10)


# ----------------------------------------------------------------------------------------------------
# the datasets cifar10/test and cifar10/train
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inner", ["", "cifar-10-batches-py"])
def test_cifar10_splits_load_the_batches_with_their_labels_and_names(tmp_path, cache_dir, inner):
    root = tmp_path / "data"
    written = write_batches(root / "cifar10" / inner if inner else root / "cifar10")
    test = catalog.get("cifar10/test").load(root, None, cache_dir)
    data, labs = written["test_batch"]
    assert tuple(test.images.shape) == (4, 3, 32, 32) and test.images.dtype == torch.uint8
    assert np.array_equal(test.images.numpy().reshape(4, -1), data)
    assert test.labels.tolist() == labs
    assert [test.class_names[i] for i in test.labels] == [CLASS_NAMES[i] for i in labs]
    assert test.item_ids == [f"test_batch/{i}" for i in range(4)]
    assert test.meta["filename"][2] == "test_batch_img_002.png" and test.label_space == "cifar10"
    train = catalog.get("cifar10/train").load(root, None, cache_dir)
    assert len(train) == 15 and train.item_ids[3] == "data_batch_2/0"
    expected = np.concatenate([written[b][0] for b in BATCHES[:5]])
    assert np.array_equal(train.images.numpy().reshape(15, -1), expected)
    entry = catalog.get("cifar10/test")
    assert (
        entry.as_stored
        and entry.published_size == 10_000
        and entry.manifest(root, None) == test.manifest_hash
    )


def test_the_manifest_changes_with_one_byte_of_a_batch_it_reads(tmp_path):
    root = tmp_path / "data"
    write_batches(root / "cifar10")
    test, train = catalog.get("cifar10/test"), catalog.get("cifar10/train")
    before = (test.manifest(root, None), train.manifest(root, None))
    assert before[0] != before[1]
    p = root / "cifar10" / "test_batch"
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 1  # one pixel byte
    p.write_bytes(bytes(raw))
    assert test.manifest(root, None) != before[0] and train.manifest(root, None) == before[1]


def test_a_missing_copy_says_where_it_looked_and_how_to_fetch_it(tmp_path):
    with pytest.raises(catalog.DatasetMissing, match=r"batches\.meta.*bench data fetch cifar10 --sha256"):
        catalog.get("cifar10/test").manifest(tmp_path, None)
    write_batches(tmp_path / "cifar10")
    (tmp_path / "cifar10" / "data_batch_4").unlink()
    with pytest.raises(catalog.DatasetMissing, match="not data_batch_4"):
        catalog.get("cifar10/train").manifest(tmp_path, None)


def test_a_meta_with_other_class_names_is_refused(tmp_path, cache_dir):
    write_batches(tmp_path / "cifar10")
    names = tuple(reversed(CLASS_NAMES))
    (tmp_path / "cifar10" / "batches.meta").write_bytes(py2_pickle(meta_dict(names)))
    with pytest.raises(InputError, match="names the classes.*not CIFAR-10's"):
        catalog.get("cifar10/test").load(tmp_path, None, cache_dir)


# ----------------------------------------------------------------------------------------------------
# ImageFolder layout: folder:PATH#labels=cifar10
# ----------------------------------------------------------------------------------------------------


def _export_png_folder(images: np.ndarray, labs: list[int], root: Path, by_index: bool) -> None:
    for i, (img, lab) in enumerate(zip(images, labs, strict=True)):
        d = root / (str(lab) if by_index else CLASS_NAMES[lab])
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i:03d}.png")


@pytest.mark.parametrize("by_index", [False, True])
def test_an_image_folder_of_class_names_or_indices_gives_the_batches_pixels(tmp_path, cache_dir, by_index):
    data, labs = random_batch(3, 6)
    labs = [0, 9, 3, 3, 5, 1]
    images = data.reshape(6, 3, 32, 32)
    _export_png_folder(images, labs, tmp_path / "png", by_index)
    ds = catalog.get(f"folder:{tmp_path / 'png'}#labels=cifar10").load(
        tmp_path, Preprocess(resize=32, crop=32), cache_dir
    )
    assert ds.label_space == "cifar10" and list(ds.class_names) == list(CLASS_NAMES)
    # files are listed in class-index order, then by name
    order = sorted(range(6), key=lambda i: (labs[i], i))
    assert ds.labels.tolist() == [labs[i] for i in order]
    assert np.array_equal(ds.images.numpy(), images[order])  # 32 px: resize and crop keep every pixel


# ----------------------------------------------------------------------------------------------------
# bench data fetch cifar10
# ----------------------------------------------------------------------------------------------------


def _tarball(path: Path, src: Path) -> tuple[str, str]:
    """The official tarball's layout (top folder cifar-10-batches-py/); returns (sha256, md5)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(src.iterdir()):
            tar.add(f, arcname=f"cifar-10-batches-py/{f.name}")
    raw = path.read_bytes()
    return hashlib.sha256(raw).hexdigest(), hashlib.md5(raw).hexdigest()


def _served_tarball(tmp_path: Path, http_server) -> tuple[dict, str, str, str]:
    """Synthetic batches in the official tarball, served on 127.0.0.1: (the written batches, sha256,
    md5, the mirror's URL)."""
    served = tmp_path / "mirror"
    written = write_batches(tmp_path / "src")
    sha, md5 = _tarball(served / "cifar-10-python.tar.gz", tmp_path / "src")
    return written, sha, md5, http_server(served)


def _with_md5(monkeypatch, md5: str) -> None:
    real = D.download_specs()
    m = real["cifar10"]
    real["cifar10"] = m.model_copy(update={"archive": m.archive.model_copy(update={"md5": md5})})
    monkeypatch.setattr(D, "download_specs", lambda: real)


def test_the_manifest_pins_the_published_url_and_md5_but_no_sha256():
    m = D.get_download_spec("cifar10")
    assert m.archive.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert m.archive.md5 == PUBLISHED_MD5 and m.archive.sha256 is None
    assert m.archive.strip_prefix == "cifar-10-batches-py/" and m.target == "cifar10"
    assert catalog.families()["cifar10"].location(Path("/r")) == Path("/r") / m.target


def test_fetch_is_refused_without_sha256_then_checks_md5_and_extracts(
    tmp_path, http_server, monkeypatch, cache_dir
):
    written, sha, md5, url = _served_tarball(tmp_path, http_server)
    root = tmp_path / "data"
    with pytest.raises(F.UnverifiedSource, match=r"md5 \(c58f3010.*bench data fetch cifar10 --sha256"):
        F.fetch_dataset("cifar10", root, mirror=url, log=quiet)
    # the real manifest's md5 is the published archive's, not this synthetic one's: refused after download
    with pytest.raises(ChecksumMismatch, match=f"md5 is {md5}, not the {PUBLISHED_MD5}"):
        F.fetch_dataset("cifar10", root, mirror=url, log=quiet, sha256=sha)
    assert not (root / "cifar10").exists() and not (root / ".downloads" / "cifar-10-python.tar.gz").exists()
    _with_md5(monkeypatch, md5)
    logs: list[str] = []
    out = F.fetch_dataset("cifar10", root, mirror=url, log=logs.append, sha256=sha)
    assert out == root / "cifar10" and any("sha256 and md5 verified" in line for line in logs)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*BATCHES, "batches.meta", "readme.html", S.LOCAL_RECORD]
    )
    assert V.verify_dataset("cifar10", root) == []
    ds = catalog.get("cifar10/test").load(root, None, cache_dir)
    assert np.array_equal(ds.images.numpy().reshape(4, -1), written["test_batch"][0])
    (out / "test_batch").write_bytes(b"tampered")
    (problem,) = V.verify_dataset("cifar10", root)
    assert "sha256 mismatch" in problem and "test_batch" in problem


def test_cli_refuses_cifar10_without_sha256(tmp_path):
    r = bench(["data", "fetch", "cifar10", "--data-root", str(tmp_path)], tmp_path)
    assert r.returncode != 0 and "--sha256" in (r.stderr + r.stdout)
    assert not (tmp_path / "cifar10").exists() and not (tmp_path / ".downloads").exists()


def test_a_member_name_fetches_and_verifies_its_familys_download(
    tmp_path, http_server, monkeypatch, cache_dir
):
    written, sha, md5, url = _served_tarball(tmp_path, http_server)
    root = tmp_path / "data"
    assert D.get_download_spec("cifar10/test") == D.get_download_spec("cifar10")
    with pytest.raises(F.UnverifiedSource, match=r"bench data fetch cifar10 --sha256"):
        F.fetch_dataset("cifar10/test", root, mirror=url, log=quiet)
    _with_md5(monkeypatch, md5)
    out = F.fetch_dataset("cifar10/test", root, mirror=url, log=quiet, sha256=sha)
    assert out == root / "cifar10" and (out / "data_batch_1").is_file()  # the whole family's folder
    assert V.verify_dataset("cifar10/test", root) == [] and V.verify_dataset("cifar10", root) == []
    ds = catalog.get("cifar10/test").load(root, None, cache_dir)
    assert np.array_equal(ds.images.numpy().reshape(4, -1), written["test_batch"][0])


def test_cli_fetch_of_a_member_asks_for_the_familys_sha256(tmp_path):
    r = bench(["data", "fetch", "cifar10/test", "--data-root", str(tmp_path)], tmp_path)
    said = " ".join((r.stderr + r.stdout).split())
    assert r.returncode != 0 and "bench data fetch cifar10 --sha256" in said
    assert "cannot be downloaded" not in said and not (tmp_path / ".downloads").exists()


def test_a_manifest_md5_must_be_32_hex_digits():
    raw = {
        "name": "x",
        "archive": {"url": "https://h/x.tar.gz", "md5": "abc"},
    }
    with pytest.raises(S.DownloadSpecError, match="md5 must be 32 hex digits"):
        S.download_spec(raw)


def test_md5_alone_never_unlocks_a_fetch(tmp_path, http_server, monkeypatch):
    """Even with the md5 matching the served archive, no sha256 means no download."""
    _, _, md5, url = _served_tarball(tmp_path, http_server)
    _with_md5(monkeypatch, md5)
    with pytest.raises(F.UnverifiedSource):
        F.fetch_dataset("cifar10", tmp_path / "data", mirror=url, log=quiet)
    assert not (tmp_path / "data" / ".downloads").exists()


def test_py2_writer_matches_the_standard_unpickler(tmp_path):
    """The test files' writer itself: the stdlib reads its output back to the same values."""
    data, labs = random_batch(2, 2)
    d = batch_dict(data, labs, "b")
    back = pickle.loads(py2_pickle(d), encoding="bytes")
    assert back[b"labels"] == labs and back[b"filenames"] == d[b"filenames"]
    assert np.array_equal(back[b"data"], data) and back[b"data"].dtype == np.uint8
    assert io.BytesIO(py2_pickle(d)).read(2) == b"\x80\x02"
