"""Putting an extracted dataset in place atomically: a whole folder by renames (:func:`replace`), or one
part's top-level folders into a folder other parts fill too (:func:`merge_into`, ImageNet-C)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace(src: Path, dest: Path, old: Path) -> None:
    """Put ``src`` at ``dest`` (by renames; a previous ``dest`` is moved to ``old`` and removed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(src, dest)
    shutil.rmtree(old, ignore_errors=True)


def merge_into(src: Path, target: Path, data_root: Path) -> None:
    """Move each top-level entry of ``src`` into ``target``, replacing an entry of the same name (one
    part of a dataset whose other parts fill other folders of ``target``)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        old = data_root / f".{entry.name}.old-{os.getpid()}"
        if entry.is_dir():
            replace(entry, target / entry.name, old)
        else:
            os.replace(entry, target / entry.name)
