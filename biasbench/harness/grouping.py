"""Dataset-major execution (``bench run --group K|auto``): which checkpoints run together, how many.

Checkpoint-major order loads one checkpoint and runs all its metrics, so every checkpoint decodes
every dataset again; for a set that cannot be cached (ImageNet-C: 3.75 M JPEGs) decode sets the pace.
Dataset-major order keeps K checkpoints **with the same preprocessing** on the device and passes each
decoded batch through all K (``Metric.evaluate_group``, ``EvalContext.predict_group``): the decode work
per image drops K-fold. Checkpoints are grouped by their resolved preprocessing (only those can share
a decoded batch), in the order they were given; each bucket is cut into groups of K.

``auto`` picks K from free device memory: the memory one model takes (its parameters and buffers)
into what is free, after the activations of one batch (models of a group run one after another, so
their activations do not add up), capped at :data:`MAX_GROUP`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from biasbench.core.counts import auto_or_int
from biasbench.core.errors import InputError
from biasbench.core.preprocess import Preprocess
from biasbench.harness.plan import CheckpointPlan

#: the largest group ``auto`` picks (beyond it the decode saving is below 1 / MAX_GROUP per image)
MAX_GROUP = 16
#: the share of free memory ``auto`` fills
MEMORY_FRACTION = 0.7
#: activation bytes of one input byte in float32 inference (a generous ResNet-50 bound)
ACTIVATION_FACTOR = 64


def parse_group(text: str | int | None) -> int | str:
    """``auto`` or a positive int (``None``: 1, checkpoint-major)."""
    if text is None:
        return 1
    k = auto_or_int(text)
    if k is None:
        raise InputError(f"--group {text!r}: expected a number of checkpoints (e.g. 4) or auto")
    if k != "auto" and int(k) < 1:
        raise InputError(f"--group {text}: a group holds at least 1 checkpoint")
    return k


def preprocess_buckets(plans: list[CheckpointPlan]) -> list[list[CheckpointPlan]]:
    """The plans bucketed by resolved preprocessing, buckets and members in the order given. A plan
    without a preprocessing (it failed to plan) is a bucket of its own."""
    buckets: dict[object, list[CheckpointPlan]] = {}
    for i, cp in enumerate(plans):
        key: Preprocess | tuple[str, int] = cp.preprocess if cp.preprocess is not None else ("unplanned", i)
        buckets.setdefault(key, []).append(cp)
    return list(buckets.values())


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: CUDA's free memory, else the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def auto_group_size(
    device: torch.device,
    model: nn.Module,
    batch_size: int,
    image_shape: tuple[int, int, int] = (3, 224, 224),
    free: Callable[[torch.device], int] = free_memory,
) -> int:
    """K for ``--group auto``: how many models like ``model`` fit in ``MEMORY_FRACTION`` of the free
    memory (``model`` itself already loaded) after one batch's activations; 1 to :data:`MAX_GROUP`."""
    per_model = max(1, model_bytes(model))
    c, h, w = image_shape
    activations = batch_size * c * h * w * 4 * ACTIVATION_FACTOR
    room = int(free(device) * MEMORY_FRACTION) - activations
    return max(1, min(MAX_GROUP, 1 + room // per_model))
