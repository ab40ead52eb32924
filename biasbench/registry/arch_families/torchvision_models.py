"""``torchvision:<name>``: torchvision's models (``torchvision.models.get_model``), the eval
transforms of their weights enums, and torchvision's own key fix for its DenseNet files."""

from __future__ import annotations

import re

import torch
from torch import nn

from biasbench.core.plugins import suggest
from biasbench.core.preprocess import Preprocess
from biasbench.registry.architectures import ArchitectureFamily
from biasbench.registry.sources import WeightSource
from biasbench.registry.spec import CheckpointError
from biasbench.registry.torchvision_weights import torchvision_preprocess, torchvision_weights_enum

_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


class Torchvision(ArchitectureFamily):
    """A torchvision model, built with random weights and the label space's class count."""

    family = "torchvision"
    syntax = "torchvision:<name>"

    def problem(self, name: str, *, trust: bool = False) -> str | None:
        import torchvision

        known = torchvision.models.list_models()
        return None if name in known else f"unknown torchvision architecture {name!r}{suggest(name, known)}"

    def build(self, name: str, num_classes: int, checkpoint_id: str, *, trust: bool = False) -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)

    def default_weights(self, name: str, checkpoint_id: str) -> str:
        import torchvision

        try:
            default = torchvision.models.get_model_weights(name).DEFAULT
        except (ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: torchvision has no pretrained weights for {name!r}"
            ) from e
        return f"torchvision:{default}"

    def preprocess(self, name: str, weights: str | None, checkpoint_id: str) -> Preprocess:
        """The eval transform of the ``torchvision:`` weights enum when the weights are one, else of
        the architecture's first (original) weights enum member."""
        import torchvision

        if weights and weights.startswith("torchvision:"):
            member = torchvision_weights_enum(weights[len("torchvision:") :], checkpoint_id)
        else:
            try:
                member = next(iter(torchvision.models.get_model_weights(name)))
            except (ValueError, KeyError, StopIteration):
                return Preprocess()
        return torchvision_preprocess(member)

    def fix_state_dict(
        self, name: str, source: WeightSource, sd: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """torchvision's own fix for its DenseNet weight files (``norm.1`` -> ``norm1``), as in
        ``torchvision.models.densenet._load_state_dict``."""
        if source.kind != "torchvision" or not name.startswith("densenet"):
            return sd, []
        out, n = {}, 0
        for k, v in sd.items():
            m = _DENSENET_OLD_KEY.match(k)
            if m:
                k = m.group(1) + m.group(2)
                n += 1
            out[k] = v
        return out, ([f"torchvision densenet key fix: {n} keys"] if n else [])
