"""Known-answer oracles for the demo world: a texture-only and a shape-only classifier.

Both are plain ``nn.Module``s that take the world's images as float [0, 1] (N, 3, H, W) and return
logits over its K classes, like a zoo model behind ``ModelWrapper``. They are built from the world
generator's own definitions (``biasbench.harness.datasets.synthetic``), so metrics can be pinned on them:
on ``demo-world/cue-conflict`` the shape oracle's shape bias is exactly 1 and the texture oracle's
0.002 (≤ 0.005 asserted; see the accuracies below).

Shared step — segmentation by colour (:func:`segment`). The world's background is a flat colour plus a
linear luminance ramp and the border ring of every shape image is pure background (shapes stay ≥ 1 px
inside the frame); every fill colour is ≥ 0.4 (L2) away from it. So: fit a plane a + b·x + c·y per
channel to the border pixels (least squares), foreground = pixels whose colour is > 0.2 from the
plane. If the border itself is textured (residual RMS > 0.05: a ``texture-only`` image) the whole frame
is foreground.

:class:`ShapeOnlyOracle` — blind to texture: only the binary foreground mask is used. The mask is
brought to a canonical frame (centroid at the centre, area scaled to ``CANON_AREA`` px) by bilinear
resampling and compared (cosine similarity) with each shape's template rendered in the same canonical
frame at ``n_angles`` rotations; logit_k = ``temperature`` × max over rotations. Translation and
scale are removed exactly, rotation by search (5° steps), so nothing but the silhouette matters.

:class:`TextureOnlyOracle` — blind to shape: inside the foreground (eroded by 1 px, so anti-aliased
outline pixels, which mix fill and background, drop out) the fill's mean colour is subtracted; the
features are the *normalised* autocorrelation of these fluctuations at lags up to ±8 px: Σ r(p)·r(p+d)
over pixel pairs inside the region divided by the number of such pairs (a zero-padded FFT), so the
region's own shape divides out and only the texture's second-order statistics remain, then divided by
the lag-0 value (colour contrast drops out). A full frame (texture-only) is its own region. Classifier:
linear discriminant (class means, pooled covariance with a 1 % ridge) fitted on a seeded sample of the
generator's textures — ``n_fit`` per family on *random* shapes, so the shape carries no label
information, and as many full frames; masked and full-frame images have separate templates. Nothing
about the layout survives the pooling, so the shape cannot be read from it.

Accuracy (seed-0 world, ``n_fit`` = 100): shape oracle 100 % on ``test``, ``cue-conflict`` (shape
labels) and ``silhouette``; texture oracle 100 % on ``texture-only``, 99.0 % on ``cue-conflict``
(texture labels; 2 of its 9 errors happen to name the shape: shape bias 0.002) and 98.2 % on
``test``. Its errors are thin shapes (crescent, tee) whose small interior holds blobs or rings, whose
second-order statistics are close at that scale. On the wrong cue both are at chance (~10 %): the
shape oracle on ``texture-only``, the texture oracle on ``silhouette``. ``edges`` (outlines) are
beyond both (a 1-px outline has no area and no texture).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from biasbench.core import world

FG_THRESHOLD = 0.2  # L2 colour distance from the background plane (fills are >= 0.4 away)
TEXTURED_BORDER_RMS = 0.05  # border residual RMS above this: no background (texture-only frame)
CANON = 32  # canonical frame size of the shape oracle (px)
CANON_AREA = 220.0  # canonical silhouette area (px), ~23 % of the canonical frame
MIN_OVERLAP = 4.0  # autocorrelation lags supported by fewer pixel pairs are damped
SHRINKAGE = 0.01  # ridge on the pooled covariance (fraction of its mean variance)


def _border(size: int, device: torch.device) -> torch.Tensor:
    b = torch.zeros(size, size, dtype=torch.bool, device=device)
    b[0, :] = b[-1, :] = b[:, 0] = b[:, -1] = True
    return b


def segment(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(foreground mask float (N, H, W), background plane (N, 3, H, W), has_background bool (N,))."""
    n, _, h, w = x.shape
    dev = x.device
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=dev), torch.linspace(-1, 1, w, device=dev), indexing="ij"
    )
    design = torch.stack([torch.ones_like(xs), xs, ys], dim=-1)  # (H, W, 3)
    border = _border(h, dev)
    a = design[border]  # (B, 3)
    vals = x.permute(0, 2, 3, 1)[:, border]  # (N, B, 3)
    coef = torch.linalg.lstsq(a.expand(n, -1, -1), vals).solution  # (N, 3 design, 3 channels)
    plane = torch.einsum("hwd,ndc->nchw", design, coef)
    resid = x - plane
    border_rms = resid.permute(0, 2, 3, 1)[:, border].pow(2).mean(dim=(1, 2)).sqrt()
    has_bg = border_rms <= TEXTURED_BORDER_RMS
    mask = (resid.norm(dim=1) > FG_THRESHOLD).float()
    mask = torch.where(has_bg[:, None, None], mask, torch.ones_like(mask))
    return mask, plane, has_bg


# ----------------------------------------------------------------------------------------------------
# Shape-only oracle
# ----------------------------------------------------------------------------------------------------


def _shape_moments(k: int, res: int = 512) -> tuple[float, float, float]:
    """(centroid u, centroid v, area) of shape k in its unit frame, on a fine grid."""
    t = (torch.arange(res, dtype=torch.float64) + 0.5) / res * 2 - 1
    v, u = torch.meshgrid(t, t, indexing="ij")
    inside = world.shape_inside(k, u, v).double()
    cell = (2.0 / res) ** 2
    area = float(inside.sum()) * cell
    return float((inside * u).sum() * cell / area), float((inside * v).sum() * cell / area), area


def shape_templates(
    n_angles: int = 72, canon: int = CANON, area: float = CANON_AREA, ss: int = 4
) -> torch.Tensor:
    """(K, n_angles, canon, canon) coverage of each shape, centroid at the centre, area = ``area`` px."""
    c = (torch.arange(canon * ss, dtype=torch.float32) + 0.5) / ss - canon / 2
    py, px = torch.meshgrid(c, c, indexing="ij")
    out = torch.zeros(world.NUM_CLASSES, n_angles, canon, canon)
    for k in range(world.NUM_CLASSES):
        cu, cv, a = _shape_moments(k)
        scale = math.sqrt(area / a)  # px per unit
        for j in range(n_angles):
            phi = 2 * math.pi * j / n_angles
            cos, sin = math.cos(phi), math.sin(phi)
            u = (cos * px + sin * py) / scale + cu
            v = (-sin * px + cos * py) / scale + cv
            hi = world.shape_inside(k, u, v).float()
            out[k, j] = F.avg_pool2d(hi[None, None], ss)[0, 0]
    return out


def canonical_masks(mask: torch.Tensor, canon: int = CANON, area: float = CANON_AREA) -> torch.Tensor:
    """Resample each mask (N, H, W) to the canonical frame: centroid centred, area scaled to ``area``."""
    n, h, w = mask.shape
    dev = mask.device
    ys, xs = torch.meshgrid(
        torch.arange(h, device=dev, dtype=mask.dtype) + 0.5,
        torch.arange(w, device=dev, dtype=mask.dtype) + 0.5,
        indexing="ij",
    )
    m = mask.clamp_min(0)
    tot = m.sum(dim=(1, 2)).clamp_min(1e-6)
    cx = (m * xs).sum(dim=(1, 2)) / tot
    cy = (m * ys).sum(dim=(1, 2)) / tot
    s = torch.sqrt(tot / area)  # image px per canonical px
    c = torch.arange(canon, device=dev, dtype=mask.dtype) + 0.5 - canon / 2
    py, px = torch.meshgrid(c, c, indexing="ij")
    gx = cx[:, None, None] + s[:, None, None] * px  # image coordinates (px)
    gy = cy[:, None, None] + s[:, None, None] * py
    grid = torch.stack([gx / w * 2 - 1, gy / h * 2 - 1], dim=-1)  # align_corners=False convention
    return F.grid_sample(m[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


class ShapeOnlyOracle(nn.Module):
    """Decides by the silhouette alone (see the module docstring)."""

    def __init__(self, n_angles: int = 72, temperature: float = 50.0) -> None:
        super().__init__()
        t = shape_templates(n_angles)
        t = t.flatten(2)
        self.register_buffer("templates", t / t.norm(dim=2, keepdim=True))  # (K, A, canon²)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask, _, _ = segment(x.float())
        cm = canonical_masks(mask).flatten(1)
        cm = cm / cm.norm(dim=1, keepdim=True).clamp_min(1e-6)
        score = torch.einsum("np,kap->nka", cm, self.templates).amax(dim=2)
        return self.temperature * score


# ----------------------------------------------------------------------------------------------------
# Texture-only oracle
# ----------------------------------------------------------------------------------------------------


class TextureOnlyOracle(nn.Module):
    """Decides by pooled texture statistics alone (see the module docstring)."""

    def __init__(self, size: int = 32, n_fit: int = 100, max_lag: int = 8, seed: int = 1234) -> None:
        super().__init__()
        self.max_lag = max_lag
        k = world.NUM_CLASSES
        tex = torch.arange(k).repeat_interleave(n_fit)
        g = torch.Generator().manual_seed(seed)
        shapes = torch.randint(0, k, (tex.numel(),), generator=g)
        mus, precisions = [], []
        # two regimes, two sets of templates: textures inside a shape (masked) and full frames
        for mode in ("textured", "texture-only"):
            r = world.render(shapes, tex, g, size, mode)
            f = self.features(world.to_uint8(r.images).float() / 255.0)
            mu = torch.stack([f[tex == c].mean(0) for c in range(k)])
            centred = f - mu[tex]
            cov = centred.T @ centred / centred.shape[0]
            cov = cov + SHRINKAGE * cov.diagonal().mean() * torch.eye(cov.shape[0])
            mus.append(mu)
            precisions.append(torch.linalg.inv(cov))
        self.register_buffer("centroids", torch.stack(mus))  # (2, K, F): [masked, full frame]
        self.register_buffer("precision", torch.stack(precisions))  # (2, F, F)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised autocorrelation of the fill's fluctuations at lags |dy|, |dx| ≤ max_lag (half plane)."""
        mask, _, has_bg = segment(x)
        # erode by one pixel: anti-aliased boundary pixels mix fill and background (the outline)
        m = -F.max_pool2d(-mask[:, None], 3, 1, 1)
        m = torch.where(has_bg[:, None, None, None], m, mask[:, None])
        fill_mean = (x * m).sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True).clamp_min(1)
        resid = (x - fill_mean) * m
        h, w = x.shape[-2:]
        pad = (2 * h, 2 * w)  # zero-padded: linear, not circular, correlation
        num = torch.fft.irfft2(torch.fft.rfft2(resid, s=pad).abs().pow(2).sum(dim=1), s=pad)
        den = torch.fft.irfft2(torch.fft.rfft2(m, s=pad).abs().pow(2)[:, 0], s=pad)
        acf = num / den.clamp_min(MIN_OVERLAP)  # mean product over the pixel pairs inside the region
        L = self.max_lag
        acf = torch.fft.fftshift(acf, dim=(-2, -1))[:, h - L : h + L + 1, w - L : w + L + 1]
        acf = acf / acf[:, L : L + 1, L : L + 1].clamp_min(1e-8)
        return acf.flatten(1)[:, : (2 * L + 1) * L + L + 1]  # the ACF is symmetric: half of it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        f = self.features(x)
        regime = (~segment(x)[2]).long()  # 0: texture inside a shape, 1: full frame
        d = f[:, None, :] - self.centroids[regime]  # (N, K, F)
        return -0.5 * torch.einsum("nkf,nfg,nkg->nk", d, self.precision[regime], d)
