"""``zoo:<name>``: the demo mini zoo's architectures (``biasbench.registry.zoo.ARCHITECTURES``),
trained on the synthetic demo world with its preprocessing."""

from __future__ import annotations

from typing import Any

from torch import nn

from biasbench.core.preprocess import Preprocess
from biasbench.registry.architectures import ArchitectureFamily


def _zoo() -> Any:
    from biasbench.registry import zoo

    return zoo


class Zoo(ArchitectureFamily):
    """An architecture of the demo mini zoo (its weights: zoo:<checkpoint>)."""

    family = "zoo"
    syntax = "zoo:<name>"

    def problem(self, name: str, *, trust: bool = False) -> str | None:
        archs = getattr(_zoo(), "ARCHITECTURES", None)
        if archs is None:
            return "the demo zoo defines no ARCHITECTURES (not installed yet?)"
        if name not in archs:
            return f"unknown zoo architecture {name!r}; known: {', '.join(sorted(archs))}"
        return None

    def build(self, name: str, num_classes: int, checkpoint_id: str, *, trust: bool = False) -> nn.Module:
        return _zoo().ARCHITECTURES[name](num_classes)

    def default_labels(self, name: str) -> str:
        return "demo-world"

    def preprocess(self, name: str, weights: str | None, checkpoint_id: str) -> Preprocess:
        return _zoo().WORLD_PREPROCESS
