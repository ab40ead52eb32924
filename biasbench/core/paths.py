"""Default locations: the data root (``$BIASBENCH_DATA`` or ``./data``) and the cache
(``$BIASBENCH_CACHE``, else ``$XDG_CACHE_HOME/biasbench``, else ``~/.cache/biasbench``); what a file
that is neither a regular file nor a directory is, for messages."""

from __future__ import annotations

import os
import stat
from pathlib import Path

_SPECIAL_FILES = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_file_kind(mode: int) -> str | None:
    """What a file of ``mode`` (an ``st_mode``) is when it is neither a regular file nor a directory
    (``"a symbolic link"``, ``"a FIFO (named pipe)"``, …); ``None`` for those two (or an unknown type)."""
    return next((words for test, words in _SPECIAL_FILES if test(mode)), None)


def default_data_root() -> Path:
    return Path(os.environ.get("BIASBENCH_DATA", "./data")).expanduser()


def default_cache_dir() -> Path:
    base = os.environ.get("BIASBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "biasbench"
    )
    return Path(base)
