"""The synthetic shape–texture demo world (README, "The demo world and its mini zoo"): a model organism of ImageNet's cue conflict.

Definition
----------
There are ``K = 10`` classes. Class ``k`` is shape ``S_k`` (``SHAPE_NAMES[k]``) filled with texture
``T_k`` (``TEXTURE_NAMES[k]``); ``CLASS_NAMES[k] = "<shape>/<texture>"``. Every image is
``WorldConfig.size`` pixels square (default 32) and drawn independently:

* **pose** — rotation θ ~ U[0, 2π), radius r ~ U[0.30, 0.42]·size (every shape lies inside the unit
  disc of its own frame, so inside a disc of radius r), centre jittered uniformly so that this disc
  stays ≥ 1 px inside the frame. The shape mask is rendered 2×2 super-sampled (anti-aliased coverage).
* **texture** — a pattern τ(x, y) ∈ [0, 1] defined in *image* coordinates (it does not rotate with the
  shape, so horizontal and vertical stripes stay different classes), with a random phase, ±8° orientation
  jitter and ±8 % period jitter; periods are in units of ``size / 32`` px. Families: oriented stripes
  (4 orientations), checks, hexagonal dots, binary white noise, blobs (thresholded low-pass noise),
  concentric rings around a random centre, a thin-line grid.
* **colour** — background colour b ~ U[0,1]³ plus a luminance gradient of random direction and
  peak-to-peak amplitude ≤ 0.15; two fill colours c1, c2 ~ U[0,1]³, fill = c1 + (c2 − c1)·τ, with
  every fill colour (the whole segment [c1, c2]) ≥ 0.4 (L2) from b and ‖c1 − c2‖₂ ≥ 0.4
  (rejection-sampled). Colour carries no class information; the fill always contrasts with the
  background (what the shape-only oracle's segmentation relies on).

Splits (``SPLITS``; registered in the dataset catalog as ``demo-world/<split>``, label space
``demo-world``, used as stored)
--------------------------------------------------------------------------------------------------
* ``train`` (``n_train`` = 20,000), ``test`` (``n_test`` = 1,000): shape k with texture k, label k,
  classes cycling (image i has class ``i mod K``: balanced). The zoo's plain recipes train on ``train``
  itself; the texture-/shape-randomised recipes on pools rendered the same way with re-drawn ids
  (``biasbench.registry.zoo.training.training_pool``).
* ``cue-conflict``: every ordered pair (shape i, texture j ≠ i), ``n_per_pair`` images each
  (K·(K−1)·n_per_pair = 900 by default, balanced); label = shape class, ``meta["texture"]`` = texture.
* ``silhouette``: the shape filled flat with c1 (label = shape, no texture).
* ``texture-only``: the texture fills the whole frame (label = texture, no shape, no background).
* ``edges``: the shape's outline (≈1 px, colour c1) on the background (label = shape).
* ``<corruption>-<severity>`` for every corruption of :mod:`biasbench.core.corruptions` and severity
  1…5: the first ``n_corrupt`` images of ``test`` (balanced), corrupted by the same code the ImageNet
  path uses, with a generator seeded by (world seed, corruption, severity), stored as uint8.

Every ImageSet carries ``meta["shape"]`` and ``meta["texture"]`` (int64, −1 where absent); corruption
splits also carry ``meta["corruption"]`` (list of str) and ``meta["severity"]`` (int64).

Why 32 px
---------
The zoo is trained and evaluated on 2 CPU cores: at 32 px a narrow ResNet-50 trains at ~1,000 images/s
and infers at ~2,500 images/s, SIS (:mod:`biasbench.metrics.sis`) can run *exact* BackSelect (32·32 = 1024 pixels, the
design's limit for exact search), and the textures (periods 4–7 px) and shapes (18–27 px across) are
still unambiguous (the oracles in ``tests/oracles.py`` classify them at ~100 %). 48 px costs 2.25× in
every metric for no new phenomenon.

Determinism and caching
-----------------------
Each split draws from its own CPU ``torch.Generator`` seeded from (``cfg.seed``, split name, chunk
index), in fixed chunks of ``CHUNK`` images, so the result is bit-identical for a given config and
``WORLD_VERSION`` (bump it whenever the rendering changes). The manifest hash of a split is the sha256
of the config, the split name and ``WORLD_VERSION``; the catalog caches the uint8 arrays under
``<cache_dir>/datasets/demo-world-<split>-<hash>.npy`` (memory-mapped on later loads). Labels and
metadata are computed without randomness, so they never need caching.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from biasbench.core.corruptions import gaussian_blur
from biasbench.core.errors import InputError, UnknownNameError
from biasbench.core.images import ImageSet, cached_array
from biasbench.core.labels import DEMO_WORLD

WORLD_VERSION = "3"
CHUNK = 1024  # images per random-number chunk (part of the definition: changing it changes the images)
SUPERSAMPLE = 2  # shape masks rendered at 2x2 sub-pixels, averaged to coverage

SHAPE_NAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart", "arrow", "tee",
)  # fmt: skip
TEXTURE_NAMES: tuple[str, ...] = (
    "stripes-h", "stripes-v", "stripes-d", "stripes-a", "checks", "dots", "noise", "blobs", "rings", "grid",
)  # fmt: skip
NUM_CLASSES = len(SHAPE_NAMES)
CLASS_NAMES: list[str] = [f"{s}/{t}" for s, t in zip(SHAPE_NAMES, TEXTURE_NAMES, strict=True)]

BASE_SPLITS: tuple[str, ...] = ("train", "test", "cue-conflict", "silhouette", "texture-only", "edges")

# pose / colour constants (fractions of the image size unless said otherwise)
RADIUS_RANGE = (0.30, 0.42)
MARGIN_PX = 1.0
MIN_COLOUR_DIST = 0.4
GRADIENT_MAX = 0.15


@dataclass(frozen=True)
class WorldConfig:
    """Generator parameters (all of them enter the manifest hash)."""

    size: int = 32
    seed: int = 0
    n_train: int = 20000
    n_test: int = 1000
    n_per_pair: int = 10  # cue-conflict images per (shape, texture) pair: K(K-1) pairs
    n_silhouette: int = 500
    n_texture_only: int = 500
    n_edges: int = 500
    n_corrupt: int = 500  # first n_corrupt test images, for every corruption split

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def corruption_splits() -> list[str]:
    from biasbench.core.corruptions import CORRUPTIONS, SEVERITIES

    return [f"{name}-{s}" for name in CORRUPTIONS for s in SEVERITIES]


SPLITS: tuple[str, ...] = BASE_SPLITS + tuple(corruption_splits())


def manifest_hash(split: str, cfg: WorldConfig = WorldConfig()) -> str:
    blob = json.dumps({"cfg": cfg.to_json(), "split": split, "version": WORLD_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def seed_of(*parts: object) -> int:
    """A 48-bit seed from any parts (stable across runs and platforms)."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


# ----------------------------------------------------------------------------------------------------
# Shapes: inside tests in the shape's own frame (u, v), every shape inside the unit disc
# ----------------------------------------------------------------------------------------------------


def _regular(n: int, radius: float, start: float = math.pi / 2) -> list[tuple[float, float]]:
    return [
        (radius * math.cos(start + 2 * math.pi * i / n), radius * math.sin(start + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _star(points: int, outer: float, inner: float) -> list[tuple[float, float]]:
    out = []
    for i in range(2 * points):
        rad = outer if i % 2 == 0 else inner
        a = math.pi / 2 + math.pi * i / points
        out.append((rad * math.cos(a), rad * math.sin(a)))
    return out


_CROSS_W = 0.30
POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.68, -0.68), (0.68, -0.68), (0.68, 0.68), (-0.68, 0.68)],
    "triangle": _regular(3, 0.98),  # equilateral, centroid at the origin
    "star": _star(5, 0.98, 0.42),
    "cross": [
        (-_CROSS_W, -0.95), (_CROSS_W, -0.95), (_CROSS_W, -_CROSS_W), (0.95, -_CROSS_W), (0.95, _CROSS_W),
        (_CROSS_W, _CROSS_W), (_CROSS_W, 0.95), (-_CROSS_W, 0.95), (-_CROSS_W, _CROSS_W), (-0.95, _CROSS_W),
        (-0.95, -_CROSS_W), (-_CROSS_W, -_CROSS_W),
    ],
    "arrow": [(-0.25, -0.9), (0.25, -0.9), (0.25, 0.05), (0.7, 0.05), (0.0, 0.9), (-0.7, 0.05), (-0.25, 0.05)],
    "tee": [
        (-0.76, 0.62), (-0.76, 0.24), (-0.22, 0.24), (-0.22, -0.9), (0.22, -0.9), (0.22, 0.24),
        (0.76, 0.24), (0.76, 0.62),
    ],
}  # fmt: skip


def _polygon_inside(u: torch.Tensor, v: torch.Tensor, verts: list[tuple[float, float]]) -> torch.Tensor:
    """Even-odd crossing-number test, vectorised over any tensor shape."""
    inside = torch.zeros_like(u, dtype=torch.bool)
    n = len(verts)
    for i in range(n):
        x1, y1 = verts[i]
        x2, y2 = verts[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (v < y1) != (v < y2)
        x_at = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (u < x_at)
    return inside


def shape_inside(k: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Boolean mask: is (u, v) (shape frame, unit-disc bounded) inside shape ``k``?"""
    name = SHAPE_NAMES[k]
    rho2 = u * u + v * v
    if name == "circle":
        return rho2 <= 0.85**2
    if name == "ring":
        return (rho2 <= 0.95**2) & (rho2 >= 0.55**2)
    if name == "crescent":
        return (rho2 <= 0.92**2) & ((u - 0.5) ** 2 + v * v > 0.7**2)
    if name == "heart":
        x, y = u / 0.757, v / 0.757 + 0.2  # the classic implicit heart, max radius 0.97
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    return _polygon_inside(u, v, POLYGONS[name])


# ----------------------------------------------------------------------------------------------------
# Textures: tau(x, y) in [0, 1] in image coordinates (pixel units scaled by size/32)
# ----------------------------------------------------------------------------------------------------

# base period (px at 32 px) and base orientation (degrees) of each texture family
TEXTURE_PERIODS = {
    "stripes-h": 4.0, "stripes-v": 4.0, "stripes-d": 4.5, "stripes-a": 4.5, "checks": 6.0, "dots": 5.0,
    "noise": 1.0, "blobs": 1.8, "rings": 6.5, "grid": 7.0,
}  # fmt: skip
TEXTURE_ANGLES = {"stripes-h": 90.0, "stripes-v": 0.0, "stripes-d": 45.0, "stripes-a": 135.0}
ANGLE_JITTER_DEG = 8.0
PERIOD_JITTER = 0.08


def _square_wave(t: torch.Tensor) -> torch.Tensor:
    """Soft square wave in [0, 1] with period 1."""
    return 0.5 + 0.5 * torch.tanh(2.5 * torch.sin(2 * math.pi * t))


def _u(n: int, g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def texture_field(k: int, n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """``n`` random instances of texture ``k``: float (n, size, size) in [0, 1]."""
    name = TEXTURE_NAMES[k]
    unit = size / 32.0
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / unit
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    X, Y = xx[None], yy[None]
    period = TEXTURE_PERIODS[name] * (1 + PERIOD_JITTER * (2 * _u(n, g) - 1))[:, None, None]
    jitter = math.radians(ANGLE_JITTER_DEG) * (2 * _u(n, g) - 1)
    phase = _u(n, g)[:, None, None]
    if name.startswith("stripes"):
        a = (math.radians(TEXTURE_ANGLES[name]) + jitter)[:, None, None]
        # the stripes' normal points along angle a: stripes-h has horizontal stripes (normal = y axis)
        t = (X * torch.cos(a) + Y * torch.sin(a)) / period + phase
        return _square_wave(t)
    if name == "checks":
        a = jitter[:, None, None]
        p2 = _u(n, g)[:, None, None]
        s = torch.sin(math.pi * ((X * torch.cos(a) + Y * torch.sin(a)) / (period / 2) + 2 * phase))
        c = torch.sin(math.pi * ((-X * torch.sin(a) + Y * torch.cos(a)) / (period / 2) + 2 * p2))
        return 0.5 + 0.5 * torch.tanh(4.0 * s * c)
    if name == "dots":
        # maxima of three plane waves at 120 deg lie on a hexagonal lattice: threshold -> dots
        # (the three phases must sum to 0 for a clean lattice of dots: the third is fixed by the others)
        a0 = 2 * math.pi * _u(n, g)[:, None, None] / 6
        ph1, ph2 = 2 * math.pi * _u(n, g)[:, None, None], 2 * math.pi * _u(n, g)[:, None, None]
        total = torch.zeros(n, size, size)
        for i, ph in enumerate((ph1, ph2, -ph1 - ph2)):
            a = a0 + i * 2 * math.pi / 3
            total = total + torch.cos(2 * math.pi * (X * torch.cos(a) + Y * torch.sin(a)) / period + ph)
        return torch.sigmoid(4.0 * (total - 1.0))
    if name == "noise":
        return (torch.rand(n, size, size, generator=g) < 0.5).float()
    if name == "blobs":
        z = torch.randn(n, 1, size, size, generator=g)
        sigma = TEXTURE_PERIODS["blobs"] * unit
        z = gaussian_blur(z, sigma)[:, 0]
        z = z / z.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None]
        return torch.sigmoid(3.0 * z)
    if name == "rings":
        ang = 2 * math.pi * _u(n, g)[:, None, None]
        dist = _u(n, g, 0.0, 40.0)[:, None, None]
        cx, cy = 16 + dist * torch.cos(ang), 16 + dist * torch.sin(ang)
        rr = torch.sqrt((X - cx) ** 2 + (Y - cy) ** 2)
        return _square_wave(rr / period + phase)
    if name == "grid":
        a = jitter[:, None, None]
        p2 = _u(n, g)[:, None, None]
        s = ((X * torch.cos(a) + Y * torch.sin(a)) / period + phase) % 1.0
        c = ((-X * torch.sin(a) + Y * torch.cos(a)) / period + p2) % 1.0
        width = 1.3 / period  # line width ~1.3 px
        line = torch.maximum(_soft_band(s, width), _soft_band(c, width))
        return line
    raise AssertionError(name)


def _soft_band(t: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """~1 where the periodic coordinate t in [0, 1) is within width/2 of 0, soft edges."""
    d = torch.minimum(t, 1 - t)
    return torch.sigmoid((width / 2 - d) * 24.0)


# ----------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------


@dataclass
class Rendered:
    """A rendered batch: float images in [0, 1] (N, 3, H, W) and what generated them.

    ``mask``: shape coverage (N, H, W) in [0, 1] (anti-aliased; all ones for texture-only, the outline
    for edges); ``shape`` / ``texture``: int64 (N,), −1 where absent; ``background``: (N, 3) colour b;
    ``colours``: (N, 2, 3) fill colours c1, c2; ``pose``: (N, 4) = (cx, cy, θ, r) in pixels/radians.
    """

    images: torch.Tensor
    mask: torch.Tensor
    shape: torch.Tensor
    texture: torch.Tensor
    background: torch.Tensor
    colours: torch.Tensor
    pose: torch.Tensor


def _segment_distance(b: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """L2 distance from point b to the segment [c1, c2] (broadcasting over leading dims)."""
    d = c2 - c1
    t = (((b - c1) * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    return (b - (c1 + t[..., None] * d)).norm(dim=-1)


def _colours(n: int, g: torch.Generator, tries: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Background b and fill colours c1, c2: every colour of the fill (the segment [c1, c2]: textures
    mix the two) is ≥ 0.4 from b, and ‖c1 − c2‖ ≥ 0.4. Rejection-sampled: the first of ``tries``
    candidate pairs that passes, else the pair that comes closest (rare)."""
    b = torch.rand(n, 3, generator=g)
    cand = torch.rand(n, tries, 2, 3, generator=g)
    c1, c2 = cand[:, :, 0], cand[:, :, 1]
    score = torch.minimum(_segment_distance(b[:, None], c1, c2), (c1 - c2).norm(dim=-1)) - MIN_COLOUR_DIST
    ok = score >= 0
    idx = torch.where(ok.any(1), ok.float().argmax(1), score.argmax(1))
    rows = torch.arange(n)
    return b, c1[rows, idx], c2[rows, idx]


def _shape_masks(shape: torch.Tensor, pose: torch.Tensor, size: int, outline: bool = False) -> torch.Tensor:
    """Anti-aliased coverage (N, size, size) of each image's shape (or its ≈1 px outline)."""
    n = shape.shape[0]
    ss = SUPERSAMPLE
    coords = (torch.arange(size * ss, dtype=torch.float32) + 0.5) / ss
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    hi = torch.zeros(n, size * ss, size * ss)
    for k in range(NUM_CLASSES):
        idx = (shape == k).nonzero().flatten()
        if not idx.numel():
            continue
        cx, cy, th, r = (pose[idx, i, None, None] for i in range(4))
        dx, dy = xx[None] - cx, yy[None] - cy
        cos, sin = torch.cos(th) / r, torch.sin(th) / r
        u = cos * dx + sin * dy
        v = cos * dy - sin * dx
        hi[idx] = shape_inside(k, u, v).float()
    if outline:
        h = hi[:, None]
        dil = F.max_pool2d(h, 3, 1, 1)
        ero = -F.max_pool2d(-h, 3, 1, 1)
        hi = (dil - ero)[:, 0]
    return F.avg_pool2d(hi[:, None], ss)[:, 0]


def render(
    shape: torch.Tensor,
    texture: torch.Tensor,
    g: torch.Generator,
    size: int = 32,
    mode: str = "textured",
) -> Rendered:
    """Render one image per (shape, texture) pair, drawing pose and colours from ``g`` (CPU generator).

    ``mode``: ``textured`` (shape filled with texture), ``silhouette`` (flat fill c1; texture ignored),
    ``texture-only`` (texture fills the frame; shape ignored), ``edges`` (outline in c1 on the
    background; texture ignored). The draws are the same for every mode, in a fixed order, so the same
    generator state gives the same pose and colours whatever the mode.
    """
    shape = torch.as_tensor(shape, dtype=torch.long)
    texture = torch.as_tensor(texture, dtype=torch.long)
    n = shape.shape[0]
    r = _u(n, g, *RADIUS_RANGE) * size
    jit = (size / 2 - r - MARGIN_PX).clamp_min(0)
    cx = size / 2 + jit * (2 * _u(n, g) - 1)
    cy = size / 2 + jit * (2 * _u(n, g) - 1)
    th = _u(n, g, 0, 2 * math.pi)
    pose = torch.stack([cx, cy, th, r], dim=1)
    b, c1, c2 = _colours(n, g)
    gdir = _u(n, g, 0, 2 * math.pi)
    gamp = _u(n, g, 0, GRADIENT_MAX)
    tau = torch.zeros(n, size, size)
    for k in range(NUM_CLASSES):
        idx = (texture == k).nonzero().flatten()
        # every texture draws its randomness even when unused, so modes share the same stream
        field = texture_field(k, int(idx.numel()), size, g)
        if idx.numel():
            tau[idx] = field
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    ramp = xx[None] * torch.cos(gdir)[:, None, None] + yy[None] * torch.sin(gdir)[:, None, None]
    bg = b[:, :, None, None] + (gamp[:, None, None] * ramp)[:, None]
    fill = c1[:, :, None, None] + (c2 - c1)[:, :, None, None] * tau[:, None]
    if mode == "texture-only":
        mask = torch.ones(n, size, size)
        img = fill
        shape = torch.full_like(shape, -1)
    elif mode in ("textured", "silhouette", "edges"):
        mask = _shape_masks(shape, pose, size, outline=(mode == "edges"))
        if mode != "textured":
            fill = c1[:, :, None, None].expand(n, 3, size, size)
            texture = torch.full_like(texture, -1)
        img = bg * (1 - mask[:, None]) + fill * mask[:, None]
    else:
        raise InputError(f"unknown render mode {mode!r}")
    return Rendered(
        images=img.clamp(0, 1),
        mask=mask,
        shape=shape,
        texture=texture,
        background=b,
        colours=torch.stack([c1, c2], dim=1),
        pose=pose,
    )


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


# ----------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------


def split_labels(split: str, cfg: WorldConfig = WorldConfig()) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(shape ids, texture ids, render mode) of a base split — deterministic, no randomness."""
    k = NUM_CLASSES
    if split == "cue-conflict":
        pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
        s = torch.tensor([i for i, _ in pairs]).repeat_interleave(cfg.n_per_pair)
        t = torch.tensor([j for _, j in pairs]).repeat_interleave(cfg.n_per_pair)
        return s, t, "textured"
    n = {
        "train": cfg.n_train,
        "test": cfg.n_test,
        "silhouette": cfg.n_silhouette,
        "texture-only": cfg.n_texture_only,
        "edges": cfg.n_edges,
    }.get(split)
    if n is None:
        raise UnknownNameError(f"unknown demo-world split {split!r}; known: {', '.join(SPLITS)}")
    cls = torch.arange(n) % k
    mode = {"train": "textured", "test": "textured"}.get(split, split)
    return cls, cls.clone(), mode


def split_size(split: str, cfg: WorldConfig = WorldConfig()) -> int:
    """The number of images of a split, without rendering it: a corruption split holds the first
    ``n_corrupt`` test images."""
    if parse_corruption(split):
        return min(cfg.n_corrupt, cfg.n_test)
    return int(split_labels(split, cfg)[0].shape[0])


def render_pool(
    name: str,
    shape: torch.Tensor,
    texture: torch.Tensor,
    cfg: WorldConfig = WorldConfig(),
    mode: str = "textured",
    limit: int | None = None,
) -> Rendered:
    """Render a labelled pool in fixed chunks of ``CHUNK`` images with per-chunk seeds
    (``cfg.seed``, ``name``, chunk index). ``limit`` renders only the chunks covering the first
    ``limit`` images (a prefix identical to the full pool's). Used for the splits and for training."""
    n = shape.shape[0] if limit is None else min(limit, shape.shape[0])
    parts = []
    for c, start in enumerate(range(0, n, CHUNK)):
        g = torch.Generator().manual_seed(seed_of("demo-world", cfg.seed, name, c))
        sl = slice(start, start + CHUNK)
        parts.append(render(shape[sl], texture[sl], g, cfg.size, mode))
    if not parts:
        raise InputError(f"pool {name!r} is empty under {cfg}")
    out = Rendered(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Rendered)))
    if limit is not None:
        out = Rendered(*(getattr(out, f.name)[:n] for f in dataclasses.fields(Rendered)))
    return out


def render_split(split: str, cfg: WorldConfig = WorldConfig(), limit: int | None = None) -> Rendered:
    """Render a base split (images as float, with masks and generator parameters)."""
    s, t, mode = split_labels(split, cfg)
    return render_pool(split, s, t, cfg, mode, limit)


def parse_corruption(split: str) -> tuple[str, int] | None:
    from biasbench.core.corruptions import CORRUPTIONS, SEVERITIES

    name, _, sev = split.rpartition("-")
    if name in CORRUPTIONS and sev.isdigit() and int(sev) in SEVERITIES:
        return name, int(sev)
    return None


def _images(split: str, cfg: WorldConfig, cache_dir: Path | None = None) -> np.ndarray:
    """uint8 (N, 3, H, W) of any split (a corruption split corrupts the ``test`` split, rendered once
    and cached under ``cache_dir`` like any split)."""
    parsed = parse_corruption(split)
    if parsed is None:
        return to_uint8(render_split(split, cfg).images).numpy()
    from biasbench.core.corruptions import corrupt

    name, sev = parsed
    base = torch.from_numpy(np.array(_cached_or_built("test", cfg, cache_dir)[: cfg.n_corrupt]))
    g = torch.Generator().manual_seed(seed_of("demo-world", cfg.seed, name, sev))
    out = []
    for start in range(0, base.shape[0], 256):
        x = base[start : start + 256].float() / 255.0
        out.append(to_uint8(corrupt(x, name, sev, g)))
    return torch.cat(out).numpy()


def _cached_or_built(split: str, cfg: WorldConfig, cache_dir: Path | None) -> np.ndarray:
    if cache_dir is None:
        return _images(split, cfg)

    key = f"demo-world-{split}-{manifest_hash(split, cfg)}"
    return cached_array(Path(cache_dir), key, lambda: _images(split, cfg, cache_dir))


def generate(split: str, cfg: WorldConfig = WorldConfig(), cache_dir: Path | None = None) -> ImageSet:
    """The ``demo-world/<split>`` ImageSet (rendered now, or memory-mapped from ``cache_dir``)."""
    parsed = parse_corruption(split)
    base = "test" if parsed else split
    s, t, mode = split_labels(base, cfg)
    if parsed:
        s, t = s[: cfg.n_corrupt], t[: cfg.n_corrupt]
    if mode == "texture-only":
        labels, s = t, torch.full_like(s, -1)
    else:
        labels = s
    if mode in ("silhouette", "edges"):
        t = torch.full_like(t, -1)
    arr = _cached_or_built(split, cfg, cache_dir)
    meta: dict = {"shape": s.clone(), "texture": t.clone()}
    if parsed:
        meta["corruption"] = [parsed[0]] * len(labels)
        meta["severity"] = torch.full((len(labels),), parsed[1], dtype=torch.long)
    return ImageSet(
        name=f"{DEMO_WORLD}/{split}",
        images=torch.from_numpy(arr),
        labels=labels.clone(),
        class_names=list(CLASS_NAMES),
        label_space=DEMO_WORLD,
        item_ids=[f"{split}/{i:05d}" for i in range(len(labels))],
        manifest_hash=manifest_hash(split, cfg),
        meta=meta,
    )
