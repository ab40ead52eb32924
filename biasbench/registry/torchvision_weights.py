"""torchvision weights enums by name (``ResNet50_Weights.IMAGENET1K_V1``) and their eval transforms,
shared by the ``torchvision:`` weight source and the ``torchvision:`` architecture family."""

from __future__ import annotations

from typing import Any

from biasbench.core.errors import InputError
from biasbench.core.preprocess import Preprocess
from biasbench.registry.spec import CheckpointError


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


def torchvision_preprocess(enum_member: Any) -> Preprocess:
    """The eval transform of a torchvision weights enum member as a :class:`Preprocess`."""
    t = enum_member.transforms()
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else t.resize_size
    return Preprocess(
        resize=int(resize),
        crop=int(crop),
        mean=tuple(float(v) for v in t.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in t.std),  # type: ignore[arg-type]
        interpolation=str(getattr(t.interpolation, "value", t.interpolation)),
    )
