"""The dataset manager: manifests, fetch through the real code from a local HTTP mirror (127.0.0.1),
verify, checksum refusals, and safe archive extraction."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from biasbench.core.label_spaces.imagenet import categories16
from biasbench.harness.datasets import catalog
from biasbench.harness.datasets import download_spec as S
from biasbench.harness.datasets import downloadable as D
from biasbench.harness.datasets import extract as X
from biasbench.harness.datasets import fetch as F
from biasbench.harness.datasets import verify as V
from biasbench.registry.download import ChecksumMismatch, DownloadError, resolve_mirror

COMMIT = "ccd0c01d42c0a8a834e90ec141e7f24fa915dc23"


def quiet(_msg: str) -> None:
    pass


# ----------------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------------


def test_manifests() -> None:
    ms = D.download_specs()
    assert set(ms) >= {"cue-conflict", "edges", "filled-silhouettes", "stylized-16"}
    for name, n in (("cue-conflict", 1280), ("edges", 160), ("filled-silhouettes", 160)):
        m = ms[name]
        assert m.n_files == len(m.files) == n
        assert m.source["commit"] == COMMIT and COMMIT in m.base_url
        assert m.base_url.startswith("https://raw.githubusercontent.com/rgeirhos/texture-vs-shape/")
        assert m.license == "CC-BY-4.0" and "Geirhos" in m.citation and "ICLR" in m.citation
        assert m.archive is None and len(m.digest) == 64
    sty = ms["stylized-16"]
    assert (
        sty.archive.url
        == "https://github.com/bethgelab/model-vs-human/releases/download/v0.1/stylized.tar.gz"
    )
    assert sty.archive.sha256 is None and "never" in sty.archive.sha256_note
    assert sty.archive.n_files == 800 and sty.archive.filename == "stylized.tar.gz"


@pytest.mark.parametrize("name", ["edges", "filled-silhouettes", "cue-conflict"])
def test_shared_data_matches_manifests(name: str, shared_data: Path) -> None:
    assert V.verify_dataset(name, shared_data) == []


def test_urls_and_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    m = D.get_download_spec("edges")
    assert m.file_url("cat/cat7.png") == (
        f"https://raw.githubusercontent.com/rgeirhos/texture-vs-shape/{COMMIT}/stimuli/edges/cat/cat7.png"
    )
    assert m.file_url("cat/cat7.png", "http://h:1/data/") == "http://h:1/data/edges/cat/cat7.png"
    assert D.get_download_spec("stylized-16").archive_url("http://h:1") == "http://h:1/stylized.tar.gz"
    monkeypatch.setenv("BIASBENCH_MIRROR", "http://env-mirror")
    assert resolve_mirror(None) == "http://env-mirror" and resolve_mirror("http://x") == "http://x"
    with pytest.raises(KeyError, match="downloadable"):
        D.get_download_spec("imagenet-val")


# ----------------------------------------------------------------------------------------------------
# Per-file datasets over HTTP
# ----------------------------------------------------------------------------------------------------


def test_fetch_verify_flipped_byte_and_repair(
    shared_data: Path, tmp_path: Path, http_server, cache_dir: Path
) -> None:
    url = http_server(shared_data)  # a mirror laid out like a data root
    root = tmp_path / "data"
    logs: list[str] = []
    out = F.fetch_dataset("edges", root, mirror=url, log=logs.append)
    assert out == root / "edges"
    assert V.verify_dataset("edges", root) == []
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        D.get_download_spec("edges").files
    )
    assert any("160/160" in line for line in logs) and any("verified" in line for line in logs)
    assert len(catalog.get("edges").load(root, None, cache_dir)) == 160

    # one flipped byte in one stimulus is detected, and only that one
    victim = out / "cat" / "cat7.png"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    problems = V.verify_dataset("edges", root)
    assert len(problems) == 1 and "sha256 mismatch" in problems[0] and "cat7.png" in problems[0]

    # missing and unexpected files are reported too
    (out / "dog" / "dog1.png").unlink()
    (out / "dog" / "notes.txt").write_text("x")
    problems = V.verify_dataset("edges", root)
    assert any(p.startswith("missing:") and "dog1.png" in p for p in problems)
    assert any("unexpected file" in p and "notes.txt" in p for p in problems)
    (out / "dog" / "notes.txt").unlink()

    # a rerun repairs the corrupted and the missing file, re-using the verified ones
    F.fetch_dataset("edges", root, mirror=url, log=quiet)
    assert V.verify_dataset("edges", root) == []


def test_rerun_needs_no_network(shared_data: Path, tmp_path: Path, http_server, monkeypatch) -> None:
    root = tmp_path / "data"
    monkeypatch.setenv("BIASBENCH_MIRROR", http_server(shared_data))  # env mirror
    F.fetch_dataset("filled-silhouettes", root, log=quiet)
    # every file present and verified: a dead mirror is never contacted
    F.fetch_dataset("filled-silhouettes", root, mirror="http://127.0.0.1:9/", log=quiet)
    assert V.verify_dataset("filled-silhouettes", root) == []


def test_sha256_mismatch_on_fetch_is_refused(shared_data: Path, tmp_path: Path, http_server) -> None:
    served = tmp_path / "mirror"
    shutil.copytree(shared_data / "edges", served / "edges")
    bad = served / "edges" / "bear" / "bear3.png"
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    root = tmp_path / "data"
    with pytest.raises(ChecksumMismatch) as e:
        F.fetch_dataset("edges", root, mirror=http_server(served), log=quiet)
    msg = str(e.value)
    assert "sha256 mismatch" in msg and "bear3.png" in msg and "1 of 160" in msg
    final = root / "edges" / "bear" / "bear3.png"
    assert not final.exists() and not final.with_name(final.name + ".part").exists()
    assert V.verify_dataset("edges", root) == [f"missing: {final}"]  # the other 159 were verified and kept


def test_http_error(tmp_path: Path, http_server) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DownloadError, match="HTTP 404"):
        F.fetch_dataset("edges", tmp_path / "data", mirror=http_server(empty), log=quiet, workers=2)
    assert not any((tmp_path / "data").rglob("*.png"))


def test_fetch_cue_conflict_full(shared_data: Path, tmp_path: Path, http_server, cache_dir: Path) -> None:
    root = tmp_path / "data"
    F.fetch_dataset("cue-conflict", root, mirror=http_server(shared_data), log=quiet)
    assert V.verify_dataset("cue-conflict", root) == []
    entry = catalog.get("cue-conflict")
    assert entry.manifest(root, None) == entry.manifest(shared_data, None)


# ----------------------------------------------------------------------------------------------------
# Archives (Stylized-16)
# ----------------------------------------------------------------------------------------------------


def _png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def make_stylized_archive(path: Path, extra: list[dict] | None = None) -> str:
    """A stand-in for model-vs-human's stylized.tar.gz (800 tiny PNGs, the same layout); returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        n = 0
        for c in categories16():
            for j in range(50):
                n += 1
                _add(tar, f"stylized/dnn/session-1/{n:04d}_sty_dnn_0_{c}_00_{c}-{j:04d}.png", _png(n % 256))
        for member in extra or []:
            _add(tar, **member)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archive_without_digest_is_refused(tmp_path: Path, http_server) -> None:
    served = tmp_path / "mirror"
    make_stylized_archive(served / "stylized.tar.gz")
    root = tmp_path / "data"
    with pytest.raises(F.UnverifiedSource, match="pins no sha256.*--sha256"):
        F.fetch_dataset("stylized-16", root, mirror=http_server(served), log=quiet)
    assert not root.exists() or not any(root.rglob("*"))  # nothing downloaded


def test_archive_fetch_with_digest(tmp_path: Path, http_server, cache_dir: Path) -> None:
    served = tmp_path / "mirror"
    digest = make_stylized_archive(served / "stylized.tar.gz")
    url = http_server(served)
    root = tmp_path / "data"

    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        F.fetch_dataset("stylized-16", root, mirror=url, log=quiet, sha256="0" * 64)
    assert not (root / S.DOWNLOADS_DIR / "stylized.tar.gz").exists() and not (root / "stylized-16").exists()

    out = F.fetch_dataset("stylized-16", root, mirror=url, log=quiet, sha256=digest.upper())
    assert out == root / "stylized-16"
    record = json.loads((out / S.LOCAL_RECORD).read_text())
    assert record["archive_sha256"] == digest and len(record["files"]) == 800
    assert V.verify_dataset("stylized-16", root) == []
    ds = catalog.get("stylized-16").load(root, None, cache_dir)
    assert len(ds) == 800 and ds.labels.bincount(minlength=16).tolist() == [50] * 16
    assert not list(root.glob(".stylized-16.*"))  # no temporary directories left

    victim = sorted(out.rglob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    problems = V.verify_dataset("stylized-16", root)
    assert len(problems) == 1 and "sha256 mismatch" in problems[0]

    # a rerun re-extracts from the verified archive (already downloaded: the mirror is not needed)
    F.fetch_dataset("stylized-16", root, mirror="http://127.0.0.1:9", log=quiet, sha256=digest)
    assert V.verify_dataset("stylized-16", root) == []


def test_archive_placed_by_hand_cannot_be_verified(tmp_path: Path) -> None:
    (tmp_path / "stylized-16" / "dnn").mkdir(parents=True)
    problems = V.verify_dataset("stylized-16", tmp_path)
    assert len(problems) == 1 and "cannot be verified" in problems[0]
    assert "not found" in V.verify_dataset("stylized-16", tmp_path / "nowhere")[0]


UNSAFE = {
    "dotdot": {"name": "stylized/../../evil.png"},
    "absolute": {"name": "/tmp/biasbench-evil.png"},
    "symlink-out": {"name": "stylized/dnn/link.png", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"},
    "symlink-rel": {"name": "stylized/dnn/up", "type": tarfile.SYMTYPE, "linkname": "../../.."},
    "hardlink": {"name": "stylized/dnn/hard.png", "type": tarfile.LNKTYPE, "linkname": "../../outside.png"},
    "device": {"name": "stylized/dnn/dev", "type": tarfile.CHRTYPE},
    "fifo": {"name": "stylized/dnn/fifo", "type": tarfile.FIFOTYPE},
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_archive_members_are_refused(kind: str, tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        _add(tar, "stylized/dnn/session-1/ok.png", b"fine")
        member = dict(UNSAFE[kind])
        _add(tar, member.pop("name"), b"evil", **member)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(X.UnsafeArchive, match="refused"):
        X.safe_extract(archive, dest, strip_prefix="stylized/")
    assert not dest.exists()  # checked before anything was written
    assert not (tmp_path / "out" / "evil.png").exists() and not (tmp_path / "evil.png").exists()


def test_unsafe_archive_refused_through_fetch(tmp_path: Path, http_server) -> None:
    served = tmp_path / "mirror"
    digest = make_stylized_archive(
        served / "stylized.tar.gz", extra=[{"name": "stylized/../../../pwned.png"}]
    )
    root = tmp_path / "data"
    with pytest.raises(X.UnsafeArchive):
        F.fetch_dataset("stylized-16", root, mirror=http_server(served), log=quiet, sha256=digest)
    assert not (root / "stylized-16").exists() and not list(root.glob(".stylized-16.*"))
    assert not list(tmp_path.rglob("pwned.png"))


def test_safe_extract_strips_prefix(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "stylized", type=tarfile.DIRTYPE)
        _add(tar, "stylized/dnn/session-1/a.png", b"a")
        _add(tar, "./stylized/dnn/session-1/b.png", b"b")
        _add(tar, "README", b"skipped: outside the prefix")
    names = X.safe_extract(archive, tmp_path / "d", strip_prefix="stylized/")
    assert sorted(names) == ["dnn/session-1/a.png", "dnn/session-1/b.png"]
    assert (tmp_path / "d" / "dnn" / "session-1" / "b.png").read_bytes() == b"b"
    assert not (tmp_path / "d" / "README").exists()
