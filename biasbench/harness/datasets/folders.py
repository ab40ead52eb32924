"""ImageNet-style image folders, decoded once per preprocessing and cached as memory-mapped uint8.

Labels come from WordNet ids mapped to ImageNet-1k indices through timm's ImageNet info (the sorted
wnid list), never from the sort order of the folders present on disk: a folder with 300 classes
still yields the right 1000-way indices. Two layouts:

* ``<root>/<wnid>/<file>`` (``imagenet-val`` at ``<data-root>/imagenet/val``),
* flat ``<root>/<wnid>_<anything>.<ext>`` (``imagenet-sample``, one photo per class).

Decoding: PIL → RGB → Resize(short side, interpolation) → CenterCrop → uint8 (3, H, W), done on the
CPU once and cached under ``<cache>/datasets``; every later checkpoint with the same preprocessing
reads the memory-mapped array. The listing, decoding and entry building live in
:mod:`biasbench.harness.datasets.imagenet_files`, shared with the ImageNet OOD sets.
"""

from __future__ import annotations

from biasbench.core.images import decode_files
from biasbench.harness.datasets.catalog import DatasetEntry
from biasbench.harness.datasets.imagenet_files import (
    IMAGE_EXTENSIONS,
    IMAGENET_VAL_HOW_TO_GET,
    IMAGENET_VAL_NAME,
    IMAGENET_VAL_RELPATH,
    imagenet_folder_entry,
    list_labeled_files,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGENET_SAMPLE",
    "IMAGENET_VAL",
    "decode_files",
    "imagenet_folder_dataset",
    "list_labeled_files",
]


def imagenet_folder_dataset(
    name: str,
    relpath: str,
    layout: str,
    description: str,
    how_to_get: str,
    published_size: int | None = None,
) -> DatasetEntry:
    """A dataset entry for ImageNet-1k-labeled images at ``<data-root>/<relpath>``."""
    return imagenet_folder_entry(
        name,
        relpath,
        lambda root: list_labeled_files(root, layout),
        layout,
        description,
        how_to_get,
        published_size=published_size,
    )


IMAGENET_VAL = imagenet_folder_dataset(
    IMAGENET_VAL_NAME,
    IMAGENET_VAL_RELPATH,
    "wnid-folders",
    "ImageNet-1k validation set (50,000 images), <data-root>/imagenet/val/<wnid>/*.JPEG",
    IMAGENET_VAL_HOW_TO_GET,
    published_size=50_000,
)
IMAGENET_SAMPLE = imagenet_folder_dataset(
    "imagenet-sample",
    "imagenet-sample",
    "wnid-prefix",
    "ImageNet sample photos, one per class, flat files <data-root>/imagenet-sample/<wnid>_<name>.JPEG",
    "These are the EliSchwartz/imagenet-sample-images photos; put them in <data-root>/imagenet-sample/.",
)
