"""How a checkpoint wants its images: resize the short side, centre-crop, then normalise.

A checkpoint concept (the registry resolves it per checkpoint; README, "Adding checkpoints") that datasets use to decode
and metrics use to ask for a fixed geometry (``DatasetRequest``). See ``docs/architecture.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from biasbench.core.errors import InputError


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side to ``resize`` (``interpolation``), centre-crop ``crop``, normalise with
    ``mean`` / ``std`` (the normalisation happens on the device, inside the model wrapper)."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, m: dict[str, Any]) -> Preprocess:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(m) - known
        if unknown:
            raise InputError(f"unknown preprocess keys {sorted(unknown)}; known: {sorted(known)}")
        kw = dict(m)
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(float(v) for v in kw[k])
        return cls(**kw)


def preprocess_key(pre: Preprocess | None) -> str:
    """A short key of a preprocessing for cache file names (``stored`` for images used as stored)."""
    if pre is None:
        return "stored"
    return hashlib.sha256(json.dumps(pre.to_json(), sort_keys=True).encode()).hexdigest()[:12]
