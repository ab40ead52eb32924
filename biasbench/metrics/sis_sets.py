"""The SIS of one BackSelect trace at threshold ``τ`` (conventions: :mod:`biasbench.metrics.sis_traces`).

An image is covered iff ``conf[0] ≥ τ``; then ``t* = max{t : conf[t] ≥ τ}`` and the SIS is the set of
pixels still unmasked in that state, ``{i : order[i] ≥ t*}`` (empty when ``t* = T``). Shared by the
scalars of :mod:`biasbench.metrics.sis_traces` and the two-path comparison of
:mod:`biasbench.metrics.sis_stability`.
"""

from __future__ import annotations

import numpy as np


def threshold_step(conf: np.ndarray, tau: float) -> int | None:
    """``t* = max{t : conf[t] ≥ τ}`` for a covered trace (``conf[0] ≥ τ``), else ``None``."""
    conf = np.asarray(conf)
    if not conf.size or not conf[0] >= tau:
        return None
    return int(np.flatnonzero(conf >= tau)[-1])


def sis_mask(order: np.ndarray, conf: np.ndarray, tau: float) -> np.ndarray | None:
    """Boolean (P,) mask of the SIS at ``τ`` (``order ≥ t*``), or ``None`` if the image is not covered."""
    t_star = threshold_step(conf, tau)
    if t_star is None:
        return None
    return np.asarray(order) >= t_star


def sis_size(order: np.ndarray, conf: np.ndarray, tau: float) -> int | None:
    """``|SIS_τ|`` in pixels, or ``None`` if the image is not covered."""
    m = sis_mask(order, conf, tau)
    return None if m is None else int(m.sum())
