"""The demo mini zoo (issue 3): one architecture, many training recipes, weights shipped as files.

Contract used by the registry loader (``zoo:`` arch and weight sources):

* ``ARCHITECTURES: dict[str, Callable[[int], nn.Module]]`` — arch name -> constructor(num_classes)
* ``weights_file(name: str) -> Path`` — the shipped safetensors file of checkpoint ``name``
* ``weights_dir() -> Path`` — the folder of the shipped weights (``bench zoo train``'s default output)
* ``WORLD_PREPROCESS: Preprocess`` — mean/std (and size) the zoo models were trained with
* ``NUM_CLASSES: int`` — the world's class count (label space ``demo-world``)

The architecture (``arch.py``: ``resnet50-w8``, ResNet-50 topology at 1/8 width, 32-px stem), the
recipes (``recipes.py``) and the shipped weights (``weights/<recipe>.safetensors``, fp16, with
``weights/manifest.json``: recipe, seed, steps, epochs, sha256, test accuracy, training seconds) are
described in their modules; ``biasbench.registry.zoo.training`` reproduces every file (``bench zoo train``).
The demo registry ``registry/files/demo.toml`` lists one checkpoint ``zoo-<recipe>`` per recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from biasbench.core.errors import UnknownNameError
from biasbench.core.preprocess import Preprocess
from biasbench.core.world import NUM_CLASSES as NUM_CLASSES
from biasbench.registry.zoo.arch import ARCH_NAME, resnet50_w8
from biasbench.registry.zoo.recipes import RECIPES

ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {ARCH_NAME: resnet50_w8}

#: The world is 32 px and used as stored (resize = crop = 32); mean/std are the world's pixel
#: statistics (measured on ``demo-world/train``: mean 0.50, std 0.28 in every channel). The mean is
#: also the SIS / input-dropout baseline value.
WORLD_PREPROCESS = Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.28, 0.28, 0.28))


def weights_dir() -> Path:
    """Folder of the shipped weights and their ``manifest.json``."""
    return Path(__file__).resolve().parent / "weights"


def weights_file(name: str) -> Path:
    """The shipped weights of zoo checkpoint ``name`` (a recipe name, e.g. ``plain``)."""
    if name not in RECIPES:
        raise UnknownNameError(f"unknown zoo checkpoint {name!r}; known: {', '.join(RECIPES)}")
    return weights_dir() / f"{name}.safetensors"


__all__ = [
    "ARCHITECTURES",
    "ARCH_NAME",
    "NUM_CLASSES",
    "RECIPES",
    "WORLD_PREPROCESS",
    "weights_dir",
    "weights_file",
]
