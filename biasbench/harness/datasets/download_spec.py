"""Download specs: where a dataset's bytes come from and what they are (one pydantic declaration, the
JSON file format and the object the fetch code uses alike).

A :class:`DownloadSpec` records its source pinned to a commit or a release, its license and
citation, and either

* per-file sha256 digests and a ``base_url`` (cue-conflict, edges, filled-silhouettes: the files of
  github.com/rgeirhos/texture-vs-shape at commit ccd0c01d42c0a8a834e90ec141e7f24fa915dc23), or
* one release ``archive`` (:class:`ArchiveDownload`; Stylized-16: model-vs-human v0.1
  ``stylized.tar.gz``) with its sha256. Where no digest could be recorded the spec says so
  (``"sha256": null`` plus a ``sha256_note``) and the fetch refuses unless the caller passes the
  expected digest: nothing unverified is ever extracted or used. ``md5``: the digest its
  distributors publish, checked after the sha256, never instead of it. ``strip_prefix`` drops the
  archive's top folder so that it lands in the layout the dataset reads; ``merge``: the archive is one
  part of a folder that other specs with the same ``target`` fill too (ImageNet-C's five tars).

A dataset declares its download on its entry (``DatasetEntry.download``): a spec built in Python,
or ours, JSON files shipped as package data (``harness/datasets/downloads/<name>.json``, read with
:func:`shipped_download`). JSON specs are parsed strictly (:func:`parse_download_spec`): any malformed
field is a :class:`DownloadSpecError` naming the file and the field; a null is a key left out.

(A dataset's *manifest* is something else: the cheap content fingerprint of its local copy,
``DatasetEntry.manifest``, part of every result's ``config_hash``.)
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, get_args

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from biasbench.core import schema
from biasbench.core.errors import InputError
from biasbench.core.names import SHA256_RE
from biasbench.registry.download import apply_mirror, resolve_mirror

#: Per-file digests recorded when an archive was extracted after a verified download.
LOCAL_RECORD = ".biasbench-files.json"
#: Every record file's name starts with this (a merged part's: ``.biasbench-files.<name>.json``).
RECORD_PREFIX = ".biasbench-files"
#: Where archives are downloaded to, under the data root.
DOWNLOADS_DIR = ".downloads"
#: What counts as an image when an archive's ``n_files`` is checked.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The package whose JSON files are our datasets' download specs.
SHIPPED = "biasbench.harness.datasets.downloads"
#: Dataset names and targets: path components that start with a letter or digit (no ``..``, no ``/``
#: at either end), at most 128 characters.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
ArchiveFormat = Literal["tar", "tar.gz", "tgz", "tar.bz2", "tar.xz", "zip"]
ARCHIVE_FORMATS: tuple[str, ...] = get_args(ArchiveFormat)


class DownloadSpecError(InputError):
    """A download spec is malformed (the message names the spec and the field)."""


_FROZEN = ConfigDict(**schema.STRICT, frozen=True)
_Count = Annotated[int, Field(ge=0, description="a JSON integer ≥ 0")]
_Text = Annotated[str, Field(description="a JSON string")]
_Object = Field(description="a JSON object")


def _no_nulls(raw: Any) -> Any:
    return {k: v for k, v in raw.items() if v is not None} if isinstance(raw, dict) else raw


class ArchiveDownload(BaseModel):
    """A release archive: URL, sha256 (None = not pinned), the prefix stripped from member names.

    ``n_files``: the number of images (:data:`IMAGE_SUFFIXES`) it must hold under ``strip_prefix``;
    ``size``: its size in bytes where published (shown, and the most bytes a download may bring);
    ``file_name``: the archive's file name where the URL's path does not end in it (a Google Drive
    link); ``merge``: one part of a dataset whose other parts are other specs with the same target:
    its top-level folders are put into the target beside theirs, its record is
    ``<target>/.biasbench-files.<spec name>.json``; ``md5``: the md5 its distributors publish.
    """

    model_config = _FROZEN
    url: _Text
    sha256: (
        Annotated[str, Field(pattern=rf"^(?i:{SHA256_RE.pattern})$", description="64 hex digits or null")]
        | None
    ) = None
    format: ArchiveFormat = "tar.gz"
    strip_prefix: _Text = ""
    n_files: _Count = 0
    sha256_note: _Text = ""
    size: _Count = 0
    file_name: _Text = ""
    merge: Annotated[bool, Field(description="a JSON boolean")] = False
    md5: Annotated[str, Field(pattern=r"^(?i:[0-9a-f]{32})?$", description="32 hex digits or null")] = ""

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, raw: Any) -> Any:
        raw = _no_nulls(raw)
        if isinstance(raw, dict):
            for key in ("sha256", "md5"):
                if isinstance(raw.get(key), str):
                    raw[key] = raw[key].lower()
            if raw.get("sha256") == "":
                del raw["sha256"]
        return raw

    @model_validator(mode="after")
    def _safe(self) -> ArchiveDownload:
        if self.file_name and (
            len(self.file_name) > 128 or not _NAME_RE.fullmatch(self.file_name) or "/" in self.file_name
        ):
            raise DownloadSpecError(f"file_name {self.file_name!r:.80} must be a plain file name")
        check_url(self.url, "url", file=not self.file_name)
        if self.strip_prefix.strip("/"):
            check_relpath(self.strip_prefix.strip("/"))
        return self

    @property
    def filename(self) -> str:
        if self.file_name:
            return self.file_name
        return urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1])


class DownloadSpec(BaseModel):
    """A downloadable dataset: where it comes from, what its bytes are, its license and citation.
    ``target``: its folder under the data root (default: its name); ``n_files``: its image count
    (default: the files listed, else the archive's); ``digest``: the sha256 of the JSON text it was
    parsed from (identifies this exact spec; empty for one built in Python)."""

    model_config = _FROZEN
    name: Annotated[
        str,
        Field(
            max_length=128,
            pattern=rf"^(?:{_NAME_RE.pattern})$",
            description="a dataset name (letters, digits, . _ - and /)",
        ),
    ]
    description: _Text = ""
    target: _Text
    source: Annotated[dict[str, _Text], _Object] = {}
    license: _Text = ""
    license_url: _Text = ""
    citation: _Text = ""
    n_files: _Count = 0
    files: Annotated[dict[str, Any], _Object] = {}  # relative path -> sha256
    base_url: _Text | None = None
    archive: Annotated[ArchiveDownload, _Object] | None = None
    _digest: str = PrivateAttr("")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        raw = _no_nulls(raw)
        if not isinstance(raw, dict):
            return raw
        if "target" not in raw and isinstance(raw.get("name"), str):
            raw["target"] = raw["name"]
        if raw.get("n_files", 0) == 0 and not isinstance(raw.get("n_files"), bool):
            files, archive = raw.get("files"), raw.get("archive")
            n = len(files) if isinstance(files, dict) else 0
            if not n and isinstance(archive, dict) and type(archive.get("n_files")) is int:
                n = archive["n_files"]
            raw["n_files"] = n
        return raw

    @model_validator(mode="after")
    def _safe(self) -> DownloadSpec:
        if len(self.target) > 128 or not _NAME_RE.fullmatch(self.target):
            raise DownloadSpecError(
                f"target {self.target!r:.80} must be a relative directory name under the data root"
            )
        for rel, sha in self.files.items():
            check_relpath(rel)
            if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
                raise DownloadSpecError(f"bad sha256 {sha!r:.80} for {rel!r:.80} (64 lowercase hex digits)")
        if self.base_url is not None:
            check_url(self.base_url, "base_url", file=False)
        if self.archive is None and not (self.files and self.base_url):
            raise DownloadSpecError("a download spec needs either files with a base_url or an archive")
        if self.files and self.n_files != len(self.files):
            raise DownloadSpecError(f"n_files is {self.n_files} but files lists {len(self.files)}")
        return self

    @property
    def digest(self) -> str:
        return self._digest

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

    def pinned_url(self, rel: str | None = None) -> str:
        """The source URL of file ``rel`` (``<base_url>/<rel>``), or of the archive (``rel=None``)."""
        if rel is None:
            if self.archive is None:
                raise InputError(f"download spec {self.name!r} has no archive")
            return self.archive.url
        if not self.base_url:
            raise InputError(f"download spec {self.name!r} has no base_url")
        return self.base_url.rstrip("/") + "/" + urllib.parse.quote(rel)

    def mirror_path(self, rel: str | None = None) -> str:
        """Where file ``rel`` sits on a mirror (``<target>/<rel>``, laid out like a data root), or the
        archive (``rel=None``: its file name)."""
        if rel is None:
            return urllib.parse.quote(self.archive.filename if self.archive else self.name)
        return f"{urllib.parse.quote(self.target)}/{urllib.parse.quote(rel)}"

    def file_url(self, rel: str, mirror: str | None = None) -> str:
        """Where file ``rel`` is fetched from: ``<base_url>/<rel>``, or ``<mirror>/<target>/<rel>``."""
        base = resolve_mirror(mirror)
        return apply_mirror("", base, self.mirror_path(rel)) if base else self.pinned_url(rel)

    def archive_url(self, mirror: str | None = None) -> str:
        """Where the archive is fetched from: its URL, or ``<mirror>/<archive file name>``."""
        return apply_mirror(self.pinned_url(None), mirror, self.mirror_path(None))

    def with_digest(self, digest: str) -> DownloadSpec:
        out = self.model_copy()
        out._digest = digest
        return out


def check_url(url: str, key: str, *, file: bool) -> None:
    """An https://, http:// or file:// URL with a host (naming a file when ``file``)."""
    if re.search(r"[\s\x00-\x1f\x7f]", url):
        raise DownloadSpecError(f"{key} {url!r:.120} contains whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as e:  # a malformed IPv6 host or port
        raise DownloadSpecError(f"{key} {url!r:.120} is not a valid URL: {e}") from e
    if parts.scheme not in ("https", "http", "file") or (parts.scheme != "file" and not host):
        raise DownloadSpecError(f"{key} {url!r:.120} must be an https://, http:// or file:// URL with a host")
    if file and not parts.path.rstrip("/").rsplit("/", 1)[-1]:
        raise DownloadSpecError(f"{key} {url!r:.120} names no file")


def check_relpath(rel: str) -> None:
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
        raise DownloadSpecError(f"unsafe relative path {rel!r:.120}")


def _problem(e: pydantic.ValidationError, raw: Any) -> str:
    """The first problem of a validation, as a sentence naming the key."""
    first = schema.errors(e)[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, DownloadSpecError):  # our own check, after the declared types passed
        return f"{'archive: ' if first['loc'][:1] == ('archive',) else ''}{cause}"
    return schema.describe(first, DownloadSpec, raw)


def download_spec(raw: Any, digest: str = "", where: str = "") -> DownloadSpec:
    """Validate a parsed download spec (a JSON object) and build it; every problem is a
    :class:`DownloadSpecError` naming the spec (``where``, else its name) and the field."""
    if not isinstance(raw, dict):
        raise DownloadSpecError(
            f"{where or 'download spec'}: a download spec must be a JSON object, got {type(raw).__name__}"
        )
    where = where or f"download spec {raw.get('name')!r:.80}"
    try:
        spec = DownloadSpec.model_validate(raw)
    except pydantic.ValidationError as e:
        problem = _problem(e, _no_nulls(raw))
    else:
        return spec.with_digest(digest)
    raise DownloadSpecError(f"{where}: {problem:.300}")


def parse_download_spec(
    text: bytes | str, where: str = "download spec", digest: str | None = None
) -> DownloadSpec:
    """Parse one download spec's text (JSON); ``digest`` defaults to the sha256 of the text. Every
    problem - not UTF-8, not JSON, nested too deeply, a missing or wrongly typed field, an unsafe path,
    a bad digest or URL - is a :class:`DownloadSpecError` naming ``where``."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    try:
        raw = json.loads(data)
    except RecursionError as e:
        raise DownloadSpecError(f"{where}: not valid JSON (nested too deeply)") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DownloadSpecError(f"{where}: not valid JSON: {e}") from e
    return download_spec(raw, digest if digest is not None else hashlib.sha256(data).hexdigest(), where)


@cache
def _shipped(file_name: str, package: str) -> DownloadSpec:
    res = resources.files(package) / file_name
    return parse_download_spec(res.read_bytes(), f"download spec {file_name}")


def shipped_download(*names: str, package: str = SHIPPED) -> Callable[[], tuple[DownloadSpec, ...]]:
    """For ``DatasetEntry.download``: the specs ``<package>/<name>.json`` (package data), read when
    first asked for."""
    return lambda: tuple(_shipped(f"{n}.json", package) for n in names)
