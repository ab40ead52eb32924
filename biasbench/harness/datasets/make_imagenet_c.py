"""``bench data make imagenet-c``: a real ImageNet-C tree made from any ImageNet-1k image folder.

The recipe of Hendrycks & Dietterich's ``ImageNet-C/create_c/make_imagenet_c.py`` (github.com/hendrycks/
robustness): each image is decoded to RGB, resized (short side 256, bilinear) and center-cropped to
224 x 224 (torchvision ``Resize(256)`` + ``CenterCrop(224)``), corrupted (their functions, as maintained
in the ``imagecorruptions-imaug`` package: :func:`biasbench.core.imagenet_corruptions.corrupt_image`)
and saved as JPEG quality 85 (``optimize=True``) under the source file's name, at

    <data-root>/imagenet-c/<corruption>/<severity>/<wnid>/<file stem>.JPEG

- the layout the ``imagenet-c`` dataset family reads. Sources: ``<wnid>/<file>`` folders (the
ImageNet validation layout) or flat ``<wnid>_<anything>.<ext>`` files (``imagenet-sample``);
``per_class`` keeps the first K files of each class (sorted by name). The randomness of each
corruption is seeded by (file name, corruption, severity), so a tree made twice, or in pieces, is the
same. Files already present are kept (a rerun resumes); each file is written to a temporary name and
renamed, so an interrupted run leaves no truncated JPEG. One image is in memory at a time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.transforms import CenterCrop, Resize

from biasbench.core import labels
from biasbench.core.errors import InputError, NotFoundError
from biasbench.core.imagenet_corruptions import (
    IMAGENET_C_EXTRA,
    IMAGENET_C_STANDARD,
    SEVERITIES,
    corrupt_image,
    corruption_seed,
)
from biasbench.core.labels import IMAGENET_1K
from biasbench.harness.datasets.imagenet_files import list_labeled_files

#: Hendrycks' make_imagenet_c.py: Resize(256) + CenterCrop(224), JPEG quality 85.
RESIZE, CROP, JPEG_QUALITY = 256, 224, 85
TARGET = "imagenet-c"


@dataclass
class MakeReport:
    """What :func:`make_imagenet_c` did: images written / kept, and seconds spent per corruption."""

    target: Path
    n_sources: int
    written: int = 0
    kept: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def source_files(src: Path, per_class: int | None = None) -> list[tuple[Path, str]]:
    """(path, wnid) of every image in ``src`` - ``<wnid>/<file>`` folders, else flat
    ``<wnid>_<anything>.<ext>`` files - sorted by path, at most ``per_class`` per class."""
    src = Path(src)
    if not src.is_dir():
        raise NotFoundError(f"{src}: no such folder of ImageNet images")
    layout = "wnid-folders" if any(p.is_dir() for p in src.iterdir()) else "wnid-prefix"
    wnids = labels.get(IMAGENET_1K).class_ids
    files = list_labeled_files(src, layout)
    if not files:
        raise NotFoundError(
            f"{src}: no images (expected <wnid>/<file> folders or flat <wnid>_<name>.JPEG files)"
        )
    out: list[tuple[Path, str]] = []
    taken: dict[int, int] = {}
    for rel, index in files:
        if per_class is not None and taken.get(index, 0) >= per_class:
            continue
        taken[index] = taken.get(index, 0) + 1
        out.append((src / rel, wnids[index]))
    return out


def center_crop_224(path: Path) -> np.ndarray:
    """The image at ``path`` as (224, 224, 3) uint8: RGB, Resize(256) (bilinear), CenterCrop(224)."""
    with Image.open(path) as im:
        img = CenterCrop(CROP)(Resize(RESIZE)(im.convert("RGB")))
    return np.asarray(img, dtype=np.uint8)


def _save_jpeg(arr: np.ndarray, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    Image.fromarray(arr).save(tmp, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    os.replace(tmp, out)


def make_imagenet_c(
    src: Path,
    data_root: Path,
    *,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    per_class: int | None = None,
    log: Callable[[str], Any] = print,
) -> MakeReport:
    """Write ImageNet-C for the images of ``src`` into ``<data_root>/imagenet-c`` (see the module doc);
    ``corruptions`` default to all 19 (15 standard + 4 extra). Returns what was written."""
    names = tuple(corruptions) if corruptions else (*IMAGENET_C_STANDARD, *IMAGENET_C_EXTRA)
    known = (*IMAGENET_C_STANDARD, *IMAGENET_C_EXTRA)
    bad = [c for c in names if c not in known]
    if bad:
        raise InputError(f"unknown ImageNet-C corruption {bad[0]!r}; known: {', '.join(known)}")
    bad_s = [s for s in severities if s not in SEVERITIES]
    if bad_s:
        raise InputError(f"severity must be one of {SEVERITIES}, got {bad_s[0]!r}")
    files = source_files(src, per_class)
    target = Path(data_root) / TARGET
    report = MakeReport(target=target, n_sources=len(files))
    log(
        f"making ImageNet-C from {len(files)} images of {src}: {len(names)} corruptions x "
        f"{len(severities)} severities into {target}"
    )
    for corruption in names:
        t0 = time.perf_counter()
        n_before = report.written
        for path, wnid in files:
            pending = [
                (s, target / corruption / str(s) / wnid / f"{path.stem}.JPEG")
                for s in severities
                if not (target / corruption / str(s) / wnid / f"{path.stem}.JPEG").is_file()
            ]
            report.kept += len(severities) - len(pending)
            if not pending:
                continue
            img = center_crop_224(path)
            for s, out in pending:
                seed = corruption_seed(f"{wnid}/{path.name}", corruption, s)
                _save_jpeg(corrupt_image(img, corruption, s, seed), out)
                report.written += 1
        report.seconds[corruption] = time.perf_counter() - t0
        log(
            f"  {corruption}: {report.written - n_before} images written in "
            f"{report.seconds[corruption]:.1f} s"
        )
    log(f"imagenet-c: {report.written} images written, {report.kept} already present, in {target}")
    return report
