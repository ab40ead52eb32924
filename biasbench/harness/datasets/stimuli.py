"""The 16-class stimulus sets of Geirhos et al. (cue-conflict, edges, filled silhouettes, Stylized-16).

Layouts under the data root (the same as ``../shared/data``, so ``--data-root ../shared/data`` works,
and what ``bench data fetch <name>`` writes):

* ``cue-conflict``: ``<data-root>/cue-conflict/<shape>/<shape><i>-<texture><j>.png`` - 1280 images;
  label = shape class, ``meta["texture"]`` = texture class (parsed from the file name); 80 images
  have shape == texture (the shape-bias metric drops them).
* ``edges``: ``<data-root>/edges/<class>/<class><i>.png`` - 160 images.
* ``filled-silhouettes``: ``<data-root>/filled-silhouettes/<class>/<class><i>.png`` - 160 images.
* ``stylized-16``: ``<data-root>/stylized-16/**/<nnnn>_sty_dnn_0_<class>_00_<name>.png`` - 800 images,
  model-vs-human's ``stylized`` set (``bench data fetch stylized-16`` extracts its
  ``stylized/dnn/session-1/`` into ``stylized-16/dnn/session-1/``); the class is the 5th
  ``_``-separated field of the file name, as in model-vs-human's ``InfoMappingWithSessions``.

Label space ``imagenet16``; ``class_names`` = the 16 categories in alphabetical order (the order of
:func:`biasbench.core.labels.get` ``("imagenet16").class_names``). Images are 224 x 224 and used as stored
(``as_stored=True``: no resize, no crop; any preprocessing is ignored), decoded once and cached as a
memory-mapped uint8 array. Item ids are paths relative to the dataset directory.

A dataset that is absent, or incomplete w.r.t. its manifest's file list (or, for Stylized-16, not 800
images of the 16 classes), raises :class:`DatasetMissing` saying where it looked and
``bench data fetch <name>``: a partial set would silently change the figures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from biasbench.core import labels
from biasbench.core.cue_conflict import parse_cue_conflict_name
from biasbench.core.errors import InputError
from biasbench.core.images import ImageSet, cached_array, decode_files, manifest_of
from biasbench.core.labels import IMAGENET16
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets.catalog import DatasetEntry, DatasetMissing
from biasbench.harness.datasets.download_spec import DownloadSpec, shipped_download

# one labeled file: (relative path, label index, texture index or -1)
Row = tuple[str, int, int]


def _index16() -> dict[str, int]:
    """Category name -> class index in the ``imagenet16`` label space."""
    return {c: i for i, c in enumerate(labels.get(IMAGENET16).class_names)}


def _spec(name: str) -> DownloadSpec:
    """The stimulus set's download spec (``downloads/<name>.json``)."""
    return shipped_download(name)()[0]


def _get_hint(name: str) -> str:
    m = _spec(name)
    if m.archive is None:
        how = f"`bench data fetch {name}` (pinned to {m.pinned}; license {m.license})"
    elif m.archive.sha256:
        how = f"`bench data fetch {name}` ({m.archive.url}; license {m.license})"
    else:
        how = (
            f"`bench data fetch {name} --sha256 <digest of {m.archive.filename}>` ({m.archive.url}; "
            f"its digest is not pinned, so you must supply the one you trust)"
        )
    return (
        f"Get it with {how}, or point --data-root (env BIASBENCH_DATA) at a directory that has {m.target}/."
    )


def _png_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".png"
    )


def _class_folder_rows(root: Path, rels: list[str], name: str) -> list[Row]:
    index = _index16()
    rows: list[Row] = []
    for rel in rels:
        parts = rel.split("/")
        if len(parts) != 2 or parts[0] not in index:
            raise InputError(
                f"dataset {name!r}: {root / rel} is not <category>/<file>.png with one of the 16 categories"
            )
        rows.append((rel, index[parts[0]], -1))
    return rows


def _cue_conflict_rows(root: Path, rels: list[str], name: str) -> list[Row]:
    index = _index16()
    rows: list[Row] = []
    for rel in rels:
        folder = rel.split("/")[0]
        shape, texture = parse_cue_conflict_name(rel)
        if shape not in index or texture not in index or folder != shape:
            raise InputError(
                f"dataset {name!r}: {root / rel} is not <shape>/<shape><i>-<texture><j>.png with 16-class names"
            )
        rows.append((rel, index[shape], index[texture]))
    return rows


def _stylized_rows(root: Path, rels: list[str], name: str) -> list[Row]:
    index = _index16()
    rows: list[Row] = []
    for rel in rels:
        fields = rel.rsplit("/", 1)[-1].split("_")
        cat = fields[4] if len(fields) > 5 else ""
        if cat not in index:
            raise InputError(
                f"dataset {name!r}: {root / rel}: expected a model-vs-human name "
                "'<nnnn>_sty_dnn_<condition>_<category>_<...>.png' with one of the 16 categories"
            )
        rows.append((rel, index[cat], -1))
    return rows


def _check_complete(name: str, root: Path, rels: list[str], rows: list[Row]) -> None:
    """Raise DatasetMissing if the files on disk are not exactly the dataset (per its download spec)."""
    m = _spec(name)
    hint = _get_hint(name)
    if m.files:
        present, wanted = set(rels), {r for r in m.files if r.lower().endswith(".png")}
        missing, extra = sorted(wanted - present), sorted(present - wanted)
        if missing or extra:
            detail = []
            if missing:
                detail.append(f"{len(missing)} of its {len(wanted)} images are missing (e.g. {missing[0]})")
            if extra:
                detail.append(f"{len(extra)} images are not part of it (e.g. {extra[0]})")
            raise DatasetMissing(
                f"dataset {name!r} at {root.resolve()} is incomplete: {'; '.join(detail)}. "
                f"Check with `bench data verify {name}`. {hint}"
            )
        return
    expected = m.archive.n_files if m.archive else m.n_files
    counts = torch.bincount(torch.tensor([r[1] for r in rows] or [0], dtype=torch.long), minlength=16)
    if len(rows) != expected or (expected and int((counts > 0).sum()) != 16):
        raise DatasetMissing(
            f"dataset {name!r} at {root.resolve()} holds {len(rows)} images of {int((counts > 0).sum())} "
            f"categories; expected {expected} images of all 16. {hint}"
        )


def stimulus_dataset(
    name: str,
    description: str,
    pattern: str,
    rows_of: Callable[[Path, list[str], str], list[Row]],
    with_texture: bool = False,
) -> DatasetEntry:
    """A dataset entry for a 16-class stimulus set at ``<data-root>/<download target>``, downloaded by
    its shipped download spec; its published size is the spec's image count."""
    m = _spec(name)
    target = m.target

    def locate(data_root: Path) -> Path:
        return Path(data_root) / target

    def scan(data_root: Path) -> tuple[Path, list[Row]]:
        root = locate(data_root)
        rels = _png_files(root) if root.is_dir() else []
        if not rels:
            raise DatasetMissing(
                f"dataset {name!r} not found: looked for {pattern} in {root.resolve()} "
                f"(data root {Path(data_root).resolve()}). {_get_hint(name)}"
            )
        rows = rows_of(root, rels, name)
        _check_complete(name, root, rels, rows)
        return root, rows

    def manifest(data_root: Path, pre: Preprocess | None) -> str:
        root, rows = scan(data_root)
        return manifest_of(root, [(rel, lab) for rel, lab, _ in rows])

    def load(data_root: Path, pre: Preprocess | None, cache_dir: Path) -> ImageSet:
        root, rows = scan(data_root)
        mh = manifest_of(root, [(rel, lab) for rel, lab, _ in rows])
        arr = cached_array(
            cache_dir, f"{name}-{mh}-stored", lambda: decode_files([root / r for r, _, _ in rows], None)
        )
        meta = {"texture": torch.tensor([t for _, _, t in rows], dtype=torch.long)} if with_texture else {}
        return ImageSet(
            name=name,
            images=torch.from_numpy(arr),
            labels=torch.tensor([lab for _, lab, _ in rows], dtype=torch.long),
            class_names=list(labels.get(IMAGENET16).class_names),
            label_space=IMAGENET16,
            item_ids=[r for r, _, _ in rows],
            manifest_hash=mh,
            meta=meta,
        )

    return DatasetEntry(
        name=name,
        description=description,
        label_space=IMAGENET16,
        manifest=manifest,
        load=load,
        as_stored=True,
        how_to_get=_get_hint(name),
        location=locate,
        published_size=(m.archive.n_files if m.archive else m.n_files) or None,
        download=m,
    )


CUE_CONFLICT = stimulus_dataset(
    "cue-conflict",
    "Geirhos et al. cue-conflict stimuli (1280, 16 classes; shape label, texture in meta), "
    "<data-root>/cue-conflict/<shape>/<shape><i>-<texture><j>.png",
    "<shape>/<shape><i>-<texture><j>.png",
    _cue_conflict_rows,
    with_texture=True,
)
EDGES = stimulus_dataset(
    "edges",
    "Geirhos et al. edge drawings (160, 16 classes), <data-root>/edges/<class>/<class><i>.png",
    "<class>/<class><i>.png",
    _class_folder_rows,
)
FILLED_SILHOUETTES = stimulus_dataset(
    "filled-silhouettes",
    "Geirhos et al. filled silhouettes (160, 16 classes), <data-root>/filled-silhouettes/<class>/<class><i>.png",
    "<class>/<class><i>.png",
    _class_folder_rows,
)
STYLIZED_16 = stimulus_dataset(
    "stylized-16",
    "Stylized-16: model-vs-human's 'stylized' set (800, 16 classes), "
    "<data-root>/stylized-16/**/<nnnn>_sty_dnn_0_<class>_00_<name>.png",
    "<nnnn>_sty_dnn_0_<class>_00_<name>.png (model-vs-human 'stylized' layout)",
    _stylized_rows,
)
