"""BackSelect on the device: Batched Gradient BackSelect (many images, k pixels per step) and exact
BackSelect (one pixel per step, every candidate evaluated), both batched over images.

Both return a :class:`Trace` in the conventions of :mod:`biasbench.metrics.sis_traces`:
``order[b, i] = t`` ⇔ pixel ``i`` of image ``b`` was masked at step ``t``; ``conf[b, t]`` = ``f`` of
image ``b`` with the pixels of order ``< t`` masked (``conf[:, 0]`` clean, ``conf[:, T]`` fully masked).

``f(x) = softmax(model(x))[c0]`` in fp32 (fp64 when the model and ``x`` are float64: ``SIS.Params.precision``),
``c0`` = argmax on the clean image. Features are pixels: a
mask ``M`` of shape (B, 1, H, W), broadcast over the channels; the masked input is
``(1 − M)·x + M·baseline`` (``torch.lerp``, exact at M ∈ {0, 1}). The model must not mix images of a
batch (eval-mode BatchNorm is fine): then one backward of ``Σ_b`` gives every image's own gradient.

Robust ranking (``rank_tol > 0``). Two runs of the same algorithm on the same image whose floating-point
sums are merely ordered differently (batch composition, memory format, thread count, device) give
gradients that differ in their last bits (about 1e-6 of the step's largest |g| for efficientnet-lite0
in fp32, 1e-14 in fp64); where two pixels are that close the greedy choice flips and the trajectories
part for good. The rule: at each step, with ``s = 2^e`` the smallest power of two ≥ max |g| over the
image's unmasked pixels (so ``s`` itself rarely moves with the noise; ``s = 1`` when every ``g`` is 0),
rank ``round(g / (rank_tol·s))`` instead of ``g`` (round half to even), and take equal rounded values
in ascending flat pixel index. Pixels whose gradients differ by much less than ``rank_tol·s`` then rank
by index on every path, unless they straddle a rounding boundary. ``rank_tol = 0`` ranks ``g`` itself
(ties → lowest index too).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from biasbench.core.errors import InputError
from biasbench.metrics.base import MetricError, check_finite
from biasbench.metrics.sis_traces import num_steps


@dataclass
class Trace:
    """BackSelect traces of a batch (on the CPU).

    ``order``: int32 (B, P); ``conf``: float32 (B, T + 1); ``c0``: int64 (B,); ``k`` pixels per step;
    ``n_forward`` / ``n_backward``: model passes per image spent on BackSelect (the clean pass included);
    ``seconds``: wall time of the whole batch; ``zero_grad_steps``: int (B,), Batched-Gradient steps at
    which the gradient was exactly 0 on every unmasked pixel of the image (no signal: the selection fell
    back to index order — a piecewise-constant model; always 0 for exact BackSelect). A trace cut short by ``max_steps`` has ``order = −1`` for
    the pixels never masked and ``conf`` of length ``max_steps + 1`` (benchmarks only). ``reused``: served
    by :mod:`biasbench.metrics.sis_memo` (computed by an earlier metric on the same model and batch).
    """

    order: torch.Tensor
    conf: torch.Tensor
    c0: torch.Tensor
    k: int
    n_forward: int
    n_backward: int
    seconds: float
    zero_grad_steps: torch.Tensor | None = None
    reused: bool = False


def _require_eval(model: nn.Module) -> None:
    if model.training:
        raise MetricError("SIS needs the model in eval mode (call model.eval()); it is in training mode")


def select_largest(g: torch.Tensor, n: int) -> torch.Tensor:
    """Column indices (B, n) of the ``n`` largest entries of each row of ``g``; ties → lowest index.

    ``torch.topk`` leaves the order of ties unspecified; here the row's ``n``-th largest value ``v``
    is found, every entry ``> v`` is taken, and the remaining slots go to the entries ``== v`` with the
    lowest indices. Rows of ``g`` must have at least ``n`` finite entries (masked entries = −inf).
    """
    b = g.shape[0]
    if n == 1:
        return g.argmax(dim=1, keepdim=True)  # documented: the first maximal index
    v = g.topk(n, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
    gt = g > v
    need = n - gt.sum(dim=1, keepdim=True)
    eq = g == v
    take = gt | (eq & (eq.cumsum(dim=1) <= need))
    return take.nonzero()[:, 1].view(b, n)


def rounded_scores(g: torch.Tensor, removed: torch.Tensor, rank_tol: float) -> torch.Tensor:
    """The ranking key of a Batched-Gradient step: ``g`` (B, P) rounded to ``rank_tol`` times each row's
    gradient scale (the smallest power of two ≥ max |g| over the unmasked pixels; 1 if that is 0), as
    integer-valued floats; ``g`` itself when ``rank_tol`` is 0. Masked entries are −inf."""
    if rank_tol > 0:
        scale = g.abs().masked_fill(removed, 0.0).amax(dim=1, keepdim=True)
        mant, expo = torch.frexp(scale)  # scale = mant·2^expo, mant ∈ [0.5, 1): 2^expo ≥ scale
        pow2 = torch.where(mant > 0, torch.ldexp(torch.ones_like(scale), expo), torch.ones_like(scale))
        g = torch.round(g / (pow2 * rank_tol))
    return g.masked_fill(removed, float("-inf"))


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype == torch.float64 else logits.float()


def _confidence(logits: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    return _at_least_fp32(logits).softmax(dim=1).gather(1, c0[:, None]).squeeze(1)


@contextlib.contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Switch ``requires_grad`` off for the model's trainable parameters; switch it back on afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _masked_logits(
    model: nn.Module, x: torch.Tensor, base: torch.Tensor, m: torch.Tensor, c0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 (fp64 for a float64 model) logits of ``(1 − m)·x + m·baseline`` (checked finite) and ``c0``
    (their argmax unless given)."""
    # lerp is exact at M ∈ {0, 1}: a masked pixel is exactly the baseline
    logits = _at_least_fp32(model(torch.lerp(x, base, m)))
    check_finite(logits, "logits")
    if c0 is None:
        c0 = logits.argmax(dim=1)
    return logits, c0


def _mask_gradient(logp: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``∂ Σ_b logp[b] / ∂m`` (one backward gives every image its own gradient); zeros if there is none."""
    if logp.requires_grad:
        (g,) = torch.autograd.grad(logp.sum(), m, allow_unused=True)
    else:
        g = None  # the output does not depend differentiably on the input at all
    if g is None:
        g = torch.zeros_like(m)
    return g


def _mask_largest(
    g: torch.Tensor,
    n: int,
    t: int,
    removed: torch.Tensor,
    order: torch.Tensor,
    mask_flat: torch.Tensor,
    zero_steps: torch.Tensor,
    rank_tol: float = 0.0,
) -> None:
    """Step ``t``: mask the ``n`` unmasked pixels of each image with the largest gradient ``g`` (B, P)
    (rounded to ``rank_tol``, see :func:`rounded_scores`; ties → lowest index).

    Updates ``removed``, ``order``, ``mask_flat`` and ``zero_steps`` (images whose gradient is 0 on
    every unmasked pixel) in place.
    """
    check_finite(g, "gradient with respect to the SIS mask")
    zero_steps += (g.masked_fill(removed, 0.0) == 0).all(dim=1).int()
    sel = select_largest(rounded_scores(g, removed, rank_tol), n)
    order.scatter_(1, sel, t)
    removed.scatter_(1, sel, True)
    mask_flat.scatter_(1, sel, 1.0)


@torch.inference_mode(False)
def batched_gradient_backselect(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    k: int,
    *,
    c0: torch.Tensor | None = None,
    max_steps: int | None = None,
    rank_tol: float = 0.0,
) -> Trace:
    """Batched Gradient BackSelect (Carter et al. 2021) for a batch ``x`` (B, 3, H, W) in [0, 1].

    ``M = 0``; for ``t = 0 … T−1``: ``p = f((1 − M)·x + M·baseline)``, record ``conf[:, t] = p``
    (confidence before this step), ``g = ∂p/∂M``, mask the ``k`` unmasked pixels with the largest ``g``
    (ties → lowest flat index; the last step takes what is left), ``order[them] = t``. Then one more
    forward gives ``conf[:, T]`` (fully masked). The clean pass (``t = 0``) also fixes ``c0`` unless it
    is given. ``T + 1`` forward and ``T`` backward passes per image.

    The ranking uses ``∂ log p / ∂M = (∂p/∂M) / p``: per image the same ranking as ``∂p/∂M`` (one
    positive factor), but it does not vanish when ``p`` rounds to 1 in fp32. Model parameters get no
    gradients (``requires_grad`` is switched off for the call). ``max_steps`` cuts the trace short
    (benchmarks only). ``rank_tol`` > 0: robust ranking (module docstring). A float64 model and ``x``
    run the whole step, softmax and gradient included, in float64 (``conf`` is stored as float32).
    """
    if rank_tol < 0:
        raise InputError(f"rank_tol must be ≥ 0, got {rank_tol}")
    _require_eval(model)
    t0 = time.perf_counter()
    if x.is_inference():
        x = x.clone()
    bsz, _, h, w = x.shape
    p_total = h * w
    steps = num_steps(p_total, k)
    run_steps = steps if max_steps is None else min(steps, max_steps)
    dev = x.device
    base = baseline.to(dev, x.dtype).expand_as(x)
    mask = torch.zeros(bsz, 1, h, w, device=dev, dtype=x.dtype)
    mask_flat = mask.view(bsz, p_total)
    removed = torch.zeros(bsz, p_total, device=dev, dtype=torch.bool)
    order = torch.full((bsz, p_total), -1, device=dev, dtype=torch.int32)
    conf = torch.empty(bsz, run_steps + 1, device=dev, dtype=torch.float32)
    zero_steps = torch.zeros(bsz, device=dev, dtype=torch.int32)
    with _frozen_parameters(model):
        for t in range(run_steps + 1):
            last = t == run_steps
            m = mask.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                logits, c0 = _masked_logits(model, x, base, m, c0)
                conf[:, t] = _confidence(logits.detach(), c0)
                logp = logits.log_softmax(dim=1).gather(1, c0[:, None]).squeeze(1)
                if last:
                    break
                g = _mask_gradient(logp, m)
            n_t = min(k, p_total - t * k)
            _mask_largest(g.view(bsz, p_total), n_t, t, removed, order, mask_flat, zero_steps, rank_tol)
    assert c0 is not None
    out = Trace(
        order=order.cpu(),
        conf=conf.cpu(),
        c0=c0.cpu(),
        k=k,
        n_forward=run_steps + 1,
        n_backward=run_steps,
        seconds=0.0,
        zero_grad_steps=zero_steps.cpu(),
    )
    out.seconds = time.perf_counter() - t0
    return out


@torch.inference_mode()
def exact_backselect(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    *,
    c0: torch.Tensor | None = None,
    chunk_size: int = 4096,
    max_pixels: int | None = 1024,
) -> Trace:
    """Exact BackSelect (Carter et al. 2019) for a batch ``x`` (B, 3, H, W), one pixel per step.

    At step ``t`` every unmasked pixel of every image is a candidate: all candidates (``B·(P − t)``
    masked images, built on the device by writing one baseline pixel into a copy of the current image)
    are evaluated in one batch (chunks of at most ``chunk_size`` images); each image masks the candidate
    whose removal keeps ``f`` highest (ties → lowest flat index, since candidates are in index order and
    ``argmax`` returns the first maximum). ``conf[:, t + 1]`` is that best value, ``conf[:, 0]`` the
    clean confidence. ``1 + P(P+1)/2`` forward passes per image, no backward.

    ``max_pixels`` refuses larger inputs (the cost grows as P²); ``None`` lifts the limit.
    """
    _require_eval(model)
    t0 = time.perf_counter()
    bsz, ch, h, w = x.shape
    p_total = h * w
    if max_pixels is not None and p_total > max_pixels:
        raise MetricError(
            f"exact BackSelect is limited to inputs of ≤ {max_pixels} pixels (cost grows as P²); this input "
            f"has {h}×{w} = {p_total}. Use method='batched-gradient'."
        )
    dev = x.device
    base = baseline.to(dev, x.dtype).expand_as(x).reshape(bsz, ch, p_total)
    cur = x.reshape(bsz, ch, p_total).clone()
    removed = torch.zeros(bsz, p_total, device=dev, dtype=torch.bool)
    order = torch.full((bsz, p_total), -1, device=dev, dtype=torch.int32)
    conf = torch.empty(bsz, p_total + 1, device=dev, dtype=torch.float32)
    logits = model(x).float()
    check_finite(logits, "logits")
    if c0 is None:
        c0 = logits.argmax(dim=1)
    conf[:, 0] = _confidence(logits, c0)
    per_chunk = max(1, chunk_size // bsz)
    c0_rep: dict[int, torch.Tensor] = {}
    for t in range(p_total):
        n_cand = p_total - t
        cand_idx = (~removed).nonzero()[:, 1].view(bsz, n_cand)  # ascending per row
        vals = torch.empty(bsz, n_cand, device=dev, dtype=torch.float32)
        for s in range(0, n_cand, per_chunk):
            ids = cand_idx[:, s : s + per_chunk]  # (B, m)
            m = ids.shape[1]
            batch = cur[:, None].expand(bsz, m, ch, p_total).clone()
            where = ids[:, :, None, None].expand(bsz, m, ch, 1)
            batch.scatter_(3, where, base[:, None].expand(bsz, m, ch, p_total).gather(3, where))
            out = model(batch.view(bsz * m, ch, h, w)).float()
            if m not in c0_rep:
                c0_rep[m] = c0.repeat_interleave(m)
            vals[:, s : s + m] = _confidence(out, c0_rep[m]).view(bsz, m)
        # first maximum → lowest pixel index among ties; a NaN is taken as the maximum, so a non-finite
        # candidate always reaches ``conf`` and is caught by the check below
        best = vals.argmax(dim=1, keepdim=True)
        pix = cand_idx.gather(1, best)  # (B, 1)
        order.scatter_(1, pix, t)
        removed.scatter_(1, pix, True)
        at = pix[:, None, :].expand(bsz, ch, 1)
        cur.scatter_(2, at, base.gather(2, at))
        conf[:, t + 1] = vals.gather(1, best).squeeze(1)
    check_finite(conf, "softmax confidences during exact BackSelect")
    return Trace(
        order=order.cpu(),
        conf=conf.cpu(),
        c0=c0.cpu(),
        k=1,
        n_forward=1 + p_total * (p_total + 1) // 2,
        n_backward=0,
        seconds=time.perf_counter() - t0,
        zero_grad_steps=torch.zeros(bsz, dtype=torch.int32),
    )
