"""Checksum-verified, atomic, resumable downloads (``biasbench.registry.download``), against a real
HTTP server on 127.0.0.1 with Range support."""

from __future__ import annotations

import hashlib
import os
import urllib.request

import pytest

from biasbench.registry import download
from biasbench.registry.download import ChecksumMismatch, DownloadError, apply_mirror, fetch, sha256_file

PAYLOAD = os.urandom(3 * download.CHUNK + 12345)  # several chunks, not a multiple of the chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture()
def server(tmp_path, http_server):
    d = tmp_path / "srv"
    (d / "files").mkdir(parents=True)
    (d / "files" / "blob.bin").write_bytes(PAYLOAD)
    return http_server(d)


@pytest.fixture()
def ranges(monkeypatch):
    """Records the Range header of every request fetch() makes."""
    seen: list[str | None] = []
    real = urllib.request.urlopen

    def spy(req, *a, **k):
        seen.append(req.get_header("Range"))
        return real(req, *a, **k)

    monkeypatch.setattr(download.urllib.request, "urlopen", spy)
    return seen


def test_fetch_downloads_verifies_and_leaves_no_part_file(server, tmp_path, ranges):
    dest = tmp_path / "out" / "blob.bin"
    assert fetch(f"{server}/files/blob.bin", dest, SHA) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("blob.bin.part").exists()
    assert ranges == [None]


def test_sha256_mismatch_is_refused_and_nothing_is_left_under_any_name(server, tmp_path):
    dest = tmp_path / "out" / "blob.bin"
    wrong = "ab" * 32
    with pytest.raises(ChecksumMismatch) as e:
        fetch(f"{server}/files/blob.bin", dest, wrong)
    msg = str(e.value)
    assert f"expected {wrong}, got {SHA}" in msg and "/files/blob.bin" in msg
    assert not dest.exists()
    assert not dest.with_name("blob.bin.part").exists()


def test_partial_download_resumes_with_a_range_request(server, tmp_path, ranges):
    dest = tmp_path / "out" / "blob.bin"
    dest.parent.mkdir(parents=True)
    cut = download.CHUNK + 777
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD[:cut])
    fetch(f"{server}/files/blob.bin", dest, SHA)
    assert ranges == [f"bytes={cut}-"]
    assert sha256_file(dest) == SHA
    assert not dest.with_name("blob.bin.part").exists()


def test_complete_part_file_is_verified_and_renamed_after_416(server, tmp_path, ranges):
    dest = tmp_path / "out" / "blob.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD)
    fetch(f"{server}/files/blob.bin", dest, SHA)
    assert ranges == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_bad_partial_file_fails_the_checksum_is_deleted_and_the_retry_succeeds(server, tmp_path):
    dest = tmp_path / "out" / "blob.bin"
    dest.parent.mkdir(parents=True)
    part = dest.with_name("blob.bin.part")
    part.write_bytes(b"\0" * 1000)  # not a prefix of the file
    with pytest.raises(ChecksumMismatch):
        fetch(f"{server}/files/blob.bin", dest, SHA)
    assert not part.exists() and not dest.exists()
    fetch(f"{server}/files/blob.bin", dest, SHA)
    assert dest.read_bytes() == PAYLOAD


def test_existing_file_is_reverified_and_refetched_when_corrupt(server, tmp_path, ranges):
    dest = tmp_path / "out" / "blob.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)
    fetch(f"{server}/files/blob.bin", dest, SHA)
    assert ranges == []  # verified in place, nothing fetched
    dest.write_bytes(b"corrupted")
    fetch(f"{server}/files/blob.bin", dest, SHA)
    assert ranges == [None] and dest.read_bytes() == PAYLOAD


def test_http_error_names_the_url_and_writes_nothing(server, tmp_path):
    dest = tmp_path / "out" / "nope.bin"
    with pytest.raises(
        DownloadError, match=r"download of http://127\.0\.0\.1:\d+/files/nope\.bin failed: HTTP 404"
    ):
        fetch(f"{server}/files/nope.bin", dest, SHA)
    assert not dest.exists()


def test_unreachable_host_keeps_the_partial_file_for_a_resume(tmp_path):
    dest = tmp_path / "blob.bin"
    part = dest.with_name("blob.bin.part")
    part.write_bytes(PAYLOAD[:100])
    with pytest.raises(DownloadError, match="kept for a resume"):
        fetch("http://127.0.0.1:9/blob.bin", dest, SHA, timeout=2)
    assert part.read_bytes() == PAYLOAD[:100] and not dest.exists()


def test_apply_mirror_replaces_scheme_and_host_with_the_given_or_the_environments_mirror(monkeypatch):
    url = "https://github.com/org/repo/releases/download/v1/w.pth"
    monkeypatch.delenv("BIASBENCH_MIRROR", raising=False)
    assert apply_mirror(url) == url and apply_mirror(url, "") == url
    assert (
        apply_mirror(url, "http://127.0.0.1:8000/m/")
        == "http://127.0.0.1:8000/m/org/repo/releases/download/v1/w.pth"
    )
    monkeypatch.setenv("BIASBENCH_MIRROR", "http://m")
    assert apply_mirror(url) == "http://m/org/repo/releases/download/v1/w.pth"
