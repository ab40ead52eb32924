"""Common image corruptions on device tensors (ImageNet-C style), for the demo world and ImageNet alike.

Every corruption takes a float batch ``x`` in [0, 1] of shape (N, 3, H, W) on any device, a
``severity`` in 1…5 and an optional seeded ``torch.Generator`` on the same device, and returns a
batch of the same shape, dtype and device, clipped to [0, 1]. Nothing leaves the device except JPEG
(torchvision's codec runs on CPU uint8; the batch goes there and back).

Definitions follow Hendrycks & Dietterich (2019, ImageNet-C, ``make_imagenet_c.py``); the constants are
theirs, for 224-px images. Where a constant is a length in pixels it is scaled by ``H / 224`` (the
image's height relative to ImageNet-C's), so a 32-px image gets the same blur *relative to the
image*; noise, contrast, brightness, JPEG quality and the pixelation factor are size-free.

============== ============================================ ===============================
name           definition                                   severity 1 … 5
============== ============================================ ===============================
gaussian_noise x + N(0, c²)                                 c = .08 .12 .18 .26 .38
shot_noise     Poisson(c·x) / c                             c = 60 25 12 5 3
impulse_noise  salt & pepper on a fraction c of the values  c = .03 .06 .09 .17 .27
gaussian_blur  Gaussian blur, σ = c · H/224 px (reflect)    c = 1 2 3 4 6
contrast       (x − m)·c + m, m = the image's mean          c = .4 .3 .2 .1 .05
brightness     HSV value V ← clip(V + c): x·V'/V            c = .1 .2 .3 .4 .5
jpeg           JPEG encode/decode at quality c              c = 25 18 15 10 7
pixelate       downsample to c·H, nearest upsample (*)      c = .6 .5 .4 .3 .25
============== ============================================ ===============================

(*) ImageNet-C resizes down and up with PIL's BOX filter. With it the exact 2× of severity 2 (c = .5)
lands closer to the clean image than severity 1's irregular 1–2 px blocks (c = .6), at 32 px and at
224 px alike; antialiased bilinear down-sampling plus pixel-centre-aligned nearest up-sampling
(``nearest-exact``) keeps the same block sizes and makes the distortion grow with severity.

Severities are monotone: the mean squared distance to the clean batch grows with severity
(asserted in ``tests/test_world.py``). Randomness comes only from ``generator`` (draw order fixed),
so a seeded generator gives the same corrupted batch every time on a given device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from biasbench.core.errors import InputError, UnknownNameError

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 224  # ImageNet-C's image size, to which pixel-length constants refer

Corruption = Callable[[torch.Tensor, int, "torch.Generator | None"], torch.Tensor]


def _c(values: tuple[float, ...], severity: int) -> float:
    if severity not in SEVERITIES:
        raise InputError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return values[severity - 1]


def gaussian_blur(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Gaussian blur of (N, C, H, W) with σ in pixels: one float, or a (N,) tensor (one σ per image).

    Separable, kernel radius ⌈3σ_max⌉, reflect padding (replicate where the image is smaller than the
    kernel); σ ≤ 0 leaves an image unchanged.
    """
    n, c, h, w = x.shape
    sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
    if sig.numel() == 1:
        sig = sig.expand(n)
    smax = float(sig.max()) if n else 0.0
    if smax <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * smax))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    safe = sig.clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (t[None] / safe) ** 2)
    k = torch.where(sig[:, None] > 0, k, (t[None] == 0).to(x.dtype))
    k = k / k.sum(dim=1, keepdim=True)  # (N, 2r+1)
    mode = "reflect" if radius < min(h, w) else "replicate"
    xp = F.pad(x, (radius, radius, radius, radius), mode=mode).reshape(
        1, n * c, h + 2 * radius, w + 2 * radius
    )
    kk = k.repeat_interleave(c, dim=0)  # (N*C, 2r+1)
    xp = F.conv2d(xp, kk.view(n * c, 1, 1, -1), groups=n * c)
    xp = F.conv2d(xp, kk.view(n * c, 1, -1, 1), groups=n * c)
    return xp.view(n, c, h, w)


def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    c = _c((0.08, 0.12, 0.18, 0.26, 0.38), severity)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + c * noise).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    c = _c((60, 25, 12, 5, 3), severity)
    return (torch.poisson(x.float() * c, generator=generator) / c).to(x.dtype).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    c = _c((0.03, 0.06, 0.09, 0.17, 0.27), severity)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    out = x.clone()
    out[u < c / 2] = 0.0
    out[u > 1 - c / 2] = 1.0
    return out


def blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    c = _c((1, 2, 3, 4, 6), severity)
    return gaussian_blur(x, c * x.shape[-2] / REFERENCE_SIZE).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    c = _c((0.4, 0.3, 0.2, 0.1, 0.05), severity)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - m) * c + m).clamp(0, 1)


def brightness(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageNet-C brightness: V += c in HSV. Hue and saturation fixed ⇒ RGB scales by V'/V (black → grey c)."""
    c = _c((0.1, 0.2, 0.3, 0.4, 0.5), severity)
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    scaled = x * (v2 / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, v2.expand_as(x)).clamp(0, 1)


def jpeg(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    from torchvision.io import decode_jpeg, encode_jpeg

    q = int(_c((25, 18, 15, 10, 7), severity))
    u8 = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if u8.shape[0] == 0:
        return x.clone()
    enc = encode_jpeg(list(u8.unbind(0)), quality=q)
    dec = decode_jpeg(enc)
    return torch.stack(dec).to(device=x.device, dtype=x.dtype) / 255.0


def pixelate(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    c = _c((0.6, 0.5, 0.4, 0.3, 0.25), severity)
    h, w = x.shape[-2:]
    small = F.interpolate(
        x, size=(max(1, round(h * c)), max(1, round(w * c))), mode="bilinear", antialias=True
    )
    return F.interpolate(small, size=(h, w), mode="nearest-exact").clamp(0, 1)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg": jpeg,
    "pixelate": pixelate,
}


def corrupt(
    x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1…5) to a float [0, 1] batch (N, 3, H, W)."""
    if name not in CORRUPTIONS:
        raise UnknownNameError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if x.ndim != 4 or not x.is_floating_point():
        raise InputError(f"corrupt expects a float (N, C, H, W) batch, got {tuple(x.shape)} {x.dtype}")
    return CORRUPTIONS[name](x, severity, generator)
