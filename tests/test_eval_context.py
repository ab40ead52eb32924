"""EvalContext batching: out-of-memory back-off (halve, retry the same slice, keep the smaller size)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from biasbench.metrics.base import EvalContext, ModelWrapper


class OomAbove(nn.Module):
    """Raises CUDA out-of-memory for batches larger than ``limit``; otherwise logits = mean pixel × class."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.sizes = limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("simulated")
        return x.mean(dim=(1, 2, 3))[:, None] * torch.arange(3.0)


def test_predict_halves_the_batch_on_out_of_memory_and_keeps_every_row() -> None:
    images = torch.randint(
        0, 256, (10, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    net = OomAbove(limit=2)
    model = ModelWrapper(net, mean=(0, 0, 0), std=(1, 1, 1), num_classes=3, label_space="toy")
    ctx = EvalContext(batch_size=8)
    logits = ctx.predict(model, images)
    assert ctx.batch_size == 2  # 8 → 4 → 2, and it sticks
    assert net.sizes == [8, 4, 2, 2, 2, 2, 2]
    expected = (images.float() / 255).mean(dim=(1, 2, 3))[:, None] * torch.arange(3.0)
    assert torch.allclose(logits, expected)


def test_out_of_memory_at_batch_size_one_is_raised() -> None:
    model = ModelWrapper(OomAbove(limit=0), mean=(0, 0, 0), std=(1, 1, 1), num_classes=3, label_space="toy")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        EvalContext(batch_size=2).predict(model, torch.zeros(3, 3, 4, 4, dtype=torch.uint8))


def test_map_batches_reports_each_finished_slice() -> None:
    class Handle:
        done = 0

        def advance(self, k: int) -> None:
            self.done += k

    h = Handle()
    out = EvalContext(batch_size=4).map_batches(10, lambda sl: (sl.start, sl.stop), h)
    assert out == [(0, 4), (4, 8), (8, 10)] and h.done == 10
