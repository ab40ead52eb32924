"""The metric plugin API (``docs/architecture.md`` §3).

A metric is a class with

* ``name`` (unique across all installed plugins) and ``version`` (bump it when the definition changes:
  it is part of every stored result's ``config_hash``);
* ``Params``: a dataclass of parameters with defaults (also part of the ``config_hash``);
* ``datasets(label_space)``: which datasets it needs, as ``{role: DatasetRequest}``;
* ``evaluate(model, data, ctx) -> MetricResult``.

``model`` is a :class:`ModelWrapper`: it takes a float batch in [0, 1], shape (N, 3, H, W), on the
device, and returns logits over its label space. It owns normalisation, so metrics that filter or
mask images work in pixel space. ``data`` maps each role to an :class:`ImageSet` (uint8 images on the
CPU, labels, per-item metadata). ``ctx`` is an :class:`EvalContext` with the device, the batch size,
AMP settings, a seed and batched inference helpers.

Third-party metrics register with the entry-point group ``biasbench.metrics``::

    [project.entry-points."biasbench.metrics"]
    my_metric = "my_package.my_module:MyMetric"

``ImageSet`` and ``Preprocess`` are foundations (:mod:`biasbench.core`), re-exported here so a plugin
needs one import. Label spaces (class names, default datasets per purpose, decision rules, per-metric
defaults) come from :mod:`biasbench.core.labels`. Metrics never touch the store, the CLI or the network;
see ``docs/architecture.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
import pydantic
import torch
from torch import nn

from biasbench.core import schema
from biasbench.core.errors import InputError, StateError
from biasbench.core.hashing import jsonable, sha256_text
from biasbench.core.images import ImageSet
from biasbench.core.plugins import first_paragraph
from biasbench.core.preprocess import Preprocess
from biasbench.core.streaming import prefetching, to_tensor

__all__ = [
    "DatasetRequest",
    "EvalContext",
    "ImageSet",
    "KeyGrid",
    "Metric",
    "MetricError",
    "MetricResult",
    "ModelWrapper",
    "NotApplicable",
    "ParamError",
    "Preprocess",
    "check_finite",
    "seeded_subset",
]

_T = TypeVar("_T")


class MetricError(StateError):
    """A metric could not produce a valid result (the message says why)."""


class NotApplicable(MetricError):
    """The metric does not apply to this model's label space."""


# ----------------------------------------------------------------------------------------------------
# Data handed to metrics
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRequest:
    """A metric's request for a dataset by registry name.

    ``preprocess``: ``None`` = the checkpoint's own preprocessing (resize + crop); a
    :class:`Preprocess` = this fixed geometry (e.g. spectral bias's Resize(256) + CenterCrop(224)).
    Datasets that are used as stored (stimuli, the synthetic world) ignore it.
    """

    name: str
    preprocess: Preprocess | None = None


# ----------------------------------------------------------------------------------------------------
# The model handed to metrics
# ----------------------------------------------------------------------------------------------------


class ModelWrapper(nn.Module):
    """Pixel-space classifier: float (N, 3, H, W) in [0, 1] -> logits over ``num_classes``.

    Normalisation (``(x - mean) / std``) happens inside, on the device. ``pixel_mean`` is the
    dataset mean in pixel space (the value that maps to 0 after normalisation), the default SIS
    baseline. The first forward checks the class count of the logits.

    ``compiled_net`` (``bench run --compile``, :mod:`biasbench.harness.compiling`): a compiled
    ``net`` that :meth:`infer` (``EvalContext.predict``'s forward) runs; ``None``: eager only.
    """

    compiled_net: Callable[[torch.Tensor], Any] | None = None

    def __init__(
        self,
        net: nn.Module,
        *,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        num_classes: int,
        label_space: str,
        checkpoint_id: str = "model",
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.num_classes = int(num_classes)
        self.label_space = label_space
        self.checkpoint_id = checkpoint_id

    @property
    def pixel_mean(self) -> torch.Tensor:
        return self.mean

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(self.net, x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """The forward of the inference path (``EvalContext.predict``): through ``compiled_net`` when
        there is one, gradients are off and ``x`` is not float64; the eager ``net`` otherwise."""
        compiled = self.compiled_net
        if compiled is None or torch.is_grad_enabled() or x.dtype == torch.float64:
            return self._logits(self.net, x)
        return self._logits(compiled, x)

    def _logits(self, net: Callable[[torch.Tensor], Any], x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim != 2 or out.shape[1] != self.num_classes:
            raise MetricError(
                f"checkpoint {self.checkpoint_id!r} returned logits of shape {tuple(out.shape)}, but its "
                f"label space {self.label_space!r} has {self.num_classes} classes (wrong class count?)"
            )
        return out


# ----------------------------------------------------------------------------------------------------
# Evaluation context: device, batching, AMP, progress
# ----------------------------------------------------------------------------------------------------


class _NullTask:
    def advance(self, n: int = 1) -> None:  # noqa: D401 - trivial
        pass


@dataclass
class EvalContext:
    """What the harness gives a metric besides the model and the data.

    ``task(description, total)`` returns a progress handle with ``advance(n)``; metrics call it so the
    harness can show a progress bar with an ETA.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    seed: int = 0
    task: Callable[[str, int], Any] = field(default=lambda description, total: _NullTask())

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def generator(self, salt: str = "") -> torch.Generator:
        """A seeded generator on the device, independent of batch size (seed = ctx.seed + salt)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(int(sha256_text(f"{self.seed}:{salt}")[:12], 16))
        return g

    def to_device(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 CPU batch -> float [0, 1] on the device (uint8 until the device). A streamed batch
        (:class:`~biasbench.core.streaming.StreamedImages`) is decoded here, on the GPU when it can be."""
        images_u8 = to_tensor(images_u8, self.device)
        x = images_u8.to(self.device, non_blocking=True).float().div_(255.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def batches(
        self, images: torch.Tensor, batch_size: int | None = None
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yield (slice, float batch on device) over a uint8 (N, 3, H, W) tensor."""
        bs = batch_size or self.batch_size
        for start in range(0, images.shape[0], bs):
            sl = slice(start, min(start + bs, images.shape[0]))
            yield sl, self.to_device(images[sl])

    def map_batches(self, n: int, fn: Callable[[slice], _T], handle: Any = None) -> list[_T]:
        """``fn(sl)`` over consecutive slices of ``batch_size`` items out of ``n``, in order. On CUDA
        out-of-memory the batch size is halved and the slice retried; the halved size sticks for the
        rest of the run. ``handle.advance`` (a progress task) is told of every finished slice."""
        out: list[_T] = []
        start = 0
        while start < n:
            bs = max(1, self.batch_size)
            sl = slice(start, min(start + bs, n))
            try:
                out.append(fn(sl))
            except torch.cuda.OutOfMemoryError:
                if bs <= 1:
                    raise
                self.batch_size = max(1, bs // 2)
                torch.cuda.empty_cache()
                continue
            if handle is not None:
                handle.advance(sl.stop - sl.start)
            start = sl.stop
        return out

    def predict(
        self,
        model: nn.Module,
        images: torch.Tensor,
        transform: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
        description: str | None = None,
    ) -> torch.Tensor:
        """Logits (N, C) float32 on the CPU for a uint8 image tensor, in inference mode, with AMP.

        ``transform(x, sl)`` maps each float [0, 1] batch (and its index slice) before the model,
        on the device (filters, noise, corruptions). On CUDA out-of-memory the batch is halved and
        retried; the halved size sticks for the rest of the run.
        """
        n = images.shape[0]
        handle = self.task(description, n) if description else _NullTask()

        def run(sl: slice) -> torch.Tensor:
            with torch.inference_mode(), self.autocast():
                x = self.to_device(source[sl])
                if transform is not None:
                    x = transform(x, sl)
                logits = _infer(model, x).float()
            check_finite(logits, "logits")
            return logits.cpu()

        with prefetching(images, self.device) as source:  # a streamed set: the next batches decode meanwhile
            out = self.map_batches(n, run, handle)
        if not out:
            return torch.empty(0, getattr(model, "num_classes", 0))
        return torch.cat(out)

    def predict_group(
        self,
        models: list[nn.Module],
        images: torch.Tensor,
        transform: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
        description: str | None = None,
    ) -> list[torch.Tensor | Exception]:
        """:meth:`predict` for several models at once: each batch is decoded (and transformed) once and
        passed through every model before the next is fetched. Per model: its logits, equal to
        ``predict(model, images, transform)``'s, or the exception it raised (that model is dropped from
        the rest of the batches; the others go on). Out-of-memory halves the batch for all of them."""
        n = images.shape[0]
        handle = self.task(description, n) if description else _NullTask()
        failed: dict[int, Exception] = {}

        def run(sl: slice) -> dict[int, torch.Tensor]:
            got: dict[int, torch.Tensor] = {}
            with torch.inference_mode(), self.autocast():
                x = self.to_device(source[sl])
                if transform is not None:
                    x = transform(x, sl)
                for i, model in enumerate(models):
                    if i in failed:
                        continue
                    try:
                        logits = _infer(model, x).float()
                        check_finite(logits, "logits")
                    except torch.cuda.OutOfMemoryError:
                        raise
                    except Exception as e:  # noqa: BLE001 - one model's failure is its job's, not the group's
                        failed[i] = e
                        continue
                    got[i] = logits.cpu()
            return got

        with prefetching(images, self.device) as source:
            out = self.map_batches(n, run, handle)
        results: list[torch.Tensor | Exception] = []
        for i, model in enumerate(models):
            if i in failed:
                results.append(failed[i])
            elif out:
                results.append(torch.cat([b[i] for b in out]))
            else:
                results.append(torch.empty(0, getattr(model, "num_classes", 0)))
        return results


def _infer(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` on the inference path: a :class:`ModelWrapper`'s :meth:`~ModelWrapper.infer` (its
    compiled forward under ``--compile``), any other module called as it is."""
    return model.infer(x) if isinstance(model, ModelWrapper) else model(x)


def check_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise MetricError(f"model produced {bad} non-finite values (NaN/inf) in its {what}")


# ----------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------


#: the ``jobs.timings`` key of a job's images × conditions (forward-pass equivalents); a metric may set
#: it in ``MetricResult.timings`` when it did less than ``Metric.work`` estimated
WORK_DONE = "run.images_x_conditions"


@dataclass
class MetricResult:
    """Scalars keyed by name, how many items each rests on, optional per-item outputs.

    ``items``: a DataFrame with one row per item (column ``item`` = the item id) and any columns
    (numbers, strings, or lists/arrays such as an SIS removal order); the store writes it to Parquet
    beside the database. ``flags``: human-readable warnings stored with the result. ``timings``:
    measurements of the run rather than of the model (e.g. seconds per image); stored with the job
    (``jobs.timings``), never as result rows, so they enter no report and a rerun need not repeat them.
    ``timings[WORK_DONE]``: the job's forward-pass equivalents when they differ from ``Metric.work``'s
    estimate (work shared with an earlier job of the same model); absent, the estimate is recorded.
    """

    scalars: dict[str, float]
    n: dict[str, int] | int = 0
    items: pd.DataFrame | None = None
    flags: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def n_for(self, key: str) -> int:
        if isinstance(self.n, dict):
            return int(self.n.get(key, 0))
        return int(self.n)

    def validate(self, metric: str, item_columns: tuple[str, ...] = ()) -> None:
        """Raise :class:`MetricError` unless every scalar is a number other than NaN under
        a non-empty key and the items (if any) are a DataFrame with ``item`` and ``item_columns``."""
        if self.items is not None:
            if not isinstance(self.items, pd.DataFrame):
                raise MetricError(
                    f"metric {metric!r} returned items of type {type(self.items).__name__}, not a DataFrame"
                )
            missing = [c for c in ("item", *item_columns) if c not in self.items.columns]
            if missing:
                raise MetricError(
                    f"metric {metric!r}: its per-item table lacks the declared columns {missing}"
                )
        if not self.scalars:
            raise MetricError(f"metric {metric!r} returned no scalars")
        for k, v in self.scalars.items():
            if not isinstance(k, str) or not k:
                raise MetricError(f"metric {metric!r} returned a scalar with an invalid key {k!r}")
            try:
                fv = float(v)
            except (TypeError, ValueError) as e:
                raise MetricError(f"metric {metric!r}: scalar {k!r} = {v!r} is not a number") from e
            if math.isnan(fv):
                raise MetricError(f"metric {metric!r}: scalar {k!r} is NaN")
        for k, v in self.timings.items():
            try:
                float(v)
            except (TypeError, ValueError) as e:
                raise MetricError(f"metric {metric!r}: timing {k!r} = {v!r} is not a number") from e


class ParamError(InputError):
    """A metric parameter has a wrong type or value (the message names the metric and the parameter);
    raised when the metric is built, i.e. when the job is planned, before any model loads."""


@dataclass(frozen=True)
class KeyRole:
    """How a report reads one stored scalar key (declared by the metric that writes it).

    ``role``: ``"bias"`` (a bias measure: a report row), ``"generalization"`` (a report column),
    ``"stability"`` (how reproducible another key is; shown beside it, never correlated) or
    ``"diagnostic"`` (stored, not in the curated report). ``higher_is_better`` orients a
    generalization key (``None`` where the direction is not a quality, as for most biases).
    ``pattern`` keys may use ``fnmatch`` wildcards, e.g. ``"c_top1@*"``. ``proportion``: the value
    is a count of successes over the key's stored ``n`` trials (an accuracy, shape bias), so a report
    gives each checkpoint's value a binomial interval (:mod:`biasbench.reports.uncertainty`).
    """

    role: str
    higher_is_better: bool | None = None
    label: str = ""
    proportion: bool = False


@dataclass(frozen=True)
class CurvePanel:
    """One panel of a :class:`Curve`: the stored keys ``key`` with ``{x}`` standing for the x value
    (``"lowpass_ratio@{x}"`` matches ``lowpass_ratio@0.1`` …), the panel's title and x-axis label."""

    key: str
    title: str = ""
    x_label: str = ""


@dataclass(frozen=True)
class Curve:
    """A figure a report draws from one metric's stored keys: per checkpoint, one line over x in each
    panel (the HTML page and ``bench report --figures`` both show it; ``name`` is its file stem).
    ``tick``: the x tick label of ``x`` given the metric's stored scalars (a frame: the report's
    checkpoints × the metric's keys), e.g. a band's centre frequency derived from stored fit keys
    (default: the x values)."""

    name: str
    title: str
    y_label: str
    panels: tuple[CurvePanel, ...]
    caption: str = ""
    tick: Callable[[float, pd.DataFrame], str] | None = None


@dataclass(frozen=True)
class KeyGrid:
    """A figure a report draws from one metric's stored keys laid out on a 2-D grid: ``key`` with
    ``{row}`` and ``{col}`` standing for a cell's integer coordinates (``"sis_density@{row}_{col}"``
    matches ``sis_density@0_3`` …); one small map per checkpoint on a shared colour scale. ``centre``:
    a diverging scale centred on this value (e.g. 1 = uniform), else a sequential one."""

    name: str
    title: str
    key: str
    colour_label: str = ""
    caption: str = ""
    centre: float | None = None


class Metric:
    """Base class for metric plugins. Subclasses set ``name``, ``version``, ``Params`` and implement
    ``datasets`` and ``evaluate``. The class docstring is the metric's definition (shown by
    ``bench ls metrics``)."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    #: the keys worth a glance, printed when a job ends (default: the first three scalars)
    headline: ClassVar[tuple[str, ...]] = ()
    #: columns every per-item table of this metric has besides ``item`` (checked on every result)
    item_columns: ClassVar[tuple[str, ...]] = ()
    #: how reports read this metric's scalar keys (fnmatch patterns → role); unlisted keys: diagnostic
    key_roles: ClassVar[dict[str, KeyRole]] = {}
    #: figures a report draws from this metric's keys (curves over a cutoff, a band, a level …; maps of
    #: keys on a grid)
    curves: ClassVar[tuple[Curve | KeyGrid, ...]] = ()
    #: parameters whose scalars :meth:`recompute` gives from the stored per-item rows, without the model
    #: (``bench results --recompute METRIC.KEY=VALUE``)
    recomputable: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def recompute(
        cls, items: pd.DataFrame, stored: Mapping[str, float], changes: Mapping[str, float]
    ) -> tuple[dict[str, float], dict[str, int]]:
        """The scalars (and what each rests on, ``n``) this metric would have stored with the
        ``changes`` to its :attr:`recomputable` parameters, from its stored per-item rows ``items`` and
        stored scalars ``stored`` alone. Only metrics that declare :attr:`recomputable` implement it;
        the ``changes`` were checked by the metric's own parameter checks first (``cls(**changes)``)."""
        raise NotImplementedError

    #: ``evaluate_group`` shares each decoded batch across several models (``bench run --group``);
    #: False: the harness calls ``evaluate`` once per model, as always
    shares_batches: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params: Any | None = None, /, **overrides: Any) -> None:
        base = params if params is not None else self.Params()
        if overrides:
            known = {f.name for f in dataclasses.fields(base)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise ParamError(
                    f"metric {self.name!r} has no parameter {', '.join(unknown)}; it has: {', '.join(sorted(known)) or 'none'}"
                )
            try:
                base = dataclasses.replace(base, **overrides)
            except (TypeError, ValueError) as e:
                raise ParamError(f"metric {self.name!r}: {e}") from e
        self.params = coerce_params(self.name, base)
        self.check_params()

    def check_params(self) -> None:
        """Reject bad parameter values (raise :class:`ParamError` naming the parameter). The types
        were already checked against the ``Params`` annotations; override for value ranges."""

    def work(self, role: str, n_images: int, label_space: str) -> float:
        """The work of one dataset role holding ``n_images``, in images × conditions (forward-pass
        equivalents): what ``jobs.timings`` records and ``bench run --dry-run`` estimates from.
        Default: one pass per image. Override when a parameter subsamples a role or a role costs
        more passes (PGD)."""
        return float(n_images)

    # -- to implement ---------------------------------------------------------------------------
    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        """``{role: DatasetRequest}`` for a model of ``label_space``; raise :class:`NotApplicable`."""
        raise NotImplementedError

    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        raise NotImplementedError

    def evaluate_group(
        self, models: list[ModelWrapper], data: dict[str, ImageSet], ctx: EvalContext
    ) -> list[MetricResult | Exception]:
        """One result (or the exception that ended it) per model, each equal to ``evaluate(model,
        data, ctx)``'s. Metrics with ``shares_batches = True`` override it to decode each batch once
        for all models (``ctx.predict_group``); this default evaluates the models one after another."""
        out: list[MetricResult | Exception] = []
        for model in models:
            try:
                out.append(self.evaluate(model, data, ctx))
            except Exception as e:  # noqa: BLE001 - per model, as the harness records it per job
                out.append(e)
        return out

    # -- provided -------------------------------------------------------------------------------
    def params_json(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self.params))

    @classmethod
    def summary(cls) -> str:
        """The first paragraph of the class docstring, as one line."""
        return first_paragraph(cls.__doc__)


@functools.cache
def _params_model(cls: type) -> type[pydantic.BaseModel] | None:
    """A strict pydantic model generated from a ``Params`` dataclass (each field's declaration, its
    ``Annotated`` bounds and ``Literal`` choices included); None where the annotations cannot be
    resolved (nothing to check against)."""
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = {f.name: (hints.get(f.name, Any), ...) for f in dataclasses.fields(cls)}
        return pydantic.create_model(f"{cls.__qualname__}Model", __config__=schema.STRICT, **fields)
    except Exception:  # noqa: BLE001 - unresolvable or unsupported annotations: nothing to check against
        return None


def coerce_params(metric: str, params: Any) -> Any:
    """Check every parameter against its ``Params`` declaration — its type (``-p`` values arrive
    parsed from JSON or as strings), a ``Literal``'s choices, an ``Annotated[…, Field(gt=…, le=…)]``
    range — and normalise lists to tuples and ints to floats; a mismatch is a :class:`ParamError`
    naming the metric, the parameter and its value (``sis: parameter tau must be in (0, 1], got 1.5``)."""
    model = _params_model(type(params))
    if model is None:
        return params
    values = {f.name: schema.as_tuples(getattr(params, f.name)) for f in dataclasses.fields(params)}
    try:
        checked = model(**values)
    except pydantic.ValidationError as e:
        problem = schema.describe(schema.errors(e)[0], model, values, choices=_UNKNOWN_CHOICE)
        raise ParamError(f"{metric}: parameter {problem}") from None
    changes = {}
    for name, value in values.items():
        norm, given = getattr(checked, name), getattr(params, name)
        if norm is not given and (norm != given or type(norm) is not type(value)):
            changes[name] = norm
    return dataclasses.replace(params, **changes) if changes else params


_UNKNOWN_CHOICE = "{key} = {value!r} is unknown; choose one of {choices}"


def seeded_subset(n_total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``min(n, n_total)`` items (all of them if n ≥ n_total)."""
    if n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5151]))
    return np.sort(rng.choice(n_total, size=n, replace=False))
