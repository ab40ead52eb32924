"""Several models through one metric in lockstep: each ``ctx.predict`` call is served once for all.

:func:`evaluate_in_lockstep` is an ``evaluate_group`` (``bench run --group``) for a metric whose
``evaluate`` makes the same sequence of ``ctx.predict`` calls, on the same images, whatever the model
(the OOD sets, the corruption cells): it runs ``evaluate`` once per model, each in its own thread, and
makes their ``ctx.predict`` calls meet. When every evaluation still running waits in ``predict``, the
requests on identical images (the same files and indices of a streamed set, or equal tensors) are
served by one :meth:`~biasbench.metrics.base.EvalContext.predict_group`: each batch is decoded once
and goes through all the models. Everything else a metric does (PGD's gradient steps, scoring) runs
one thread at a time, so the device holds one model's work at once, as in checkpoint-major order.

A request with a ``transform`` (it may close over the model) or on other images than the others' is
computed for its model alone. Results equal ``evaluate(model, data, ctx)``'s: the same batches, the
same models, the same arithmetic. A model that raises fails its own result only.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from biasbench.core.streaming import StreamedImages
from biasbench.metrics.base import EvalContext, ImageSet, Metric, MetricResult, ModelWrapper


def same_images(a: Any, b: Any) -> bool:
    """Exactly the same images: the same files and indices of a streamed set, or equal tensors."""
    if a is b:
        return True
    if isinstance(a, StreamedImages) and isinstance(b, StreamedImages):
        return a.paths == b.paths and a.pre == b.pre and a.size == b.size and np.array_equal(a.index, b.index)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    return False


class _Rendezvous:
    """Where the evaluations' ``predict`` calls meet. ``baton``: the one thread running metric code."""

    def __init__(self, ctx: EvalContext, models: list[nn.Module]) -> None:
        self.ctx, self.models = ctx, models
        self.cv = threading.Condition()
        self.baton = threading.Lock()
        self.active = set(range(len(models)))
        self.waiting: dict[int, tuple[Any, str | None]] = {}
        self.served: dict[int, torch.Tensor | Exception] = {}

    def predict(self, i: int, images: Any, description: str | None) -> torch.Tensor:
        self.baton.release()
        try:
            with self.cv:
                self.waiting[i] = (images, description)
                self._serve_when_all_wait()
                while i not in self.served:
                    self.cv.wait()
                got = self.served.pop(i)
        finally:
            self.baton.acquire()
        if isinstance(got, Exception):
            raise got
        return got

    def leave(self, i: int) -> None:
        with self.cv:
            self.active.discard(i)
            self._serve_when_all_wait()

    def _serve_when_all_wait(self) -> None:
        """With the condition held: when every active evaluation waits, serve them all."""
        if not self.waiting or set(self.waiting) != self.active:
            return
        pending = dict(sorted(self.waiting.items()))
        self.waiting.clear()
        while pending:
            first = next(iter(pending))
            images, description = pending[first]
            members = [j for j, (im, _) in pending.items() if same_images(images, im)]
            try:
                out = self.ctx.predict_group(
                    [self.models[j] for j in members], images, description=description
                )
            except Exception as e:  # noqa: BLE001 - e.g. out of memory at batch size 1: all of them fail
                out = [e] * len(members)
            for j, res in zip(members, out, strict=True):
                self.served[j] = res
                del pending[j]
        self.cv.notify_all()


@dataclasses.dataclass
class _LockstepContext(EvalContext):
    rendezvous: _Rendezvous | None = None
    index: int = 0

    def predict(
        self,
        model: nn.Module,
        images: torch.Tensor,
        transform: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
        description: str | None = None,
    ) -> torch.Tensor:
        rv = self.rendezvous
        if rv is None or transform is not None or model is not rv.models[self.index]:
            return super().predict(model, images, transform, description)
        return rv.predict(self.index, images, description)


def evaluate_in_lockstep(
    metric: Metric, models: list[ModelWrapper], data: dict[str, ImageSet], ctx: EvalContext
) -> list[MetricResult | Exception]:
    """``metric.evaluate`` for every model, their ``ctx.predict`` calls shared (see the module)."""
    rv = _Rendezvous(ctx, list(models))
    out: list[MetricResult | Exception | None] = [None] * len(models)
    fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(EvalContext)}

    def run(i: int) -> None:
        sub = _LockstepContext(**fields, rendezvous=rv, index=i)
        rv.baton.acquire()
        try:
            out[i] = metric.evaluate(models[i], data, sub)
        except Exception as e:  # noqa: BLE001 - one model's failure is its own job's
            out[i] = e
        finally:
            rv.baton.release()
            rv.leave(i)

    threads = [threading.Thread(target=run, args=(i,), name=f"lockstep-{i}") for i in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r if r is not None else RuntimeError("evaluation ended without a result") for r in out]
