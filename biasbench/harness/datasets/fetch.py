"""The dataset manager: fetch and verify downloadable datasets from pinned manifests.

Every downloadable dataset has a manifest (``manifests/<name>.json``, package data) that records its
source pinned to a commit or a release, its license and citation, and either

* per-file sha256 digests and a ``base_url`` (cue-conflict, edges, filled-silhouettes: the files of
  github.com/rgeirhos/texture-vs-shape at commit ccd0c01d42c0a8a834e90ec141e7f24fa915dc23), or
* one release ``archive`` (Stylized-16: model-vs-human v0.1 ``stylized.tar.gz``) with its sha256.
  Where no digest could be recorded (the Stylized-16 archive: the project publishes none and this
  manifest was written offline) the manifest says so (``"sha256": null`` plus a note) and
  :func:`fetch_dataset` refuses unless the caller passes the expected digest (``sha256=``; CLI
  ``--sha256``): nothing unverified is ever extracted or used.

Downloads go through :func:`biasbench.registry.download.fetch`: ``<file>.part`` (resumed with HTTP
Range), sha256-checked, then renamed; a mismatch deletes the partial file and leaves nothing under the
final name. Rerunning a fetch skips files that are present and verified, re-downloads corrupted ones.
Archives are checked member by member before anything is written (no absolute paths, no ``..``, no
symlinks, hard links or device files) and then extracted with ``tarfile``'s ``filter="data"`` into a
temporary directory that is renamed into place only when complete. The per-file digests of an
extracted archive are recorded in ``<target>/.biasbench-files.json`` so that :func:`verify_dataset`
can check it later.

Mirrors (``mirror=`` / ``--mirror URL`` / env ``BIASBENCH_MIRROR``): a mirror is laid out like a
biasbench data root - ``<mirror>/<dataset>/<relative path>``, e.g.
``<mirror>/cue-conflict/airplane/airplane1-bicycle2.png`` - and archives sit at
``<mirror>/<archive file name>`` (``<mirror>/stylized.tar.gz``). So any machine that has the data can
serve it with ``python -m http.server -d <data-root>``; ``file://`` URLs work too. The digests are the
manifest's, whatever the host.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import tarfile
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from biasbench.registry.download import ChecksumMismatch, DownloadError, fetch, sha256_file

MIRROR_ENV = "BIASBENCH_MIRROR"
#: Per-file digests recorded when an archive was extracted after a verified download.
LOCAL_RECORD = ".biasbench-files.json"
DOWNLOADS_DIR = ".downloads"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class UnverifiedSource(DownloadError):
    """The manifest pins no sha256 for a download and the caller gave none: refused."""


class UnsafeArchive(DownloadError):
    """An archive member would escape the target directory or is a link/device: refused."""


@dataclass(frozen=True)
class Archive:
    """A release archive: URL, sha256 (None = not pinned), the prefix stripped from member names."""

    url: str
    sha256: str | None
    format: str = "tar.gz"
    strip_prefix: str = ""
    n_files: int = 0
    sha256_note: str = ""

    @property
    def filename(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Manifest:
    """A downloadable dataset: where it comes from, what its bytes are, its license and citation."""

    name: str
    description: str
    target: str  # directory under the data root
    source: dict[str, Any]
    license: str
    license_url: str
    citation: str
    n_files: int
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    base_url: str | None = None
    archive: Archive | None = None
    digest: str = ""  # sha256 of the manifest file (identifies this exact manifest)

    @property
    def pinned(self) -> str:
        """The source pin in words: ``repo@commit`` or ``repo release tag``."""
        src = self.source
        if "commit" in src:
            return f"{src['repository']}@{src['commit']}"
        return f"{src.get('repository', '')} release {src.get('release', '?')}"

    def file_url(self, rel: str, mirror: str | None = None) -> str:
        if mirror:
            return f"{mirror.rstrip('/')}/{urllib.parse.quote(self.target)}/{urllib.parse.quote(rel)}"
        if not self.base_url:
            raise ValueError(f"manifest {self.name!r} has no base_url")
        return self.base_url.rstrip("/") + "/" + urllib.parse.quote(rel)

    def archive_url(self, mirror: str | None = None) -> str:
        if self.archive is None:
            raise ValueError(f"manifest {self.name!r} has no archive")
        if mirror:
            return f"{mirror.rstrip('/')}/{urllib.parse.quote(self.archive.filename)}"
        return self.archive.url

    @classmethod
    def from_json(cls, raw: dict[str, Any], digest: str = "") -> Manifest:
        arch = raw.get("archive")
        files = dict(raw.get("files") or {})
        for rel, sha in files.items():
            _check_relpath(rel, f"manifest {raw.get('name')!r}")
            if not _HEX64.match(sha):
                raise ValueError(f"manifest {raw.get('name')!r}: bad sha256 {sha!r} for {rel!r}")
        return cls(
            name=raw["name"],
            description=raw.get("description", ""),
            target=raw.get("target", raw["name"]),
            source=dict(raw.get("source") or {}),
            license=raw.get("license", ""),
            license_url=raw.get("license_url", ""),
            citation=raw.get("citation", ""),
            n_files=int(raw.get("n_files") or len(files) or (arch or {}).get("n_files", 0)),
            files=files,
            base_url=raw.get("base_url"),
            archive=Archive(
                url=arch["url"],
                sha256=(arch.get("sha256") or None),
                format=arch.get("format", "tar.gz"),
                strip_prefix=arch.get("strip_prefix", ""),
                n_files=int(arch.get("n_files", 0)),
                sha256_note=arch.get("sha256_note", ""),
            )
            if arch
            else None,
            digest=digest,
        )


def _check_relpath(rel: str, where: str) -> None:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel or not rel:
        raise ValueError(f"{where}: unsafe relative path {rel!r}")


@lru_cache(maxsize=1)
def _load_manifests() -> dict[str, Manifest]:
    out: dict[str, Manifest] = {}
    for res in sorted(resources.files("biasbench.harness.datasets.manifests").iterdir(), key=lambda r: r.name):
        if not res.name.endswith(".json"):
            continue
        text = res.read_bytes()
        m = Manifest.from_json(json.loads(text), hashlib.sha256(text).hexdigest())
        if m.name in out:
            raise ValueError(f"two manifests named {m.name!r}")
        out[m.name] = m
    return out


def dataset_manifests() -> dict[str, Manifest]:
    """Every downloadable dataset's manifest, by dataset name."""
    return dict(_load_manifests())


def get_manifest(name: str) -> Manifest:
    manifests = _load_manifests()
    if name not in manifests:
        raise KeyError(f"no download manifest for dataset {name!r}; downloadable: {', '.join(sorted(manifests))}")
    return manifests[name]


def resolve_mirror(mirror: str | None) -> str | None:
    """The mirror base URL: the argument, else ``$BIASBENCH_MIRROR``, else None (the pinned source)."""
    return mirror or os.environ.get(MIRROR_ENV) or None


# ----------------------------------------------------------------------------------------------------
# fetch
# ----------------------------------------------------------------------------------------------------


def fetch_dataset(
    name: str,
    data_root: Path,
    *,
    mirror: str | None = None,
    log: Callable[[str], Any] = print,
    sha256: str | None = None,
    workers: int = 8,
) -> Path:
    """Download dataset ``name`` into ``<data_root>/<target>``, verified; returns that directory.

    ``mirror`` (or ``$BIASBENCH_MIRROR``) replaces the pinned source host (layout: see module doc).
    ``sha256``: the expected digest of a release archive whose manifest pins none (required then);
    ignored for per-file manifests. Files already present and verified are kept; a rerun resumes.
    Raises :class:`ChecksumMismatch` (nothing kept under the final name of a mismatching file),
    :class:`UnverifiedSource`, :class:`UnsafeArchive` or :class:`DownloadError`.
    """
    m = get_manifest(name)
    data_root = Path(data_root)
    mirror = resolve_mirror(mirror)
    if m.archive is not None:
        return _fetch_archive(m, data_root, mirror=mirror, log=log, sha256=sha256)
    return _fetch_files(m, data_root, mirror=mirror, log=log, workers=workers)


def _fetch_files(m: Manifest, data_root: Path, *, mirror: str | None, log: Callable[[str], Any],
                 workers: int) -> Path:
    target = data_root / m.target
    total = len(m.files)
    where = mirror or m.base_url
    log(f"fetching {m.name}: {total} files from {where} (pinned: {m.pinned}; license {m.license}) into {target}")
    done = 0
    step = max(1, total // 10)
    failures: list[tuple[str, Exception]] = []

    def one(item: tuple[str, str]) -> tuple[str, Exception | None]:
        rel, sha = item
        try:
            fetch(m.file_url(rel, mirror), target / rel, sha)
        except DownloadError as e:
            return rel, e
        return rel, None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for rel, err in pool.map(one, sorted(m.files.items())):
            done += 1
            if err is not None:
                failures.append((rel, err))
            if done % step == 0 or done == total:
                log(f"  {m.name}: {done}/{total}" + (f" ({len(failures)} failed)" if failures else ""))
    if failures:
        mismatches = [e for _, e in failures if isinstance(e, ChecksumMismatch)]
        shown = "\n  ".join(str(e) for _, e in failures[:5])
        more = f"\n  … and {len(failures) - 5} more" if len(failures) > 5 else ""
        cls = ChecksumMismatch if mismatches else DownloadError
        raise cls(
            f"fetch of {m.name!r} refused {len(failures)} of {total} files"
            f"{' (sha256 mismatch: the source or mirror does not serve the pinned bytes)' if mismatches else ''}:"
            f"\n  {shown}{more}\nVerified files were kept; nothing unverified was written. Rerun to resume."
        )
    extra = _unexpected_files(target, m)
    if extra:
        log(f"  warning: {len(extra)} files in {target} are not part of {m.name} (e.g. {extra[0]}); "
            "`bench data verify` reports them")
    log(f"{m.name}: {total} files verified (sha256) in {target}")
    return target


def _fetch_archive(m: Manifest, data_root: Path, *, mirror: str | None, log: Callable[[str], Any],
                   sha256: str | None) -> Path:
    assert m.archive is not None
    arch = m.archive
    pinned = arch.sha256.lower() if arch.sha256 else None
    given = sha256.strip().lower() if sha256 else None
    if given is not None and not _HEX64.match(given):
        raise ValueError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    if pinned and given and pinned != given:
        raise UnverifiedSource(
            f"the digest you gave for {m.name} ({given}) differs from the one its manifest pins ({pinned}); refused"
        )
    expected = pinned or given
    if expected is None:
        raise UnverifiedSource(
            f"refusing to download {m.name}: its manifest pins no sha256 for {arch.url} "
            f"({arch.sha256_note or 'no digest recorded'}). Pass the digest you trust: "
            f"`bench data fetch {m.name} --sha256 <64 hex digits>` (or fetch_dataset(..., sha256=...))."
        )
    target = data_root / m.target
    record = _read_record(target)
    if record and record.get("archive_sha256") == expected and not verify_dataset(m.name, data_root):
        log(f"{m.name}: already present and verified in {target}")
        return target
    url = m.archive_url(mirror)
    archive_path = data_root / DOWNLOADS_DIR / arch.filename
    log(f"fetching {m.name}: {url} (pinned: {m.pinned}; license {m.license}) -> {archive_path}")
    fetch(url, archive_path, expected)
    log(f"  {arch.filename}: sha256 verified; extracting safely into {target}")
    tmp = data_root / f".{m.target}.extracting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        names = safe_extract(archive_path, tmp, strip_prefix=arch.strip_prefix)
        images = [n for n in names if n.lower().endswith(".png")]
        if arch.n_files and len(images) != arch.n_files:
            raise DownloadError(
                f"{archive_path} holds {len(images)} images under {arch.strip_prefix or '/'}, expected {arch.n_files}"
            )
        rec = {
            "dataset": m.name,
            "archive_url": arch.url,
            "archive_sha256": expected,
            "sha256_source": "manifest" if pinned else "given by the user",
            "files": {n: sha256_file(tmp / n) for n in sorted(names)},
        }
        (tmp / LOCAL_RECORD).write_text(json.dumps(rec, indent=1) + "\n")
        old = data_root / f".{m.target}.old-{os.getpid()}"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{m.name}: {len(images)} images extracted and recorded in {target / LOCAL_RECORD}")
    return target


def safe_extract(archive: Path, dest: Path, *, strip_prefix: str = "") -> list[str]:
    """Extract a tar archive into ``dest`` after checking EVERY member first; returns the file names
    written (relative to ``dest``, after stripping ``strip_prefix``; members outside it are skipped).

    Refused (:class:`UnsafeArchive`, nothing written): absolute names, ``..`` components, symlinks,
    hard links, device/FIFO members, names that resolve outside ``dest``. Extraction then also uses
    ``tarfile``'s ``filter="data"``.
    """
    dest = Path(dest)
    prefix = strip_prefix.strip("/")
    chosen: list[tarfile.TarInfo] = []
    names: list[str] = []
    try:
        tf = tarfile.open(archive, "r:*")
    except tarfile.TarError as e:
        raise DownloadError(f"{archive} is not a readable tar archive: {e}") from e
    with tf:
        dest_resolved = dest.resolve()
        for member in tf.getmembers():
            raw = member.name
            if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw) or "\\" in raw:
                raise UnsafeArchive(f"{archive}: member {raw!r} has an absolute or non-POSIX path; refused")
            parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
            if ".." in parts:
                raise UnsafeArchive(f"{archive}: member {raw!r} climbs out of the target ('..'); refused")
            if member.issym() or member.islnk():
                raise UnsafeArchive(f"{archive}: member {raw!r} is a link (to {member.linkname!r}); refused")
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchive(f"{archive}: member {raw!r} is not a regular file or directory; refused")
            if prefix:
                if not parts or parts[0] != prefix:
                    continue
                parts = parts[1:]
            if not parts:
                continue
            rel = "/".join(parts)
            out = (dest_resolved / rel).resolve()
            if not out.is_relative_to(dest_resolved):
                raise UnsafeArchive(f"{archive}: member {raw!r} would be written outside {dest}; refused")
            new = copy.copy(member)
            new.name = rel
            chosen.append(new)
            if member.isfile():
                names.append(rel)
        dest.mkdir(parents=True, exist_ok=True)
        tf.extractall(dest, members=chosen, filter="data")
    return names


# ----------------------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------------------


def _read_record(target: Path) -> dict[str, Any] | None:
    p = target / LOCAL_RECORD
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _unexpected_files(target: Path, m: Manifest) -> list[str]:
    if not target.is_dir():
        return []
    present = sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                     if p.is_file() and p.name != LOCAL_RECORD and not p.name.endswith(".part"))
    return [p for p in present if p not in m.files]


def verify_dataset(name: str, data_root: Path) -> list[str]:
    """Problems with the local copy of ``name`` under ``data_root`` (empty list = verified).

    Per-file manifests: every file present with its pinned sha256, no extra files. Archive datasets:
    checked against the per-file record written when a verified archive was extracted (and the
    expected file count); a copy placed by hand, without that record, cannot be verified and says so.
    """
    m = get_manifest(name)
    target = Path(data_root) / m.target
    if not target.is_dir():
        return [f"{name}: not found at {target} (get it with `bench data fetch {name}`)"]
    problems: list[str] = []
    if m.archive is None:
        expected = m.files
        where = "manifest"
        for rel in _unexpected_files(target, m):
            problems.append(f"unexpected file (not in the {name} manifest): {target / rel}")
    else:
        record = _read_record(target)
        if record is None:
            n = sum(1 for p in target.rglob("*.png"))
            return [
                f"{name}: {target} holds {n} images but no checksum record ({LOCAL_RECORD}); its content "
                f"cannot be verified (the manifest pins no per-file digests). Fetch it with "
                f"`bench data fetch {name} --sha256 <archive digest>` to create the record."
            ]
        expected = dict(record.get("files") or {})
        where = f"record {LOCAL_RECORD} (archive sha256 {str(record.get('archive_sha256'))[:12]}…)"
        n_png = sum(1 for k in expected if k.lower().endswith(".png"))
        if m.archive.n_files and n_png != m.archive.n_files:
            problems.append(f"{name}: the record lists {n_png} images, expected {m.archive.n_files}")
        for rel in _unexpected_files(target, Manifest(**{**m.__dict__, "files": expected})):
            problems.append(f"unexpected file (not in the {where}): {target / rel}")
    for rel, sha in sorted(expected.items()):
        p = target / rel
        if not p.is_file():
            problems.append(f"missing: {p}")
            continue
        got = sha256_file(p)
        if got != sha:
            problems.append(f"sha256 mismatch: {p} (expected {sha} from the {where}, got {got})")
    return problems
