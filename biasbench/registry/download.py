"""The one downloader (weights and datasets): checksum-verified, atomic, resumable, size-bounded,
never a half file under the final name.

``fetch(url, dest, sha256)`` downloads to ``dest.part`` (resuming it with an HTTP Range request when a
partial file exists; a server that ignores the Range header answers 200 and the file is downloaded
again from the start), verifies the sha256 of the whole file, and only then renames it to ``dest``. A
file already at ``dest`` is re-verified, not trusted. A mismatch deletes the partial file and raises
:class:`ChecksumMismatch`, which names the URL and both digests. ``max_bytes`` bounds what a server may
send (:class:`TooLarge`).

Mirror policy: a mirror base URL (``mirror=``, ``--mirror``, else ``$BIASBENCH_MIRROR``, read only by
:func:`resolve_mirror`) replaces the pinned host, so sites without access to it, and our tests, can
serve the same files. A file sits on the mirror at the pinned URL's path (``<mirror>/<path>``), or at
the ``mirror_path`` its caller gives (datasets: ``<mirror>/<dataset>/<file>``, laid out like a data
root). The digests are the pinned ones, whatever the host.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from biasbench.core.errors import StateError

CHUNK = 1 << 20


class DownloadError(StateError):
    """A download failed (network error, HTTP error); the message names the URL."""


class ChecksumMismatch(DownloadError):
    """The downloaded bytes do not have the declared sha256."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


#: the sha256 prefix in a torch.hub-style file name, ``<name>-<first eight or more hex digits>.<ext>``
#: (``resnet50-0676ba61.pth``), as torchvision and timm name their weight files
HASH_PREFIX_RE = re.compile(r"-([0-9a-f]{8,64})\.")


def name_hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix that ``file_name`` carries (``resnet50-0676ba61.pth`` -> ``0676ba61``), if any."""
    m = HASH_PREFIX_RE.search(file_name)
    return m.group(1) if m else None


#: a mirror of every download (weights and datasets): a base URL, see the module doc
MIRROR_ENV = "BIASBENCH_MIRROR"


def resolve_mirror(mirror: str | None = None) -> str | None:
    """The mirror base URL: ``mirror``, else ``$BIASBENCH_MIRROR``, else None (the pinned source)."""
    return mirror or os.environ.get(MIRROR_ENV) or None


def apply_mirror(url: str, mirror: str | None = None, path: str | None = None) -> str:
    """``url`` as fetched: on the mirror (:func:`resolve_mirror`; none: ``url`` as it is) at ``path``
    (already URL-quoted), by default the URL's own path without its scheme and host."""
    base = resolve_mirror(mirror)
    if not base:
        return url
    if path is None:
        path = url.split("://", 1)[-1].split("/", 1)[-1]
    return base.rstrip("/") + "/" + path.lstrip("/")


#: the most bytes one download may bring when the caller knows no size (a server that sends without
#: end fills no disk)
MAX_DOWNLOAD_BYTES = 64 << 30


class TooLarge(DownloadError):
    """The server sent (or announced) more bytes than the file may have."""


def fetch(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    timeout: float = 60.0,
    quiet: bool = True,
    max_bytes: int | None = None,
    mirror: str | None = None,
    mirror_path: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and verify ``sha256`` (required unless None is explicitly allowed
    by the caller). Returns ``dest``. Resumes ``dest.part`` if present. ``max_bytes``: the file's
    known size (a download spec's, a lock's) or a bound; more is refused and the partial file deleted
    (default :data:`MAX_DOWNLOAD_BYTES`). ``mirror``/``mirror_path``: where the file is fetched from
    instead (:func:`apply_mirror`; by default ``$BIASBENCH_MIRROR``)."""
    url = apply_mirror(url, mirror, mirror_path)
    limit = MAX_DOWNLOAD_BYTES if max_bytes is None else int(max_bytes)
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.exists():
        if expected is None or sha256_file(dest) == expected:
            return dest
        dest.unlink()  # a corrupted file under the final name: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "biasbench"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = getattr(resp, "status", 200)
            mode = "ab" if (offset and status == 206) else "wb"
            written = offset if mode == "ab" else 0
            announced = resp.headers.get("Content-Length")
            if announced and announced.isdigit() and written + int(announced) > limit:
                part.unlink(missing_ok=True)
                raise TooLarge(
                    f"download of {url} refused: the server announces {written + int(announced):,} bytes, more "
                    f"than the {limit:,} the file may have; nothing was kept"
                )
            with open(part, mode) as out:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    written += len(block)
                    if written > limit:
                        raise TooLarge(
                            f"download of {url} stopped: the server sent more than the {limit:,} bytes the file "
                            "may have; the partial file was deleted"
                        )
                    out.write(block)
    except TooLarge:
        part.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the partial file is already complete (or too long)
            pass
        else:
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"download of {url} failed: the disk is full ({e.strerror}); the partial file was deleted"
            ) from e
        kept = f"; the partial file {part} is kept for a resume" if part.is_file() else ""
        raise DownloadError(f"download of {url} failed: {e}{kept}") from e
    got = sha256_file(part)
    if expected is not None and got != expected:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"sha256 mismatch for {url}: expected {expected}, got {got}; the download was deleted "
            f"and nothing was written to {dest}"
        )
    os.replace(part, dest)
    return dest


def hub_checkpoints_dir() -> Path:
    """Where torchvision's and timm's own weights go: ``$BIASBENCH_CACHE/weights/hub/checkpoints``
    when ``$BIASBENCH_CACHE`` is set (every download then stays in our cache), else torch.hub's
    ``<hub dir>/checkpoints`` (shared with torch itself)."""
    ours = os.environ.get("BIASBENCH_CACHE")
    if ours:
        return Path(ours).expanduser() / "weights" / "hub" / "checkpoints"
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def download_url_to_hub_cache(url: str) -> Path:
    """Download ``url`` into :func:`hub_checkpoints_dir` as ``<basename>`` (resumable, atomic, size-
    bounded) and check the sha256 prefix that torchvision/timm file names carry
    (``resnet50-0676ba61.pth``)."""
    dest = hub_checkpoints_dir() / os.path.basename(url.split("?", 1)[0])
    if dest.exists():  # like torch.hub: a file in the cache was checked when it was downloaded
        return dest
    fetch(url, dest, None)
    prefix = name_hash_prefix(dest.name)
    if prefix:
        got = sha256_file(dest)
        if not got.startswith(prefix):
            dest.unlink(missing_ok=True)
            raise DownloadError(
                f"sha256 of {url} is {got}, which does not start with the prefix {prefix} in its "
                f"file name; the download was deleted"
            )
    return dest
