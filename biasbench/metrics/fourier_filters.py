"""Square-box low-pass / high-pass filters in the Fourier domain (Gavrikov & Keuper 2024).

Definition (224 px): ``F = fftshift(fft2(x))`` per channel, centre ``c0 = 112``. A low-pass with cutoff
``c`` keeps the box ``ky, kx ∈ [c0 − r, c0 + r)`` (indices ``c0 − r … c0 + r − 1``) with
``r = floor(c · 112)``; a high-pass with cutoff ``c`` zeroes the box with ``r = floor((1 − c) · 112)``.
Output ``ifft2(ifftshift(F · mask)).real.clip(0, 1)``.

Other sizes: ``c0 = H // 2`` and ``r = floor(c · H / 2)`` per axis (``W`` likewise), so the box covers
the same fraction of the spectrum at every size. At 64 px, ``c = 0.01`` gives ``r = 0``: the low-pass
keeps nothing (a black image) and the high-pass at ``c = 0.99`` removes nothing.

Implementation. ``fftshift`` is a permutation, so ``ifftshift(fftshift(F) · mask) = F · ifftshift(mask)``;
and for a real image the real part of an inverse FFT equals the inverse FFT of the spectrum times
the *Hermitian-symmetrised* mask ``(M(k) + M(−k)) / 2``. We therefore filter with one ``rfft2`` and one
``irfft2`` per batch (half the work of complex FFTs), bit-for-bit the same operator. Note what this
means for the box: it is one row/column wider on the negative side (``−r … r − 1``), so the unpaired
row/column ``−r`` (and its mirror ``+r``) survives the ``.real`` at half amplitude. The tests check the
spectrum of the output against exactly that.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from biasbench.core.errors import InputError

LOWPASS = "lowpass"
HIGHPASS = "highpass"


def box_half_width(cutoff: float, kind: str, size: int) -> int:
    """``r`` of the box for ``kind`` at ``cutoff`` on an axis of ``size`` samples.

    ``floor(c · size / 2)`` (low-pass) or ``floor((1 − c) · size / 2)`` (high-pass); a 1e-9 guard
    keeps products that are integers in exact arithmetic from flooring one too low.
    """
    if not 0.0 <= cutoff <= 1.0:
        raise InputError(f"cutoff must lie in [0, 1], got {cutoff}")
    frac = cutoff if kind == LOWPASS else 1.0 - cutoff if kind == HIGHPASS else None
    if frac is None:
        raise InputError(f"unknown filter kind {kind!r}; expected {LOWPASS!r} or {HIGHPASS!r}")
    return int(math.floor(frac * size / 2.0 + 1e-9))


def shifted_box(size: int, r: int) -> torch.Tensor:
    """1-D boolean box over ``fftshift``-ed frequencies: indices ``size//2 − r … size//2 + r − 1``."""
    c0 = size // 2
    idx = torch.arange(size)
    return (idx >= c0 - r) & (idx < c0 + r)


def shifted_mask(h: int, w: int, cutoff: float, kind: str) -> torch.Tensor:
    """The (h, w) float mask on the ``fftshift``-ed spectrum, exactly as the definition states."""
    box = (
        shifted_box(h, box_half_width(cutoff, kind, h))[:, None]
        & shifted_box(w, box_half_width(cutoff, kind, w))[None, :]
    )
    return (box if kind == LOWPASS else ~box).to(torch.float64)


@lru_cache(maxsize=128)
def _half_spectrum_weights(h: int, w: int, cutoff: float, kind: str) -> torch.Tensor:
    m = torch.fft.ifftshift(shifted_mask(h, w, cutoff, kind))  # unshifted frequency order
    mirrored = torch.roll(torch.flip(m, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))  # m(-k)
    sym = 0.5 * (m + mirrored)
    return sym[:, : w // 2 + 1].to(torch.float32).contiguous()


def half_spectrum_weights(h: int, w: int, cutoff: float, kind: str, device: torch.device) -> torch.Tensor:
    """(h, w//2 + 1) real weights for ``rfft2`` coefficients: the Hermitian-symmetrised mask."""
    return _half_spectrum_weights(h, w, float(cutoff), kind).to(device)


def box_filter(x: torch.Tensor, cutoff: float, kind: str, *, clip: bool = True) -> torch.Tensor:
    """Low-/high-pass ``x`` (…, H, W) with the square box; batched, on ``x``'s device, float32.

    Equal to ``ifft2(ifftshift(fftshift(fft2(x)) · mask)).real`` (clipped to [0, 1] unless
    ``clip=False``).
    """
    h, w = x.shape[-2:]
    weights = half_spectrum_weights(h, w, cutoff, kind, x.device)
    spec = torch.fft.rfft2(x.float())
    out = torch.fft.irfft2(spec * weights, s=(h, w))
    return out.clamp_(0.0, 1.0) if clip else out


def box_filter_reference(x: torch.Tensor, cutoff: float, kind: str, *, clip: bool = True) -> torch.Tensor:
    """The definition written out literally with complex FFTs (float64; the tests' oracle)."""
    h, w = x.shape[-2:]
    f = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))
    out = torch.fft.ifft2(
        torch.fft.ifftshift(f * shifted_mask(h, w, cutoff, kind).to(x.device), dim=(-2, -1))
    ).real
    return out.clamp(0.0, 1.0) if clip else out
