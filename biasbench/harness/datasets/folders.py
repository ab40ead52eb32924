"""ImageNet-style image folders, decoded once per preprocessing and cached as memory-mapped uint8.

Labels come from WordNet ids mapped to ImageNet-1k indices through timm's ImageNet info (the sorted
wnid list), never from the sort order of the folders present on disk: a folder with 300 classes
still yields the right 1000-way indices. Two layouts:

* ``<root>/<wnid>/<file>`` (``imagenet-val`` at ``<data-root>/imagenet/val``),
* flat ``<root>/<wnid>_<anything>.<ext>`` (``imagenet-sample``, one photo per class).

Decoding: PIL → RGB → Resize(short side, interpolation) → CenterCrop → uint8 (3, H, W), done on the
CPU once and cached under ``<cache>/datasets``; every later checkpoint with the same preprocessing
reads the memory-mapped array.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from biasbench.core import labels
from biasbench.core.images import ImageSet, cached_array, decode_files, manifest_of
from biasbench.core.labels import IMAGENET_1K
from biasbench.core.preprocess import Preprocess, preprocess_key
from biasbench.harness.datasets.catalog import DatasetEntry, DatasetMissing

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
_WNID = re.compile(r"^(n\d{8})")


def list_labeled_files(root: Path, layout: str) -> list[tuple[str, int]]:
    """(relative path, ImageNet-1k index) for every image under ``root``, sorted by path."""
    index = {w: i for i, w in enumerate(labels.get(IMAGENET_1K).class_ids)}
    out: list[tuple[str, int]] = []
    if layout == "wnid-folders":
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            if d.name not in index:
                raise ValueError(f"{d}: folder name {d.name!r} is not an ImageNet-1k WordNet id")
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    out.append((f"{d.name}/{f.name}", index[d.name]))
    elif layout == "wnid-prefix":
        for f in sorted(root.iterdir()):
            m = _WNID.match(f.name)
            if f.suffix.lower() in IMAGE_EXTENSIONS and m:
                if m.group(1) not in index:
                    raise ValueError(f"{f}: {m.group(1)!r} is not an ImageNet-1k WordNet id")
                out.append((f.name, index[m.group(1)]))
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return out


def imagenet_folder_dataset(
    name: str, relpath: str, layout: str, description: str, how_to_get: str
) -> DatasetEntry:
    """A dataset entry for ImageNet-1k-labeled images at ``<data-root>/<relpath>``."""

    def locate(data_root: Path) -> Path:
        root = Path(data_root) / relpath
        if not root.is_dir() or not any(root.iterdir()):
            raise DatasetMissing(
                f"dataset {name!r} not found: looked for {layout} images in {root.resolve()} "
                f"(set --data-root or BIASBENCH_DATA). {how_to_get}"
            )
        return root

    def manifest(data_root: Path, pre: Preprocess | None) -> str:
        root = locate(data_root)
        return manifest_of(root, list_labeled_files(root, layout))

    def load(data_root: Path, pre: Preprocess | None, cache_dir: Path) -> ImageSet:
        if pre is None:
            raise ValueError(f"dataset {name!r} needs a preprocessing (resize + crop)")
        root = locate(data_root)
        files = list_labeled_files(root, layout)
        mh = manifest_of(root, files)
        arr = cached_array(
            cache_dir,
            f"{name}-{mh}-{preprocess_key(pre)}",
            lambda: decode_files([root / f for f, _ in files], pre),
        )
        return ImageSet(
            name=name,
            images=torch.from_numpy(arr),
            labels=torch.tensor([lab for _, lab in files], dtype=torch.long),
            class_names=list(labels.get(IMAGENET_1K).class_names),
            label_space=IMAGENET_1K,
            item_ids=[f for f, _ in files],
            manifest_hash=mh,
        )

    return DatasetEntry(
        name=name,
        description=description,
        label_space=IMAGENET_1K,
        manifest=manifest,
        load=load,
        how_to_get=how_to_get,
        location=lambda root: Path(root) / relpath,
    )


IMAGENET_VAL = imagenet_folder_dataset(
    "imagenet-val",
    "imagenet/val",
    "wnid-folders",
    "ImageNet-1k validation set (50,000 images), <data-root>/imagenet/val/<wnid>/*.JPEG",
    "Get ILSVRC2012_img_val.tar from image-net.org (registration required) and sort it into "
    "WordNet-id folders (e.g. with the valprep.sh script of the PyTorch ImageNet example).",
)
IMAGENET_SAMPLE = imagenet_folder_dataset(
    "imagenet-sample",
    "imagenet-sample",
    "wnid-prefix",
    "ImageNet sample photos, one per class, flat files <data-root>/imagenet-sample/<wnid>_<name>.JPEG",
    "These are the EliSchwartz/imagenet-sample-images photos; put them in <data-root>/imagenet-sample/.",
)
