"""Verifying a dataset's local copy against its download spec: every file with its pinned sha256 and
no extra files; an extracted archive against the per-file record written when it was extracted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biasbench.core.names import SHA256_RE
from biasbench.harness.datasets.download_spec import (
    IMAGE_SUFFIXES,
    LOCAL_RECORD,
    RECORD_PREFIX,
    DownloadSpec,
    DownloadSpecError,
    check_relpath,
)
from biasbench.harness.datasets.downloadable import get_download_spec
from biasbench.registry.download import sha256_file


def read_record(target: Path, record_name: str = LOCAL_RECORD) -> dict[str, Any] | None:
    p = target / record_name
    if not p.is_file():
        return None
    try:
        record = json.loads(p.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def unexpected_files(target: Path, m: DownloadSpec) -> list[str]:
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


def verify_dataset(download: str | DownloadSpec, data_root: Path) -> list[str]:
    """Problems with the local copy of a download (by name, or its spec) under ``data_root`` (empty
    list = verified).

    Per-file specs: every file present with its pinned sha256, no extra files. Archive datasets:
    checked against the per-file record written when a verified archive was extracted (and the
    expected file count); a copy placed by hand, without that record, cannot be verified and says so.
    """
    m = get_download_spec(download) if isinstance(download, str) else download
    name = m.name
    target = Path(data_root) / m.target
    if not target.is_dir():
        return [f"{name}: not found at {target} (get it with `bench data fetch {name}`)"]
    problems: list[str] = []
    if m.archive is None:
        expected = m.files
        where = "download spec"
        for rel in unexpected_files(target, m):
            problems.append(f"unexpected file (not in the {name} download spec): {target / rel}")
    else:
        record_path = target / m.record_name
        record = read_record(target, m.record_name)
        if record is None:
            n = sum(1 for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            return [
                f"{name}: {target} holds {n} images but no checksum record ({m.record_name}); its content "
                f"cannot be verified (its download spec pins no per-file digests). Fetch it with "
                f"`bench data fetch {name} --sha256 <archive digest>` to create the record."
            ]
        files = record.get("files") if isinstance(record, dict) else None
        try:
            if not isinstance(files, dict):
                raise DownloadSpecError("'files' is not an object")
            for rel, sha in files.items():  # a record edited by hand must not point outside the dataset
                check_relpath(rel)
                if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
                    raise DownloadSpecError(f"bad sha256 {sha!r:.80} for {rel!r:.80}")
        except DownloadSpecError as e:
            return [
                f"{name}: the checksum record is malformed ({record_path}: {e}); fetch the dataset again to rewrite it"
            ]
        expected = dict(files)
        where = f"record {m.record_name} (archive sha256 {str(record.get('archive_sha256'))[:12]}…)"
        n_images = sum(1 for k in expected if k.lower().endswith(IMAGE_SUFFIXES))
        if m.archive.n_files and n_images != m.archive.n_files:
            problems.append(f"{name}: the record lists {n_images} images, expected {m.archive.n_files}")
        for rel in unexpected_files(target, m.model_copy(update={"files": expected})):
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
