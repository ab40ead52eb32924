"""Content keys: canonical JSON of a job's parts, hashed (``config_hash``, ``docs/architecture.md`` §5);
the digest of a tensor's bytes (``tensor_sha256``: what the in-process memos key on)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


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


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes in row-major order of its shape, whatever its strides or device (a
    copy only where it is not contiguous or not on the CPU). Dtype, shape and layout are not in it: a
    key that needs them adds them."""
    import torch

    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy()).hexdigest()
