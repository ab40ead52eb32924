"""Top-1 / top-5 accuracy on a labeled dataset.

Definition: for each image the model's logits over its label space; top-k accuracy = fraction of
images whose label is among the k largest logits (ties broken by ``torch.topk``). Images with label
-1 (unknown) are skipped. Keys: ``top1``, ``top5`` (``top5`` only when the label space has ≥ 5
classes). Per-item outputs: prediction, confidence (softmax max), label.

ImageNet models use ``imagenet-val`` with the checkpoint's own preprocessing by default (parameter
``dataset`` picks another, e.g. ``imagenet-sample``); demo-world models use the world's ``test`` split.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from biasbench.metrics.base import (
    DatasetRequest,
    EvalContext,
    ImageSet,
    KeyRole,
    Metric,
    MetricError,
    MetricResult,
    ModelWrapper,
)
from biasbench.metrics.common import check_labels, dataset_request, topk_correct


class Accuracy(Metric):
    """Top-1 / top-5 accuracy on a labeled dataset (imagenet-val; the demo world's test split)."""

    name = "accuracy"
    version = "1"
    item_columns = ("label", "prediction", "confidence")
    shares_batches = True
    # in-distribution accuracy: the report's fallback covariate (partial correlations) when ood.id is absent
    key_roles = {
        "top1": KeyRole("diagnostic", True, "top-1 accuracy", proportion=True),
        "top5": KeyRole("diagnostic", True, "top-5 accuracy", proportion=True),
    }

    @dataclass(frozen=True)
    class Params:
        dataset: str | None = None  # None: imagenet-val (ImageNet) / demo-world/test (demo world)

    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        return {"images": dataset_request(self.name, label_space, self.params.dataset)}

    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        ds = data["images"]
        keep = check_labels(ds, model, self.name)
        return self._result(ds, keep, ctx.predict(model, ds.images, description=f"accuracy on {ds.name}"))

    def evaluate_group(
        self, models: list[ModelWrapper], data: dict[str, ImageSet], ctx: EvalContext
    ) -> list[MetricResult | Exception]:
        """Each batch decoded once for all ``models`` (``bench run --group``); results as ``evaluate``'s."""
        ds = data["images"]
        out: list[MetricResult | Exception | None] = [None] * len(models)
        keeps: dict[int, torch.Tensor] = {}
        for i, model in enumerate(models):
            try:
                keeps[i] = check_labels(ds, model, self.name)
            except MetricError as e:
                out[i] = e
        live = list(keeps)
        logits = ctx.predict_group(
            [models[i] for i in live], ds.images, description=f"accuracy on {ds.name} ({len(live)} models)"
        )
        for i, lg in zip(live, logits, strict=True):
            out[i] = lg if isinstance(lg, Exception) else self._result(ds, keeps[i], lg)
        return [r for r in out if r is not None]

    def _result(self, ds: ImageSet, keep: torch.Tensor, logits: torch.Tensor) -> MetricResult:
        labels = ds.labels
        top1 = topk_correct(logits[keep], labels[keep], 1)
        scalars = {"top1": float(top1.double().mean())}
        if logits.shape[1] >= 5:
            scalars["top5"] = float(topk_correct(logits[keep], labels[keep], 5).double().mean())
        probs = logits.softmax(dim=1)
        conf, pred = probs.max(dim=1)
        items = pd.DataFrame(
            {
                "item": ds.item_ids,
                "label": labels.numpy(),
                "prediction": pred.numpy(),
                "confidence": conf.numpy(),
            }
        )
        return MetricResult(scalars=scalars, n=int(keep.sum()), items=items)
