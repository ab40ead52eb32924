"""BackSelect traces remembered across the metrics of one loaded model (``sis`` and ``regions``).

``sis`` and ``regions`` run the same BackSelect (same seeded images, ``k``, method, ranking tolerance,
baseline and batch) on the same checkpoint; in one run the harness hands both jobs the same model object,
so the second one can take the first one's traces instead of recomputing them — the largest share of
both jobs' cost. A trace is served only when everything that can change its bits is equal:

* the model object (a weak reference: the memo dies with the model) and its state — every parameter's
  and buffer's storage address, version counter (bumped by in-place updates such as an optimizer step),
  dtype and strides;
* the input batch's bytes, dtype, shape, strides (memory format) and device; the baseline's bytes;
* ``k``, the method, the ranking tolerance and the thread count (floating-point sums are ordered by it).

A served trace is the same object that was computed (never modified by its users), marked
``reused = True`` so that a metric can count the work it really did. At most :data:`MAX_BYTES` of traces
are kept per model, the oldest dropped first.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch import nn

from biasbench.core.hashing import tensor_sha256
from biasbench.metrics.sis_backselect import Trace

#: the traces kept per model at most (bytes of ``order`` + ``conf`` + ``c0``)
MAX_BYTES = 256 * 2**20

_MEMO: weakref.WeakKeyDictionary[nn.Module, OrderedDict[Hashable, Trace]] = weakref.WeakKeyDictionary()


def _digest(t: torch.Tensor) -> tuple:
    return (tensor_sha256(t), str(t.dtype), tuple(t.shape), tuple(t.stride()), str(t.device))


def _state(model: nn.Module) -> tuple:
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((t.data_ptr(), t._version, str(t.dtype), tuple(t.stride())) for t in tensors)


def _nbytes(tr: Trace) -> int:
    return sum(t.numel() * t.element_size() for t in (tr.order, tr.conf, tr.c0))


def remembered(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    settings: tuple[Hashable, ...],
    compute: Callable[[], Trace],
) -> Trace:
    """The BackSelect trace of ``x`` under ``model``: a remembered one when every input of its bits is
    equal (module docstring), else ``compute()`` (and remembered)."""
    key = (_state(model), _digest(x), _digest(baseline), settings, torch.get_num_threads())
    memo = _MEMO.setdefault(model, OrderedDict())
    if key in memo:
        memo.move_to_end(key)
        return dataclasses.replace(memo[key], reused=True)
    tr = compute()
    memo[key] = tr
    while len(memo) > 1 and sum(_nbytes(t) for t in memo.values()) > MAX_BYTES:
        memo.popitem(last=False)
    return tr


def forget(model: nn.Module) -> None:
    """Drop ``model``'s remembered traces."""
    _MEMO.pop(model, None)
