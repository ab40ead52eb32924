"""CIFAR-10 from the official python batches: the dataset family ``cifar10/test`` and ``cifar10/train``.

Layout: ``<data-root>/cifar10/`` holds Krizhevsky's ``cifar-10-batches-py`` files — ``batches.meta``,
``data_batch_1`` … ``data_batch_5`` (``train``, 50,000 images) and ``test_batch`` (``test``, 10,000)
— directly (what ``bench data fetch cifar10 --sha256 HEX`` puts there) or in a
``cifar-10-batches-py/`` folder inside it (the tarball unpacked by hand). The pickles are read by
:mod:`biasbench.harness.datasets.cifar_pickle`, which never unpickles anything but the plain arrays,
lists and bytes of the format; ``batches.meta``'s class names must be the ``cifar10`` label space's,
in its order (an :class:`~biasbench.core.errors.InputError` otherwise).

Images are used as stored (``as_stored``): 32 x 32, no resize or crop, like the demo world — the
checkpoints of the ``cifar10`` label space take 32-px input, and the frequency metrics (spectral,
critical band) measure the 32-px images rather than the ImageNet geometry they use on ImageNet. A
checkpoint trained at another size evaluates an ImageFolder export of the images with its own
preprocessing instead: ``folder:PATH#labels=cifar10`` (class folders ``airplane/`` … or ``0/`` … ``9/``,
:mod:`biasbench.harness.datasets.folder_dataset`).

Item ids: ``<batch file>/<index in it>`` (``test_batch/0`` …); ``meta["filename"]`` holds each
image's official file name. Manifest (part of every result's ``config_hash``): the member and the
sha256 of each file it reads (``batches.meta`` and its batches); the pickles are small (31 MB a batch).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from biasbench.core import labels
from biasbench.core.errors import InputError
from biasbench.core.images import ImageSet
from biasbench.core.labels import CIFAR10
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets.catalog import DatasetEntry, DatasetFamily, DatasetMissing
from biasbench.harness.datasets.cifar_pickle import read_batch, read_meta
from biasbench.harness.datasets.download_spec import shipped_download
from biasbench.registry.download import sha256_file

#: where the batches are looked for, under the data root
RELPATH = "cifar10"
#: the folder the official tarball unpacks to (also accepted inside ``<data-root>/cifar10``)
BATCHES_DIR = "cifar-10-batches-py"
META = "batches.meta"
#: member -> (batch files, images in the published set)
MEMBERS: dict[str, tuple[tuple[str, ...], int]] = {
    "train": (tuple(f"data_batch_{i}" for i in range(1, 6)), 50_000),
    "test": (("test_batch",), 10_000),
}
HOW_TO_GET = (
    "Fetch it with `bench data fetch cifar10 --sha256 <64 hex digits>` (the distributors publish only an md5, "
    "c58f30108f718f92721af3b95e74349a, checked too), or unpack cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html into <data-root>/cifar10/."
)


def location(data_root: Path) -> Path:
    return Path(data_root) / RELPATH


def batches_dir(name: str, data_root: Path) -> Path:
    """The folder holding ``batches.meta``: ``<data-root>/cifar10`` or its ``cifar-10-batches-py``."""
    root = location(data_root)
    for d in (root, root / BATCHES_DIR):
        if (d / META).is_file():
            return d
    raise DatasetMissing(
        f"dataset {name!r} not found: no {META} in {root.resolve()} or {(root / BATCHES_DIR).resolve()} "
        f"(set --data-root or BIASBENCH_DATA). {HOW_TO_GET}"
    )


def _files(name: str, data_root: Path, batches: tuple[str, ...]) -> tuple[Path, list[Path]]:
    d = batches_dir(name, data_root)
    missing = [b for b in batches if not (d / b).is_file()]
    if missing:
        raise DatasetMissing(f"dataset {name!r}: {d} has {META} but not {', '.join(missing)}. {HOW_TO_GET}")
    return d, [d / b for b in batches]


def content_hash(member: str, d: Path, batches: list[Path]) -> str:
    h = hashlib.sha256(f"cifar10\t{member}\n".encode())
    for p in [d / META, *batches]:
        h.update(f"{p.name}\t{sha256_file(p)}\n".encode())
    return h.hexdigest()[:16]


def member_entry(member: str) -> DatasetEntry:
    """The dataset ``cifar10/<member>``."""
    batch_names, size = MEMBERS[member]
    name = f"{CIFAR10}/{member}"

    def manifest(data_root: Path, pre: Preprocess | None) -> str:
        d, batches = _files(name, data_root, batch_names)
        return content_hash(member, d, batches)

    def load(data_root: Path, pre: Preprocess | None, cache_dir: Path) -> ImageSet:
        d, batches = _files(name, data_root, batch_names)
        space = labels.get(CIFAR10)
        names = read_meta(d / META)
        if tuple(names) != space.class_names:
            raise InputError(
                f"dataset {name!r}: {d / META} names the classes {names}, not CIFAR-10's {list(space.class_names)}"
            )
        images, labs, item_ids, files = [], [], [], []
        for p in batches:
            im, lab, fn = read_batch(p, space.num_classes)
            images.append(im)
            labs.extend(lab)
            files.extend(fn)
            item_ids.extend(f"{p.name}/{i}" for i in range(len(lab)))
        return ImageSet(
            name=name,
            images=torch.from_numpy(np.concatenate(images)),
            labels=torch.tensor(labs, dtype=torch.long),
            class_names=list(space.class_names),
            label_space=CIFAR10,
            item_ids=item_ids,
            manifest_hash=content_hash(member, d, batches),
            meta={"filename": files},
        )

    return DatasetEntry(
        name=name,
        description=f"CIFAR-10 {member} split ({size:,} images, 32 px, used as stored), from the python batches "
        f"{', '.join(batch_names)}",
        label_space=CIFAR10,
        manifest=manifest,
        load=load,
        as_stored=True,
        how_to_get=HOW_TO_GET,
        location=location,
        published_size=size,
    )


CIFAR10_SETS = DatasetFamily(
    name=CIFAR10,
    description="CIFAR-10 (Krizhevsky 2009) from the official python batches, <data-root>/cifar10/",
    label_space=CIFAR10,
    members=lambda: {m: member_entry(m) for m in MEMBERS},
    summary="test (10,000), train (50,000)",
    how_to_get=HOW_TO_GET,
    location=location,
    download=shipped_download(CIFAR10),
)
