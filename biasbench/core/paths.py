"""Default locations: the data root (``$BIASBENCH_DATA`` or ``./data``) and the cache
(``$BIASBENCH_CACHE``, else ``$XDG_CACHE_HOME/biasbench``, else ``~/.cache/biasbench``)."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_root() -> Path:
    return Path(os.environ.get("BIASBENCH_DATA", "./data")).expanduser()


def default_cache_dir() -> Path:
    base = os.environ.get("BIASBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "biasbench"
    )
    return Path(base)
