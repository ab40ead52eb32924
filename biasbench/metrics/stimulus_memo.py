"""Model-independent stimuli remembered across the checkpoints of a run (critical band's noisy images).

Critical band's 49 demo conditions add seeded band-limited noise to the same images for every
checkpoint: the stimulus of a batch depends on the images, the seed, the settings, the batch's slice,
the device and the thread count, never on the model. Building it (the Laplacian pyramid, the
out-of-range redraws) took about a fifth of a demo job; this memo keeps each batch's stimulus — and
what building it added to the job's counters — for the next checkpoint, which takes it instead of
building it again: the same tensor values, so the same predictions.

A job's stimuli are remembered only when all of them fit in :data:`MAX_BYTES` (the demo's critical band:
155 images × 49 conditions × 3 × 32 × 32 float32 = 93 MB); an ImageNet run (50,000 images at 224 px)
never is. The memo keeps the stimuli of one job key at a time: a job with another key replaces them,
and the harness empties it when a run ends (:func:`forget`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from biasbench.core.hashing import tensor_sha256

#: the stimuli of one job kept at most (bytes)
MAX_BYTES = 256 * 2**20


def digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes, with its dtype and shape."""
    return f"{tensor_sha256(t)}:{t.dtype}:{tuple(t.shape)}"


@dataclass
class _Stimuli:
    key: Hashable
    batches: dict[tuple[Hashable, int, int], tuple[torch.Tensor, tuple[int, ...]]] = field(
        default_factory=dict
    )


_MEMO: _Stimuli | None = None


def remembered(
    key: Hashable,
    nbytes: int,
    transform: Callable[[torch.Tensor, slice], torch.Tensor],
    counters: Callable[[], tuple[int, ...]],
    add: Callable[[tuple[int, ...]], None],
    part: Hashable = None,
) -> Callable[[torch.Tensor, slice], torch.Tensor]:
    """``transform`` with its outputs remembered under ``key`` (everything the stimuli depend on), the
    ``part`` of the job it builds (one condition of a job that predicts condition by condition) and
    the batch's slice: a batch built before under the same key is served, and what building it added
    to the job's counters (``counters()`` before and after) is added again with ``add``. ``nbytes``:
    the job's stimuli together, every part; above :data:`MAX_BYTES` nothing is remembered."""
    global _MEMO
    if nbytes > MAX_BYTES:
        return transform
    key = (key, torch.get_num_threads())
    if _MEMO is None or _MEMO.key != key:
        _MEMO = _Stimuli(key)
    batches = _MEMO.batches

    def run(x: torch.Tensor, sl: slice) -> torch.Tensor:
        got = batches.get((part, sl.start, sl.stop))
        if got is not None:
            add(got[1])
            return got[0]
        before = counters()
        out = transform(x, sl)
        batches[(part, sl.start, sl.stop)] = (
            out,
            tuple(a - b for a, b in zip(counters(), before, strict=True)),
        )
        return out

    return run


def forget() -> None:
    """Drop the remembered stimuli."""
    global _MEMO
    _MEMO = None
