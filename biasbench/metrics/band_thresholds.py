"""Critical-band thresholds and the Gaussian fit (Subramanian et al. 2023, as used by Gavrikov & Keuper 2024).

Accuracy matrix ``M`` (rows: noise sd = 0, .02, .04, .08, .16; columns: bands f = 0 … n−1, coarse to
fine). For band ``i`` the threshold ``t_i`` is the first ``j ∈ 0 … 4`` with ``M[4 − j, i] > 50 %`` (raw)
or ``> 50 % of the clean accuracy`` (normalised), else 4 — 0 means "still above criterion at the
strongest noise", 4 "not even at the weakest". ``A·exp(−(x − μ)² / (2σ²))`` is fitted to ``t`` over
``x = 0 … n−1`` with ``scipy.optimize.curve_fit`` (p0 = [1, 0, 1], bounds A ∈ [0, 4], μ and σ free):

* bandwidth = 2·sqrt(ln 4)·|σ| (octaves; the full width at half maximum — σ's sign is immaterial),
* centre_frequency = f₀·2^μ cycles/image, f₀ = 1.75 at 224 px (the centre of band 0),
* peak_noise_sensitivity = 2^(A − 4).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from biasbench.core.errors import InputError

FWHM_FACTOR = 2.0 * math.sqrt(math.log(4.0))


def thresholds(acc: np.ndarray, criterion: float | np.ndarray) -> np.ndarray:
    """Thresholds ``t`` (int, one per band) from ``acc`` (n_sd + 1, n_bands), row 0 = clean.

    ``t_i`` = first ``j`` in ``0 … n_sd`` with ``acc[n_sd − j, i] > criterion``, else ``n_sd``.
    """
    acc = np.asarray(acc, dtype=float)
    if acc.ndim != 2 or acc.shape[0] < 2:
        raise InputError(f"accuracy matrix must be (n_sd + 1, n_bands), got {acc.shape}")
    n_sd = acc.shape[0] - 1
    out = np.full(acc.shape[1], n_sd, dtype=int)
    for i in range(acc.shape[1]):
        for j in range(n_sd + 1):
            if acc[n_sd - j, i] > criterion:
                out[i] = j
                break
    return out


def gaussian(x: np.ndarray, a: float, mu: float, sigma: float) -> np.ndarray:
    return a * np.exp(-((x - mu) ** 2) / (2.0 * sigma**2))


@dataclass(frozen=True)
class BandFit:
    """The fitted Gaussian and the three numbers derived from it."""

    a: float
    mu: float
    sigma: float
    bandwidth: float  # octaves
    centre_frequency: float  # cycles/image
    peak_noise_sensitivity: float


def fit_thresholds(
    t: np.ndarray | list[float],
    *,
    base_frequency: float = 1.75,
    a_max: float = 4.0,
    step_octaves: float = 1.0,
) -> BandFit:
    """Fit ``A·exp(−(x − μ)²/(2σ²))`` to thresholds ``t`` at x = 0 … n−1 (curve_fit, p0 = [1, 0, 1]).

    ``base_frequency`` is the centre frequency of band 0 in cycles/image (1.75 at 224 px);
    ``a_max`` the largest threshold (the number of noise levels, 4); ``step_octaves`` the ratio of
    successive noise levels in octaves (1: the study's doubling sds), so that the peak noise
    sensitivity ``2^((A − a_max)·step_octaves)`` is the ratio of the threshold sd at the peak to the
    strongest sd. Raises ``RuntimeError`` when the fit does not converge.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    y = np.asarray(t, dtype=float)
    x = np.arange(len(y), dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # covariance of a flat profile
        params, _ = curve_fit(
            gaussian, x, y, p0=[1.0, 0.0, 1.0], bounds=([0.0, -np.inf, -np.inf], [a_max, np.inf, np.inf])
        )
    a, mu, sigma = (float(v) for v in params)
    return BandFit(
        a=a,
        mu=mu,
        sigma=sigma,
        bandwidth=FWHM_FACTOR * abs(sigma),
        centre_frequency=base_frequency * 2.0**mu,
        peak_noise_sensitivity=2.0 ** ((a - a_max) * step_octaves),
    )
