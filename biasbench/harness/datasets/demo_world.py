"""The demo world's splits as one dataset family, ``demo-world/<split>`` (label space ``demo-world``).

The images are rendered by :mod:`biasbench.core.world` (deterministic from its config; nothing to
download) and cached as memory-mapped uint8 under ``<cache>/datasets``; they are used as stored. The
manifest hash of a split is the world's (config, split, version) hash.
"""

from __future__ import annotations

from pathlib import Path

from biasbench.core import world
from biasbench.core.corruptions import CORRUPTIONS, SEVERITIES
from biasbench.core.images import ImageSet
from biasbench.core.labels import DEMO_WORLD
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets.catalog import DatasetEntry, DatasetFamily

_DESCRIPTIONS = {
    "train": "demo world: training-distribution sample (shape k filled with texture k)",
    "test": "demo world: test set, same distribution as train (balanced, 100 per class)",
    "cue-conflict": "demo world: shape i filled with texture j != i, every ordered pair, label = shape, meta texture",
    "silhouette": "demo world: shapes with a flat fill (label = shape)",
    "texture-only": "demo world: textures filling the frame (label = texture)",
    "edges": "demo world: shape outlines (label = shape)",
}
HOW_TO_GET = "generated deterministically on first use (nothing to download); cached under <cache>/datasets"


def split_entry(split: str) -> DatasetEntry:
    """The dataset ``demo-world/<split>``."""
    parsed = world.parse_corruption(split)
    desc = _DESCRIPTIONS.get(split) or (
        f"demo world: test images (first n_corrupt) with {parsed[0]} at severity {parsed[1]}"
        if parsed
        else split
    )

    def manifest(data_root: Path, pre: Preprocess | None) -> str:
        return world.manifest_hash(split)

    def load(data_root: Path, pre: Preprocess | None, cache_dir: Path) -> ImageSet:
        return world.generate(split, world.WorldConfig(), cache_dir)

    return DatasetEntry(
        name=f"{DEMO_WORLD}/{split}",
        description=desc,
        label_space=DEMO_WORLD,
        manifest=manifest,
        load=load,
        as_stored=True,
        how_to_get=HOW_TO_GET,
        published_size=world.split_size(split),
    )


DEMO_WORLD_SETS = DatasetFamily(
    name=DEMO_WORLD,
    description="the synthetic shape-texture demo world (32 px, generated, used as stored)",
    label_space=DEMO_WORLD,
    members=lambda: {split: split_entry(split) for split in world.SPLITS},
    summary=f"{', '.join(world.BASE_SPLITS)}; {len(CORRUPTIONS)} corruptions × {len(SEVERITIES)} severities "
    f"(<corruption>-<severity>, e.g. gaussian_blur-3)",
    how_to_get=HOW_TO_GET,
)
