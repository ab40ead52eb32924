"""``gdrive:<file-id>`` weights through gdown, against a local HTTP server on 127.0.0.1 standing in for
Google Drive (requests to Drive's hosts are routed to it); no network."""

from __future__ import annotations

import hashlib
import http.server
import sys
import threading
import urllib.parse

import pytest
import requests

from biasbench.registry import lock, sources
from biasbench.registry.registry_files import load_registry_file
from biasbench.registry.spec import CheckpointError
from tests.conftest import require_module

require_module("gdown")

DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
SMALL_ID = "1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"  # served directly
LARGE_ID = "1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"  # behind the "can't scan for viruses" confirmation page
# Drive's page holds the form on one line (gdown reads the page line by line)
CONFIRM_PAGE = (
    "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>\n"
    '<p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p>\n'
    '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
    '<input type="submit" value="Download anyway"/><input type="hidden" name="id" value="{id}">'
    '<input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t">'
    '<input type="hidden" name="uuid" value="0b6c-test"></form></body></html>\n'
)


class FakeDrive:
    """What the fake Drive serves (id -> bytes) and every request it saw."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []


@pytest.fixture()
def drive(monkeypatch: pytest.MonkeyPatch):
    state = FakeDrive()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - http.server's name
            state.requests.append(self.path)
            url = urllib.parse.urlsplit(self.path)
            q = urllib.parse.parse_qs(url.query)
            fid = q.get("id", [""])[0]
            if fid not in state.files:
                return self._send(404, b"<html>not found</html>", "text/html")
            confirmed = url.path == "/download" and q.get("confirm") == ["t"]
            if fid == LARGE_ID and not confirmed:
                return self._send(200, CONFIRM_PAGE.format(id=fid).encode(), "text/html; charset=utf-8")
            disposition = f'attachment; filename="{fid}.pth"'
            self._send(
                200, state.files[fid], "application/octet-stream", {"Content-Disposition": disposition}
            )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    send = requests.adapters.HTTPAdapter.send

    def routed(self, request, *args, **kwargs):
        parts = urllib.parse.urlsplit(request.url)
        if parts.hostname in DRIVE_HOSTS:
            request.url = base + urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
        elif parts.hostname != "127.0.0.1":
            raise AssertionError(f"a test tried to reach {request.url}")
        return send(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", routed)
    yield state
    server.shutdown()
    server.server_close()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("file_id", [SMALL_ID, LARGE_ID], ids=["direct", "confirmation-page"])
def test_pinned_gdrive_file_is_downloaded_verified_and_cached(drive, tmp_path, file_id):
    payload = b"weights-" * 4096 + file_id.encode()
    drive.files[file_id] = payload
    rw = sources.resolve_weights(f"gdrive:{file_id}", "ck", sha256=_sha(payload), cache_dir=tmp_path)
    assert rw.path.read_bytes() == payload
    assert rw.path == tmp_path / "weights" / _sha(payload) / f"gdrive-{file_id}.pth"
    if file_id == LARGE_ID:  # gdown read the confirmation form and followed it
        assert any(r.startswith("/download?") and "confirm=t" in r for r in drive.requests)
    seen = len(drive.requests)
    again = sources.resolve_weights(f"gdrive:{file_id}", "ck", sha256=_sha(payload), cache_dir=tmp_path)
    assert again.path == rw.path and len(drive.requests) == seen  # from the cache, no request


def test_gdrive_bytes_that_do_not_match_the_pin_are_refused_and_not_kept(drive, tmp_path):
    drive.files[SMALL_ID] = b"the real weights"
    wrong = _sha(b"other bytes")
    with pytest.raises(CheckpointError, match=rf"sha256 mismatch for gdrive:{SMALL_ID}: expected {wrong}"):
        sources.resolve_weights(f"gdrive:{SMALL_ID}", "ck", sha256=wrong, cache_dir=tmp_path)
    assert not list((tmp_path / "weights").rglob(f"gdrive-{SMALL_ID}*"))


def test_unpinned_gdrive_is_refused_naming_bench_lock_and_allow_unpinned(drive, tmp_path):
    drive.files[SMALL_ID] = b"x"
    with pytest.raises(CheckpointError, match=r"not pinned: .*`bench lock`.*--allow-unpinned"):
        sources.resolve_weights(f"gdrive:{SMALL_ID}", "ck", sha256=None, cache_dir=tmp_path)
    assert drive.requests == []


def test_a_missing_gdown_is_named_with_the_extra_that_installs_it(drive, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown now raises ImportError
    with pytest.raises(CheckpointError, match=r"pip install 'biasbench\[gdrive\]'"):
        sources.resolve_weights(f"gdrive:{SMALL_ID}", "ck", sha256="0" * 64, cache_dir=tmp_path)


def test_a_drive_error_page_is_a_checkpoint_error_naming_the_file(drive, tmp_path):
    with pytest.raises(CheckpointError, match=rf"checkpoint 'ck': download of gdrive:{SMALL_ID} failed"):
        sources.resolve_weights(f"gdrive:{SMALL_ID}", "ck", sha256="0" * 64, cache_dir=tmp_path)


def test_gdrive_ids_are_checked_without_io():
    with pytest.raises(CheckpointError, match=r"is not a Google Drive file id"):
        sources.parse_weights("gdrive:../etc/passwd", "ck")


def test_lock_downloads_an_unpinned_drive_file_through_the_confirmation_page(drive, tmp_path):
    payload = b"large drive file" * 1000
    drive.files[LARGE_ID] = payload
    reg = tmp_path / "r.toml"
    reg.write_text(f'[[checkpoint]]\nid = "d"\narch = "timm:resnet18"\nweights = "gdrive:{LARGE_ID}"\n')
    specs = load_registry_file(reg)
    _, missing = lock.apply_locks(specs)
    [entry] = lock.lock_files(missing, tmp_path / "cache")
    assert (entry.id, entry.part, entry.sha256, entry.size) == ("d", 1, _sha(payload), len(payload))
    pinned, missing = lock.apply_locks(specs)
    assert missing == [] and pinned[0].sha256 == _sha(payload)
    rw = sources.resolve_weights(
        f"gdrive:{LARGE_ID}", "d", sha256=pinned[0].sha256, cache_dir=tmp_path / "cache"
    )
    assert rw.path.read_bytes() == payload
