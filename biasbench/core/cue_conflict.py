"""Cue-conflict stimulus names: ``<shape><i>-<texture><j>.png`` carries both labels (Geirhos et al. 2019)."""

from __future__ import annotations

import re

from biasbench.core.errors import InputError

_CUE_NAME = re.compile(r"(?:^|_)([a-z]+)(\d+)-([a-z]+)(\d+)\.png$")


def parse_cue_conflict_name(name: str) -> tuple[str, str]:
    """``(shape, texture)`` from a cue-conflict file name ``[...]_<shape><i>-<texture><j>.png``.

    Accepts a bare name (``cat7-elephant1.png``), a relative path, and the long names of the
    texture-vs-shape raw data (``0001_s5n_dnn_0_airplane_00_airplane1-bicycle2.png``).
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    m = _CUE_NAME.search(base)
    if not m:
        raise InputError(f"{name!r} is not a cue-conflict stimulus name '<shape><i>-<texture><j>.png'")
    return m.group(1), m.group(3)
