"""Safe archive extraction: every member of a tar (any compression) or zip archive is checked before
anything is written - no absolute paths, no ``..``, no symlinks, hard links or device files, names that
fit the file system - and size, member-count and compression-ratio limits refuse decompression bombs
(:func:`safe_extract`)."""

from __future__ import annotations

import copy
import re
import shutil
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from biasbench.core.errors import InputError
from biasbench.core.paths import special_file_kind
from biasbench.harness.datasets.download_spec import ARCHIVE_FORMATS
from biasbench.registry.download import DownloadError

#: Extraction limits (:func:`safe_extract`): total bytes written, number of members, and the ratio of
#: bytes written to the archive's size (checked once more than ``_RATIO_FLOOR`` bytes would be written).
MAX_EXTRACT_BYTES = 64 * 2**30
MAX_MEMBERS = 2_000_000
MAX_RATIO = 100.0
_RATIO_FLOOR = 64 * 2**20
_NAME_MAX = 255  # bytes per path component (ext4, xfs, APFS, NTFS)
_PATH_MAX = 4000


class UnsafeArchive(DownloadError):
    """An archive member would escape the target directory or is a link/device: refused."""


class ArchiveTooLarge(UnsafeArchive):
    """An archive would expand past a size, member-count or compression-ratio limit (a decompression
    bomb): refused before or while extracting, leaving nothing behind."""


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
            kind = special_file_kind(mode) if info.create_system == 3 else None  # unix: the file type
            if kind:
                raise UnsafeArchive(f"{archive}: member {raw!r} is {kind}; refused")
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
