"""Test-only metrics: a slow probe (for the kill test), a NaN probe, and a well-behaved third-party
metric (mean confidence) for the plugin contract tests."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from biasbench.metrics.base import DatasetRequest, Metric, MetricResult, ParamError
from biasbench.metrics.common import dataset_request


class SlowProbe(Metric):
    """Mean max-logit on its dataset (default imagenet-sample); sleeps $PROBE_SLEEP s, appends to
    $PROBE_MARKER first."""

    name = "slow_probe"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        dataset: str = "imagenet-sample"

    def datasets(self, label_space):
        return {"images": DatasetRequest(self.params.dataset)}

    def evaluate(self, model, data, ctx):
        marker = os.environ.get("PROBE_MARKER")
        if marker:
            with open(marker, "a") as f:
                f.write(model.checkpoint_id + "\n")
        time.sleep(float(os.environ.get("PROBE_SLEEP", "0")))
        logits = ctx.predict(model, data["images"].images[:16])
        return MetricResult({"mean_max_logit": float(logits.max(1).values.mean())}, n=16)


class NanProbe(Metric):
    """Returns NaN (a broken metric): the job must fail with a clear message."""

    name = "nan_probe"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        dataset: str = "imagenet-sample"

    def datasets(self, label_space):
        return {"images": DatasetRequest(self.params.dataset)}

    def evaluate(self, model, data, ctx):
        return MetricResult({"value": float("nan")}, n=1)


class MeanConfidence(Metric):
    """Mean max-softmax confidence on the label space's clean set: a third-party metric in one file."""

    name = "mean_confidence"
    version = "1"
    item_columns = ("confidence",)

    @dataclass(frozen=True)
    class Params:
        dataset: str | None = None
        n_images: int = 200

    def check_params(self) -> None:
        if self.params.n_images < 1:
            raise ParamError(f"mean_confidence: parameter n_images must be ≥ 1, got {self.params.n_images}")

    def datasets(self, label_space):
        return {"images": dataset_request(self.name, label_space, self.params.dataset)}

    def evaluate(self, model, data, ctx):
        ds = data["images"]
        n = min(self.params.n_images, len(ds))
        conf = ctx.predict(model, ds.images[:n]).softmax(1).max(1).values
        items = pd.DataFrame({"item": ds.item_ids[:n], "confidence": conf.numpy()})
        return MetricResult({"mean_confidence": float(conf.mean())}, n=n, items=items)


def marker_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []
