"""Content keys: canonical JSON of a job's parts, hashed (``config_hash``, ``docs/architecture.md`` §5)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def sha256_text(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def jsonable(v: Any) -> Any:
    """``v`` with tuples as lists, keys as strings and anything else unknown as its ``str``."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def config_hash(parts: dict[str, Any]) -> str:
    """Content key of a job: sha256 of the canonical JSON of its parts (first 16 hex digits)."""
    return sha256_text(json.dumps(jsonable(parts), sort_keys=True, separators=(",", ":")))[:16]
