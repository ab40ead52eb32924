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

The ImageNet OOD sets are archives too: ImageNetV2 matched-frequency, ImageNet-A, -R and -Sketch with
the sha256 and size that TensorFlow Datasets publishes in its checksum lists
(``tensorflow_datasets/datasets/<set>/checksums.tsv``, the commit in each manifest's source), and
ImageNet-C (five tars, Zenodo publishes md5 only) and ImageNet-C̄ (no checksum published), unpinned
like Stylized-16. CIFAR-10 (``cifar-10-python.tar.gz``, whose distributors publish only an md5) is
unpinned too, but its manifest records that md5 (``archive.md5``): after the download has matched the
sha256 the caller gave, its md5 must match the published one as well, so a digest taken from the
wrong file is caught (md5 alone is never trusted: it is broken for collisions, so it only backs up
the sha256). An archive's ``strip_prefix`` drops its top folder so that it lands in the layout
the dataset plugin reads (``imagenetv2-matched-frequency-format-val/`` -> ``imagenet-v2/``). ImageNet-C's
tars are *merged* parts (``"merge": true``): five manifests with the same target, each tar's
top-level folders (its corruptions) put into ``imagenet-c/`` beside the others', each part with its
own record ``.biasbench-files.<name>.json`` that :func:`verify_dataset` checks within its folders.

Downloads go through :func:`biasbench.registry.download.fetch`: ``<file>.part`` (resumed with HTTP
Range), sha256-checked, then renamed; a mismatch deletes the partial file and leaves nothing under the
final name. Rerunning a fetch skips files that are present and verified, re-downloads corrupted ones.
Archives (tar of any compression, or zip) are checked member by member before anything is written
(no absolute paths, no ``..``, no symlinks, hard links or device files; size, member-count and
compression-ratio limits against decompression bombs, see :func:`safe_extract`) and then extracted
(tar with ``tarfile``'s ``filter="data"``) into a temporary directory that is renamed into place only
when complete. The per-file digests of an extracted archive are recorded in
``<target>/.biasbench-files.json`` so that :func:`verify_dataset` can check it later. Manifests are
parsed strictly (:func:`parse_manifest`): any malformed field is a :class:`ManifestError`.

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
import stat
import tarfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, get_args

import pydantic
from pydantic import BaseModel, Field

from biasbench.core import schema
from biasbench.core.errors import InputError, UnknownNameError
from biasbench.core.names import SHA256_RE
from biasbench.registry.download import ChecksumMismatch, DownloadError, fetch, sha256_file

MIRROR_ENV = "BIASBENCH_MIRROR"
#: Per-file digests recorded when an archive was extracted after a verified download.
LOCAL_RECORD = ".biasbench-files.json"
#: Every record file's name starts with this (a merged part's: ``.biasbench-files.<name>.json``).
RECORD_PREFIX = ".biasbench-files"
#: What counts as an image when an archive's ``n_files`` is checked.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DOWNLOADS_DIR = ".downloads"
#: Dataset names and targets: path components that start with a letter or digit (no ``..``, no ``/``
#: at either end), at most 128 characters.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
ArchiveFormat = Literal["tar", "tar.gz", "tgz", "tar.bz2", "tar.xz", "zip"]
ARCHIVE_FORMATS: tuple[str, ...] = get_args(ArchiveFormat)

#: Extraction limits (:func:`safe_extract`): total bytes written, number of members, and the ratio of
#: bytes written to the archive's size (checked once more than ``_RATIO_FLOOR`` bytes would be written).
MAX_EXTRACT_BYTES = 64 * 2**30
MAX_MEMBERS = 2_000_000
MAX_RATIO = 100.0
#: the largest single file of a file-list manifest (its images are small; a server sending more is refused)
MAX_MANIFEST_FILE_BYTES = 256 * 2**20
_RATIO_FLOOR = 64 * 2**20
_NAME_MAX = 255  # bytes per path component (ext4, xfs, APFS, NTFS)
_PATH_MAX = 4000


class UnverifiedSource(DownloadError):
    """The manifest pins no sha256 for a download and the caller gave none: refused."""


class UnsafeArchive(DownloadError):
    """An archive member would escape the target directory or is a link/device: refused."""


class ArchiveTooLarge(UnsafeArchive):
    """An archive would expand past a size, member-count or compression-ratio limit (a decompression
    bomb): refused before or while extracting, leaving nothing behind."""


class ManifestError(InputError):
    """A dataset manifest is malformed (the message names the manifest and the field)."""


@dataclass(frozen=True)
class Archive:
    """A release archive: URL, sha256 (None = not pinned), the prefix stripped from member names.

    ``n_files``: the number of images (:data:`IMAGE_SUFFIXES`) it must hold under ``strip_prefix``;
    ``size``: its size in bytes where published (shown, and the most bytes a download may bring);
    ``file_name``: the archive's file name where the URL's path does not end in it (a Google Drive
    link); ``merge``: the archive is one part of a dataset whose other parts are other manifests with
    the same target (ImageNet-C's five tars): its top-level folders are put into the target beside
    theirs, and its record is ``<target>/.biasbench-files.<manifest name>.json``.
    """

    url: str
    sha256: str | None
    format: str = "tar.gz"
    strip_prefix: str = ""
    n_files: int = 0
    sha256_note: str = ""
    size: int = 0
    file_name: str = ""
    merge: bool = False
    #: the md5 its distributors publish ("" = none): checked after the sha256, never instead of it
    md5: str = ""

    @property
    def filename(self) -> str:
        if self.file_name:
            return self.file_name
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
    def record_name(self) -> str:
        """The file in the target that records the per-file digests of an extracted archive."""
        if self.archive is not None and self.archive.merge:
            return f"{RECORD_PREFIX}.{self.name}.json"
        return LOCAL_RECORD

    @property
    def pinned(self) -> str:
        """The source pin in words: ``repo@commit`` or ``repo release tag``."""
        src = self.source
        if "commit" in src:
            return f"{src.get('repository', '')}@{src['commit']}"
        return f"{src.get('repository', '')} release {src.get('release', '?')}"

    def file_url(self, rel: str, mirror: str | None = None) -> str:
        if mirror:
            return f"{mirror.rstrip('/')}/{urllib.parse.quote(self.target)}/{urllib.parse.quote(rel)}"
        if not self.base_url:
            raise InputError(f"manifest {self.name!r} has no base_url")
        return self.base_url.rstrip("/") + "/" + urllib.parse.quote(rel)

    def archive_url(self, mirror: str | None = None) -> str:
        if self.archive is None:
            raise InputError(f"manifest {self.name!r} has no archive")
        if mirror:
            return f"{mirror.rstrip('/')}/{urllib.parse.quote(self.archive.filename)}"
        return self.archive.url

    @classmethod
    def from_json(cls, raw: Any, digest: str = "", where: str = "") -> Manifest:
        """Validate a parsed manifest (a JSON object) and build it; every problem is a
        :class:`ManifestError` naming the manifest (``where``, else its name) and the field."""
        return _manifest_from_json(raw, digest, where)


_Count = Annotated[int, Field(ge=0, description="a JSON integer ≥ 0")]
_Text = Annotated[str, Field(description="a JSON string")]
_Object = Field(description="a JSON object")


class ArchiveSpec(BaseModel):
    """The ``archive`` object of a manifest (:class:`Archive`)."""

    model_config = schema.STRICT
    url: _Text
    sha256: Annotated[
        str, Field(pattern=rf"^(?i:{SHA256_RE.pattern})?$", description="64 hex digits or null")
    ] = ""
    format: ArchiveFormat = "tar.gz"
    strip_prefix: _Text = ""
    n_files: _Count = 0
    sha256_note: _Text = ""
    size: _Count = 0
    file_name: _Text = ""
    merge: Annotated[bool, Field(description="a JSON boolean")] = False
    md5: Annotated[str, Field(pattern=r"^(?i:[0-9a-f]{32})?$", description="32 hex digits or null")] = ""


class ManifestSpec(BaseModel):
    """A manifest file (JSON; :class:`Manifest`); a null value is the same as a key left out."""

    model_config = schema.STRICT
    name: Annotated[
        str,
        Field(
            max_length=128,
            pattern=rf"^(?:{_NAME_RE.pattern})$",
            description="a dataset name (letters, digits, . _ - and /)",
        ),
    ]
    description: _Text = ""
    target: _Text | None = None
    source: Annotated[dict[str, _Text], _Object] = {}
    license: _Text = ""
    license_url: _Text = ""
    citation: _Text = ""
    n_files: _Count | None = None
    files: Annotated[dict[str, Any], _Object] = {}
    base_url: _Text | None = None
    archive: Annotated[ArchiveSpec, _Object] | None = None


def _declared(raw: dict[str, Any], where: str) -> ManifestSpec:
    """``raw`` (nulls dropped) as a :class:`ManifestSpec`; the first problem is a :class:`ManifestError`."""
    raw = {k: v for k, v in raw.items() if v is not None}
    if isinstance(raw.get("archive"), dict):
        raw["archive"] = {k: v for k, v in raw["archive"].items() if v is not None}
    try:
        return ManifestSpec.model_validate(raw)
    except pydantic.ValidationError as e:
        problem = schema.describe(schema.errors(e)[0], ManifestSpec, raw)
    raise ManifestError(f"{where}: {problem:.300}")


def _check_url(url: str, where: str, key: str, *, file: bool) -> None:
    if re.search(r"[\s\x00-\x1f\x7f]", url):
        raise ManifestError(f"{where}: {key} {url!r:.120} contains whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as e:  # a malformed IPv6 host or port
        raise ManifestError(f"{where}: {key} {url!r:.120} is not a valid URL: {e}") from e
    if parts.scheme not in ("https", "http", "file") or (parts.scheme != "file" and not host):
        raise ManifestError(
            f"{where}: {key} {url!r:.120} must be an https://, http:// or file:// URL with a host"
        )
    if file and not parts.path.rstrip("/").rsplit("/", 1)[-1]:
        raise ManifestError(f"{where}: {key} {url!r:.120} names no file")


def _manifest_from_json(raw: Any, digest: str, where: str) -> Manifest:
    if not isinstance(raw, dict):
        raise ManifestError(
            f"{where or 'manifest'}: a manifest must be a JSON object, got {type(raw).__name__}"
        )
    where = where or f"manifest {raw.get('name')!r:.80}"
    m = _declared(raw, where)
    target = m.target if m.target is not None else m.name
    if len(target) > 128 or not _NAME_RE.fullmatch(target):
        raise ManifestError(
            f"{where}: target {target!r:.80} must be a relative directory name under the data root"
        )
    files = m.files
    for rel, sha in files.items():
        _check_relpath(rel, where)
        if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
            raise ManifestError(f"{where}: bad sha256 {sha!r:.80} for {rel!r:.80} (64 lowercase hex digits)")
    base_url = m.base_url
    if base_url is not None:
        _check_url(base_url, where, "base_url", file=False)
    archive = _archive(m.archive, f"{where}: archive") if m.archive is not None else None
    if archive is None and not (files and base_url):
        raise ManifestError(f"{where}: a manifest needs either files with a base_url or an archive")
    n_files = m.n_files
    if n_files is not None and files and n_files != len(files):
        raise ManifestError(f"{where}: n_files is {n_files} but files lists {len(files)}")
    return Manifest(
        name=m.name,
        description=m.description,
        target=target,
        source=dict(m.source),
        license=m.license,
        license_url=m.license_url,
        citation=m.citation,
        n_files=n_files if n_files else len(files) or (archive.n_files if archive else 0),
        files=dict(files),
        base_url=base_url,
        archive=archive,
        digest=digest,
    )


def _archive(a: ArchiveSpec, where: str) -> Archive:
    if a.file_name and (len(a.file_name) > 128 or not _NAME_RE.fullmatch(a.file_name) or "/" in a.file_name):
        raise ManifestError(f"{where}: file_name {a.file_name!r:.80} must be a plain file name")
    _check_url(a.url, where, "url", file=not a.file_name)
    if a.strip_prefix.strip("/"):
        _check_relpath(a.strip_prefix.strip("/"), where)
    return Archive(
        url=a.url,
        sha256=a.sha256.lower() or None,
        format=a.format,
        strip_prefix=a.strip_prefix,
        n_files=a.n_files,
        sha256_note=a.sha256_note,
        size=a.size,
        file_name=a.file_name,
        merge=a.merge,
        md5=a.md5.lower(),
    )


def _check_relpath(rel: str, where: str) -> None:
    """A file path inside a dataset: relative, normalised (no ``.``/``..``/empty parts), POSIX, no
    control characters, not our own record or downloads folder."""
    p = PurePosixPath(rel)
    if (
        not rel
        or not p.parts
        or p.is_absolute()
        or ".." in p.parts
        or "\\" in rel
        or p.as_posix() != rel
        or re.search(r"[\x00-\x1f\x7f]", rel)
        or p.parts[0] == DOWNLOADS_DIR
        or p.parts[0].startswith(RECORD_PREFIX)
    ):
        raise ManifestError(f"{where}: unsafe relative path {rel!r:.120}")


def parse_manifest(text: bytes | str, where: str = "manifest", digest: str | None = None) -> Manifest:
    """Parse one manifest file's text (JSON) into a :class:`Manifest`; ``digest`` defaults to the
    sha256 of the text. Every problem - not UTF-8, not JSON, nested too deeply, a missing or wrongly
    typed field, an unsafe path, a bad digest or URL - is a :class:`ManifestError` naming ``where``."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    try:
        raw = json.loads(data)
    except RecursionError as e:
        raise ManifestError(f"{where}: not valid JSON (nested too deeply)") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ManifestError(f"{where}: not valid JSON: {e}") from e
    return Manifest.from_json(raw, digest if digest is not None else hashlib.sha256(data).hexdigest(), where)


@lru_cache(maxsize=1)
def _load_manifests() -> dict[str, Manifest]:
    out: dict[str, Manifest] = {}
    for res in sorted(
        resources.files("biasbench.harness.datasets.manifests").iterdir(), key=lambda r: r.name
    ):
        if not res.name.endswith(".json"):
            continue
        m = parse_manifest(res.read_bytes(), f"manifest {res.name}")
        if m.name in out:
            raise ManifestError(f"two manifests named {m.name!r}")
        out[m.name] = m
    return out


def dataset_manifests() -> dict[str, Manifest]:
    """Every downloadable dataset's manifest, by dataset name."""
    return dict(_load_manifests())


def manifest_parts(target: str) -> list[str]:
    """The manifests whose archives are merged parts of the dataset folder ``target`` (ImageNet-C)."""
    return sorted(
        m.name
        for m in _load_manifests().values()
        if m.target == target and m.archive is not None and m.archive.merge
    )


def get_manifest(name: str) -> Manifest:
    manifests = _load_manifests()
    if name not in manifests:
        parts = manifest_parts(name)
        if parts:
            raise UnknownNameError(f"{name!r} is fetched in parts, one manifest each: {', '.join(parts)}")
        raise UnknownNameError(
            f"no download manifest for dataset {name!r}; downloadable: {', '.join(sorted(manifests))}"
        )
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


def _fetch_files(
    m: Manifest, data_root: Path, *, mirror: str | None, log: Callable[[str], Any], workers: int
) -> Path:
    target = data_root / m.target
    total = len(m.files)
    where = mirror or m.base_url
    log(
        f"fetching {m.name}: {total} files from {where} (pinned: {m.pinned}; license {m.license}) into {target}"
    )
    done = 0
    step = max(1, total // 10)
    failures: list[tuple[str, Exception]] = []

    def one(item: tuple[str, str]) -> tuple[str, Exception | None]:
        rel, sha = item
        try:
            fetch(m.file_url(rel, mirror), target / rel, sha, max_bytes=MAX_MANIFEST_FILE_BYTES)
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
        log(
            f"  warning: {len(extra)} files in {target} are not part of {m.name} (e.g. {extra[0]}); "
            "`bench data verify` reports them"
        )
    log(f"{m.name}: {total} files verified (sha256) in {target}")
    return target


def _fetch_archive(
    m: Manifest, data_root: Path, *, mirror: str | None, log: Callable[[str], Any], sha256: str | None
) -> Path:
    assert m.archive is not None
    arch = m.archive
    pinned = arch.sha256.lower() if arch.sha256 else None
    given = sha256.strip().lower() if sha256 else None
    if given is not None and not SHA256_RE.fullmatch(given):
        raise InputError(f"--sha256 must be 64 hex digits, got {sha256!r}")
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
    record = _read_record(target, m.record_name)
    if record and record.get("archive_sha256") == expected and not verify_dataset(m.name, data_root):
        log(f"{m.name}: already present and verified in {target}")
        return target
    url = m.archive_url(mirror)
    archive_path = data_root / DOWNLOADS_DIR / arch.filename
    size = f", {arch.size / 1e9:.2f} GB" if arch.size else ""
    log(f"fetching {m.name}: {url} (pinned: {m.pinned}; license {m.license}{size}) -> {archive_path}")
    fetch(url, archive_path, expected, max_bytes=arch.size or None)  # the manifest's size bounds it
    if arch.md5:
        _check_md5(m, archive_path)
    log(
        f"  {arch.filename}: sha256{' and md5' if arch.md5 else ''} verified; extracting safely into {target}"
    )
    tmp = data_root / f".{m.target.replace('/', '_')}.{m.name}.extracting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        names = safe_extract(archive_path, tmp, strip_prefix=arch.strip_prefix, format=arch.format)
        images = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
        if arch.n_files and len(images) != arch.n_files:
            raise DownloadError(
                f"{archive_path} holds {len(images)} images under {arch.strip_prefix or '/'}, expected {arch.n_files}"
            )
        rec = {
            "dataset": m.name,
            "archive_url": arch.url,
            "archive_sha256": expected,
            "sha256_source": "manifest" if pinned else "given by the user",
            **({"archive_md5": arch.md5} if arch.md5 else {}),
            "files": {n: sha256_file(tmp / n) for n in sorted(names)},
        }
        (tmp / m.record_name).write_text(json.dumps(rec, indent=1) + "\n")
        if arch.merge:
            _merge_into(tmp, target, data_root)
        else:
            _replace(tmp, target, data_root / f".{m.target.replace('/', '_')}.old-{os.getpid()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{m.name}: {len(images)} images extracted and recorded in {target / m.record_name}")
    return target


def _check_md5(m: Manifest, archive_path: Path) -> None:
    """The downloaded archive's md5 against the one its distributors publish (the manifest's); a
    mismatch deletes the download and raises :class:`ChecksumMismatch`."""
    assert m.archive is not None
    h = hashlib.md5(usedforsecurity=False)
    with open(archive_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != m.archive.md5:
        archive_path.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{archive_path.name}: its sha256 is the one given, but its md5 is {h.hexdigest()}, not the "
            f"{m.archive.md5} its distributors publish for {m.archive.url}: the digest you gave is not the "
            f"published archive's. Download deleted; nothing extracted."
        )


def _replace(src: Path, dest: Path, old: Path) -> None:
    """Put ``src`` at ``dest`` (by renames; a previous ``dest`` is moved to ``old`` and removed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(src, dest)
    shutil.rmtree(old, ignore_errors=True)


def _merge_into(src: Path, target: Path, data_root: Path) -> None:
    """Move each top-level entry of ``src`` into ``target``, replacing an entry of the same name (one
    part of a dataset whose other parts fill other folders of ``target``)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        old = data_root / f".{entry.name}.old-{os.getpid()}"
        if entry.is_dir():
            _replace(entry, target / entry.name, old)
        else:
            os.replace(entry, target / entry.name)


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    strip_prefix: str = "",
    format: str | None = None,
    max_bytes: int | None = None,
    max_members: int | None = None,
    max_ratio: float | None = None,
) -> list[str]:
    """Extract a tar or zip archive into ``dest`` after checking EVERY member first; returns the file
    names written (relative to ``dest``, after stripping ``strip_prefix``; members outside it are
    skipped). ``format``: one of :data:`ARCHIVE_FORMATS`; ``None`` = zip when the file starts with a
    zip signature, else tar (any compression).

    Refused with :class:`UnsafeArchive`, before anything is written: absolute or drive-letter names,
    backslashes, ``..`` components, symlinks, hard links, device/FIFO/socket members, encrypted zip
    members, names that resolve outside ``dest``, path components over 255 bytes.
    Refused with :class:`ArchiveTooLarge` (a decompression bomb): more than ``max_members`` members,
    more than ``max_bytes`` bytes to write, or (above 64 MiB) more than ``max_ratio`` times the
    archive's own size (``None``: :data:`MAX_MEMBERS`, :data:`MAX_EXTRACT_BYTES`, :data:`MAX_RATIO`) - from the declared sizes before extracting (a tar member is refused as soon as
    its header is read, before its data is decompressed), and again from the bytes actually written
    while extracting (zip headers can lie). A failure while extracting removes what was written (all
    of ``dest`` when this call created it). Tar extraction also uses ``tarfile``'s ``filter="data"``.
    Nothing is ever written outside ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    if format is not None and format not in ARCHIVE_FORMATS:
        raise InputError(f"unknown archive format {format!r}; known: {', '.join(ARCHIVE_FORMATS)}")
    try:
        with open(archive, "rb") as f:
            magic = f.read(4)
        archive_size = archive.stat().st_size
    except OSError as e:
        raise DownloadError(f"cannot read archive {archive}: {e}") from e
    is_zip = format == "zip" if format is not None else magic in (b"PK\x03\x04", b"PK\x05\x06")
    limits = _Limits(
        archive,
        archive_size,
        MAX_EXTRACT_BYTES if max_bytes is None else max_bytes,
        MAX_MEMBERS if max_members is None else max_members,
        MAX_RATIO if max_ratio is None else max_ratio,
    )
    if is_zip:
        return _extract_zip(archive, dest, strip_prefix.strip("/"), limits)
    return _extract_tar(archive, dest, strip_prefix.strip("/"), limits)


@dataclass
class _Limits:
    archive: Path
    archive_size: int
    max_bytes: int
    max_members: int
    max_ratio: float
    members: int = 0
    total: int = 0

    def add(self, name: str, size: int) -> None:
        """Count one member of ``size`` declared bytes; refuse past a limit."""
        self.members += 1
        self.total += max(0, size)
        if self.members > self.max_members:
            raise ArchiveTooLarge(
                f"{self.archive}: more than {self.max_members} members; refused (a decompression bomb?)"
            )
        self.check(f"at member {name!r}")

    def check(self, when: str) -> None:
        if self.total > self.max_bytes:
            raise ArchiveTooLarge(
                f"{self.archive}: would expand to more than {self.max_bytes} bytes ({when}); refused "
                f"(a decompression bomb?)"
            )
        if self.total > _RATIO_FLOOR and self.total > self.max_ratio * max(1, self.archive_size):
            raise ArchiveTooLarge(
                f"{self.archive}: would expand to {self.total} bytes, more than {self.max_ratio:g} times its "
                f"own {self.archive_size} bytes ({when}); refused (a decompression bomb?)"
            )

    def check_disk(self, dest: Path) -> None:
        probe = dest
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            return
        if self.total > free:
            raise DownloadError(
                f"{self.archive}: extracting needs {self.total} bytes but {probe} has only {free} free; refused"
            )


def _member_path(archive: Path, raw: str, prefix: str, dest_resolved: Path) -> str | None:
    """The checked relative output path of a member named ``raw`` (``None``: outside the prefix)."""
    if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw) or "\\" in raw:
        raise UnsafeArchive(f"{archive}: member {raw!r} has an absolute or non-POSIX path; refused")
    if re.search(r"[\x00-\x1f\x7f]", raw):
        raise UnsafeArchive(f"{archive}: member {raw!r} has control characters in its name; refused")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: member {raw!r} climbs out of the target ('..'); refused")
    if any(len(p.encode("utf-8", "surrogateescape")) > _NAME_MAX for p in parts) or len(raw) > _PATH_MAX:
        raise UnsafeArchive(
            f"{archive}: member {raw[:80]!r}… has a name too long for the file system; refused"
        )
    if prefix:
        if parts[: len(prefix.split("/"))] != prefix.split("/"):
            return None
        parts = parts[len(prefix.split("/")) :]
    if not parts:
        return None
    rel = "/".join(parts)
    out = (dest_resolved / rel).resolve()
    if not out.is_relative_to(dest_resolved):
        raise UnsafeArchive(f"{archive}: member {raw!r} would be written outside the target; refused")
    return rel


def _extract_tar(archive: Path, dest: Path, prefix: str, limits: _Limits) -> list[str]:
    chosen: list[tarfile.TarInfo] = []
    names: list[str] = []
    dest_resolved = dest.resolve()
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DownloadError(f"{archive} is not a readable tar archive: {e}") from e
    with tf:
        try:
            for member in tf:  # one header at a time: a huge member is refused before its data is read
                raw = member.name
                if member.issym() or member.islnk():
                    raise UnsafeArchive(
                        f"{archive}: member {raw!r} is a link (to {member.linkname!r}); refused"
                    )
                if not (member.isfile() or member.isdir()):
                    what = (
                        "a character device"
                        if member.ischr()
                        else "a block device"
                        if member.isblk()
                        else "a FIFO"
                        if member.isfifo()
                        else "not a regular file or directory"
                    )
                    raise UnsafeArchive(f"{archive}: member {raw!r} is {what}; refused")
                rel = _member_path(archive, raw, prefix, dest_resolved)
                limits.add(raw, member.size if member.isfile() else 0)
                if rel is None:
                    continue
                new = copy.copy(member)
                new.name = rel
                chosen.append(new)
                if member.isfile():
                    names.append(rel)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DownloadError(f"{archive}: truncated or corrupt tar archive: {e}") from e
        limits.check_disk(dest)
        created = not dest.exists()
        try:
            dest.mkdir(parents=True, exist_ok=True)
            tf.extractall(dest, members=chosen, filter="data")
        except BaseException as e:
            _remove_partial(dest, created, names)
            if isinstance(e, (tarfile.TarError, OSError, EOFError, zlib.error)):
                raise DownloadError(f"{archive}: extraction failed: {e}") from e
            raise
    return names


_ZIP_UNSAFE_MODES = (
    (stat.S_ISLNK, "is a symbolic link"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
    (stat.S_ISFIFO, "is a FIFO"),
    (stat.S_ISSOCK, "is a socket"),
)


def _extract_zip(archive: Path, dest: Path, prefix: str, limits: _Limits) -> list[str]:
    dest_resolved = dest.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DownloadError(f"{archive} is not a readable zip archive: {e}") from e
    with zf:
        chosen: list[tuple[zipfile.ZipInfo, str]] = []
        for info in zf.infolist():
            raw = info.filename
            mode = info.external_attr >> 16
            if info.create_system == 3 and mode:  # unix permissions carry the file type
                for test, words in _ZIP_UNSAFE_MODES:
                    if test(mode):
                        raise UnsafeArchive(f"{archive}: member {raw!r} {words}; refused")
            if info.flag_bits & 0x1:
                raise UnsafeArchive(f"{archive}: member {raw!r} is encrypted; refused")
            rel = _member_path(archive, raw, prefix, dest_resolved)
            limits.add(raw, 0 if info.is_dir() else info.file_size)
            if rel is not None:
                chosen.append((info, rel))
        limits.check_disk(dest)
        created = not dest.exists()
        names: list[str] = []
        written = _Limits(
            archive, limits.archive_size, limits.max_bytes, limits.max_members, limits.max_ratio
        )
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for info, rel in chosen:
                out = dest / rel
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                if not out.parent.resolve().is_relative_to(dest_resolved):
                    raise UnsafeArchive(
                        f"{archive}: member {info.filename!r} would be written outside the target"
                    )
                names.append(rel)
                n = 0
                with zf.open(info) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        n += len(chunk)
                        written.total += len(chunk)
                        if n > info.file_size:
                            raise ArchiveTooLarge(
                                f"{archive}: member {info.filename!r} expands past its declared {info.file_size} "
                                f"bytes; refused (a decompression bomb?)"
                            )
                        written.check(f"while writing {info.filename!r}")
                        dst.write(chunk)
        except BaseException as e:
            _remove_partial(dest, created, names)
            if isinstance(e, (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError)):
                raise DownloadError(f"{archive}: extraction failed: {type(e).__name__}: {e}") from e
            raise
    return names


def _remove_partial(dest: Path, created: bool, names: list[str]) -> None:
    """Undo a failed extraction: all of ``dest`` when we created it, else the files we wrote."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for rel in names:
        try:
            (dest / rel).unlink()
        except OSError:
            pass


# ----------------------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------------------


def _read_record(target: Path, record_name: str = LOCAL_RECORD) -> dict[str, Any] | None:
    p = target / record_name
    if not p.is_file():
        return None
    try:
        record = json.loads(p.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _unexpected_files(target: Path, m: Manifest) -> list[str]:
    """Files in ``target`` that ``m.files`` does not list (for a merged part: only in the top-level
    folders its files are in - the other parts own the rest)."""
    if not target.is_dir():
        return []
    if m.archive is not None and m.archive.merge:
        tops = sorted({rel.split("/", 1)[0] for rel in m.files if "/" in rel})
        roots = [target / t for t in tops if (target / t).is_dir()]
    else:
        roots = [target]
    present = sorted(
        p.relative_to(target).as_posix()
        for root in roots
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(RECORD_PREFIX) and not p.name.endswith(".part")
    )
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
        record_path = target / m.record_name
        record = _read_record(target, m.record_name)
        if record is None:
            n = sum(1 for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            return [
                f"{name}: {target} holds {n} images but no checksum record ({m.record_name}); its content "
                f"cannot be verified (the manifest pins no per-file digests). Fetch it with "
                f"`bench data fetch {name} --sha256 <archive digest>` to create the record."
            ]
        files = record.get("files") if isinstance(record, dict) else None
        try:
            if not isinstance(files, dict):
                raise ManifestError(f"{record_path}: 'files' is not an object")
            for rel, sha in files.items():  # a record edited by hand must not point outside the dataset
                _check_relpath(rel, str(record_path))
                if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
                    raise ManifestError(f"{record_path}: bad sha256 {sha!r:.80} for {rel!r:.80}")
        except ManifestError as e:
            return [f"{name}: the checksum record is malformed ({e}); fetch the dataset again to rewrite it"]
        expected = dict(files)
        where = f"record {m.record_name} (archive sha256 {str(record.get('archive_sha256'))[:12]}…)"
        n_images = sum(1 for k in expected if k.lower().endswith(IMAGE_SUFFIXES))
        if m.archive.n_files and n_images != m.archive.n_files:
            problems.append(f"{name}: the record lists {n_images} images, expected {m.archive.n_files}")
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
