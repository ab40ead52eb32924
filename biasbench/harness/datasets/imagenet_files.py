"""Helpers shared by the ImageNet-1k-labeled dataset plugins (``folders.py``, ``imagenet_ood.py``).

Not a plugin itself: plugin modules never import each other (``docs/architecture.md`` §2), so the
listing, decoding and entry building they share lives here.

* :func:`list_wnid_folders` lists ``<root>/<wnid>/<file>`` with labels from the WordNet id (timm's
  sorted wnid list, never the folders present on disk), optionally restricted to a class subset.
* :func:`list_labeled_files` is that, or the flat ``<root>/<wnid>_<anything>.<ext>`` layout.
* :func:`imagenet_folder_entry` builds a :class:`DatasetEntry` from a folder and a lister: decoded once
  per preprocessing (or as stored, at a fixed size) and cached as memory-mapped uint8 under
  ``<cache>/datasets/<cache name>-<manifest>-<preprocess key>.npy``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biasbench.core import labels
from biasbench.core.errors import InputError
from biasbench.core.images import ImageSet, decode_files, manifest_of
from biasbench.core.labels import IMAGENET_1K
from biasbench.core.preprocess import Preprocess, preprocess_key
from biasbench.core.streaming import LoadOptions, StreamedImages, as_images, cached_or_streamed
from biasbench.harness.datasets.catalog import DatasetEntry, DatasetMissing, Download

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
_WNID = re.compile(r"^(n\d{8})")

#: one labeled file: (path relative to the dataset folder, ImageNet-1k index)
Files = list[tuple[str, int]]

#: The ImageNet-1k validation set: its dataset name (also its cache name), where it lives under the
#: data root, and how to get it.
IMAGENET_VAL_NAME = "imagenet-val"
IMAGENET_VAL_RELPATH = "imagenet/val"
IMAGENET_VAL_HOW_TO_GET = (
    "Get ILSVRC2012_img_val.tar from image-net.org (registration required) and sort it into "
    "WordNet-id folders (e.g. with the valprep.sh script of the PyTorch ImageNet example)."
)


def imagenet_index() -> dict[str, int]:
    """WordNet id -> ImageNet-1k class index."""
    return {w: i for i, w in enumerate(labels.get(IMAGENET_1K).class_ids)}


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)


def list_wnid_folders(root: Path, subset: Collection[int] | None = None, subset_name: str = "") -> Files:
    """(``<wnid>/<file>``, ImageNet-1k index) for every image in the WordNet-id folders of ``root``,
    sorted by path. A folder that is not an ImageNet-1k wnid, or (with ``subset``, 1000-class indices)
    whose class is outside ``subset``, is an error naming it."""
    index = imagenet_index()
    allowed = None if subset is None else set(subset)
    out: Files = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name not in index:
            raise InputError(f"{d}: folder name {d.name!r} is not an ImageNet-1k WordNet id")
        if allowed is not None and index[d.name] not in allowed:
            raise InputError(
                f"{d}: WordNet id {d.name!r} (ImageNet-1k class {index[d.name]}) is not one of the "
                f"{len(allowed)} classes of {subset_name or 'this dataset'}"
            )
        out.extend((f"{d.name}/{f.name}", index[d.name]) for f in image_files(d))
    return out


def list_labeled_files(root: Path, layout: str) -> Files:
    """(relative path, ImageNet-1k index) for every image under ``root``, sorted by path; ``layout`` is
    ``wnid-folders`` (``<wnid>/<file>``) or ``wnid-prefix`` (flat ``<wnid>_<anything>.<ext>``)."""
    if layout == "wnid-folders":
        return list_wnid_folders(root)
    if layout == "wnid-prefix":
        index = imagenet_index()
        out: Files = []
        for f in sorted(root.iterdir()):
            m = _WNID.match(f.name)
            if f.suffix.lower() in IMAGE_EXTENSIONS and m:
                if m.group(1) not in index:
                    raise InputError(f"{f}: {m.group(1)!r} is not an ImageNet-1k WordNet id")
                out.append((f.name, index[m.group(1)]))
        return out
    raise InputError(f"unknown layout {layout!r}")


def find_root(name: str, root: Path, pattern: str, how_to_get: str) -> Path:
    """``root`` if it is a non-empty folder, else :class:`DatasetMissing` naming it and how to get it."""
    if not root.is_dir() or not any(root.iterdir()):
        raise DatasetMissing(
            f"dataset {name!r} not found: looked for {pattern} images in {root.resolve()} "
            f"(set --data-root or BIASBENCH_DATA). {how_to_get}"
        )
    return root


def scan_folder(
    name: str, root: Path, list_files: Callable[[Path], Files], pattern: str, how_to_get: str
) -> Files:
    """``list_files(root)``; :class:`DatasetMissing` when ``root`` is absent or holds no images."""
    files = list_files(find_root(name, root, pattern, how_to_get))
    if not files:
        raise DatasetMissing(
            f"dataset {name!r} not found: no {pattern} images in {root.resolve()}. {how_to_get}"
        )
    return files


def cache_key(cache_name: str, manifest_hash: str, pre: Preprocess | None) -> str:
    """The decoded-array cache key: datasets with the same key share one ``.npy``."""
    return f"{cache_name.replace('/', '_')}-{manifest_hash}-{preprocess_key(pre)}"


def decode_as_stored(name: str, paths: list[Path], size: int) -> np.ndarray:
    """Decode images used as stored; all must be ``size`` x ``size`` (an error naming the dataset)."""
    try:
        arr = decode_files(paths, None)
    except ValueError as e:
        raise InputError(f"dataset {name!r}: {e}; expected {size}x{size} images, used as stored") from e
    if arr.shape[0] and tuple(arr.shape[2:]) != (size, size):
        h, w = arr.shape[2:]
        raise InputError(f"dataset {name!r}: images are {h}x{w}; expected {size}x{size}, used as stored")
    return arr


def imagenet_image_set(
    name: str,
    arr: np.ndarray | StreamedImages,
    files: Files,
    manifest_hash: str,
    meta: dict[str, Any] | None = None,
) -> ImageSet:
    """An ImageNet-1k-labeled :class:`ImageSet` (item ids = the relative paths)."""
    return ImageSet(
        name=name,
        images=as_images(arr),
        labels=torch.tensor([lab for _, lab in files], dtype=torch.long),
        class_names=list(labels.get(IMAGENET_1K).class_names),
        label_space=IMAGENET_1K,
        item_ids=[f for f, _ in files],
        manifest_hash=manifest_hash,
        meta=meta or {},
    )


def imagenet_folder_entry(
    name: str,
    relpath: str,
    list_files: Callable[[Path], Files],
    pattern: str,
    description: str,
    how_to_get: str,
    stored_size: int | None = None,
    meta_of: Callable[[Files], dict[str, Any]] | None = None,
    published_size: int | None = None,
    download: Download | None = None,
) -> DatasetEntry:
    """A dataset entry for ImageNet-1k-labeled images at ``<data-root>/<relpath>``, listed by
    ``list_files(folder)``. ``stored_size=None``: decoded with the checkpoint's preprocessing; an int:
    used as stored (``as_stored``), every image that many pixels square. No images there (or no folder)
    is :class:`DatasetMissing` with ``pattern`` and ``how_to_get``; a manifest = file list + sizes.
    ``meta_of(files)``: per-item metadata of the loaded set; ``published_size``: the images of the
    published set (what a dry run counts when it is not on disk)."""

    def location(data_root: Path) -> Path:
        return Path(data_root) / relpath

    def scan(data_root: Path) -> tuple[Path, Files]:
        root = location(data_root)
        return root, scan_folder(name, root, list_files, pattern, how_to_get)

    def manifest(data_root: Path, pre: Preprocess | None) -> str:
        root, files = scan(data_root)
        return manifest_of(root, files)

    def load(
        data_root: Path, pre: Preprocess | None, cache_dir: Path, options: LoadOptions | None = None
    ) -> ImageSet:
        if stored_size is None and pre is None:
            raise InputError(f"dataset {name!r} needs a preprocessing (resize + crop)")
        root, files = scan(data_root)
        mh = manifest_of(root, files)
        paths = [root / f for f, _ in files]
        # cached as a memory-mapped array when it fits the cache budget, else streamed (core.streaming)
        if stored_size is None:
            key = cache_key(name, mh, pre)
            arr = cached_or_streamed(cache_dir, key, paths, pre, (pre.crop, pre.crop), options=options)
        else:
            arr = cached_or_streamed(
                cache_dir,
                cache_key(name, mh, None),
                paths,
                None,
                (stored_size, stored_size),
                lambda chunk: decode_as_stored(name, chunk, stored_size),
                options=options,
            )
        return imagenet_image_set(name, arr, files, mh, meta_of(files) if meta_of else None)

    return DatasetEntry(
        name=name,
        description=description,
        label_space=IMAGENET_1K,
        manifest=manifest,
        load=load,
        as_stored=stored_size is not None,
        how_to_get=how_to_get,
        location=location,
        published_size=published_size,
        download=download,
    )
