"""The demo mini zoo's shipped weights: ``zoo:<recipe>`` (``biasbench.registry.zoo.weights_file``)."""

from __future__ import annotations

from pathlib import Path

from biasbench.registry.sources import ResolvedWeights, Source, WeightSource
from biasbench.registry.spec import CheckpointError


class ZooWeights(Source):
    """A checkpoint of the demo mini zoo (shipped inside the package)."""

    scheme = "zoo"
    syntax = "zoo:<recipe>"
    local = True

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> ResolvedWeights:
        cid = checkpoint_id
        try:
            from biasbench.registry import zoo

            path = Path(zoo.weights_file(value))
        except Exception as e:  # noqa: BLE001 - the zoo is another module; report its error
            raise CheckpointError(f"checkpoint {cid!r}: cannot get demo zoo weights {value!r}: {e}") from e
        if not path.is_file():
            raise CheckpointError(f"checkpoint {cid!r}: demo zoo weights file {path} not found")
        return ResolvedWeights(
            WeightSource(self.scheme, value), path=path, description=f"demo zoo {value} ({path})"
        )
