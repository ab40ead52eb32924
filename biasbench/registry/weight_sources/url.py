"""Weights from ``https://`` / ``http://`` URLs: downloaded (resumable, atomic) to
``<cache_dir>/weights/<sha256>/<basename>``; the registry entry's ``sha256`` is required and verified;
``$BIASBENCH_MIRROR`` rewrites the host."""

from __future__ import annotations

import os
from pathlib import Path

from biasbench.registry.download import DownloadError, apply_mirror, fetch
from biasbench.registry.sources import (
    ResolvedWeights,
    Source,
    WeightSource,
    pinned_download,
    place_by_sha256,
)
from biasbench.registry.spec import CheckpointError


class URLSource(Source):
    """A file at an https:// or http:// URL, pinned by its sha256."""

    scheme = "https"
    aliases = ("http",)
    syntax = 'https://host/path/weights.pth (with sha256 = "…")'
    keeps_scheme = True
    requires_sha256 = True

    def noun(self) -> str:
        return "a URL"

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> ResolvedWeights:
        cid = checkpoint_id
        if not sha256:
            raise CheckpointError(
                f"checkpoint {cid!r}: weights from a URL need a sha256 in the registry entry "
                f'(sha256 = "…") or in its lock file (`bench lock`), so the bytes can be verified: {value}'
            )

        def download(tmp: Path) -> None:
            try:
                fetch(apply_mirror(value), tmp, sha256.lower())  # verified while it downloads; resumable
            except DownloadError as e:
                raise CheckpointError(f"checkpoint {cid!r}: {e}") from e

        dest = pinned_download(Path(cache_dir), sha256, _file_name(value), download, value, cid)
        return ResolvedWeights(
            WeightSource(self.scheme, value, True), path=dest, description=f"{value} (cached at {dest})"
        )

    def observe(self, value: str, checkpoint_id: str, *, cache_dir: Path) -> Path:
        tmp = Path(cache_dir) / "weights" / "unpinned" / _file_name(value)
        tmp.unlink(missing_ok=True)  # fetch() would trust a complete file left here; a .part is resumed
        try:
            fetch(apply_mirror(value), tmp, None)
        except DownloadError as e:
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: {e}") from e
        return place_by_sha256(tmp, tmp.name, cache_dir)[0]


def _file_name(url: str) -> str:
    return os.path.basename(url.split("?", 1)[0].rstrip("/")) or "weights"
