"""ImageNet-1k and the 16 entry-level categories of Geirhos et al. as label spaces.

``imagenet-1k``: 1000 classes in timm's order (sorted WordNet ids; names = the first lemma of timm's
ImageNet info). Index subsets ``imagenet-a`` and ``imagenet-r`` (the 200 classes of ImageNet-A / -R)
and the multi-label table ``real`` (ImageNet ReaL: one list of ImageNet-1k indices per validation
image ``ILSVRC2012_val_<n>``, position n − 1; an empty list = no label) are read from the files timm
ships in its package data (``timm/data/_info``), never downloaded. Decision rule onto ``imagenet16``:
the category's ImageNet indices (:data:`TABLE_FILE`, 207 in all, model-vs-human's
``human_categories.py``), whose probabilities the shape-bias protocol averages.

``imagenet16``: the 16 categories in alphabetical order, the class order of the 16-class stimulus sets
(cue-conflict, edges, filled silhouettes, Stylized-16).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from biasbench.core.errors import StateError
from biasbench.core.imagenet_corruptions import (
    IMAGENET_C_BAR,
    IMAGENET_C_EXTRA,
    IMAGENET_C_STANDARD,
    SEVERITIES,
)
from biasbench.core.labels import IMAGENET16, IMAGENET_1K, LabelSpace

#: The one place the 16-category -> ImageNet-1k index table lives (package data beside this module).
TABLE_FILE = "imagenet16.json"


def _timm_info_lines(filename: str) -> list[str]:
    text = resources.files("timm.data").joinpath("_info", filename).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i).split(",")[0] for i in range(info.num_classes()))


def _indices(filename: str) -> tuple[int, ...]:
    return tuple(int(v) for v in _timm_info_lines(filename))


@lru_cache(maxsize=1)
def real_labels() -> tuple[tuple[int, ...], ...]:
    """ImageNet ReaL: for validation image ``ILSVRC2012_val_<n>``, entry n − 1 lists its labels."""
    raw = json.loads(resources.files("timm.data").joinpath("_info", "imagenet_real_labels.json").read_text())
    return tuple(tuple(int(i) for i in labels) for labels in raw)


@lru_cache(maxsize=1)
def imagenet16_table() -> dict[str, tuple[int, ...]]:
    """``{category: ImageNet-1k indices}`` in category order (alphabetical, 16 entries, 207 indices)."""
    raw = json.loads(resources.files(__package__).joinpath(TABLE_FILE).read_text())
    table = {name: tuple(int(i) for i in idx) for name, idx in raw["categories"].items()}
    if list(table) != sorted(table) or len(table) != 16:
        raise StateError(f"{TABLE_FILE}: expected 16 categories in alphabetical order, got {list(table)}")
    return table


def categories16() -> list[str]:
    """The 16 category names; index i of a 16-class dataset label is ``categories16()[i]``."""
    return list(imagenet16_table())


#: The OOD evaluation of the study (Gavrikov & Keuper 2024): sets, corruption families, aggregates.
IMAGENET_OOD = {
    "sets": ("imagenet", "real", "v2", "a", "r", "sketch", "c", "cbar", "stylized16", "pgd40"),
    "families": {
        "c": {
            "family": "imagenet-c",
            "corruptions": IMAGENET_C_STANDARD + IMAGENET_C_EXTRA,
            "severities": SEVERITIES,
            "means": {"c15_mean": IMAGENET_C_STANDARD, "c19_mean": IMAGENET_C_STANDARD + IMAGENET_C_EXTRA},
        },
        "cbar": {
            "family": "imagenet-c-bar",
            "corruptions": IMAGENET_C_BAR,
            "severities": SEVERITIES,
            "means": {"cbar_mean": IMAGENET_C_BAR},
        },
    },
    "aggregates": {
        "id": ("imagenet_top1", "v2_top1", "real_top1"),
        "robustness": ("a_top1", "c19_mean", "cbar_mean"),
        "concepts": ("sketch_top1", "r_top1", "stylized16_acc16"),
        "adversarial": ("pgd40_top1",),
    },
    # ECE / NLL / Brier ({m}) of the aggregates whose parts have a calibration (metrics/ood.py): ReaL
    # (multi-label) has none, so id's is mean(imagenet, v2)
    "calibration_aggregates": {
        "id_{m}": ("imagenet_{m}", "v2_{m}"),
        "robustness_{m}": ("a_{m}", "c19_{m}_mean", "cbar_{m}_mean"),
    },
    # L-inf PGD-40 in pixel space (foolbox LinfPGD(steps=40, abs_stepsize=2/255), eps 0.5/255)
    "pgd_eps": 0.5 / 255,
    "pgd_step": 2 / 255,
}

IMAGENET_1K_SPACE = LabelSpace(
    name=IMAGENET_1K,
    num_classes=1000,
    description="ImageNet-1k (ILSVRC 2012), 1000 classes in sorted-WordNet-id order",
    class_names_loader=imagenet_class_names,
    class_ids_loader=imagenet_wnids,
    datasets={
        "clean": "imagenet-val",
        "cue-conflict": "cue-conflict",
        "edges": "edges",
        "filled-silhouettes": "filled-silhouettes",
        "stylized-16": "stylized-16",
        "real": "imagenet-real",
        "v2": "imagenet-v2",
        "a": "imagenet-a",
        "r": "imagenet-r",
        "sketch": "imagenet-sketch",
    },
    decisions={IMAGENET16: lambda: tuple(imagenet16_table().values())},
    subsets={
        "imagenet-a": lambda: _indices("imagenet_a_indices.txt"),
        "imagenet-r": lambda: _indices("imagenet_r_indices.txt"),
    },
    multi_labels={"real": real_labels},
    defaults={
        # SIS (Carter et al.): tau 0.9 and k = 100 pixels per step at 224 px (scaled with the area)
        "sis": {"tau": 0.9, "pixels_per_step": 224**2 / 100, "n_images": 256},
        "ood": IMAGENET_OOD,
    },
)

IMAGENET16_SPACE = LabelSpace(
    name=IMAGENET16,
    num_classes=16,
    description="the 16 entry-level categories of Geirhos et al. (2019), alphabetical",
    class_names_loader=categories16,
)
