"""Weights from ``https://`` / ``http://`` URLs: downloaded by the one downloader (resumable, atomic,
verified) to ``<cache_dir>/weights/<sha256>/<basename>``; the registry entry's ``sha256`` is required
and verified; ``$BIASBENCH_MIRROR`` rewrites the host."""

from __future__ import annotations

import os
from pathlib import Path

from biasbench.registry.download import DownloadError, fetch
from biasbench.registry.sources import DownloadedFile
from biasbench.registry.spec import CheckpointError


class URLSource(DownloadedFile):
    """A file at an https:// or http:// URL, pinned by its sha256."""

    scheme = "https"
    aliases = ("http",)
    syntax = 'https://host/path/weights.pth (with sha256 = "…")'
    keeps_scheme = True

    def noun(self) -> str:
        return "a URL"

    def unpinned(self, value: str, checkpoint_id: str) -> str:
        return (
            f"checkpoint {checkpoint_id!r}: weights from a URL need a sha256 in the registry entry "
            f'(sha256 = "…") or in its lock file (`bench lock`), so the bytes can be verified: {value}'
        )

    def file_name(self, value: str) -> str:
        return os.path.basename(value.split("?", 1)[0].rstrip("/")) or "weights"

    def download(
        self, value: str, checkpoint_id: str, dest: Path, cache_dir: Path, sha256: str | None
    ) -> None:
        try:
            fetch(value, dest, sha256)  # verified while it downloads; resumable; mirrored
        except DownloadError as e:
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: {e}") from e
