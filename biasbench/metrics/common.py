"""Helpers shared by several metric plugins (a plugin never imports another plugin).

* :func:`topk_correct` — label among the top-k logits;
* :func:`check_labels` / :func:`eval_index` — which labeled images a metric evaluates (all, or a
  seeded subset; the label space may set a default ``n_images`` for the metric);
* :func:`dataset_request` — the dataset a metric uses: its ``dataset`` parameter, else the label
  space's default for a purpose (:meth:`biasbench.core.labels.LabelSpace.dataset`);
* :func:`fixed_geometry`, :func:`no_autocast` — the fixed Resize(256) + CenterCrop(224) of the
  frequency metrics, and float32 filters under AMP;
* :func:`decide` — a model's decisions in a dataset's label space (its own classes, or a label
  space's decision rule such as ImageNet-1k onto the 16 categories, :func:`aggregate_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from biasbench.core import labels
from biasbench.core.errors import InputError
from biasbench.core.preprocess import Preprocess
from biasbench.metrics.base import (
    DatasetRequest,
    ImageSet,
    MetricError,
    ModelWrapper,
    NotApplicable,
    seeded_subset,
)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (N,): label among the top-k logits."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def space_default(metric: str, label_space: str, key: str, fallback: object = None) -> object:
    """``metric``'s default for parameter ``key`` on data of ``label_space`` (else ``fallback``)."""
    space = labels.find(label_space)
    return fallback if space is None else space.default(metric, key, fallback)


def dataset_request(
    metric: str,
    label_space: str,
    dataset: str | None,
    purpose: str = "clean",
    preprocess: Preprocess | None = None,
) -> DatasetRequest:
    """``dataset`` when given, else the label space's default dataset for ``purpose``; neither is
    :class:`NotApplicable` (the job is listed as n/a, not failed)."""
    space = labels.find(label_space)
    name = dataset or (space.dataset(purpose) if space is not None else None)
    if not name:
        raise NotApplicable(
            f"{metric} has no default {purpose} dataset for label space {label_space!r} (set the `dataset` parameter)"
        )
    return DatasetRequest(name, preprocess)


def check_labels(ds: ImageSet, model: ModelWrapper, metric: str) -> torch.Tensor:
    """Boolean mask of labeled images; raises if the label spaces differ or nothing is labeled."""
    if ds.label_space != model.label_space:
        raise MetricError(
            f"{metric}: dataset {ds.name!r} is labeled in {ds.label_space!r} but the model predicts "
            f"{model.label_space!r}"
        )
    keep = ds.labels >= 0
    if not bool(keep.any()):
        raise MetricError(f"{metric}: dataset {ds.name!r} has no labeled images")
    return keep


def eval_index(
    ds: ImageSet, model: ModelWrapper, metric: str, n_images: int | None, seed: int
) -> torch.Tensor:
    """Dataset indices (sorted) of the labeled images to evaluate: all of them, or a seeded subset of
    ``n_images`` (``None``: the label space's default ``n_images`` for this metric, else every image)."""
    labeled = torch.nonzero(check_labels(ds, model, metric)).flatten()
    if n_images is None:
        n_images = space_default(metric, model.label_space, "n_images")  # type: ignore[assignment]
    if n_images is None:
        return labeled
    if n_images < 1:
        raise MetricError(f"{metric}: n_images must be ≥ 1, got {n_images}")
    return labeled[torch.as_tensor(seeded_subset(len(labeled), n_images, seed), dtype=torch.long)]


def fixed_geometry(interpolation: str) -> Preprocess:
    """Resize(256) + CenterCrop(224) (mean/std are irrelevant to decoding; the defaults keep the
    dataset cache shared with other metrics that ask for the same geometry). Datasets used as stored
    (the demo world) ignore it."""
    return Preprocess(resize=256, crop=224, interpolation=interpolation)


def fixed_geometry_request(
    metric: str, label_space: str, dataset: str | None, interpolation: str
) -> DatasetRequest:
    """The clean set (or ``dataset``) at the fixed Resize(256) + CenterCrop(224) of the frequency metrics."""
    return dataset_request(metric, label_space, dataset, preprocess=fixed_geometry(interpolation))


def no_autocast(device: torch.device) -> torch.autocast:
    """Filters and noise are computed in float32 even when the model runs under AMP."""
    return torch.autocast(device_type=device.type, enabled=False)


# ----------------------------------------------------------------------------------------------------
# Decisions in a dataset's label space (shape bias, 16-class accuracy, OOD sets)
# ----------------------------------------------------------------------------------------------------

AGGREGATIONS = ("mean", "sum")


def aggregate_groups(
    probs: torch.Tensor, groups: Sequence[Sequence[int]], aggregation: str = "mean"
) -> torch.Tensor:
    """(N, C) probabilities -> (N, len(groups)) scores: mean (or sum) over each group of class indices."""
    if aggregation not in AGGREGATIONS:
        raise InputError(f"unknown aggregation {aggregation!r}; known: {', '.join(AGGREGATIONS)}")
    cols = []
    for idx in groups:
        sel = probs[:, list(idx)]
        cols.append(sel.mean(dim=1) if aggregation == "mean" else sel.sum(dim=1))
    return torch.stack(cols, dim=1)


@dataclass(frozen=True)
class Decisions:
    """Per-image decisions (indices into the dataset's ``class_names``) and the scores behind them.

    ``scores``: (N, C) - the 16 mean-aggregated probabilities for ImageNet models, the softmax over
    the model's classes otherwise. ``top1``: the argmax over the model's own classes.
    """

    decision: torch.Tensor
    scores: torch.Tensor
    top1: torch.Tensor
    #: item column of the scores: ``probs`` (the model's own classes) or ``p<K>`` (aggregated onto K)
    scores_name: str = "probs"


def decide(
    logits: torch.Tensor, model_label_space: str, ds: ImageSet, aggregation: str = "mean"
) -> Decisions:
    """Decisions of a model on ``ds`` in the dataset's label space.

    A model whose label space is the dataset's (the demo world): argmax of the logits (the aggregation
    is the identity). A model whose label space declares a decision rule onto the dataset's (ImageNet-1k
    onto the 16 categories, :meth:`~biasbench.core.labels.LabelSpace.decision_groups`): softmax over
    its classes, ``aggregation`` over each target class's group of indices, argmax.
    """
    logits = logits.float()
    top1 = logits.argmax(dim=1)
    if ds.label_space == model_label_space:
        if logits.shape[1] != len(ds.class_names):
            raise MetricError(
                f"dataset {ds.name!r} has {len(ds.class_names)} classes but the model returns {logits.shape[1]}"
            )
        return Decisions(decision=top1, scores=logits.softmax(dim=1), top1=top1)
    space = labels.find(model_label_space)
    groups = space.decision_groups(ds.label_space) if space is not None else None
    if space is not None and groups is not None:
        if list(ds.class_names) != list(labels.get(ds.label_space).class_names):
            raise MetricError(
                f"dataset {ds.name!r}: its class order differs from the label space {ds.label_space!r}"
            )
        if logits.shape[1] != space.num_classes:
            raise MetricError(
                f"the {ds.label_space} decision rule needs (N, {space.num_classes}) {space.name} probabilities, "
                f"got {tuple(logits.shape)}"
            )
        probs = logits.double().softmax(dim=1)
        scores = aggregate_groups(probs, groups, aggregation)
        decision = scores.argmax(dim=1)
        mean_scores = scores if aggregation == "mean" else aggregate_groups(probs, groups, "mean")
        return Decisions(
            decision=decision, scores=mean_scores.float(), top1=top1, scores_name=f"p{len(groups)}"
        )
    raise MetricError(
        f"no decision rule from a {model_label_space!r} model to dataset {ds.name!r} ({ds.label_space!r})"
    )
