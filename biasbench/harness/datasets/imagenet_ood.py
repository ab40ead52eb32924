"""The ImageNet out-of-distribution test sets, each in the layout its canonical download unpacks to.

All are in the ``imagenet-1k`` label space: labels are ImageNet-1k indices 0..999 (from the WordNet id
through timm's sorted wnid list, or, for ImageNetV2, the folder's number), class names those of
:func:`biasbench.core.labels.get` ``("imagenet-1k")``. Layouts under the data root:

* ``imagenet-v2``: ImageNetV2 matched-frequency, ``<data-root>/imagenet-v2/<class index>/*.jpeg``
  (10,000 images). The folders are named by class **index** ``0`` … ``999`` and read as numbers
  (``int(name)``: ``2`` comes before ``10``); a folder that is not an integer 0..999 is an error
  naming it.
* ``imagenet-a`` / ``imagenet-r``: ``<data-root>/imagenet-a/<wnid>/*.jpg`` (7,500 images) and
  ``<data-root>/imagenet-r/<wnid>/*.jpg`` (30,000); 200 classes each, labels in the 1000-class
  space. A wnid outside the set's 200 classes (the label space's subsets ``imagenet-a`` /
  ``imagenet-r``, timm's index files) is an error naming it.
* ``imagenet-sketch``: ``<data-root>/imagenet-sketch/<wnid>/*.JPEG`` (1000 classes, 50,889 images).
* ``imagenet-real``: the ImageNet-1k validation images of ``imagenet-val``
  (``<data-root>/imagenet/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG``) with the ImageNet ReaL labels
  in ``meta["real"]``: one tuple of ImageNet-1k indices per image, the label space's multi-label
  table ``real`` at position n − 1 for ``ILSVRC2012_val_<n>`` (matched by the number in the file
  name, so any subset of val works; a name without it is an error). An empty tuple = no ReaL label.
  ``labels`` are the original single labels. The decoded images are ``imagenet-val``'s cache file
  (same preprocessing, same key); the manifest differs from ``imagenet-val``'s (it covers the
  ReaL labels).
* ``imagenet-c`` (family): ``imagenet-c/<corruption>-<severity>`` for the 15 standard
  (:data:`IMAGENET_C_STANDARD`) and 4 extra (:data:`IMAGENET_C_EXTRA`) corruptions × severities
  1..5, at ``<data-root>/imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG``.
* ``imagenet-c-bar`` (family): ``imagenet-c-bar/<corruption>-<severity>`` for the 10 ImageNet-C̄
  corruptions (:data:`IMAGENET_C_BAR`) × 1..5, at
  ``<data-root>/imagenet-c-bar/<corruption>/<severity>/<wnid>/*.JPEG``.

ImageNet-C and -C̄ images are 224 x 224 and used as stored (``as_stored``: no resize, no crop; any
other size is an error); their sets carry ``meta["corruption"]`` (str) and ``meta["severity"]``
(int64). The others are decoded with the checkpoint's preprocessing. Everything is decoded once per
preprocessing and cached as memory-mapped uint8 under ``<cache>/datasets``. A manifest is the file
list with sizes (cheap). A set (or family member) that is absent raises ``DatasetMissing`` naming
the folder it looked in and how to get the data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from biasbench.core import labels
from biasbench.core.errors import InputError
from biasbench.core.hashing import sha256_text
from biasbench.core.imagenet_corruptions import (
    IMAGENET_C_BAR,
    IMAGENET_C_EXTRA,
    IMAGENET_C_STANDARD,
    SEVERITIES,
)
from biasbench.core.images import ImageSet, manifest_of
from biasbench.core.labels import IMAGENET_1K
from biasbench.core.preprocess import Preprocess
from biasbench.core.streaming import LoadOptions, cached_or_streamed
from biasbench.harness.datasets.catalog import DatasetEntry, DatasetFamily, Download
from biasbench.harness.datasets.download_spec import shipped_download
from biasbench.harness.datasets.imagenet_files import (
    IMAGENET_VAL_HOW_TO_GET,
    IMAGENET_VAL_NAME,
    IMAGENET_VAL_RELPATH,
    Files,
    cache_key,
    image_files,
    imagenet_folder_entry,
    imagenet_image_set,
    list_wnid_folders,
    scan_folder,
)

#: ImageNet-C and -C̄ images are this many pixels square, used as stored.
CORRUPTION_SIZE = 224

IMAGENET_C_URL = "https://zenodo.org/record/2235448"
#: The file of the ImageNet-C Zenodo record that holds each corruption.
IMAGENET_C_TARS = {
    **dict.fromkeys(("gaussian_noise", "shot_noise", "impulse_noise"), "noise.tar"),
    **dict.fromkeys(("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"), "blur.tar"),
    **dict.fromkeys(("snow", "frost", "fog", "brightness"), "weather.tar"),
    **dict.fromkeys(("contrast", "elastic_transform", "pixelate", "jpeg_compression"), "digital.tar"),
    **dict.fromkeys(IMAGENET_C_EXTRA, "extra.tar"),
}
IMAGENET_C_BAR_URL = "https://dl.fbaipublicfiles.com/inc_bar/imagenet_c_bar.tar.gz"

HOW_TO_GET_V2 = (
    "Run `bench data fetch imagenet-v2` (sha256-checked), or: get imagenetv2-matched-frequency.tar.gz from the ImageNetV2 release (github.com/modestyachts/ImageNetV2; "
    "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz), "
    "extract it and rename its folder imagenetv2-matched-frequency-format-val/ to <data-root>/imagenet-v2/."
)
HOW_TO_GET_A = (
    "Run `bench data fetch imagenet-a` (sha256-checked), or: get https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar (github.com/hendrycks/natural-adv-examples) "
    "and extract it into <data-root>/ (it unpacks to imagenet-a/<wnid>/)."
)
HOW_TO_GET_R = (
    "Run `bench data fetch imagenet-r` (sha256-checked), or: get https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar (github.com/hendrycks/imagenet-r) "
    "and extract it into <data-root>/ (it unpacks to imagenet-r/<wnid>/)."
)
HOW_TO_GET_SKETCH = (
    "Run `bench data fetch imagenet-sketch` (sha256-checked), or: get ImageNet-Sketch.zip from the ImageNet-Sketch release (github.com/HaohanWang/ImageNet-Sketch, "
    "Google Drive file 1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA), extract it and rename its folder sketch/ to "
    "<data-root>/imagenet-sketch/."
)
HOW_TO_GET_REAL = (
    "ImageNet ReaL labels the ImageNet-1k validation images of imagenet-val (its labels ship with timm). "
    + IMAGENET_VAL_HOW_TO_GET
)
HOW_TO_GET_C = (
    "Make it from ImageNet images with `bench data make imagenet-c --from <folder>`, fetch it with "
    "`bench data fetch imagenet-c-<noise|blur|weather|digital|extra> --sha256 <digest>`, or: "
    f"get noise.tar, blur.tar, weather.tar, digital.tar and extra.tar from the ImageNet-C Zenodo record "
    f"({IMAGENET_C_URL}) and extract them into <data-root>/imagenet-c/ (each unpacks to "
    "<corruption>/<severity>/<wnid>/)."
)
HOW_TO_GET_C_BAR = (
    "Run `bench data fetch imagenet-c-bar --sha256 <digest>`, or: "
    f"get the preprocessed ImageNet-C-bar, {IMAGENET_C_BAR_URL} (linked from "
    "github.com/facebookresearch/augmentation-corruption), and extract it into <data-root>/imagenet-c-bar/ "
    "so that <corruption>/<severity 1..5>/<wnid>/ lie directly in it. (The repository's "
    "imagenet_c_bar/make_imagenet_c_bar.py names severity folders by the corruption parameter, e.g. 0.80: "
    "rename them 1..5 in the order of its imagenet_c_bar.csv.)"
)

_INDEX_FOLDER = re.compile(r"[0-9]+")
_VAL_NAME = re.compile(r"ILSVRC2012_val_([0-9]{8})")


# ----------------------------------------------------------------------------------------------------
# Listing: (relative path, ImageNet-1k index) per image
# ----------------------------------------------------------------------------------------------------


def list_index_folders(root: Path) -> Files:
    """ImageNetV2: ``<class index>/<file>`` for every image, the folders in numeric order (``int``)."""
    folders: list[tuple[int, Path]] = []
    for d in root.iterdir():
        if not d.is_dir():
            continue
        if not _INDEX_FOLDER.fullmatch(d.name) or int(d.name) > 999:
            raise InputError(
                f"{d}: folder name {d.name!r} is not an ImageNet-1k class index 0..999 "
                "(ImageNetV2 folders are named by class index)"
            )
        folders.append((int(d.name), d))
    folders.sort(key=lambda t: (t[0], t[1].name))
    return [(f"{d.name}/{f.name}", i) for i, d in folders for f in image_files(d)]


def list_subset_folders(root: Path, subset: str) -> Files:
    """``<wnid>/<file>`` whose wnids must be among the label space's subset ``subset`` (200 classes)."""
    return list_wnid_folders(root, labels.get(IMAGENET_1K).subset(subset), subset)


def real_labels_of(root: Path, files: Files) -> list[tuple[int, ...]]:
    """The ReaL labels of ``ILSVRC2012_val_<n>`` files (entry n − 1 of the label space's ``real``)."""
    table = labels.get(IMAGENET_1K).multi_label("real")
    out: list[tuple[int, ...]] = []
    for rel, _ in files:
        m = _VAL_NAME.fullmatch(Path(rel).stem)
        n = int(m.group(1)) if m else 0
        if not 1 <= n <= len(table):
            raise InputError(
                f"dataset 'imagenet-real': {root / rel}: the file name must be ILSVRC2012_val_<n>.<ext> with "
                f"n = 00000001 … {len(table):08d} (ImageNet ReaL labels are matched by that number)"
            )
        out.append(tuple(table[n - 1]))
    return out


# ----------------------------------------------------------------------------------------------------
# Entries
# ----------------------------------------------------------------------------------------------------


def shipped_folder_entry(
    name: str, list_files: Callable[[Path], Files], pattern: str, what: str, how_to_get: str, size: int
) -> DatasetEntry:
    """An ImageNet-labeled dataset at ``<data-root>/<name>/<pattern>`` whose download spec ships as
    ``downloads/<name>.json``; ``what`` and ``size``: the published set and its image count."""
    return imagenet_folder_entry(
        name,
        name,
        list_files,
        pattern,
        f"{what}, <data-root>/{name}/{pattern}",
        how_to_get,
        published_size=size,
        download=shipped_download(name),
    )


IMAGENET_V2 = shipped_folder_entry(
    "imagenet-v2",
    list_index_folders,
    "<class index 0..999>/*.jpeg",
    "ImageNetV2 matched-frequency (10,000 images)",
    HOW_TO_GET_V2,
    10_000,
)


def subset_entry(name: str, what: str, how_to_get: str, size: int) -> DatasetEntry:
    """ImageNet-A and -R: ``<wnid>/*.jpg`` whose wnids are the label space's subset of that name."""
    pattern = "<wnid>/*.jpg"
    return shipped_folder_entry(
        name, partial(list_subset_folders, subset=name), pattern, what, how_to_get, size
    )


IMAGENET_A = subset_entry(
    "imagenet-a", "ImageNet-A natural adversarial examples (7,500 images, 200 classes)", HOW_TO_GET_A, 7_500
)
IMAGENET_R = subset_entry(
    "imagenet-r", "ImageNet-R renditions (30,000 images, 200 classes)", HOW_TO_GET_R, 30_000
)
IMAGENET_SKETCH = shipped_folder_entry(
    "imagenet-sketch",
    list_wnid_folders,
    "<wnid>/*.JPEG",
    "ImageNet-Sketch (50,889 images, 1000 classes)",
    HOW_TO_GET_SKETCH,
    50_889,
)


def _real_scan(data_root: Path) -> tuple[Path, Files, list[tuple[int, ...]], str, str]:
    """(val folder, files, ReaL labels, imagenet-val's manifest, imagenet-real's manifest)."""
    root = Path(data_root) / IMAGENET_VAL_RELPATH
    files = scan_folder(
        "imagenet-real", root, list_wnid_folders, "<wnid>/ILSVRC2012_val_<n>.JPEG", HOW_TO_GET_REAL
    )
    real = real_labels_of(root, files)
    val_manifest = manifest_of(root, files)
    manifest = sha256_text(f"imagenet-real\n{val_manifest}\n{json.dumps(real)}")[:16]
    return root, files, real, val_manifest, manifest


def _real_manifest(data_root: Path, pre: Preprocess | None) -> str:
    return _real_scan(data_root)[4]


def _real_load(
    data_root: Path, pre: Preprocess | None, cache_dir: Path, options: LoadOptions | None = None
) -> ImageSet:
    if pre is None:
        raise InputError("dataset 'imagenet-real' needs a preprocessing (resize + crop)")
    root, files, real, val_manifest, manifest = _real_scan(data_root)
    # imagenet-val's cache file (the same images, decoded the same way), or streamed like it when it
    # does not fit the cache budget
    key = cache_key(IMAGENET_VAL_NAME, val_manifest, pre)
    paths = [root / f for f, _ in files]
    arr = cached_or_streamed(cache_dir, key, paths, pre, (pre.crop, pre.crop), options=options)
    return imagenet_image_set("imagenet-real", arr, files, manifest, meta={"real": real})


IMAGENET_REAL = DatasetEntry(
    name="imagenet-real",
    description="ImageNet-1k validation images with the ImageNet ReaL multi-labels in meta['real'], "
    "<data-root>/imagenet/val/<wnid>/ILSVRC2012_val_<n>.JPEG",
    label_space=IMAGENET_1K,
    manifest=_real_manifest,
    load=_real_load,
    how_to_get=HOW_TO_GET_REAL,
    location=lambda data_root: Path(data_root) / IMAGENET_VAL_RELPATH,
    published_size=50_000,
)


def _corruption_meta(corruption: str, severity: int, files: Files) -> dict[str, object]:
    return {
        "corruption": [corruption] * len(files),
        "severity": torch.full((len(files),), severity, dtype=torch.long),
    }


#: every ImageNet-C / C-bar cell corrupts the 50,000 validation images
CORRUPTION_CELL_SIZE = 50_000


def corruption_member(family: str, corruption: str, severity: int, how_to_get: str) -> DatasetEntry:
    """The family member ``<family>/<corruption>-<severity>`` at
    ``<data-root>/<family>/<corruption>/<severity>/<wnid>/*``, 224 px, used as stored."""
    return imagenet_folder_entry(
        f"{family}/{corruption}-{severity}",
        f"{family}/{corruption}/{severity}",
        list_wnid_folders,
        "<wnid>/*.JPEG",
        f"{family}: {corruption} at severity {severity} (224 px, used as stored)",
        how_to_get,
        stored_size=CORRUPTION_SIZE,
        meta_of=partial(_corruption_meta, corruption, severity),
        published_size=CORRUPTION_CELL_SIZE,
    )


def _imagenet_c_members() -> dict[str, DatasetEntry]:
    return {
        f"{c}-{s}": corruption_member(
            "imagenet-c",
            c,
            s,
            f"Make it with `bench data make imagenet-c --from <folder of ImageNet images>`, fetch it with "
            f"`bench data fetch imagenet-c-{IMAGENET_C_TARS[c].removesuffix('.tar')} --sha256 <digest>`, or "
            f"get {IMAGENET_C_TARS[c]} from the ImageNet-C Zenodo record ({IMAGENET_C_URL}) and extract it "
            "into <data-root>/imagenet-c/ (it unpacks to <corruption>/<severity>/<wnid>/).",
        )
        for c in (*IMAGENET_C_STANDARD, *IMAGENET_C_EXTRA)
        for s in SEVERITIES
    }


def _imagenet_c_bar_members() -> dict[str, DatasetEntry]:
    return {
        f"{c}-{s}": corruption_member("imagenet-c-bar", c, s, HOW_TO_GET_C_BAR)
        for c in IMAGENET_C_BAR
        for s in SEVERITIES
    }


def corruption_family(
    name: str,
    what: str,
    members: Callable[[], dict[str, DatasetEntry]],
    summary: str,
    how_to_get: str,
    download: Download,
) -> DatasetFamily:
    """An ImageNet-labeled corruption family at ``<data-root>/<name>/<corruption>/<severity>/<wnid>/``
    (224 px, used as stored); ``what``: the published set."""
    return DatasetFamily(
        name=name,
        description=f"{what} (224 px, used as stored), <data-root>/{name}/<corruption>/<severity>/<wnid>/*.JPEG",
        label_space=IMAGENET_1K,
        members=members,
        summary=summary,
        how_to_get=how_to_get,
        location=lambda data_root: Path(data_root) / name,
        download=download,
    )


IMAGENET_C = corruption_family(
    "imagenet-c",
    "ImageNet-C common corruptions",
    _imagenet_c_members,
    f"{len(IMAGENET_C_STANDARD)} standard + {len(IMAGENET_C_EXTRA)} extra corruptions × severities "
    "1..5 (<corruption>-<severity>, e.g. gaussian_noise-3)",
    HOW_TO_GET_C,
    shipped_download(
        *(f"imagenet-c-{tar.removesuffix('.tar')}" for tar in dict.fromkeys(IMAGENET_C_TARS.values()))
    ),
)
IMAGENET_C_BAR_SETS = corruption_family(
    "imagenet-c-bar",
    "ImageNet-C-bar, corruptions dissimilar to ImageNet-C",
    _imagenet_c_bar_members,
    f"{len(IMAGENET_C_BAR)} corruptions × severities 1..5 (<corruption>-<severity>, e.g. blue_noise_sample-3)",
    HOW_TO_GET_C_BAR,
    shipped_download("imagenet-c-bar"),
)
