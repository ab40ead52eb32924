"""Streamed image sets: a dataset larger than the cache budget, decoded batch by batch in bounded memory.

A dataset that fits the cache budget is decoded once and kept as a memory-mapped uint8 ``.npy``
(:func:`biasbench.core.images.cached_array`). One that does not (ImageNet-C and -C̄: 7 M JPEGs) is
handed to metrics as :class:`StreamedImages`: a stand-in for the uint8 (N, 3, H, W) tensor with its
``shape``, ``dtype`` and indexing (an index gives another view, nothing is decoded), whose pixels are
decoded only when ``EvalContext.predict`` / ``EvalContext.to_device`` asks for a batch.

* **CPU decode** is :func:`biasbench.core.images.image_decoder` (PIL, the cached path's own decode), on
  a thread pool: the streamed pixels equal the cached ones exactly.
* **GPU decode** (a CUDA device and JPEG files): ``torchvision.io.decode_jpeg(..., device="cuda")`` on the
  whole batch (nvJPEG), then the same tensor resize + centre crop on the device. nvJPEG's IDCT and
  chroma upsampling round differently from libjpeg-turbo, so pixels may differ by a few levels (the
  decoders' documented rounding); any failure (a PNG, a CMYK JPEG, no nvJPEG) falls back to the CPU path.
* **Prefetch** (:func:`prefetching`): while the model runs on one batch, the next ``depth`` batches are
  decoded in a background thread (pinned memory on CUDA, so ``to_device``'s copy is non-blocking).
  At most ``depth + 1`` decoded batches are alive at a time, whatever the size of the set.

:data:`DECODE_STATS` counts decoded images and the peak of decoded images alive at once (the
grouped-execution benchmark and the bounded-memory test read it).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biasbench.core.errors import InputError
from biasbench.core.images import cached_in_chunks, decode_files, image_decoder
from biasbench.core.preprocess import Preprocess

JPEG_SUFFIXES = (".jpg", ".jpeg")
#: the default cache budget: this fraction of the free disk under the cache, plus what it holds already
DEFAULT_BUDGET_FRACTION = 0.5


class DecodeStats:
    """Images decoded so far (``decoded``) and the most decoded images alive at once (``peak_alive``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.decoded = 0
            self.alive = 0
            self.peak_alive = 0

    def _born(self, t: torch.Tensor, n: int) -> None:
        with self._lock:
            self.decoded += n
            self.alive += n
            self.peak_alive = max(self.peak_alive, self.alive)
        weakref.finalize(t, self._died, n)

    def _died(self, n: int) -> None:
        with self._lock:
            self.alive -= n


DECODE_STATS = DecodeStats()

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _one_torch_thread() -> None:
    """Decode threads run their torch ops (resize) on one intra-op thread each: the pool is the
    parallelism, and OpenMP teams of several threads per decode thread, beside the model's own, would
    oversubscribe the cores (the setting is per thread; the model's threads are untouched)."""
    torch.set_num_threads(1)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(
                max_workers=max(1, os.cpu_count() or 1),
                thread_name_prefix="decode",
                initializer=_one_torch_thread,
            )
        return _POOL


class StreamedImages:
    """uint8 (N, 3, H, W) images decoded on demand from ``paths`` with ``pre`` (``None``: as stored, every
    image ``size``). Indexing (slice, int tensor, bool mask, list) gives a view; an int gives one decoded
    (3, H, W) image; :meth:`materialize` decodes the view."""

    dtype = torch.uint8
    ndim = 4

    def __init__(
        self,
        paths: Sequence[Path],
        pre: Preprocess | None,
        size: tuple[int, int],
        index: np.ndarray | None = None,
    ) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self.pre = pre
        self.size = (int(size[0]), int(size[1]))
        self.index = np.arange(len(self.paths)) if index is None else np.asarray(index, dtype=np.int64)

    # -- tensor-like -----------------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), 3, *self.size))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        """Bytes the decoded view would take (what streaming avoids holding)."""
        return len(self.index) * 3 * self.size[0] * self.size[1]

    def __getitem__(self, key: Any) -> StreamedImages | torch.Tensor:
        if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.ndim == 0):
            return self._view(self.index[[int(key)]]).materialize()[0]
        if isinstance(key, slice):
            return self._view(self.index[key])
        k = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        if k.dtype == np.bool_:
            if k.shape != (len(self.index),):
                raise IndexError(f"boolean index of shape {k.shape} for {len(self.index)} images")
            return self._view(self.index[k])
        return self._view(self.index[k.astype(np.int64)])

    def _view(self, index: np.ndarray) -> StreamedImages:
        return StreamedImages(self.paths, self.pre, self.size, index)

    def __repr__(self) -> str:
        return f"StreamedImages({len(self)} of {len(self.paths)} files, {tuple(self.shape)}, pre={self.pre})"

    # -- decoding --------------------------------------------------------------------------------
    def materialize(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The view's pixels, uint8 (n, 3, H, W): decoded on ``device`` when it is CUDA and the files are
        JPEGs (falling back to the CPU on any decoder error), else on the CPU."""
        paths = [self.paths[i] for i in self.index.tolist()]
        dev = torch.device(device) if device is not None else torch.device("cpu")
        out: torch.Tensor | None = None
        if dev.type == "cuda" and paths and all(p.suffix.lower() in JPEG_SUFFIXES for p in paths):
            try:
                out = decode_batch_tensor(paths, self.pre, dev)
            except RuntimeError:
                out = None  # nvJPEG refused a file (CMYK, progressive edge cases): the CPU decodes it
        if out is None:
            out = decode_batch_cpu(paths, self.pre)
        if tuple(out.shape[2:]) != self.size and len(paths):
            raise InputError(
                f"images decode to {tuple(out.shape[2:])}, expected {self.size} (used as stored, every "
                f"image must be that size): {paths[0].parent}"
            )
        DECODE_STATS._born(out, len(paths))
        return out


def decode_batch_cpu(paths: Sequence[Path], pre: Preprocess | None) -> torch.Tensor:
    """uint8 (n, 3, H, W) on the CPU: the cached path's decode (PIL), one image per pool thread."""
    if not paths:
        return torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    one = image_decoder(pre)
    arrays = list(_pool().map(one, paths))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"images differ in size ({sorted(shapes)[:3]}…); give a preprocessing with a crop")
    return torch.from_numpy(np.stack(arrays))


def decode_batch_tensor(paths: Sequence[Path], pre: Preprocess | None, device: torch.device) -> torch.Tensor:
    """uint8 (n, 3, H, W) on ``device``: ``torchvision.io.decode_jpeg`` on the batch (nvJPEG on CUDA,
    libjpeg-turbo on the CPU), then resize (antialiased, ``pre.interpolation``) + centre crop as tensors
    on the device: the GPU decode path, runnable on the CPU for tests."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as F

    from biasbench.core.images import _interp

    data = [read_file(str(p)) for p in paths]
    decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    out = []
    for img in decoded:
        if pre is not None:
            img = F.resize(img, [pre.resize], interpolation=_interp(pre.interpolation), antialias=True)
            img = F.center_crop(img, [pre.crop, pre.crop])
        out.append(img)
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------------
# Prefetching: decode the next batches while the model runs on this one
# ----------------------------------------------------------------------------------------------------


class Prefetcher:
    """``source[sl]`` -> the decoded batch of ``images[sl]``; after each request the next ``depth``
    slices of the same length are decoded in a background thread. A request that was not prefetched (a
    batch size halved on out-of-memory) is decoded on the spot."""

    def __init__(self, images: StreamedImages, device: torch.device, depth: int = 2) -> None:
        self.images, self.device, self.depth = images, device, max(0, depth)
        self.n = len(images)
        self._bg = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="prefetch", initializer=_one_torch_thread
        )
        self._pending: dict[tuple[int, int], Future[torch.Tensor]] = {}

    def _decode(self, start: int, stop: int) -> torch.Tensor:
        view = self.images[start:stop]
        assert isinstance(view, StreamedImages)
        x = view.materialize(self.device)
        if self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory()
        return x

    def __getitem__(self, sl: slice) -> torch.Tensor:
        start, stop = sl.start or 0, min(sl.stop if sl.stop is not None else self.n, self.n)
        fut = self._pending.pop((start, stop), None)
        for key in [k for k in self._pending if k[0] < stop]:  # stale guesses (a halved batch size)
            self._pending.pop(key).cancel()
        step, nxt = max(1, stop - start), stop
        for _ in range(self.depth):
            if nxt >= self.n:
                break
            key = (nxt, min(nxt + step, self.n))
            if key not in self._pending:
                self._pending[key] = self._bg.submit(self._decode, *key)
            nxt = key[1]
        return fut.result() if fut is not None else self._decode(start, stop)

    def close(self) -> None:
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()
        self._bg.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def prefetching(images: Any, device: torch.device, depth: int = 2) -> Iterator[Any]:
    """``images`` itself when it is a tensor; a :class:`Prefetcher` over it when it is streamed."""
    if not isinstance(images, StreamedImages):
        yield images
        return
    pf = Prefetcher(images, device, depth)
    try:
        yield pf
    finally:
        pf.close()


def to_tensor(images: Any, device: torch.device | None = None) -> torch.Tensor:
    """A uint8 tensor of ``images`` (decoded now when it is streamed)."""
    return images.materialize(device) if isinstance(images, StreamedImages) else images


# ----------------------------------------------------------------------------------------------------
# The cache budget: cache a set when it fits, stream it otherwise
# ----------------------------------------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


#: the largest cache budget accepted (1 EiB: anything larger is a typo)
MAX_CACHE_BUDGET = 2**60


def parse_size(text: str) -> int:
    """Bytes of a size such as ``500M``, ``20G``, ``1.5T`` or ``123456`` (binary units)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError as e:
        raise InputError(f"cache budget {text!r}: expected a size such as 500M, 20G or 1.5T") from e
    if not math.isfinite(value) or value < 0:
        raise InputError(f"cache budget {text!r}: expected a finite, non-negative size such as 500M or 20G")
    nbytes = value * _UNITS[unit]
    if nbytes > MAX_CACHE_BUDGET:
        raise InputError(
            f"cache budget {text!r} is more than {MAX_CACHE_BUDGET // 2**50} PiB; give a real disk size"
        )
    return int(nbytes)


@dataclass(frozen=True)
class LoadOptions:
    """How a dataset is loaded, passed explicitly to the loads that take it (a parameter named
    ``options``): ``cache_budget``, the decoded-dataset cache budget in bytes (``--cache-budget``;
    None: :func:`cache_budget`'s default)."""

    cache_budget: int | None = None


def cache_used(cache_dir: Path) -> int:
    """Bytes the decoded-dataset cache holds now (``<cache>/datasets/*.npy``)."""
    d = Path(cache_dir) / "datasets"
    return sum(f.stat().st_size for f in d.glob("*.npy")) if d.is_dir() else 0


def cache_budget(cache_dir: Path, explicit: int | None = None) -> int:
    """The budget of the decoded-dataset cache: ``explicit`` (``LoadOptions.cache_budget``, from
    ``--cache-budget``), else ``$BIASBENCH_CACHE_BUDGET``, else half the free disk under the cache plus
    what it holds already."""
    if explicit is not None:
        return explicit
    env = os.environ.get("BIASBENCH_CACHE_BUDGET")
    if env:
        return parse_size(env)
    probe = Path(cache_dir)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return int(shutil.disk_usage(probe).free * DEFAULT_BUDGET_FRACTION) + cache_used(cache_dir)


def cached_or_streamed(
    cache_dir: Path,
    key: str,
    paths: Sequence[Path],
    pre: Preprocess | None,
    size: tuple[int, int],
    decode: Callable[[list[Path]], np.ndarray] | None = None,
    *,
    options: LoadOptions | None = None,
) -> np.ndarray | StreamedImages:
    """The decoded set: its memory-mapped cache file when it exists or fits the budget
    (:func:`cache_budget` with ``options.cache_budget``; built now in bounded memory, chunk by chunk,
    with ``decode(paths)``, default :func:`decode_files`), else a :class:`StreamedImages` over ``paths``."""
    path = Path(cache_dir) / "datasets" / f"{key}.npy"
    need = len(paths) * 3 * size[0] * size[1]
    if not path.exists() and cache_used(cache_dir) + need > cache_budget(
        cache_dir, (options or LoadOptions()).cache_budget
    ):
        return StreamedImages(paths, pre, size)
    files = list(paths)
    one = decode or (lambda chunk: decode_files(chunk, pre))
    return cached_in_chunks(Path(cache_dir), key, len(files), size, lambda sl: one(files[sl]))


def as_images(arr: np.ndarray | StreamedImages) -> torch.Tensor | StreamedImages:
    """What an :class:`~biasbench.core.images.ImageSet` holds: a tensor over a (memory-mapped) array, or
    the streamed set itself."""
    return arr if isinstance(arr, StreamedImages) else torch.from_numpy(arr)
