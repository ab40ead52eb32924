"""Calibration of a classifier from its logits: ECE, NLL and the Brier score.

Definitions (``n`` = the items with a label ≥ 0; items with a label < 0 are excluded from all three;
``p`` = the softmax of an item's logits, computed in float64 with ``log_softmax``; ``y`` its label):

* **ECE** (expected calibration error; Guo et al., "On Calibration of Modern Neural Networks", ICML
  2017, eq. 3): the top-1 confidence ``conf = max_k p_k`` and the top-1 correctness of each item are
  grouped into :data:`N_BINS` = **15 equal-width bins** on (0, 1], ``B_b = ((b − 1)/15, b/15]`` for
  b = 1 … 15 (edges ``k/15``, k = 0 … 15, in float64). The bins are **right-closed**, as in Guo et al.'s
  reference implementation (``conf > lower and conf ≤ upper``): a confidence exactly on an edge ``b/15``
  belongs to the bin below it, and ``conf = 1`` to the last bin (a confidence is never 0, ``p`` being
  a softmax). ``ECE = Σ_b (|B_b| / n) · |acc(B_b) − conf(B_b)|`` with ``acc`` the bin's fraction of
  correct items and ``conf`` its mean confidence; empty bins contribute 0. Range [0, 1].
* **NLL** (negative log-likelihood): ``mean over items of −log p_y`` (natural log), from the float64
  ``log_softmax`` of the same logits (``x_y − logsumexp(x)``, never ``log`` of an underflowed ``p_y``),
  so it is finite for every finite logit vector, however large the margin; ``inf`` only where the true
  class is excluded with a −inf logit. Range [0, ∞); uniform logits over K classes give ``log K``.
* **Brier score** (Brier, "Verification of Forecasts Expressed in Terms of Probability", Monthly
  Weather Review 78, 1950), in its original **multi-class sum form**: ``mean over items of
  Σ_k (p_k − 1[k = y])²``. Range [0, 2]: 0 for a one-hot correct prediction, 2 for a one-hot wrong one.

The top-1 prediction of an item is the argmax of its logits; a caller that has already scored top-1
correctness (e.g. with ``topk``, whose tie-breaking may differ from ``argmax`` on exact ties) passes it as
``correct`` so that the ECE's accuracy is the same as the stored top-1 accuracy. With no labelled item,
every value is NaN (with n = 0). Pure functions: nothing here draws random numbers or touches a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: equal-width confidence bins of the ECE (Guo et al. 2017)
N_BINS = 15
#: the calibration measures, in the order their keys are written (``<set>_ece``, ``<set>_nll``, ``<set>_brier``)
MEASURES: tuple[str, ...] = ("ece", "nll", "brier")
#: rows per float64 softmax chunk (bounds memory on the 50k × 1000 ImageNet val logits)
_CHUNK = 8192


@dataclass(frozen=True)
class Calibration:
    """ECE, NLL and Brier score of a set of predictions, and the number of labelled items ``n``."""

    ece: float
    nll: float
    brier: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"ece": self.ece, "nll": self.nll, "brier": self.brier}


def bin_edges(n_bins: int = N_BINS) -> torch.Tensor:
    """The ``n_bins + 1`` equal-width edges ``k / n_bins`` on [0, 1], float64 (each correctly rounded)."""
    return torch.arange(n_bins + 1, dtype=torch.float64) / n_bins


def confidence_bins(conf: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """The bin index (0 … ``n_bins`` − 1) of each confidence: bin b − 1 holds ``((b − 1)/n, b/n]``
    (right-closed); confidences ≤ 0 go to the first bin, > 1 to the last."""
    idx = torch.bucketize(conf.to(torch.float64), bin_edges(n_bins), right=False) - 1
    return idx.clamp(0, n_bins - 1)


def ece_from_confidences(conf: torch.Tensor, correct: torch.Tensor, n_bins: int = N_BINS) -> float:
    """``Σ_b (|B_b| / n) · |acc(B_b) − conf(B_b)|`` over equal-width right-closed bins (NaN when empty)."""
    conf = conf.to(torch.float64).reshape(-1)
    hit = correct.to(torch.float64).reshape(-1)
    if conf.shape != hit.shape:
        raise ValueError(f"confidences {tuple(conf.shape)} and correctness {tuple(hit.shape)} differ")
    total = conf.numel()
    if total == 0:
        return math.nan
    b = confidence_bins(conf, n_bins)
    sum_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, b, conf)
    sum_hit = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, b, hit)
    # (|B|/n) · |acc − conf| = |Σ hit − Σ conf| / n
    return float((sum_hit - sum_conf).abs().sum() / total)


def _per_item(
    logits: torch.Tensor, labels: torch.Tensor, correct: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the labelled items: top-1 confidence, top-1 correctness, −log p_y and the Brier sum."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    labels = labels.reshape(-1).to(torch.long)
    if labels.shape[0] != logits.shape[0] or (correct is not None and correct.numel() != logits.shape[0]):
        raise ValueError(f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)}: item counts differ")
    keep = labels >= 0
    if bool((labels >= logits.shape[1]).any()):
        raise ValueError(f"a label is ≥ the {logits.shape[1]} classes of the logits")
    logits, y = logits[keep], labels[keep]
    hits = None if correct is None else correct.reshape(-1)[keep].to(torch.bool)
    confs, oks, nlls, briers = [], [], [], []
    for lo in range(0, logits.shape[0], _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        logp = torch.log_softmax(logits[sl].to(torch.float64), dim=1)
        p = logp.exp()
        rows = torch.arange(p.shape[0])
        conf, pred = p.max(dim=1)
        confs.append(conf)
        oks.append(pred == y[sl] if hits is None else hits[sl])
        nlls.append(-logp[rows, y[sl]])
        p[rows, y[sl]] -= 1.0  # p − one_hot(y)
        briers.append((p * p).sum(dim=1))
    if not confs:
        empty = torch.empty(0, dtype=torch.float64)
        return empty, torch.empty(0, dtype=torch.bool), empty, empty
    return torch.cat(confs), torch.cat(oks), torch.cat(nlls), torch.cat(briers)


def calibration(
    logits: torch.Tensor, labels: torch.Tensor, correct: torch.Tensor | None = None, n_bins: int = N_BINS
) -> Calibration:
    """ECE (``n_bins`` equal-width bins), NLL and Brier score of ``logits`` (N, K) against ``labels``
    (N,), items with a label < 0 excluded; ``correct`` (N,): the items' top-1 correctness if already
    scored (default: argmax of the logits == label)."""
    conf, ok, nll, brier = _per_item(logits, labels, correct)
    k = int(conf.numel())
    if k == 0:
        return Calibration(math.nan, math.nan, math.nan, 0)
    return Calibration(
        ece=ece_from_confidences(conf, ok, n_bins), nll=float(nll.mean()), brier=float(brier.mean()), n=k
    )


def expected_calibration_error(
    logits: torch.Tensor, labels: torch.Tensor, correct: torch.Tensor | None = None, n_bins: int = N_BINS
) -> float:
    """ECE over ``n_bins`` equal-width right-closed bins of the top-1 softmax confidence."""
    return calibration(logits, labels, correct, n_bins).ece


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean −log p(true class), from the float64 log-softmax."""
    return calibration(logits, labels).nll


def brier_score(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over items of Σ_k (p_k − 1[k = y])² (multi-class sum form, range [0, 2])."""
    return calibration(logits, labels).brier
