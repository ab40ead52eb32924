"""Preprocessing from a timm data config (``timm.data.resolve_data_config``'s dict): shared by the timm
architecture family and ``biasbench.evaluate`` for a timm module."""

from __future__ import annotations

from typing import Any

from biasbench.core.preprocess import Preprocess


def data_config_preprocess(data: dict[str, Any]) -> Preprocess:
    """A timm data config as a :class:`Preprocess`: crop = input size, resize = round(crop /
    crop_pct), its interpolation (a training setting such as ``random`` reads as bilinear), mean, std."""
    crop = int(data["input_size"][-1])
    interpolation = data.get("interpolation") or "bilinear"
    if interpolation not in ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"):
        interpolation = "bilinear"  # e.g. "random" (a training setting)
    return Preprocess(
        resize=int(round(crop / float(data["crop_pct"]))),
        crop=crop,
        mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
        interpolation=interpolation,
    )
