"""Sufficiency of pixel regions, and where the SIS pixels lie (Carter et al., "Overinterpretation reveals
image classification model pathologies", NeurIPS 2021: 5 % backward-selection subsets are classified far
better than 5 % random subsets, Table 1; on ImageNet the border pixels alone suffice).

Definition. ``f(x)`` = fp32 softmax probability of ``c0`` = argmax on the clean image, model in eval
mode; a pixel "at the baseline" takes the SIS baseline value in every channel (default the dataset mean
in pixel space, ``model.pixel_mean``: 0 after the model's own normalisation). For each image of a seeded
subset, the model sees five versions — only these pixels kept, every other at the baseline:

* ``full``: every pixel (the clean image);
* ``frame``: the border frame, the pixels within ``w`` of an edge, ``w`` the smallest width whose frame
  holds at least ``frame_share`` of the pixels (:mod:`biasbench.metrics.sis_regions`);
* ``centre``: the complement of that frame;
* ``backselect``: the ``ceil(q·HW)`` pixels Batched-Gradient (or exact) BackSelect masked last — SIS's
  own top-``q`` subset (:mod:`biasbench.metrics.sis_traces`);
* ``random``: ``ceil(q·HW)`` pixels drawn without replacement, seeded by (run seed, item id) — the same
  pixels as ``sis``'s random subset.

Per condition: top-1 accuracy against the label and mean ``f`` (mean confidence of the clean prediction)
over every evaluated image, and the share of images that keep ``c0``. The four masked versions of a batch
go through the model together (``batch`` images × 4 conditions, in forwards of ``batch`` images each).

Where the SIS pixels lie: BackSelect's trace gives each image's SIS at ``τ`` (as ``sis``); over covered
images with a non-empty SIS, the share of SIS pixels inside the frame against the frame's share of the
image (``border_enrichment``, 1 = as a random pixel, 1/frame share = all in the frame) and a ``grid ×
grid`` heat map of SIS density (``sis_density@{row}_{col}``, 1 = uniform), drawn in the report as a
declared :class:`~biasbench.metrics.base.KeyGrid`. Every row keeps its trace (``order``, ``conf``) and
condition outputs, so ``bench results --recompute regions.tau=…`` redoes every key without the model.

Parameters (``Regions.Params``): ``q`` = 0.05 (the study's 5 %); ``frame_share`` = 0.05. The study
reports that border pixels suffice on ImageNet but fixes no frame width to copy, so the default frame
holds the **same pixel budget as the subsets**: frame, top-``q`` BackSelect and random ``q`` pixels are
then compared at (nearly) equal numbers of pixels — the question "are these 5 % as good as the best 5 %,
or as 5 % anywhere?" — and the centre is the complementary 95 %. At 224 px the frame is 3 px wide
(5.3 % of the pixels), at 299 px 4 px (5.3 %); at the demo world's 32 px the thinnest frame, 1 px, is
already 12.1 % (the run is flagged when the actual share is more than 1.5 × the asked one; the key
``frame_share`` always states it). ``grid`` = 8 (heat-map cells a side: 28 px cells at 224 px, 4 px at
32 px; 64 keys). BackSelect's parameters and defaults are SIS's, so with equal values and seed the
traces equal ``sis``'s: ``tau`` (0.9 ImageNet / 0.99 others), ``k`` (100 at 224 px / HW/50),
``method`` (``batched-gradient`` | ``exact``), ``n_images`` (256 / 32), ``baseline`` (``mean`` |
``black`` | ``gray``), ``dataset`` (``imagenet-val`` / ``demo-world/test``), ``rank_tol`` (0),
``batch`` (64). A model that is stochastic in eval mode is refused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from biasbench.core.errors import InputError
from biasbench.metrics.base import (
    WORK_DONE,
    DatasetRequest,
    EvalContext,
    ImageSet,
    KeyGrid,
    KeyRole,
    Metric,
    MetricError,
    MetricResult,
    ModelWrapper,
    check_finite,
)
from biasbench.metrics.common import dataset_request
from biasbench.metrics.sis_common import (
    DEFAULT_RANK_TOL,
    STOCHASTIC_CHECK_IMAGES,
    backselect_inputs,
    backselect_work,
    over_batches,
    planned_backselect,
    random_subset,
    refuse_stochastic,
    resolve_baseline,
    run_backselect,
    stochastic_check_work,
    trace_rows,
)
from biasbench.metrics.sis_regions import (
    DENSITY_KEY,
    counts_from_items,
    frame_mask,
    frame_share,
    frame_width,
    location,
    scalars_from_items,
)
from biasbench.metrics.sis_traces import timings_from_traces

#: a frame more than this many times the asked share (a small image's thinnest frame) is flagged
FRAME_SHARE_FLAG = 1.5


class Regions(Metric):
    """Sufficiency of pixel regions (Carter et al. 2021): top-1 and confidence of the clean prediction
    when only the border frame, its centre complement, the top-q BackSelect pixels or q random pixels
    are kept (the rest at the baseline), and where the SIS pixels lie: their share in the border frame
    against the frame's share (border enrichment) and a heat map of SIS density over the images."""

    name = "regions"
    version = "1"
    item_columns = (
        "label",
        "c0",
        "clean_conf",
        "order",
        "conf",
        "frame_conf",
        "frame_pred",
        "centre_conf",
        "centre_pred",
        "backselect_conf",
        "backselect_pred",
        "random_conf",
        "random_pred",
    )
    headline = ("frame_top1", "backselect_top1", "random_top1", "border_enrichment")
    key_roles: ClassVar[dict[str, KeyRole]] = {
        "border_enrichment": KeyRole(
            "bias", None, "SIS border enrichment (share of SIS pixels in the frame / frame share)"
        ),
        "frame_top1": KeyRole("bias", None, "top-1 from the border frame alone"),
        "backselect_top1": KeyRole("bias", None, "top-1 from the top-q BackSelect pixels alone"),
        "border_enrichment_median": KeyRole("diagnostic", None, "median per-image SIS border enrichment"),
        "sis_density@*": KeyRole("diagnostic", None, "SIS density in a grid cell (1 = uniform)"),
        "*_top1": KeyRole("diagnostic", True, "top-1 with only a region kept"),
        "*_conf": KeyRole("diagnostic", None, "mean confidence of the clean prediction"),
        "*_agree": KeyRole("diagnostic", None, "share of images keeping the clean prediction"),
    }
    curves = (
        KeyGrid(
            name="regions_sis_density",
            title="Where the SIS pixels lie",
            key=DENSITY_KEY,
            colour_label="SIS density (1 = uniform)",
            caption=(
                "Per checkpoint, the mean over its covered images of the SIS's share in each cell of a "
                "grid over the image, divided by the cell's share of the pixels: 1 = as many SIS pixels as "
                "a uniform spread, > 1 = enriched (red). A red rim is SIS pixels on the border."
            ),
            centre=1.0,
        ),
    )

    @dataclass(frozen=True)
    class Params:
        q: Annotated[float, Field(gt=0, le=1)] = 0.05  # subset fraction of backselect and random
        frame_share: Annotated[float, Field(gt=0, lt=1)] = 0.05  # the frame's (minimum) pixel share
        grid: Annotated[int, Field(ge=1)] = 8  # heat-map cells a side
        tau: Annotated[float, Field(gt=0, le=1)] | None = None  # None: 0.9 (imagenet-1k) / 0.99 (others)
        k: Annotated[int, Field(ge=1)] | None = None  # None: 100·HW/224² (imagenet-1k) / HW/50 (others)
        method: Literal["batched-gradient", "exact"] = "batched-gradient"  # exact: ≤ 1024 pixels
        n_images: Annotated[int, Field(ge=1)] | None = None  # None: 256 (imagenet-1k) / 32 (others)
        baseline: Literal["mean", "black", "gray"] = "mean"  # "mean" = model.pixel_mean
        dataset: str | None = None  # None: imagenet-val / demo-world/test
        rank_tol: Annotated[float, Field(ge=0, lt=1)] = DEFAULT_RANK_TOL
        batch: Annotated[int, Field(ge=1)] = 64  # images per BackSelect batch (not --batch-size)

    recomputable = ("tau",)

    @classmethod
    def recompute(
        cls, items: pd.DataFrame, stored: Mapping[str, float], changes: Mapping[str, float]
    ) -> tuple[dict[str, float], dict[str, int]]:
        """Every key at another ``tau`` from the stored rows (the heat map on the stored grid)."""
        tau = float(changes.get("tau", stored["tau"]))
        grid = int(stored["grid"])
        scalars = scalars_from_items(items, tau, grid)
        return scalars, counts_from_items(items, tau, grid, list(scalars))

    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        return {"images": dataset_request(self.name, label_space, self.params.dataset)}

    def work(self, role: str, n_images: int, label_space: str) -> float:
        """Forward-pass equivalents: per image, BackSelect's (``sis_common.planned_backselect``) and the
        4 masked conditions; the stochasticity check's 2 forwards of up to 8 images. When ``sis`` ran
        the same BackSelect first, the job records only its own forwards (``WORK_DONE``)."""
        p = self.params
        n, per_image = planned_backselect(
            label_space, n_images, method=p.method, k=p.k, n_images_param=p.n_images
        )
        return float(n * (per_image + 4) + stochastic_check_work(n))

    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        p = self.params
        ds = data["images"]
        inputs = backselect_inputs(
            self.name, ds, model, ctx.seed, method=p.method, tau=p.tau, k=p.k, n_images=p.n_images, q=p.q
        )
        _, _, h, w = ds.images.shape
        try:
            fw = frame_width(h, w, p.frame_share)
            grid_ok = 1 <= p.grid <= min(h, w)
        except InputError as e:
            raise MetricError(f"regions on {ds.name!r}: {e}") from e
        if not grid_ok:
            raise MetricError(
                f"regions: grid = {p.grid} cells a side exceeds the {h}×{w} images of {ds.name!r}"
            )
        tau, k, n_q, odt = inputs.tau, inputs.k, inputs.n_q, inputs.order_dtype
        images, labels, items = inputs.images, inputs.labels, inputs.items
        frame = torch.from_numpy(frame_mask(h, w, fw))

        was_training = model.training
        model.eval()
        try:
            baseline = resolve_baseline(p.baseline, model, ctx.device)
            refuse_stochastic(model, ctx.to_device(images[:STOCHASTIC_CHECK_IMAGES]))
            handle = ctx.task(f"regions (BackSelect k={k}, 4 masked conditions) on {ds.name}", len(images))
            rows, work = over_batches(
                self.name,
                len(images),
                p.batch,
                lambda sl: self._one_batch(
                    model,
                    ctx.to_device(images[sl]),
                    baseline,
                    k,
                    n_q,
                    frame,
                    items[sl],
                    labels[sl],
                    ctx.seed,
                    odt,
                ),
                handle,
            )
            work += stochastic_check_work(len(images))
        finally:
            model.train(was_training)

        table = pd.DataFrame(rows)
        table["frame_width"] = fw
        _, _, share, cells = location(table, tau, p.grid)
        table["sis_border_share"] = share  # at the run's τ (NaN: not covered or an empty SIS)
        table["sis_cells"] = list(cells.astype(np.float32))  # SIS pixels per grid cell, row-major
        scalars = scalars_from_items(table, tau, p.grid)
        flags = []
        actual = frame_share(h, w, fw)
        if actual > FRAME_SHARE_FLAG * p.frame_share:
            flags.append(
                f"regions: the thinnest frame of a {h}×{w} image ({fw} px) holds {actual:.1%} of the pixels, "
                f"more than the asked {p.frame_share:.1%}; frame keys refer to {actual:.1%}"
            )
        return MetricResult(
            scalars=scalars,
            n=counts_from_items(table, tau, p.grid, list(scalars)),
            items=table,
            flags=flags,
            timings={**timings_from_traces(table), WORK_DONE: work},
        )

    def _one_batch(
        self,
        model: ModelWrapper,
        x: torch.Tensor,
        baseline: torch.Tensor,
        k: int,
        n_q: int,
        frame: torch.Tensor,
        items: list[str],
        labels: np.ndarray,
        seed: int,
        odt: np.dtype,
    ) -> tuple[list[dict], float]:
        """BackSelect on the batch, then its four masked conditions (frame, centre, top-``q``
        BackSelect, random ``q``) through the model in forwards of ``batch`` images: the stored rows
        and the forward equivalents spent."""
        t0 = time.perf_counter()
        tr = run_backselect(model, x, baseline, k, method=self.params.method, rank_tol=self.params.rank_tol)
        bsz, _, h, w = x.shape
        n_pix = h * w
        dev = x.device
        # top-q subset: stable sort of −order (ties → lower flat index), as sis_traces.top_subset
        top = torch.argsort(-tr.order.long(), dim=1, stable=True)[:, :n_q]
        rand = torch.from_numpy(np.stack([random_subset(n_pix, n_q, seed, it) for it in items]))
        empty = torch.zeros(bsz, n_pix, dtype=torch.bool)
        keep = torch.cat(
            [
                frame.expand(bsz, n_pix),
                (~frame).expand(bsz, n_pix),
                empty.scatter(1, top, True),
                empty.scatter(1, rand, True),
            ]
        ).to(dev)
        keep = keep.view(4 * bsz, 1, h, w)
        c0 = tr.c0.to(dev).repeat(4)
        base = baseline.to(dev, x.dtype)
        confs, preds = [], []
        with torch.no_grad():
            for s in range(0, 4 * bsz, self.params.batch):
                part = slice(s, min(s + self.params.batch, 4 * bsz))
                xs = x[torch.arange(part.start, part.stop, device=dev) % bsz]  # condition-major rows
                logits = model(torch.where(keep[part], xs, base)).float()
                check_finite(logits, "logits")
                confs.append(logits.softmax(dim=1).gather(1, c0[part, None]).squeeze(1))
                preds.append(logits.argmax(dim=1))
        conf4 = torch.cat(confs).view(4, bsz).cpu().numpy()
        pred4 = torch.cat(preds).view(4, bsz).cpu().numpy()
        seconds = (time.perf_counter() - t0) / bsz
        names = ("frame", "centre", "backselect", "random")
        rows = trace_rows(
            tr, items, labels, size=(h, w), order_dtype=odt, method=self.params.method, extra_forward=4,
            seconds=seconds, q=self.params.q,
        )  # fmt: skip
        for b, row in enumerate(rows):
            row["subset_pixels"] = int(n_q)
            row.update({f"{name}_conf": float(conf4[j, b]) for j, name in enumerate(names)})
            row.update({f"{name}_pred": int(pred4[j, b]) for j, name in enumerate(names)})
        return rows, backselect_work(tr, bsz) + 4.0 * bsz


__all__ = ["Regions"]
