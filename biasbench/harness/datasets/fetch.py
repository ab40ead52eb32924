"""The dataset manager: fetch a downloadable dataset from its pinned download spec, verified.

What can be fetched is what the dataset registry's entries declare (``DatasetEntry.download``, see
:mod:`~biasbench.harness.datasets.download_spec` for the spec, :mod:`~biasbench.harness.datasets.downloadable`
for the lookup by name). The jobs are split by module: this one orchestrates; the bytes come through the
one downloader (:func:`biasbench.registry.download.fetch`: ``<file>.part`` resumed with HTTP Range,
sha256-checked, then renamed; a mismatch deletes the partial file and leaves nothing under the final
name); archives are checked member by member and extracted with bomb limits
(:mod:`~biasbench.harness.datasets.extract`) into a temporary directory that is put in place only when
complete (:mod:`~biasbench.harness.datasets.placing`); the per-file digests of an extracted archive are
recorded in ``<target>/.biasbench-files.json`` so that :func:`~biasbench.harness.datasets.verify.verify_dataset`
can check it later. Rerunning a fetch skips files that are present and verified, re-downloads
corrupted ones.

ImageNet-C's tars are *merged* parts (``"merge": true``): five specs with the same target, each tar's
top-level folders (its corruptions) put into ``imagenet-c/`` beside the others', each part with its
own record ``.biasbench-files.<name>.json`` that the verification checks within its folders.

Mirrors (``mirror=`` / ``--mirror URL`` / env ``BIASBENCH_MIRROR``): a mirror is laid out like a
biasbench data root - ``<mirror>/<dataset>/<relative path>``, e.g.
``<mirror>/cue-conflict/airplane/airplane1-bicycle2.png`` - and archives sit at
``<mirror>/<archive file name>`` (``<mirror>/stylized.tar.gz``). So any machine that has the data can
serve it with ``python -m http.server -d <data-root>``; ``file://`` URLs work too. The digests are the
spec's, whatever the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from biasbench.core.errors import InputError
from biasbench.core.names import SHA256_RE
from biasbench.harness.datasets.download_spec import DOWNLOADS_DIR, IMAGE_SUFFIXES, DownloadSpec
from biasbench.harness.datasets.downloadable import get_download_spec
from biasbench.harness.datasets.extract import safe_extract
from biasbench.harness.datasets.placing import merge_into, replace
from biasbench.harness.datasets.verify import read_record, unexpected_files, verify_dataset
from biasbench.registry.download import ChecksumMismatch, DownloadError, fetch, resolve_mirror, sha256_file

#: the largest single file of a file-list download (its images are small; a server sending more is refused)
MAX_LISTED_FILE_BYTES = 256 * 2**20


class UnverifiedSource(DownloadError):
    """The download spec pins no sha256 for a download and the caller gave none: refused."""


def fetch_dataset(
    download: str | DownloadSpec,
    data_root: Path,
    *,
    mirror: str | None = None,
    log: Callable[[str], Any] = print,
    sha256: str | None = None,
    workers: int = 8,
) -> Path:
    """Download a dataset (by its download's name, or the spec itself) into ``<data_root>/<target>``,
    verified; returns that directory.

    ``mirror`` (or ``$BIASBENCH_MIRROR``) replaces the pinned source host (layout: see module doc).
    ``sha256``: the expected digest of a release archive whose spec pins none (required then);
    ignored for per-file specs. Files already present and verified are kept; a rerun resumes.
    Raises :class:`ChecksumMismatch` (nothing kept under the final name of a mismatching file),
    :class:`UnverifiedSource`, :class:`UnsafeArchive` or :class:`DownloadError`.
    """
    m = get_download_spec(download) if isinstance(download, str) else download
    data_root = Path(data_root)
    mirror = resolve_mirror(mirror)
    if m.archive is not None:
        return _fetch_archive(m, data_root, mirror=mirror, log=log, sha256=sha256)
    return _fetch_files(m, data_root, mirror=mirror, log=log, workers=workers)


def _fetch_files(
    m: DownloadSpec, data_root: Path, *, mirror: str | None, log: Callable[[str], Any], workers: int
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
            fetch(
                m.pinned_url(rel),
                target / rel,
                sha,
                max_bytes=MAX_LISTED_FILE_BYTES,
                mirror=mirror,
                mirror_path=m.mirror_path(rel),
            )
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
    extra = unexpected_files(target, m)
    if extra:
        log(
            f"  warning: {len(extra)} files in {target} are not part of {m.name} (e.g. {extra[0]}); "
            "`bench data verify` reports them"
        )
    log(f"{m.name}: {total} files verified (sha256) in {target}")
    return target


def _fetch_archive(
    m: DownloadSpec, data_root: Path, *, mirror: str | None, log: Callable[[str], Any], sha256: str | None
) -> Path:
    assert m.archive is not None
    arch = m.archive
    pinned = arch.sha256.lower() if arch.sha256 else None
    given = sha256.strip().lower() if sha256 else None
    if given is not None and not SHA256_RE.fullmatch(given):
        raise InputError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    if pinned and given and pinned != given:
        raise UnverifiedSource(
            f"the digest you gave for {m.name} ({given}) differs from the one its download spec pins ({pinned}); refused"
        )
    expected = pinned or given
    if expected is None:
        raise UnverifiedSource(
            f"refusing to download {m.name}: its download spec pins no sha256 for {arch.url} "
            f"({arch.sha256_note or 'no digest recorded'}). Pass the digest you trust: "
            f"`bench data fetch {m.name} --sha256 <64 hex digits>` (or fetch_dataset(..., sha256=...))."
        )
    target = data_root / m.target
    record = read_record(target, m.record_name)
    if record and record.get("archive_sha256") == expected and not verify_dataset(m, data_root):
        log(f"{m.name}: already present and verified in {target}")
        return target
    url = m.archive_url(mirror)
    archive_path = data_root / DOWNLOADS_DIR / arch.filename
    size = f", {arch.size / 1e9:.2f} GB" if arch.size else ""
    log(f"fetching {m.name}: {url} (pinned: {m.pinned}; license {m.license}{size}) -> {archive_path}")
    # the spec's size bounds the download
    fetch(
        arch.url,
        archive_path,
        expected,
        max_bytes=arch.size or None,
        mirror=mirror,
        mirror_path=m.mirror_path(),
    )
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
            "sha256_source": "download spec" if pinned else "given by the user",
            **({"archive_md5": arch.md5} if arch.md5 else {}),
            "files": {n: sha256_file(tmp / n) for n in sorted(names)},
        }
        (tmp / m.record_name).write_text(json.dumps(rec, indent=1) + "\n")
        if arch.merge:
            merge_into(tmp, target, data_root)
        else:
            replace(tmp, target, data_root / f".{m.target.replace('/', '_')}.old-{os.getpid()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{m.name}: {len(images)} images extracted and recorded in {target / m.record_name}")
    return target


def _check_md5(m: DownloadSpec, archive_path: Path) -> None:
    """The downloaded archive's md5 against the one its distributors publish (the spec's); a
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
