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
    DEMO_WORLD,
    IMAGENET_1K,
    DatasetRequest,
    EvalContext,
    ImageSet,
    Metric,
    MetricError,
    MetricResult,
    ModelWrapper,
    NotApplicable,
)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (N,): label among the top-k logits."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


class Accuracy(Metric):
    """Top-1 / top-5 accuracy on a labeled dataset (imagenet-val; the demo world's test split)."""

    name = "accuracy"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        dataset: str | None = None  # None: imagenet-val (ImageNet) / demo-world/test (demo world)

    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        if self.params.dataset:
            return {"images": DatasetRequest(self.params.dataset)}
        if label_space == IMAGENET_1K:
            return {"images": DatasetRequest("imagenet-val")}
        if label_space == DEMO_WORLD:
            return {"images": DatasetRequest("demo-world/test")}
        raise NotApplicable(f"accuracy has no default dataset for label space {label_space!r}")

    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        ds = data["images"]
        if ds.label_space != model.label_space:
            raise MetricError(
                f"dataset {ds.name!r} is labeled in {ds.label_space!r} but the model predicts {model.label_space!r}"
            )
        keep = ds.labels >= 0
        if not bool(keep.any()):
            raise MetricError(f"dataset {ds.name!r} has no labeled images")
        logits = ctx.predict(model, ds.images, description=f"accuracy on {ds.name}")
        labels = ds.labels
        top1 = topk_correct(logits[keep], labels[keep], 1)
        scalars = {"top1": float(top1.float().mean())}
        if logits.shape[1] >= 5:
            scalars["top5"] = float(topk_correct(logits[keep], labels[keep], 5).float().mean())
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
