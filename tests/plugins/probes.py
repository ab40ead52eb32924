"""Test-only metrics: a slow probe (for the kill test), a NaN probe and a mean-logit probe."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from biasbench.metrics.base import DatasetRequest, Metric, MetricResult


class SlowProbe(Metric):
    """Mean max-logit on imagenet-sample; sleeps $PROBE_SLEEP s and appends to $PROBE_MARKER first."""

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
        pass

    def datasets(self, label_space):
        return {"images": DatasetRequest("imagenet-sample")}

    def evaluate(self, model, data, ctx):
        return MetricResult({"value": float("nan")}, n=1)


def marker_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []
