"""What the BackSelect metrics share (:mod:`biasbench.metrics.sis`, :mod:`biasbench.metrics.regions`): the
label space's defaults for ``τ``, ``k`` and the image count, the masked-pixel baseline, the seeded
random pixel subsets, and the refusal of models that are stochastic in eval mode. Not a plugin: plugins
never import each other, so both import these from here. The definitions are SIS's (Carter et al.
2019/2021, ``../shared/DESIGN.md``): the defaults are read from a label space's ``sis`` section.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from biasbench.metrics.base import ImageSet, MetricError, ModelWrapper, seeded_subset
from biasbench.metrics.common import space_default
from biasbench.metrics.sis_backselect import Trace, batched_gradient_backselect, exact_backselect
from biasbench.metrics.sis_memo import remembered
from biasbench.metrics.sis_traces import num_steps, order_dtype, subset_size

METHODS = ("batched-gradient", "exact")
BASELINES = ("mean", "black", "gray")
PRECISIONS = {"fp32": torch.float32, "fp64": torch.float64}
EXACT_MAX_PIXELS = 1024
#: robust-ranking tolerance of ``SIS.Params.rank_tol`` (relative to the step's gradient scale)
DEFAULT_RANK_TOL = 0.0


#: Defaults where the label space sets none (small inputs such as the demo world); ImageNet-1k sets
#: tau 0.9, 224²/100 pixels per step (k = 100 at 224 px) and 256 images (:mod:`biasbench.core.labels`).
FALLBACK_TAU = 0.99
FALLBACK_PIXELS_PER_STEP = 50.0
FALLBACK_N_IMAGES = 32


def default_tau(label_space: str) -> float:
    """The label space's SIS τ (ImageNet-1k: 0.9), else 0.99 (small inputs such as the demo world)."""
    return float(space_default("sis", label_space, "tau", FALLBACK_TAU))  # type: ignore[arg-type]


def default_k(label_space: str, height: int, width: int) -> int:
    """Pixels removed per step: the image area over the label space's ``pixels_per_step`` (ImageNet-1k:
    224²/100, i.e. k = 100 at 224 px), else ``HW/50`` (≈ 50 steps)."""
    per_step = float(space_default("sis", label_space, "pixels_per_step", FALLBACK_PIXELS_PER_STEP))  # type: ignore[arg-type]
    return max(1, int(round(height * width / per_step)))


def default_n_images(label_space: str) -> int:
    return int(space_default("sis", label_space, "n_images", FALLBACK_N_IMAGES))  # type: ignore[arg-type]


def _item_seed(seed: int, item: str) -> int:
    return int(hashlib.sha256(f"sis-random-subset:{seed}:{item}".encode()).hexdigest()[:15], 16)


def random_subset(num_pixels: int, n: int, seed: int, item: str) -> np.ndarray:
    """``n`` flat pixel indices drawn without replacement, seeded by ``(seed, item id)`` only."""
    g = torch.Generator().manual_seed(_item_seed(seed, item))
    return torch.randperm(num_pixels, generator=g)[:n].numpy()


def resolve_baseline(kind: str, model: ModelWrapper, device: torch.device) -> torch.Tensor:
    """The masked-pixel value in pixel space, shape (1, 3, 1, 1), on ``device``."""
    if kind == "mean":
        return model.pixel_mean.detach().to(device, torch.float32).reshape(1, 3, 1, 1)
    if kind == "black":
        return torch.zeros(1, 3, 1, 1, device=device)
    if kind == "gray":
        return torch.full((1, 3, 1, 1), 0.5, device=device)
    raise MetricError(f"unknown SIS baseline {kind!r}; choose one of {', '.join(BASELINES)}")


#: images of the stochasticity check (``refuse_stochastic``: two forwards of the first up to this many)
STOCHASTIC_CHECK_IMAGES = 8


def stochastic_check_work(n_images: int) -> float:
    """Forward equivalents of ``refuse_stochastic`` on a metric's ``n_images``."""
    return 2.0 * min(STOCHASTIC_CHECK_IMAGES, n_images)


@torch.no_grad()
def refuse_stochastic(model: torch.nn.Module, images: torch.Tensor, atol: float = 1e-5) -> None:
    """Raise :class:`MetricError` if two eval-mode forward passes over the first
    :data:`STOCHASTIC_CHECK_IMAGES` of ``images`` (on the model's device) disagree."""
    x = images[:STOCHASTIC_CHECK_IMAGES]
    a = model(x).float().softmax(dim=1)
    b = model(x).float().softmax(dim=1)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    if not diff <= atol:
        raise MetricError(
            f"SIS refuses a model that is stochastic in eval mode: two forward passes over the same batch "
            f"differ by up to {diff:.3g} in softmax probability (dropout or noise active in eval mode?). "
            "BackSelect needs a deterministic f; make the model deterministic (e.g. average it) first."
        )


def trace_rows(
    tr: Trace,
    items: Sequence[str],
    labels: Sequence[int],
    *,
    size: tuple[int, int],
    order_dtype: np.dtype,
    method: str,
    extra_forward: int,
    seconds: float,
    q: float,
) -> list[dict[str, Any]]:
    """One stored row per image of a BackSelect batch: the trace (``order``, ``conf``, ``c0``) and its
    bookkeeping, as ``sis`` and ``regions`` store them. ``size``: the images' (H, W); ``extra_forward``:
    the metric's own forwards per image beside BackSelect's (its subset conditions); ``seconds``: wall
    time per image."""
    order = tr.order.numpy()
    conf = tr.conf.numpy().astype(np.float32)
    c0 = tr.c0.numpy()
    return [
        {
            "item": items[b],
            "label": int(labels[b]),
            "c0": int(c0[b]),
            "clean_conf": float(conf[b, 0]),
            "order": order[b].astype(order_dtype),
            "conf": conf[b].copy(),
            "height": size[0],
            "width": size[1],
            "k": int(tr.k),
            "method": method,
            "n_forward": int(tr.n_forward + extra_forward),
            "n_backward": int(tr.n_backward),
            "zero_grad_steps": int(tr.zero_grad_steps[b]) if tr.zero_grad_steps is not None else 0,
            "seconds": float(seconds),
            "subset_q": float(q),
        }
        for b in range(order.shape[0])
    ]


@dataclass(frozen=True)
class BackSelectInputs:
    """What a BackSelect metric runs on: ``τ``, ``k`` pixels per step (1 for exact), the seeded image
    subset (uint8 ``images``, ``labels``, ``items``), the top-``q`` subset size ``n_q``, the step count
    and the dtype that stores a trace's order."""

    tau: float
    k: int
    images: torch.Tensor
    labels: np.ndarray
    items: list[str]
    n_q: int
    steps: int
    order_dtype: np.dtype


def backselect_inputs(
    metric: str,
    ds: ImageSet,
    model: ModelWrapper,
    seed: int,
    *,
    method: str,
    tau: float | None,
    k: int | None,
    n_images: int | None,
    q: float,
) -> BackSelectInputs:
    """Check ``ds`` against ``model`` and the method, and resolve the parameters left ``None`` from the
    label space's defaults; the images are a seeded subset of ``ds`` (``seeded_subset``)."""
    if ds.label_space != model.label_space:
        raise MetricError(
            f"{metric}: dataset {ds.name!r} is labeled in {ds.label_space!r} but the model predicts "
            f"{model.label_space!r}"
        )
    if len(ds) == 0:
        raise MetricError(f"dataset {ds.name!r} is empty")
    _, _, h, w = ds.images.shape
    n_pix = h * w
    if method == "exact" and n_pix > EXACT_MAX_PIXELS:
        raise MetricError(
            f"{metric}: method 'exact' is limited to inputs of ≤ {EXACT_MAX_PIXELS} pixels; {ds.name!r} has "
            f"{h}×{w} = {n_pix}. Use method='batched-gradient'."
        )
    space = model.label_space
    k = 1 if method == "exact" else (k if k is not None else default_k(space, h, w))
    n = n_images if n_images is not None else default_n_images(space)
    idx = torch.as_tensor(seeded_subset(len(ds), n, seed), dtype=torch.long)
    steps = num_steps(n_pix, k)
    return BackSelectInputs(
        tau=tau if tau is not None else default_tau(space),
        k=k,
        images=ds.images[idx],
        labels=ds.labels[idx].numpy(),
        items=[ds.item_ids[i] for i in idx.tolist()],
        n_q=subset_size(n_pix, q),
        steps=steps,
        order_dtype=order_dtype(steps),
    )


def run_backselect(
    model: torch.nn.Module, x: torch.Tensor, baseline: torch.Tensor, k: int, *, method: str, rank_tol: float
) -> Trace:
    """Exact BackSelect (one pixel per step, every candidate evaluated) or Batched Gradient BackSelect
    (``k`` per step, robust ranking at ``rank_tol``) of the batch ``x`` — or the same trace computed
    earlier by another metric on the same model and batch (:mod:`biasbench.metrics.sis_memo`)."""

    def compute() -> Trace:
        if method == "exact":
            return exact_backselect(model, x, baseline, chunk_size=4096, max_pixels=EXACT_MAX_PIXELS)
        return batched_gradient_backselect(model, x, baseline, k, rank_tol=rank_tol)

    return remembered(model, x, baseline, (method, k, float(rank_tol)), compute)


def planned_backselect(
    label_space: str, n_images: int, *, method: str, k: int | None, n_images_param: int | None
) -> tuple[int, int]:
    """For ``Metric.work``: the images a BackSelect metric evaluates of a set of ``n_images`` and the
    forward equivalents of one image's BackSelect (a backward ≈ 2 forwards): Batched Gradient's
    ``T + 1`` forwards and ``T`` backwards (``3T + 1``), exact BackSelect's ``1 + HW(HW + 1)/2``
    forwards; ``H = W`` is the label space's ``image_size`` (``defaults["sis"]``; 224 where it sets none)."""
    n = min(n_images, n_images_param if n_images_param is not None else default_n_images(label_space))
    side = int(space_default("sis", label_space, "image_size", 224))  # type: ignore[arg-type]
    n_pix = side * side
    if method == "exact":
        return n, 1 + n_pix * (n_pix + 1) // 2
    k = k if k is not None else default_k(label_space, side, side)
    return n, 3 * num_steps(n_pix, k) + 1


def backselect_work(tr: Trace, batch: int) -> float:
    """Forward-pass equivalents a batch's BackSelect cost this job (a backward ≈ 2 forwards): none when
    the trace was reused."""
    return 0.0 if tr.reused else float(batch * (tr.n_forward + 2 * tr.n_backward))


def over_batches(
    metric: str, n: int, batch: int, one_batch: Callable[[slice], tuple[list[dict], float]], handle: Any
) -> tuple[list[dict], float]:
    """``one_batch`` over consecutive slices of ``batch`` of the ``n`` images (the progress ``handle``
    advanced after each): their stored rows and forward equivalents, joined. Running out of device
    memory ends in a message naming the parameter to halve."""
    rows: list[dict] = []
    work = 0.0
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        try:
            batch_rows, batch_work = one_batch(sl)
        except torch.cuda.OutOfMemoryError as e:
            raise MetricError(
                f"{metric}: out of device memory with {batch} images per BackSelect batch; rerun with "
                f"-p {metric}.batch={max(1, batch // 2)} (the batch is fixed so that traces do not "
                "depend on the memory at hand)"
            ) from e
        rows += batch_rows
        work += batch_work
        handle.advance(sl.stop - sl.start)
    return rows, work
