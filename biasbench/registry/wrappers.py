"""Inference-time wrappers: a checkpoint's network evaluated through a fixed transformation, as a
checkpoint of its own (``wrap = [{ kind = "input-dropout", keep = 0.8, samples = 8 }]`` on any registry
entry, an ensemble included).

Where a wrapper sits. :class:`~biasbench.metrics.base.ModelWrapper` normalises on the device,
``(x − mean) / std`` with the checkpoint's preprocessing, and then calls the network; a wrapper wraps
that network, so it sees *normalised* images and returns logits like any network. ``wrap`` lists the
wrappers innermost first: ``[A, B]`` is ``B(A(net))``.

The slot: :data:`WRAPPERS` maps a ``kind`` to a :class:`Wrapper` subclass (an ``nn.Module`` taking the
network, its :attr:`~Wrapper.Params` and the preprocessing). Another wrapper (test-time blur, …) is one
subclass plus :func:`register_wrapper`. Parameters are checked when the registry file is read
(:func:`parse_wrapper`): unknown names, wrong types and out-of-range values are errors naming the
checkpoint. Every parameter, defaults included, is part of the checkpoint's identity
(:func:`wrapped_fingerprint`): a wrapped entry is a different checkpoint from its bare network, and a
change of any parameter is another one.

``input-dropout`` (:class:`InputDropout`) — inference-time input dropout, the mitigation that Carter et
al., "Overinterpretation reveals image classification model pathologies" (NeurIPS 2021) apply to the
input pixels (with ensembling, :mod:`biasbench.registry.ensembles`):

* **Mask.** Each pixel *position* is kept with probability ``keep`` and otherwise dropped; the three
  channels of a pixel are kept or dropped together (one Bernoulli draw per (row, column)).
* **Baseline.** A dropped pixel takes the value 0 in normalised space, which is the preprocessing's
  per-channel mean in pixel space (``model.pixel_mean``; ``(mean − mean) / std = 0``): the value a
  masked pixel has in the study (mean-imputed pixels, zero after normalisation; the SIS baseline here
  too). So ``x̃ = m ⊙ x`` on the normalised image ``x`` with the mask ``m`` broadcast over channels.
* **Output.** ``samples`` masks ``m_1 … m_S``; the output is the log of the mean of the softmax
  probabilities, ``log (1/S) Σ_s softmax(net(m_s ⊙ x))`` — the same mean-probabilities rule as the
  study's MeanEnsemble (the wrapped model is an ensemble over masks). Its softmax is that mean and its
  argmax that of the mean, so every metric (which takes logits) sees the averaged classifier.
* **Seeding.** Mask ``s`` is drawn on the CPU, ``torch.rand((H, W), generator=g) < keep``, from a
  ``torch.Generator`` seeded with :func:`sample_seed` ``(seed, s)`` (the first 60 bits of
  ``sha256("biasbench/input-dropout:<seed>:<s>")``); ``seed`` is the entry's (default 0). A mask is a
  function of ``(seed, s, H, W)`` only and is applied to every image of a batch, so an image's output
  does not depend on the batch it is in, on its position there, on the batch size or on the device:
  two identical images in different batches get the same ``S`` masks and the same output. (The
  wrapped model is one fixed deterministic function of the image, which is also what SIS's repeated
  queries and gradients need.) The masks are cached per (H, W, device).
* ``keep = 1`` drops nothing: the wrapper returns the network's own logits (no sampling), exactly.
* Cost: ``samples`` × the batch's images through the network. Small batches (BackSelect's and PGD's,
  16–32 images) stack several masked copies into one forward of at most :data:`STACK_PIXELS` pixels
  (the demo net's best batch, 256 images of 32 × 32; a batch that large or larger runs one mask per
  forward): the network's per-call overhead is paid once per stack, and the output is the same — each
  copy is still its own row of the batch (the demo net gives bit-identical logits and input gradients
  stacked or not, ``tests/test_wrappers.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from biasbench.core.plugins import suggest
from biasbench.core.preprocess import Preprocess
from biasbench.registry.spec import CheckpointError, WrapperSpec


class WrapperError(CheckpointError):
    """A ``wrap`` table is invalid (unknown kind, unknown parameter, wrong type, out of range), or a
    wrapper kind is registered twice; the message names the checkpoint."""


class Wrapper(nn.Module):
    """An inference-time wrapper around a network (normalised images in, logits out). Subclasses set
    ``kind`` (the ``wrap`` table's ``kind``) and ``Params`` (a frozen dataclass whose fields all have
    defaults; a field's type is its default's: ``int``, ``float``, ``bool`` or ``str``), may override
    :meth:`check_params`, and are registered with :func:`register_wrapper`."""

    kind: ClassVar[str] = ""

    @dataclasses.dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, net: nn.Module, params: Any, preprocess: Preprocess) -> None:
        super().__init__()
        self.net = net
        self.params = params
        self.preprocess = preprocess

    @classmethod
    def check_params(cls, params: Any) -> str | None:
        """Why ``params`` are out of range (``None``: they are fine)."""
        return None

    @classmethod
    def network_calls(cls, params: Any) -> int:
        """How many images go through the wrapped network per image of a forward (a cost estimate,
        e.g. for sharing a run among worker processes); 1 unless a subclass says otherwise."""
        return 1


#: Every wrapper kind, by ``kind``.
WRAPPERS: dict[str, type[Wrapper]] = {}


def register_wrapper(cls: type[Wrapper]) -> type[Wrapper]:
    """Add a :class:`Wrapper` subclass under its ``kind`` (usable as a class decorator); a second class
    for the same kind is an error."""
    if not (isinstance(cls, type) and issubclass(cls, Wrapper)) or not cls.kind:
        raise WrapperError(f"{cls!r} is not a Wrapper subclass with a kind")
    for f in dataclasses.fields(cls.Params):
        if f.default is dataclasses.MISSING:
            raise WrapperError(f"wrapper {cls.kind!r}: parameter {f.name!r} needs a default")
    other = WRAPPERS.get(cls.kind)
    if other is not None and other is not cls:
        raise WrapperError(
            f"wrapper kind {cls.kind!r} is registered twice: {other.__module__}.{other.__qualname__} and "
            f"{cls.__module__}.{cls.__qualname__}"
        )
    WRAPPERS[cls.kind] = cls
    return cls


def known() -> list[str]:
    return sorted(WRAPPERS)


def _value(v: Any, default: Any, where: str) -> Any:
    """``v`` as the type of ``default`` (an int where a float is declared becomes a float)."""
    kind = type(default)
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if kind is int and isinstance(v, bool):
        raise WrapperError(f"{where} must be an integer, got {v!r}")
    if not isinstance(v, kind):
        raise WrapperError(f"{where} must be {kind.__name__}, got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise WrapperError(f"{where} must be finite, got {v!r}")
    return v


def parse_wrapper(table: Any, checkpoint_id: str) -> WrapperSpec:
    """A ``wrap`` table checked against its kind's ``Params``: a :class:`WrapperSpec` with every
    parameter (defaults filled in). Errors name the checkpoint, the kind and the parameter."""
    where = f"checkpoint {checkpoint_id!r}: wrap"
    if not isinstance(table, Mapping):
        raise WrapperError(f"{where}: each wrapper must be a table ({{ kind = …, … }}), got {table!r}")
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in WRAPPERS:
        raise WrapperError(
            f"{where}: unknown wrapper kind {kind!r}{suggest(str(kind), known())}; known: {', '.join(known())}"
        )
    cls = WRAPPERS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    unknown = [k for k in table if k != "kind" and k not in fields]
    if unknown:
        raise WrapperError(
            f"{where} {kind}: unknown parameter {unknown[0]!r}; known: {', '.join(fields) or 'none'}"
        )
    values = {k: _value(table[k], fields[k].default, f"{where} {kind}: {k}") for k in fields if k in table}
    params = cls.Params(**values)
    problem = cls.check_params(params)
    if problem:
        raise WrapperError(f"{where} {kind}: {problem}")
    return WrapperSpec(kind, tuple(sorted(dataclasses.asdict(params).items())))


def build_wrapper(net: nn.Module, spec: WrapperSpec, preprocess: Preprocess, checkpoint_id: str) -> nn.Module:
    """``net`` wrapped as ``spec`` says."""
    cls = WRAPPERS.get(spec.kind)
    if cls is None:
        raise WrapperError(f"checkpoint {checkpoint_id!r}: unknown wrapper kind {spec.kind!r}")
    params = cls.Params(**dict(spec.params))
    problem = cls.check_params(params)
    if problem:
        raise WrapperError(f"checkpoint {checkpoint_id!r}: wrap {spec.kind}: {problem}")
    return cls(net, params, preprocess)


def network_calls(spec: WrapperSpec) -> int:
    """:meth:`Wrapper.network_calls` of a ``wrap`` table (1 for a kind that is not registered)."""
    cls = WRAPPERS.get(spec.kind)
    return cls.network_calls(cls.Params(**dict(spec.params))) if cls is not None else 1


def apply_wrappers(
    net: nn.Module, wraps: Sequence[WrapperSpec], preprocess: Preprocess, checkpoint_id: str
) -> nn.Module:
    """``net`` inside every wrapper of ``wraps``, innermost first."""
    for spec in wraps:
        net = build_wrapper(net, spec, preprocess, checkpoint_id)
    return net


def wrapped_fingerprint(base: str, wraps: Sequence[WrapperSpec]) -> str:
    """The fingerprint of a wrapped checkpoint: ``base`` (the network's weights, or an ensemble's)
    unchanged without wrappers, else the sha256 of the canonical JSON of ``base`` and every wrapper's
    kind and parameters, in order (wrappers need not commute)."""
    if not wraps:
        return base
    blob = json.dumps(
        {"weights": base, "wrap": [w.to_json() for w in wraps]}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# input-dropout
# ----------------------------------------------------------------------------------------------------

#: Largest ``samples`` (forward passes per batch).
MAX_SAMPLES = 1024


def sample_seed(seed: int, sample: int) -> int:
    """The generator seed of mask ``sample`` under ``seed``: the first 60 bits of
    ``sha256("biasbench/input-dropout:<seed>:<sample>")`` (independent streams for every pair)."""
    digest = hashlib.sha256(f"biasbench/input-dropout:{seed}:{sample}".encode()).hexdigest()
    return int(digest[:15], 16)


def dropout_mask(seed: int, sample: int, keep: float, height: int, width: int) -> torch.Tensor:
    """Mask ``sample``: bool (H, W), True = kept (each position with probability ``keep``)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(sample_seed(seed, sample))
    return torch.rand((height, width), generator=g) < keep


#: the most pixels (images × H × W) one stacked forward of masked copies holds: 256 images of 32 × 32, the
#: demo net's best batch on 2 CPU threads (``harness.executor.AUTO_BATCH_PIXELS``)
STACK_PIXELS = 256 * 32 * 32


@register_wrapper
class InputDropout(Wrapper):
    """Inference-time input dropout (Carter et al. 2021): each pixel position (all channels together)
    kept with probability ``keep``, else set to the preprocessing's per-channel mean (0 after
    normalisation); output = log of the mean softmax over ``samples`` seeded masks (module docstring)."""

    kind = "input-dropout"

    @dataclasses.dataclass(frozen=True)
    class Params:
        keep: float = 0.8
        samples: int = 8
        seed: int = 0

    def __init__(self, net: nn.Module, params: Params, preprocess: Preprocess) -> None:
        super().__init__(net, params, preprocess)
        self.keep, self.samples, self.seed = float(params.keep), int(params.samples), int(params.seed)
        self._masks: dict[tuple[int, int, str], torch.Tensor] = {}

    @classmethod
    def check_params(cls, params: Any) -> str | None:
        if not 0.0 < params.keep <= 1.0:
            return f"keep must be in (0, 1], got {params.keep!r}"
        if not 1 <= params.samples <= MAX_SAMPLES:
            return f"samples must be an integer from 1 to {MAX_SAMPLES}, got {params.samples!r}"
        if not 0 <= params.seed < 2**63:
            return f"seed must be a non-negative integer below 2**63, got {params.seed!r}"
        return None

    @classmethod
    def network_calls(cls, params: Any) -> int:
        return 1 if params.keep >= 1.0 else int(params.samples)

    def masks(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``samples`` masks for (H, W) images: bool (S, H, W) on ``device``, True = kept; the same
        for every image, batch and device (module docstring)."""
        key = (int(height), int(width), str(torch.device(device)))
        cached = self._masks.get(key)
        if cached is None:
            # normal tensors even when the first call runs under inference_mode: a later forward with
            # gradients (SIS, PGD) saves the mask for its backward pass
            with torch.inference_mode(False):
                stacked = torch.stack(
                    [dropout_mask(self.seed, s, self.keep, key[0], key[1]) for s in range(self.samples)]
                )
                cached = stacked.to(device)
            self._masks[key] = cached
        return cached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.keep >= 1.0:  # nothing is dropped: the network itself
            return self.net(x)
        masks = self.masks(x.shape[-2], x.shape[-1], x.device).to(x.dtype)
        pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
        per_forward = max(1, min(self.samples, STACK_PIXELS // max(1, pixels)))
        logps: list[torch.Tensor] = []
        for start in range(0, self.samples, per_forward):
            # (H, W) masks broadcast over batch and channels; the copies of one stack in sample order
            copies = [x * m for m in masks[start : start + per_forward]]
            out = self.net(copies[0] if len(copies) == 1 else torch.cat(copies))
            out = out[0] if isinstance(out, (tuple, list)) else out
            logps.extend(torch.log_softmax(out, dim=-1).split(x.shape[0]))
        return torch.logsumexp(torch.stack(logps), dim=0) - math.log(self.samples)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, samples={self.samples}, seed={self.seed}"
