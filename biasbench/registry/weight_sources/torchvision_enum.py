"""torchvision weights enums: ``torchvision:<Enum>.<MEMBER>`` (``ResNet50_Weights.IMAGENET1K_V1``);
``weights.url`` is fetched into the torch.hub cache and checked against the hash prefix in its file
name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biasbench.core.errors import InputError
from biasbench.registry.download import download_url_to_hub_cache
from biasbench.registry.sources import ResolvedWeights, Source, WeightSource
from biasbench.registry.spec import CheckpointError


def download_torchvision_weights(url: str) -> Path:
    """Fetch a torchvision weights URL into the torch.hub cache. Tests replace this function."""
    return download_url_to_hub_cache(url)


def torchvision_weights_enum(value: str, checkpoint_id: str) -> Any:
    """The torchvision weights enum member named ``value`` (``ResNet50_Weights.IMAGENET1K_V1``)."""
    import torchvision

    try:
        # get_weight evaluates the enum's name as an attribute of torchvision.models: a name that is
        # not a weights enum (`get_weight.x`) fails inside it with a TypeError
        enum = torchvision.models.get_weight(value)
        if not isinstance(enum, torchvision.models.WeightsEnum):
            raise InputError(f"{value!r} is not a member of a torchvision weights enum")
        return enum
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: unknown torchvision weights {value!r} (write the enum and member, "
            f"e.g. 'torchvision:ResNet50_Weights.IMAGENET1K_V1'): {e}"
        ) from e


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
