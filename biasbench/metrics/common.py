"""Helpers shared by several metric plugins (a plugin never imports another plugin).

* :func:`topk_correct` — label among the top-k logits;
* :func:`check_labels` / :func:`eval_index` — which labeled images a metric evaluates (all, or a
  seeded subset; the label space may set a default ``n_images`` for the metric);
* :func:`dataset_request` — the dataset a metric uses: its ``dataset`` parameter, else the label
  space's default for a purpose (:meth:`biasbench.core.labels.LabelSpace.dataset`);
* :func:`fixed_geometry`, :func:`no_autocast` — the fixed Resize(256) + CenterCrop(224) of the
  frequency metrics, and float32 filters under AMP.
"""

from __future__ import annotations

import torch

from biasbench.core import labels
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
