"""Google Drive files: ``gdrive:<file-id>``, downloaded with the ``gdown`` library (optional extra
``biasbench[gdrive]``), which handles Drive's "can't scan this file for viruses" confirmation page.

Drive checks nothing about the bytes, so a ``gdrive:`` entry must be pinned: by its ``sha256`` or by
the registry's lock file (``bench lock``). Files are cached at ``<cache>/weights/<sha256>/gdrive-<id>.pth``;
gdown's cookies are kept in ``<cache>/weights/gdrive-cookies.txt``, not in the user's home.
"""

from __future__ import annotations

import re
from pathlib import Path

from biasbench.registry.sources import DownloadedFile
from biasbench.registry.spec import CheckpointError

#: A Drive file id (letters, digits, ``-`` and ``_``; Drive's ids are 25 to 44 characters long).
_ID_RE = re.compile(r"[-\w]{20,}")


def gdrive_download(file_id: str, output: Path, cookies_file: Path) -> None:
    """Download one Drive file with gdown (imported lazily; a clear message names the extra when it
    is missing)."""
    try:
        import gdown
    except ImportError as e:
        raise CheckpointError(
            "gdrive: weights need the gdown package: pip install 'biasbench[gdrive]' (or pip install gdown)"
        ) from e
    output.parent.mkdir(parents=True, exist_ok=True)
    gdown.download(id=file_id, output=str(output), quiet=True, cookies_file=str(cookies_file))


class GoogleDrive(DownloadedFile):
    """A Google Drive file by its id, through gdown; pinned by sha256 or the lock file."""

    scheme = "gdrive"
    syntax = "gdrive:<file-id> (pinned by sha256 or a lock file)"

    def validate(self, value: str, checkpoint_id: str) -> None:
        super().validate(value, checkpoint_id)
        if not _ID_RE.fullmatch(value):
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: 'gdrive:{value}' is not a Google Drive file id "
                "(letters, digits, - and _, at least 20 of them; the part after /d/ in a sharing link)"
            )

    def noun(self) -> str:
        return "Google Drive"

    def file_name(self, value: str) -> str:
        return f"gdrive-{value}.pth"

    def download(
        self, value: str, checkpoint_id: str, dest: Path, cache_dir: Path, sha256: str | None
    ) -> None:
        dest.unlink(missing_ok=True)  # gdown would keep a stale file; the caller verifies the bytes
        try:
            gdrive_download(value, dest, Path(cache_dir) / "weights" / "gdrive-cookies.txt")
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: {e}") from e
        except Exception as e:  # noqa: BLE001 - gdown raises requests' and its own error types
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: download of gdrive:{value} failed: {type(e).__name__}: {e}"
            ) from e
        if not dest.is_file():
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: gdown wrote no file for gdrive:{value}")

    def default_id(self, value: str) -> str:
        return f"gdrive-{value}"
