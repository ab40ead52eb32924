"""torchvision weights enums: ``torchvision:<Enum>.<MEMBER>`` (``ResNet50_Weights.IMAGENET1K_V1``);
``weights.url`` is fetched into the torch.hub cache and checked against the hash prefix in its file
name."""

from __future__ import annotations

from pathlib import Path

from biasbench.registry.download import download_url_to_hub_cache
from biasbench.registry.sources import ResolvedWeights, Source, WeightSource
from biasbench.registry.spec import CheckpointError
from biasbench.registry.torchvision_weights import torchvision_weights_enum


def download_torchvision_weights(url: str) -> Path:
    """Fetch a torchvision weights URL into the torch.hub cache. Tests replace this function."""
    return download_url_to_hub_cache(url)


class TorchvisionWeights(Source):
    """A torchvision weights enum member."""

    scheme = "torchvision"
    syntax = "torchvision:<Enum>.<MEMBER>"
    self_check = "hash prefix"

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> ResolvedWeights:
        enum = torchvision_weights_enum(value, checkpoint_id)
        try:
            path = download_torchvision_weights(enum.url)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: cannot get torchvision weights {value}: {e}"
            ) from e
        return ResolvedWeights(
            WeightSource(self.scheme, value), path=path, description=f"torchvision {value} ({path})"
        )

    def default_id(self, value: str) -> str:
        return f"torchvision_{value}"
