"""Shape bias on cue-conflict stimuli, and 16-class accuracy on the shape-only stimulus sets.

Definition (Geirhos et al., "ImageNet-trained CNNs are biased towards texture; increasing shape bias
improves accuracy and robustness", ICLR 2019; the protocol of bethgelab/model-vs-human, Geirhos et
al., NeurIPS 2021):

1. Stimuli: the 1280 cue-conflict PNGs ``<shape>/<shape><i>-<texture><j>.png`` (224 x 224), used as
   stored: no resize, no crop, only the model's own normalisation (inside :class:`ModelWrapper`).
2. Decision of an ImageNet-1k model: softmax over its 1000 logits; for each of the 16 entry-level
   categories the MEAN of the probabilities of its ImageNet indices (the ``imagenet-1k`` label space's decision rule onto ``imagenet16``, :mod:`biasbench.core.label_spaces.imagenet`; 207
   indices in all, identical to model-vs-human's ``human_categories.py``); argmax over the 16
   (ties: the first category in alphabetical order). ``aggregation="sum"`` sums instead of averaging
   (the rule of the original paper's first version); it is off by default because the mean is the
   rule the authors recommend and model-vs-human uses.
3. Drop the 80 images whose shape class equals their texture class (parsed from the file name).
4. Over the remaining 1200 images: ``n_shape`` = decisions equal to the shape class, ``n_texture`` =
   equal to the texture class, ``n_other`` = neither. ``shape_bias = n_shape / (n_shape + n_texture)``;
   ``cue_conflict_acc16 = n_shape / (n_shape + n_texture + n_other)`` (16-class accuracy w.r.t. the
   shape label over the 1200 conflict images).

Known answers: the recorded torchvision ResNet-50 decisions of texture-vs-shape give 162 / 572 =
0.2207, those of model-vs-human 169 / 620 = 0.2142 (paper: 0.2146); replay them with
:func:`count_named` (see ``tests/test_shape_bias.py``).

``acc16``: the same decision rule, 16-class top-1 accuracy on ``edges`` (160), ``filled-silhouettes``
(160) and, when asked for, ``stylized-16`` (800, model-vs-human's ``stylized``) and ``cue-conflict``
(the shape accuracy above). Keys ``edges_acc16``, ``silhouettes_acc16``, ``stylized16_acc16``,
``cue_conflict_acc16``. Parameter ``sets`` chooses the sets; the default is the two sets that are
always obtainable with pinned checksums (``edges``, ``filled-silhouettes``). Stylized-16 is opt-in
(``sets = ["edges", "filled-silhouettes", "stylized-16"]``) because its release archive carries no
published checksum; a requested set that is not on disk fails the job with ``DatasetMissing`` naming
``bench data fetch <name>`` - it is never skipped silently, so a stored figure always means the
same sets.

The demo world (label space ``demo-world``) runs the same code: its ``demo-world/cue-conflict``,
``demo-world/edges`` and ``demo-world/silhouette`` splits are labeled in the model's own classes, so
the aggregation step is the identity (decision = argmax of the logits). Sets without a demo-world
counterpart (stylized-16) are skipped there, with a flag on the result.

The pure counting code (:func:`count_cue_conflict`, :func:`count_named`) is separate from the model
code (:func:`decide`), so recorded decisions can be replayed without a model. Per-image outputs:
shape, texture, decision, outcome (shape/texture/other/same), the 1000-class top-1 and the 16
mean-aggregated probabilities ``p16`` (the sum rule is ``p16 * len(indices)``, so either rule can be
recomputed from the stored items).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from biasbench.core import labels
from biasbench.core.cue_conflict import parse_cue_conflict_name
from biasbench.core.errors import InputError
from biasbench.core.labels import IMAGENET16
from biasbench.metrics.base import (
    DatasetRequest,
    EvalContext,
    ImageSet,
    KeyRole,
    Metric,
    MetricError,
    MetricResult,
    ModelWrapper,
    NotApplicable,
)
from biasbench.metrics.common import AGGREGATIONS, Decisions, decide

# ----------------------------------------------------------------------------------------------------
# Pure counting (decisions + labels -> figures); no model involved
# ----------------------------------------------------------------------------------------------------

OUTCOMES = ("shape", "texture", "other", "same")


@dataclass(frozen=True)
class CueConflictCounts:
    """Counts over a cue-conflict set. ``outcome``: per image 0 shape, 1 texture, 2 other, 3 same
    (shape == texture, excluded)."""

    n_images: int
    n_excluded: int
    n_shape: int
    n_texture: int
    n_other: int
    outcome: torch.Tensor

    @property
    def n_conflict(self) -> int:
        return self.n_shape + self.n_texture + self.n_other

    @property
    def shape_bias(self) -> float:
        """n_shape / (n_shape + n_texture); NaN when the model never picks either cue."""
        d = self.n_shape + self.n_texture
        return self.n_shape / d if d else math.nan

    @property
    def acc16(self) -> float:
        """16-class accuracy w.r.t. the shape label over the conflict images."""
        return self.n_shape / self.n_conflict if self.n_conflict else math.nan


def count_cue_conflict(
    decision: torch.Tensor, shape: torch.Tensor, texture: torch.Tensor
) -> CueConflictCounts:
    """Shape/texture/other counts from per-image decisions and shape/texture labels (same index space).

    Images with ``shape == texture`` are excluded; so are images with a negative (unknown) label.
    """
    decision, shape, texture = (
        torch.as_tensor(t, dtype=torch.long).reshape(-1) for t in (decision, shape, texture)
    )
    if not (decision.shape == shape.shape == texture.shape):
        raise InputError(
            f"lengths differ: {decision.numel()} decisions, {shape.numel()} shapes, {texture.numel()} textures"
        )
    valid = (shape >= 0) & (texture >= 0)
    same = (shape == texture) | ~valid
    is_shape = (decision == shape) & ~same
    is_texture = (decision == texture) & ~same
    outcome = torch.full_like(decision, 2)
    outcome[is_shape] = 0
    outcome[is_texture] = 1
    outcome[same] = 3
    return CueConflictCounts(
        n_images=int(decision.numel()),
        n_excluded=int(same.sum()),
        n_shape=int(is_shape.sum()),
        n_texture=int(is_texture.sum()),
        n_other=int((outcome == 2).sum()),
        outcome=outcome,
    )


def count_named(decisions: Sequence[str], image_names: Sequence[str]) -> CueConflictCounts:
    """Replay recorded decisions: class-name decisions (e.g. a model-vs-human CSV's ``object_response``)
    and the stimulus file names (its ``imagename``), through :func:`count_cue_conflict`."""
    if len(decisions) != len(image_names):
        raise InputError(f"{len(decisions)} decisions but {len(image_names)} image names")
    names = list(labels.get(IMAGENET16).class_names)
    index = {c: i for i, c in enumerate(names)}
    pairs = [parse_cue_conflict_name(n) for n in image_names]
    for s, t in pairs:
        if s not in index or t not in index:
            raise InputError(f"unknown category in cue-conflict name: {s!r}/{t!r}; known: {names}")
    dec = torch.tensor([index.get(str(d).strip(), -1) for d in decisions], dtype=torch.long)
    return count_cue_conflict(
        dec,
        torch.tensor([index[s] for s, _ in pairs]),
        torch.tensor([index[t] for _, t in pairs]),
    )


def accuracy16(decision: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """(top-1 accuracy, n) over the images with a known label (>= 0)."""
    keep = labels >= 0
    n = int(keep.sum())
    if n == 0:
        return math.nan, 0
    return float((decision[keep] == labels[keep]).double().mean()), n


# ----------------------------------------------------------------------------------------------------
# The metrics
# ----------------------------------------------------------------------------------------------------


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise InputError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def _items(
    ds: ImageSet,
    dec: Decisions,
    labels: torch.Tensor,
    texture: torch.Tensor | None,
    outcome: torch.Tensor | None,
    set_name: str | None = None,
) -> pd.DataFrame:
    names = ds.class_names

    def name(i: int) -> str:
        return names[i] if 0 <= i < len(names) else ""

    cols: dict[str, Any] = {"item": ds.item_ids}
    if set_name is not None:  # acc16: item ids unique across sets ("edges/airplane/airplane1.png")
        cols["item"] = [f"{set_name}/{i}" for i in ds.item_ids]
        cols["set"] = [set_name] * len(ds)
    cols["label"] = [name(i) for i in labels.tolist()]
    if texture is not None:
        cols["texture"] = [name(i) for i in texture.tolist()]
    cols["decision"] = [name(i) for i in dec.decision.tolist()]
    cols["correct"] = (dec.decision == labels).numpy()
    if outcome is not None:
        cols["outcome"] = [OUTCOMES[i] for i in outcome.tolist()]
    cols["top1"] = dec.top1.numpy()
    cols[dec.scores_name] = list(dec.scores.numpy())
    return pd.DataFrame(cols)


class ShapeBias(Metric):
    """Shape bias on the 1280 cue-conflict stimuli (Geirhos et al. 2019): n_shape / (n_shape + n_texture)."""

    name = "shape_bias"
    version = "1"
    item_columns = ("label", "texture", "decision", "correct", "outcome", "top1")
    key_roles = {
        "shape_bias": KeyRole("bias", None, "shape bias", proportion=True),
        "cue_conflict_acc16": KeyRole(
            "diagnostic", True, "cue-conflict 16-class accuracy (shape label)", proportion=True
        ),
    }

    @dataclass(frozen=True)
    class Params:
        aggregation: str = "mean"  # "mean" (model-vs-human, default) or "sum" over a category's indices

        def __post_init__(self) -> None:
            _check_aggregation(self.aggregation)

    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        space = labels.find(label_space)
        name = space.dataset("cue-conflict") if space is not None else None
        if name is None:
            raise NotApplicable(f"shape_bias has no cue-conflict stimuli for label space {label_space!r}")
        return {"cue_conflict": DatasetRequest(name)}

    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        ds = data["cue_conflict"]
        if "texture" not in ds.meta:
            raise MetricError(f"dataset {ds.name!r} has no per-image texture labels (meta['texture'])")
        texture = torch.as_tensor(ds.meta["texture"], dtype=torch.long)
        logits = ctx.predict(model, ds.images, description=f"shape bias on {ds.name}")
        dec = decide(logits, model.label_space, ds, self.params.aggregation)
        counts = count_cue_conflict(dec.decision, ds.labels, texture)
        if counts.n_shape + counts.n_texture == 0:
            raise MetricError(
                f"shape bias undefined on {ds.name!r}: none of the {counts.n_conflict} conflict images was "
                "classified as its shape or its texture class"
            )
        scalars = {
            "shape_bias": counts.shape_bias,
            "n_shape": float(counts.n_shape),
            "n_texture": float(counts.n_texture),
            "n_other": float(counts.n_other),
            "cue_conflict_acc16": counts.acc16,
        }
        nc = counts.n_conflict
        n = {
            "shape_bias": counts.n_shape + counts.n_texture,
            "n_shape": nc,
            "n_texture": nc,
            "n_other": nc,
            "cue_conflict_acc16": nc,
        }
        items = _items(ds, dec, ds.labels, texture, counts.outcome)
        return MetricResult(scalars=scalars, n=n, items=items)


#: The 16-class sets ``acc16`` knows: the name used in its ``sets`` parameter (also the dataset
#: *purpose* looked up in the model's label space) -> scalar key prefix and dataset role.
ACC16_SETS: dict[str, str] = {
    "edges": "edges",
    "filled-silhouettes": "silhouettes",
    "stylized-16": "stylized16",
    "cue-conflict": "cue_conflict",
}


class Acc16(Metric):
    """16-class top-1 accuracy on edges and filled silhouettes (opt-in: Stylized-16, cue-conflict shape)."""

    name = "acc16"
    version = "1"
    item_columns = ("set", "label", "decision", "correct", "top1")
    # per-set accuracies: a report column on request (`bench report --generalization acc16.edges_acc16`)
    key_roles = {"*_acc16": KeyRole("diagnostic", True, "16-class accuracy", proportion=True)}

    @dataclass(frozen=True)
    class Params:
        # which sets; opt-in: "stylized-16" (needs `bench data fetch stylized-16`), "cue-conflict"
        sets: tuple[str, ...] = ("edges", "filled-silhouettes")
        aggregation: str = "mean"

        def __post_init__(self) -> None:
            sets = self.sets
            if isinstance(sets, str):
                sets = tuple(s.strip() for s in sets.split(",") if s.strip())
            if not isinstance(sets, (list, tuple)) or not all(isinstance(s, str) for s in sets):
                raise InputError(f"acc16: parameter sets = {self.sets!r} is not a list of set names")
            sets = tuple(sets)
            unknown = [s for s in sets if s not in ACC16_SETS]
            if unknown or not sets:
                raise InputError(
                    f"acc16: parameter sets has unknown or no sets {unknown or sets}; known: {', '.join(ACC16_SETS)}"
                )
            object.__setattr__(self, "sets", sets)
            _check_aggregation(self.aggregation)

    def datasets(self, label_space: str) -> dict[str, DatasetRequest]:
        space = labels.find(label_space)
        if space is None or not any(space.dataset(s) for s in ACC16_SETS):
            raise NotApplicable(f"acc16 has no 16-class sets for label space {label_space!r}")
        out = {ACC16_SETS[s]: DatasetRequest(space.dataset(s)) for s in self.params.sets if space.dataset(s)}
        if not out:
            raise NotApplicable(
                f"acc16: none of the sets {list(self.params.sets)} exists in label space {label_space!r}"
            )
        return out

    def evaluate(self, model: ModelWrapper, data: dict[str, ImageSet], ctx: EvalContext) -> MetricResult:
        scalars: dict[str, float] = {}
        n: dict[str, int] = {}
        frames: list[pd.DataFrame] = []
        flags: list[str] = []
        for set_name in self.params.sets:
            role = ACC16_SETS[set_name]
            if role not in data:
                space = labels.find(model.label_space)
                if space is not None and space.dataset(set_name) is None:
                    flags.append(f"{set_name} has no {model.label_space} counterpart; skipped")
                    continue
                raise MetricError(f"acc16: dataset for {set_name!r} (role {role!r}) was not provided")
            ds = data[role]
            logits = ctx.predict(model, ds.images, description=f"acc16 on {ds.name}")
            dec = decide(logits, model.label_space, ds, self.params.aggregation)
            key = f"{role}_acc16"
            if set_name == "cue-conflict":
                texture = torch.as_tensor(ds.meta["texture"], dtype=torch.long)
                counts = count_cue_conflict(dec.decision, ds.labels, texture)
                scalars[key], n[key] = counts.acc16, counts.n_conflict
                frames.append(_items(ds, dec, ds.labels, texture, counts.outcome, set_name))
            else:
                acc, k = accuracy16(dec.decision, ds.labels)
                if k == 0:
                    raise MetricError(f"acc16: dataset {ds.name!r} has no labeled images")
                scalars[key], n[key] = acc, k
                frames.append(_items(ds, dec, ds.labels, None, None, set_name))
        items = pd.concat(frames, ignore_index=True) if frames else None
        return MetricResult(scalars=scalars, n=n, items=items, flags=flags)
