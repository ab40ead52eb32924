"""``folder:PATH`` — any folder of photos as a dataset, without a plugin.

The dataset name ``folder:PATH`` (or ``folder:PATH#labels=SPACE``) is accepted wherever a dataset name
is: ``-p accuracy.dataset=folder:/data/my-photos`` on the command line, ``params={"accuracy":
{"dataset": "folder:/data/my-photos"}}`` in Python. :func:`biasbench.harness.datasets.catalog.get`
builds its :class:`~biasbench.harness.datasets.catalog.DatasetEntry` with :func:`folder_entry`.

Layout rules (an ImageFolder, timm's ``--data-dir`` convention):

* ``PATH/<class>/<image>``: every image under a class folder (in subfolders of it too) is labeled with
  that class. Images are the files ending in ``.jpeg .jpg .png .bmp .webp`` (any case); other files,
  and files and folders whose name starts with ``.``, are ignored, as are files directly in ``PATH``.
* A class folder's name is either a class id of the label space (for ImageNet-1k its WordNet id, e.g.
  ``n01440764``, mapped to the 1000-way index through timm's ImageNet info — never the sort order of
  the folders present) or a class index ``0 … num_classes-1`` of it (``0``, ``7``, ``042``). All the
  class folders of one dataset name their classes the same way.
* The label space is ImageNet-1k; ``#labels=SPACE`` at the end of the name picks another installed one
  (``bench ls labels``), e.g. ``folder:stimuli#labels=imagenet16`` with folders ``airplane/``,
  ``bear/`` … (for a space without class ids its class names are the ids).
* A relative ``PATH`` is taken from the current directory of the process (not the data root); ``~``
  is expanded. ``bench run --executor ray`` loads datasets on its workers, so give an absolute path
  there.

Errors: no folder at ``PATH`` is :class:`~biasbench.harness.datasets.catalog.DatasetMissing`; a folder
without class folders, a class folder without images, a class folder name that is neither a class id
nor an index, an index out of range, two folders for one class, or ids and indices mixed is an
:class:`~biasbench.core.errors.InputError` (a ``ValueError``) naming the offending folder.

The manifest (part of every result's ``config_hash``) hashes the content only: the label space and,
per image, its path relative to ``PATH``, its label and the sha256 of its bytes. Moving or renaming the
folder (or its parent) and touching mtimes keep results resumable under the same dataset name; changing
one byte changes the hash. Every planning reads the images once to hash them. The images are decoded
with the checkpoint's preprocessing through the shared cached decode path (memory-mapped uint8 under
``<cache>/datasets/folder-<manifest>-<preprocess key>.npy``, streamed when over the cache budget).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from biasbench.core import labels
from biasbench.core.errors import InputError
from biasbench.core.images import ImageSet
from biasbench.core.labels import IMAGENET_1K, LabelSpace
from biasbench.core.plugins import suggest
from biasbench.core.preprocess import Preprocess
from biasbench.core.streaming import LoadOptions, as_images, cached_or_streamed
from biasbench.harness.datasets.catalog import DatasetEntry, DatasetMissing
from biasbench.harness.datasets.imagenet_files import IMAGE_EXTENSIONS, cache_key

#: the prefix of a folder dataset's name
PREFIX = "folder:"
#: the optional label-space suffix: ``#labels=<label space>`` at the end of the name
_LABELS_SUFFIX = re.compile(r"#labels=([A-Za-z0-9][A-Za-z0-9_.\-]*)$")
_INDEX = re.compile(r"[0-9]+")

#: the one line ``bench ls datasets`` shows about the syntax
HINT = (
    "folder:PATH — any photos as <PATH>/<class>/<image>, class = WordNet id (e.g. n01440764) or class "
    "index of imagenet-1k; append #labels=SPACE for another label space; a relative PATH is taken "
    "from the current directory"
)

#: one labeled file: (path relative to the folder, class index)
Files = list[tuple[str, int]]


def is_folder_name(name: str) -> bool:
    return name.startswith(PREFIX)


def parse(name: str) -> tuple[Path, str]:
    """``folder:PATH[#labels=SPACE]`` -> (the folder as an absolute path, the label space name)."""
    if not is_folder_name(name):
        raise InputError(f"dataset name {name!r} does not start with {PREFIX!r}")
    rest = name[len(PREFIX) :]
    space = IMAGENET_1K
    m = _LABELS_SUFFIX.search(rest)
    if m:
        space, rest = m.group(1), rest[: m.start()]
    if not rest:
        raise InputError(f"dataset name {name!r}: give the folder, e.g. folder:/data/my-photos")
    return Path(rest).expanduser().absolute(), space


def _images_in(d: Path) -> list[Path]:
    """The image files under class folder ``d`` (recursively; hidden names skipped), sorted."""
    out = []
    for f in d.rglob("*"):
        rel = f.relative_to(d).parts
        if f.suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in rel) and f.is_file():
            out.append(f)
    return sorted(out, key=lambda f: f.relative_to(d).as_posix())


def _some(folders: list[Path]) -> str:
    shown = ", ".join(d.name for d in folders[:3])
    return shown + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")


def class_indices(name: str, root: Path, space: LabelSpace) -> dict[Path, int]:
    """Each class folder of ``root`` with its class index in ``space`` (see the module docstring)."""
    if not root.is_dir():
        raise DatasetMissing(
            f"dataset {name!r}: no folder {root} (a relative path is taken from the current directory, "
            f"{Path.cwd()}; expected <class>/<image> inside it)"
        )
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        loose = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
        hint = f"; its {len(loose)} images lie directly in it — sort them into class folders" if loose else ""
        raise InputError(
            f"dataset {name!r}: {root} holds no class folders (expected <class>/<image>, the class a class "
            f"id of {space.name} such as {space.class_ids[0]!r} or an index 0..{space.num_classes - 1}){hint}"
        )
    ids = {cid: i for i, cid in enumerate(space.class_ids)}
    by_id = [d for d in classes if d.name in ids]
    by_index = [d for d in classes if d.name not in ids and _INDEX.fullmatch(d.name)]
    unknown = [d for d in classes if d.name not in ids and not _INDEX.fullmatch(d.name)]
    if unknown:
        raise InputError(
            f"dataset {name!r}: class folder {unknown[0]} is named {unknown[0].name!r}, neither a class id "
            f"of {space.name} (e.g. {space.class_ids[0]!r}) nor a class index 0..{space.num_classes - 1}"
            f"{suggest(unknown[0].name, list(ids))}"
            + (f" (also unknown: {_some(unknown[1:])})" if len(unknown) > 1 else "")
        )
    if by_id and by_index:
        raise InputError(
            f"dataset {name!r}: {root} mixes class folders named by class id ({_some(by_id)}) and by class "
            f"index ({_some(by_index)}); name every class folder one way"
        )
    if by_id:
        return {d: ids[d.name] for d in by_id}
    out: dict[Path, int] = {}
    seen: dict[int, Path] = {}
    for d in by_index:
        i = int(d.name)
        if i >= space.num_classes:
            raise InputError(
                f"dataset {name!r}: class folder {d} names class index {i}, outside {space.name}'s "
                f"0..{space.num_classes - 1}"
            )
        if i in seen:
            raise InputError(f"dataset {name!r}: class folders {seen[i]} and {d} both name class index {i}")
        seen[i], out[d] = d, i
    return out


def list_files(name: str, root: Path, space: LabelSpace) -> Files:
    """(path relative to ``root``, class index) of every image, in class-index order, then by path."""
    out: Files = []
    for d, i in sorted(class_indices(name, root, space).items(), key=lambda kv: kv[1]):
        images = _images_in(d)
        if not images:
            raise InputError(
                f"dataset {name!r}: class folder {d} holds no images ({' '.join(IMAGE_EXTENSIONS)})"
            )
        out.extend((f.relative_to(root).as_posix(), i) for f in images)
    return out


def content_hash(root: Path, files: Files, space: str) -> str:
    """The manifest: the label space, then per file its relative path, label and bytes' sha256."""
    h = hashlib.sha256(f"folder dataset\t{space}\n".encode())
    for rel, label in files:
        digest = hashlib.sha256()
        with open(root / rel, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        h.update(f"{rel}\t{label}\t{digest.hexdigest()}\n".encode())
    return h.hexdigest()[:16]


def folder_entry(name: str) -> DatasetEntry:
    """The :class:`DatasetEntry` of the dataset name ``folder:PATH[#labels=SPACE]``. Nothing is read
    until its manifest or images are asked for."""
    root, space_name = parse(name)
    space = labels.get(space_name)

    def scan() -> tuple[Files, str]:
        files = list_files(name, root, space)
        return files, content_hash(root, files, space.name)

    def manifest(data_root: Path, pre: Preprocess | None) -> str:
        return scan()[1]

    def load(
        data_root: Path, pre: Preprocess | None, cache_dir: Path, options: LoadOptions | None = None
    ) -> ImageSet:
        if pre is None:
            raise InputError(f"dataset {name!r} needs a preprocessing (resize + crop)")
        files, mh = scan()
        paths = [root / rel for rel, _ in files]
        key = cache_key("folder", mh, pre)
        arr = cached_or_streamed(cache_dir, key, paths, pre, (pre.crop, pre.crop), options=options)
        return ImageSet(
            name=name,
            images=as_images(arr),
            labels=torch.tensor([lab for _, lab in files], dtype=torch.long),
            class_names=list(space.class_names),
            label_space=space.name,
            item_ids=[rel for rel, _ in files],
            manifest_hash=mh,
        )

    return DatasetEntry(
        name=name,
        description=f"the photos in {root}, <class>/<image>, labeled in {space.name}",
        label_space=space.name,
        manifest=manifest,
        load=load,
        how_to_get=f"put the photos in {root}/<class>/ (class = {space.name} class id or index)",
        location=lambda data_root: root,
    )
