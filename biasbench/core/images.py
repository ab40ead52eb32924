"""Image sets: uint8 images on the CPU with their labels, and the helpers that make them.

An :class:`ImageSet` is what a dataset loads and a metric receives (``docs/architecture.md`` §3): uint8 (N, 3, H, W)
(possibly memory-mapped), int64 labels in a label space (:mod:`biasbench.core.labels`), item ids and
per-item metadata, and a manifest hash that identifies its exact content. Images stay uint8 until the
device (``docs/architecture.md``, speed principles). :func:`decode_files` decodes image files once
per preprocessing; :func:`cached_array` keeps the result as a memory-mapped ``.npy`` under the cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:  # pragma: no cover
    from torchvision.transforms.functional import InterpolationMode

from biasbench.core.errors import InputError
from biasbench.core.hashing import sha256_text
from biasbench.core.preprocess import Preprocess


@dataclass
class ImageSet:
    """Images for a metric: uint8 (N, 3, H, W) on the CPU (possibly memory-mapped), with labels.

    ``images`` may also be a :class:`~biasbench.core.streaming.StreamedImages` (a set larger than the
    cache budget): the same shape, dtype and indexing, decoded batch by batch when a metric's
    ``ctx.predict`` / ``ctx.to_device`` asks for the pixels.
    ``labels``: int64 (N,) indices into ``class_names`` (-1 = unknown). ``meta`` holds extra per-item
    columns (e.g. ``texture`` labels of cue-conflict stimuli, a corruption ``severity``).
    ``manifest_hash`` identifies the exact content (part of every result's ``config_hash``).
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    label_space: str
    item_ids: list[str]
    manifest_hash: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise InputError(
                f"dataset {self.name!r}: images must be uint8 (N, 3, H, W), got "
                f"{tuple(self.images.shape)} {self.images.dtype}"
            )
        n = self.images.shape[0]
        if self.labels.shape != (n,):
            raise InputError(
                f"dataset {self.name!r}: {n} images but labels of shape {tuple(self.labels.shape)}"
            )
        if len(self.item_ids) != n:
            raise InputError(f"dataset {self.name!r}: {n} images but {len(self.item_ids)} item ids")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor | list[int]) -> ImageSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        meta = {
            k: (v[idx] if isinstance(v, torch.Tensor) else [v[i] for i in idx.tolist()])
            for k, v in self.meta.items()
        }
        return ImageSet(
            name=self.name,
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            label_space=self.label_space,
            item_ids=[self.item_ids[i] for i in idx.tolist()],
            manifest_hash=sha256_text(self.manifest_hash + ":" + ",".join(map(str, idx.tolist()))),
            meta=meta,
        )


# torchvision is imported where it is used: importing it pulls in torch._dynamo (seconds), which a
# process that only reads declarations (a report reading the metrics' key roles) never needs
def _interp(name: str) -> InterpolationMode:
    from torchvision.transforms.functional import InterpolationMode

    try:
        return InterpolationMode(name)
    except ValueError as e:
        raise InputError(f"unknown interpolation {name!r}") from e


def decode_transform(pre: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    from torchvision.transforms import v2 as T

    tf = T.Compose(
        [
            T.PILToTensor(),
            T.Resize(pre.resize, interpolation=_interp(pre.interpolation), antialias=True),
            T.CenterCrop(pre.crop),
        ]
    )

    def run(img: Image.Image) -> torch.Tensor:
        return tf(img.convert("RGB"))

    return run


def image_decoder(pre: Preprocess | None) -> Callable[[Path], np.ndarray]:
    """``path -> uint8 (3, H, W)``: PIL decode, RGB, then ``pre``'s resize + crop (``None``: as
    stored). The one CPU decode of every dataset, cached (:func:`decode_files`) or streamed
    (:mod:`biasbench.core.streaming`), so both give the same pixels."""
    from torchvision.transforms import v2 as T

    tf = decode_transform(pre) if pre is not None else (lambda im: T.PILToTensor()(im.convert("RGB")))

    def one(p: Path) -> np.ndarray:
        with Image.open(p) as im:
            return tf(im).numpy()

    return one


def decode_files(paths: list[Path], pre: Preprocess | None) -> np.ndarray:
    """Decode images to uint8 (N, 3, H, W); ``pre=None`` keeps them as stored (all the same size)."""
    one = image_decoder(pre)
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(one, paths))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"images differ in size ({sorted(shapes)[:3]}…); give a preprocessing with a crop")
    return np.stack(arrays) if arrays else np.zeros((0, 3, 1, 1), np.uint8)


def cached_array(cache_dir: Path, key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """Memory-mapped uint8 array under ``cache_dir/datasets/<key>.npy``, built once, written atomically."""
    path = cache_dir / "datasets" / f"{key}.npy"
    if path.exists():
        return np.load(path, mmap_mode="c")
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = build()
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    return np.load(path, mmap_mode="c")


#: images decoded per chunk while a cache file is built (:func:`cached_in_chunks`): ~150 MB at 224 px
CACHE_BUILD_CHUNK = 1024


def cached_in_chunks(
    cache_dir: Path,
    key: str,
    n: int,
    size: tuple[int, int],
    decode: Callable[[slice], np.ndarray],
) -> np.ndarray:
    """Like :func:`cached_array`, for sets that may exceed the memory: ``decode(slice)`` -> uint8
    (len, 3, H, W) of those images, written chunk by chunk (:data:`CACHE_BUILD_CHUNK`) into a
    temporary ``.npy`` memory map, renamed into place when complete. Memory stays at one chunk
    whatever ``n`` (ImageNet val at 224 px is 7.5 GB); an error or a kill leaves no cache file (and an
    error no temporary one)."""
    path = cache_dir / "datasets" / f"{key}.npy"
    if path.exists():
        return np.load(path, mmap_mode="c")
    if n == 0:
        return cached_array(cache_dir, key, lambda: np.zeros((0, 3, *size), np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, *size))
        for start in range(0, n, CACHE_BUILD_CHUNK):
            sl = slice(start, min(start + CACHE_BUILD_CHUNK, n))
            chunk = decode(sl)
            if chunk.shape != (sl.stop - sl.start, 3, *size):
                raise InputError(
                    f"images {sl.start}..{sl.stop - 1} decode to {tuple(chunk.shape)}, expected "
                    f"{(sl.stop - sl.start, 3, *size)}"
                )
            out[sl] = chunk
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="c")


def manifest_of(root: Path, files: list[tuple[str, int]]) -> str:
    """Content hash of labeled files under ``root``: (relative path, label, size) of each, in order."""
    h = hashlib.sha256()
    for rel, label in files:
        h.update(f"{rel}\t{label}\t{(root / rel).stat().st_size}\n".encode())
    return h.hexdigest()[:16]
