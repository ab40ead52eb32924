"""Local weight files: any ``weights`` string without a registered scheme is a path.

``.pth .pt .tar .ckpt .bin`` are read with ``torch.load`` (``weights_only`` unless trusted),
``.safetensors`` with safetensors. Relative paths in a registry file are relative to that file.
"""

from __future__ import annotations

from pathlib import Path

from biasbench.registry.sources import (
    PATH_KIND,
    ResolvedWeights,
    Source,
    WeightSource,
    expand_path,
    path_problem,
    strip_weight_suffixes,
)
from biasbench.registry.spec import CheckpointError


class LocalFile(Source):
    """A weights file on this machine (any string without a registered scheme)."""

    scheme = PATH_KIND
    syntax = "/a/path.pth | ./w.safetensors"
    local = True

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> ResolvedWeights:
        path = expand_path(value)
        problem = path_problem(path)  # "not found", "is a directory, not a file", …
        if problem is not None:
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: weights file {path} {problem}")
        return ResolvedWeights(WeightSource(PATH_KIND, value), path=path, description=f"local file {path}")

    def default_id(self, value: str) -> str:
        return strip_weight_suffixes(Path(value).name)
