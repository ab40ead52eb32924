"""SIS sufficiency (Carter et al. 2019, "What made you do this?"; Carter et al. 2021, "Overinterpretation
reveals image classification model pathologies"): how few pixels does a model need to stay confident?

Definition. ``f(x)`` = fp32 softmax probability of ``c0`` = argmax on the clean image,
model in eval mode. Features are pixels: a mask ``M`` (1, H, W) per image, broadcast over the channels;
a masked pixel takes the baseline value (default: the dataset mean in pixel space, ``model.pixel_mean``,
which is 0 after the model's own normalisation). BackSelect masks pixels in ``T = ceil(HW / k)`` steps,
recording the confidence *before* each step; the SIS at threshold ``τ`` is the set of pixels still
unmasked in the last recorded state whose confidence is ``≥ τ`` (images whose clean confidence is below
``τ`` have none). The exact conventions (what ``order`` and
``conf`` hold, ``t*``, empty SIS, uncovered images) are written down in
:mod:`biasbench.metrics.sis_traces`; the algorithms in :mod:`biasbench.metrics.sis_backselect`.

Parameters (``SIS.Params``):

* ``tau``: SIS threshold. ``None``: 0.9 for ImageNet models, 0.99 for every other label space (the demo
  world's small inputs).
* ``k``: pixels masked per Batched-Gradient step. ``None``: ImageNet: ``round(100·HW/224²)`` (100 at
  224 px — about 502 steps at any size); other label spaces: ``round(HW/50)`` (about 50 steps: 20 at
  the demo world's 32 px, so SIS fractions resolve to 2 % and 32 images cost ~1,600 forward+backward
  passes per checkpoint — a small share of the demo suite's minute on 2 CPU cores).
* ``method``: ``"batched-gradient"`` (default; ``T`` forward+backward passes per image) or ``"exact"``
  (exact BackSelect, one pixel per step, every candidate evaluated; ``1 + HW(HW+1)/2`` forward passes,
  inputs of ≤ 1024 pixels only).
* ``n_images``: a seeded random subset of the dataset (sorted by dataset index). ``None``: 256 for
  ImageNet (a ResNet-50 on one H100 takes a few minutes), 32 otherwise.
* ``baseline``: ``"mean"`` (``model.pixel_mean``), ``"black"`` (0) or ``"gray"`` (0.5), in pixel space.
* the run's seed (``bench run --seed``, ``EvalContext.seed``) picks the image subset and the random
  ``q`` subsets. ``q``: subset fraction (0.05) for the
  sufficiency rate and the top-``q`` subset comparison.
* ``dataset``: ``None``: ``imagenet-val`` (checkpoint preprocessing) for ImageNet models,
  ``demo-world/test`` for the demo world; any registered name otherwise (e.g. ``imagenet-sample``).
* ``precision``: ``"fp32"`` (default) or ``"fp64"`` (model, input, softmax and gradient in float64,
  on the run's device; about 4× the CPU time of fp32 — the path-to-path gradient noise drops from about
  1e-6 to 1e-14 of the step's largest gradient). Confidences are stored as float32 either way.
* ``rank_tol``: robust ranking of each Batched-Gradient step (rule in
  :mod:`biasbench.metrics.sis_backselect`): the gradient is rounded to ``rank_tol`` times the step's
  gradient scale (the smallest power of two ≥ its largest |g|) and equal values go in ascending pixel
  index. ``0`` ranks the raw gradient. Default ``DEFAULT_RANK_TOL``; the README's SIS section has the
  measurements it was chosen from.
* ``stability``: rerun that many images (a seeded subset of the evaluated ones) along a second,
  mathematically equal path — each image alone, model and input in the other memory format — and
  store both traces and the ``stability_*`` scalars (:mod:`biasbench.metrics.sis_stability`). 0: none.
* ``batch``: images BackSelect runs together (default 64, the harness's default ``--batch-size``). The
  batch composition changes the floating-point noise of the gradients, so it is a parameter (part of
  the job's key), not the run's ``--batch-size``: rerunning with another ``--batch-size`` gives the
  same traces. A CUDA out-of-memory error fails the job with a message to lower it (no silent halving).

The model runs in fp32 (or fp64) whatever the harness's AMP setting (traces are compared against
thresholds and against the exact oracle). A model whose eval-mode forward is stochastic (two passes over the same batch
differ) is refused. Outputs: one row per image in ``MetricResult.items`` with its full trace
(``order``: int16/int32 array of length HW, ``conf``: float32 array of length T+1) and its top-``q``
subset evaluations; every scalar is computed from those rows by
:func:`biasbench.metrics.sis_traces.scalars_from_traces`, which recomputes them for any ``τ`` and ``q``
without the model.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from biasbench.metrics.base import (
    WORK_DONE,
    DatasetRequest,
    EvalContext,
    ImageSet,
    KeyRole,
    Metric,
    MetricResult,
    ModelWrapper,
    seeded_subset,
)
from biasbench.metrics.common import dataset_request
from biasbench.metrics.sis_common import (  # noqa: F401 - re-exported: sis's public names
    BASELINES,
    DEFAULT_RANK_TOL,
    EXACT_MAX_PIXELS,
    FALLBACK_N_IMAGES,
    FALLBACK_PIXELS_PER_STEP,
    FALLBACK_TAU,
    METHODS,
    PRECISIONS,
    STOCHASTIC_CHECK_IMAGES,
    backselect_inputs,
    backselect_work,
    default_k,
    default_n_images,
    default_tau,
    over_batches,
    planned_backselect,
    random_subset,
    refuse_stochastic,
    resolve_baseline,
    run_backselect,
    stochastic_check_work,
    trace_rows,
)
from biasbench.metrics.sis_stability import pair_stats
from biasbench.metrics.sis_traces import (
    counts_from_traces,
    flags_from_scalars,
    scalars_from_traces,
    timings_from_traces,
    top_subset,
)


def other_memory_format(channels_last: bool) -> torch.memory_format:
    """The memory format of the stability rerun: contiguous if the main run is channels-last, else channels-last."""
    return torch.contiguous_format if channels_last else torch.channels_last


@contextlib.contextmanager
def model_as(
    model: torch.nn.Module,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
    *,
    restore_format: torch.memory_format,
    restore_dtype: torch.dtype = torch.float32,
) -> Iterator[torch.nn.Module]:
    """The model converted (in place) to ``dtype`` and ``memory_format`` for the block, then to
    ``restore_dtype`` (the harness's model is float32) and ``restore_format``."""
    model.to(dtype=dtype, memory_format=memory_format)
    try:
        yield model
    finally:
        model.to(dtype=restore_dtype, memory_format=restore_format)


class SIS(Metric):
    """SIS sufficiency (Carter et al.): size of the smallest pixel subset that keeps the prediction ≥ τ.

    Batched Gradient BackSelect (k pixels per step, gradient of the fp32 softmax probability of the
    clean prediction with respect to a pixel mask; masked pixels at the dataset mean) or exact
    BackSelect (≤ 1024 pixels) on a seeded subset of images. Keys: coverage (fraction with clean
    confidence ≥ τ); over covered images sis_frac_{mean,median,q25,q75} (SIS size / pixels),
    sufficiency_rate (SIS ≤ q of the pixels), confidence and top-1 on the top-q backselect subset vs a
    random q subset vs clean; fully-masked confidence (flagged when ≥ τ); passes per image. Seconds per
    image is a job timing (``jobs.timings``), not a key. Every image's trace is stored;
    ``scalars_from_traces`` recomputes all keys for any τ and q. With ``stability = N``, N images are
    rerun along a numerically different path and ``stability_*`` say how far the two runs agree;
    ``sis_frac_median_ci_*`` / ``sufficiency_rate_ci_*``: bootstrap 95 % CI over images.
    """

    name = "sis"
    version = "2"
    item_columns = ("label", "c0", "clean_conf", "order", "conf")
    headline = ("coverage", "sis_frac_median", "sufficiency_rate", "backselect_subset_top1")
    #: the bias figures; their bootstrap CIs over images and the two-path stability figures beside them
    key_roles: ClassVar[dict[str, KeyRole]] = {
        "sis_frac_median": KeyRole("bias", None, "median SIS size (fraction of pixels)"),
        "sufficiency_rate": KeyRole("bias", None, "sufficiency rate (SIS ≤ q of the pixels)"),
        "sis_frac_median_ci_*": KeyRole(
            "stability", None, "median SIS fraction, 95% bootstrap CI over images"
        ),
        "sufficiency_rate_ci_*": KeyRole("stability", None, "sufficiency rate, 95% bootstrap CI over images"),
        "stability_first_divergence_median": KeyRole(
            "stability", True, "median first step where a rerun's removal sets differ"
        ),
        "stability_first_divergence_frac_median": KeyRole(
            "stability", True, "median first divergence step / number of steps"
        ),
        "stability_abs_dsis_frac_median": KeyRole(
            "stability", False, "median |Δ SIS fraction| between two numerically different runs"
        ),
        "stability_jaccard_median": KeyRole("stability", True, "median Jaccard overlap of the two runs' SIS"),
        "stability_sis_size_spearman": KeyRole(
            "stability", True, "Spearman ρ of SIS sizes across images between the two runs"
        ),
        "stability_identical_frac": KeyRole("stability", True, "fraction of reruns with identical traces"),
        "stability_n_images": KeyRole("diagnostic", None, "images rerun for stability"),
    }

    @dataclass(frozen=True)
    class Params:
        tau: Annotated[float, Field(gt=0, le=1)] | None = None  # None: 0.9 (imagenet-1k) / 0.99 (others)
        k: Annotated[int, Field(ge=1)] | None = None  # None: 100·HW/224² (imagenet-1k) / HW/50 (others)
        method: Literal["batched-gradient", "exact"] = "batched-gradient"  # exact: ≤ 1024 pixels
        n_images: Annotated[int, Field(ge=1)] | None = None  # None: 256 (imagenet-1k) / 32 (others)
        baseline: Literal["mean", "black", "gray"] = "mean"  # "mean" = model.pixel_mean
        q: Annotated[float, Field(gt=0, le=1)] = 0.05
        dataset: str | None = None  # None: imagenet-val / demo-world/test
        precision: Literal["fp32", "fp64"] = "fp32"
        rank_tol: Annotated[float, Field(ge=0, lt=1)] = DEFAULT_RANK_TOL  # 0 = raw gradient
        stability: Annotated[int, Field(ge=0)] = 0  # images rerun along a second path
        batch: Annotated[int, Field(ge=1)] = 64  # images per BackSelect batch (not --batch-size)

    recomputable = ("tau", "q")

    @classmethod
    def recompute(
        cls, items: pd.DataFrame, stored: Mapping[str, float], changes: Mapping[str, float]
    ) -> tuple[dict[str, float], dict[str, int]]:
        """Every key for another ``tau`` and/or ``q`` from the stored traces (the unchanged one as
        stored; ``q`` 0.05 for a job stored without it)."""
        tau = float(changes.get("tau", stored["tau"]))
        q = float(changes.get("q", stored.get("q", 0.05)))
        scalars = scalars_from_traces(items, tau=tau, q=q)
        return scalars, counts_from_traces(items, tau, list(scalars))

    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        return {"images": dataset_request(self.name, label_space, self.params.dataset)}

    def work(self, role: str, n_images: int, label_space: str) -> float:
        """Forward-pass equivalents (a backward ≈ 2 forwards, as PGD's in :mod:`biasbench.metrics.ood`)
        of the evaluated images (``n_images`` or the label space's default): per image, BackSelect's
        (``sis_common.planned_backselect``) plus the 2 top-``q`` / random subset forwards; the
        stochasticity check's 2 forwards of up to 8 images; the stability rerun's images once more.
        When ``regions`` ran the same BackSelect first, the job records less (``WORK_DONE``)."""
        p = self.params
        n, per_image = planned_backselect(
            label_space, n_images, method=p.method, k=p.k, n_images_param=p.n_images
        )
        return float(n * (per_image + 2) + stochastic_check_work(n) + min(p.stability, n) * per_image)

    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        p = self.params
        ds = data["images"]
        inputs = backselect_inputs(
            self.name, ds, model, ctx.seed, method=p.method, tau=p.tau, k=p.k, n_images=p.n_images, q=p.q
        )
        tau, k, steps, n_q, odt = inputs.tau, inputs.k, inputs.steps, inputs.n_q, inputs.order_dtype
        images, labels, items = inputs.images, inputs.labels, inputs.items

        dtype = PRECISIONS[p.precision]
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format

        def to_device(u8: torch.Tensor) -> torch.Tensor:
            return ctx.to_device(u8).to(dtype)

        was_training = model.training
        model.eval()
        in_precision = (
            model_as(model, dtype, fmt, restore_format=fmt)
            if dtype != torch.float32
            else contextlib.nullcontext()
        )
        try:
            with in_precision:
                baseline = resolve_baseline(p.baseline, model, ctx.device)
                refuse_stochastic(model, to_device(images[:STOCHASTIC_CHECK_IMAGES]))
                handle = ctx.task(f"sis ({p.method}, k={k}, {steps} steps) on {ds.name}", len(images))
                rows, work = over_batches(
                    self.name,
                    len(images),
                    p.batch,
                    lambda sl: self._one_batch(
                        model, to_device(images[sl]), baseline, k, n_q, items[sl], labels[sl], odt, ctx.seed
                    ),
                    handle,
                )
                work += stochastic_check_work(len(images))
                if p.stability:
                    work += self._rerun(model, images, rows, baseline, k, tau, odt, ctx, dtype)
        finally:
            model.train(was_training)

        traces = pd.DataFrame(rows)
        result = summarize_traces(traces, tau, p.q)
        result.timings[WORK_DONE] = work
        return result

    def _rerun(
        self,
        model: ModelWrapper,
        images: torch.Tensor,
        rows: list[dict],
        baseline: torch.Tensor,
        k: int,
        tau: float,
        odt: np.dtype,
        ctx: EvalContext,
        dtype: torch.dtype,
    ) -> float:
        """The stability rerun (:mod:`biasbench.metrics.sis_stability`): a seeded subset of the images,
        each alone, model and input in the other memory format; adds the second trace and its pair
        statistics to those rows (empty traces and NaN to the others). Returns its forward equivalents."""
        n = len(rows)
        work = 0.0
        chosen = set(seeded_subset(n, self.params.stability, ctx.seed + 17).tolist())
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        alt = other_memory_format(ctx.channels_last)
        handle = ctx.task(f"sis stability rerun ({len(chosen)} images, one at a time)", len(chosen))
        with model_as(model, dtype, alt, restore_format=fmt, restore_dtype=dtype):
            for j, row in enumerate(rows):
                row.update(alt_order=np.zeros(0, odt), alt_conf=np.zeros(0, np.float32), alt_c0=-1)
                row.update(first_divergence=np.nan, size_ratio=np.nan, jaccard=np.nan)
                if j not in chosen:
                    continue
                x = ctx.to_device(images[j : j + 1]).to(dtype).contiguous(memory_format=alt)
                tr = run_backselect(
                    model, x, baseline, k, method=self.params.method, rank_tol=self.params.rank_tol
                )
                order, conf, c0 = (
                    tr.order[0].numpy().astype(odt),
                    tr.conf[0].numpy().astype(np.float32),
                    int(tr.c0[0]),
                )
                row.update(alt_order=order, alt_conf=conf, alt_c0=c0)
                row.update(pair_stats(row["order"], row["conf"], row["c0"], order, conf, c0, tau))
                work += backselect_work(tr, 1)
                handle.advance(1)
        return work

    def _one_batch(
        self,
        model: ModelWrapper,
        x: torch.Tensor,
        baseline: torch.Tensor,
        k: int,
        n_q: int,
        items: list[str],
        labels: np.ndarray,
        odt: np.dtype,
        seed: int,
    ) -> tuple[list[dict], float]:
        """The batch's traces and subset predictions as stored rows, and the forward equivalents spent."""
        p = self.params
        t0 = time.perf_counter()
        tr = run_backselect(model, x, baseline, k, method=self.params.method, rank_tol=self.params.rank_tol)
        bsz, _, h, w = x.shape
        n_pix = h * w
        order = tr.order.numpy()
        keep = np.zeros((2 * bsz, n_pix), dtype=bool)
        for b in range(bsz):
            keep[b, top_subset(order[b], n_q)] = True
            keep[bsz + b, random_subset(n_pix, n_q, seed, items[b])] = True
        keep_t = torch.from_numpy(keep).to(x.device).view(2 * bsz, 1, h, w)
        with torch.no_grad():
            xx = torch.cat([x, x])
            subset_imgs = torch.where(keep_t, xx, baseline.to(x.dtype).expand_as(xx))
            logits = model(subset_imgs).float()
            c0 = tr.c0.to(x.device)
            sub_conf = logits.softmax(dim=1).gather(1, torch.cat([c0, c0])[:, None]).squeeze(1).cpu().numpy()
            sub_pred = logits.argmax(dim=1).cpu().numpy()
        seconds = (time.perf_counter() - t0) / bsz
        rows = trace_rows(
            tr, items, labels, size=(h, w), order_dtype=odt, method=p.method, extra_forward=2,
            seconds=seconds, q=p.q,
        )  # fmt: skip
        for b, row in enumerate(rows):
            row.update(
                backselect_subset_conf=float(sub_conf[b]),
                backselect_subset_pred=int(sub_pred[b]),
                random_subset_conf=float(sub_conf[bsz + b]),
                random_subset_pred=int(sub_pred[bsz + b]),
            )
        return rows, backselect_work(tr, bsz) + 2.0 * bsz


def summarize_traces(traces: pd.DataFrame, tau: float, q: float) -> MetricResult:
    """A :class:`MetricResult` from stored traces alone: scalars, per-key counts, flags, the traces,
    and the run's timing (seconds per image)."""
    scalars = scalars_from_traces(traces, tau, q)
    return MetricResult(
        scalars=scalars,
        n=counts_from_traces(traces, tau, list(scalars)),
        items=traces,
        flags=flags_from_scalars(scalars, tau),
        timings=timings_from_traces(traces),
    )


__all__ = [
    "DEFAULT_RANK_TOL",
    "SIS",
    "default_k",
    "default_n_images",
    "default_tau",
    "model_as",
    "other_memory_format",
    "random_subset",
    "scalars_from_traces",
    "seeded_subset",
    "summarize_traces",
    "timings_from_traces",
]
