"""The declared shape of a registry file's tables (pydantic models, :mod:`biasbench.core.schema`):
a plain entry, a part of a multi-file checkpoint, an ensemble entry, the ``[defaults]`` table and a
``preprocess`` table. Types, ranges, choices and the allowed keys are declared here, once; what needs
more than the value itself (an id's syntax, an installed architecture family, a URL, an adapter chain,
a known label space, ensemble members, wrappers, tags' contents) is checked by
:mod:`biasbench.registry.registry_files` after the shape is valid."""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from biasbench.core import names, schema
from biasbench.core.labels import IMAGENET_1K

#: Largest ``preprocess.resize`` / ``crop`` (pixels).
MAX_IMAGE_SIZE = 8192
#: Largest ``num_classes``.
MAX_NUM_CLASSES = 1_000_000

Interpolation = Literal["nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos"]
INTERPOLATIONS: tuple[str, ...] = typing.get_args(Interpolation)

Sha256 = Annotated[str, Field(pattern=rf"^(?i:{names.SHA256_RE.pattern})$", description="64 hex digits")]
Adapter = Annotated[str | tuple[str, ...], Field(description="a string or a list of strings")]
Size = Annotated[
    int, Field(gt=0, le=MAX_IMAGE_SIZE, description=f"a positive integer of at most {MAX_IMAGE_SIZE}")
]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class PreprocessTable(BaseModel):
    """``preprocess = { … }``: any of the fields; a missing one takes the classic ImageNet value."""

    model_config = schema.STRICT
    resize: Size | None = None
    crop: Size | None = None
    mean: Annotated[tuple[Finite, Finite, Finite], Field(description="a list of 3 numbers")] | None = None
    std: (
        Annotated[tuple[Positive, Positive, Positive], Field(description="a list of 3 positive numbers")]
        | None
    ) = None
    interpolation: Interpolation | None = None


class Part(BaseModel):
    """``weights = [{ source = …, sha256 = …, adapter = […] }, …]``: one file of a multi-file checkpoint."""

    model_config = schema.STRICT
    source: Annotated[str, Field(description="a string")]
    sha256: Sha256 | None = None
    adapter: Adapter = ()


class Entry(BaseModel):
    """A ``[[checkpoint]]`` table of one checkpoint (one file or several parts)."""

    model_config = schema.STRICT
    id: str
    arch: str
    weights: Annotated[str | tuple[Any, ...], Field(description="a string or a list of parts")] | None = None
    sha256: Sha256 | None = None
    adapter: Adapter = ()
    preprocess: PreprocessTable | None = None
    labels: str = IMAGENET_1K
    num_classes: (
        Annotated[
            int,
            Field(gt=0, le=MAX_NUM_CLASSES, description=f"a positive integer of at most {MAX_NUM_CLASSES}"),
        ]
        | None
    ) = None
    tags: Annotated[dict[str, Any], Field(description="a table")] = {}
    wrap: Annotated[
        dict[str, Any] | tuple[Any, ...], Field(description="a list of tables ([{ kind = …, … }])")
    ] = ()


class Ensemble(BaseModel):
    """A ``[[checkpoint]]`` table of an ensemble: its members and how their outputs combine; the
    rest comes from its members."""

    model_config = schema.STRICT
    id: str
    ensemble: Annotated[
        tuple[Annotated[str | dict[str, Any], Field(description="an entry id or an inline table")], ...],
        Field(
            min_length=2,
            description="a list of at least two members (ids of other entries or inline tables)",
        ),
    ]
    combine: Any = None
    wrap: Annotated[
        dict[str, Any] | tuple[Any, ...], Field(description="a list of tables ([{ kind = …, … }])")
    ] = ()
    tags: Annotated[dict[str, Any], Field(description="a table")] = {}


class Defaults(BaseModel):
    """``[defaults]``: values for every entry that does not set them."""

    model_config = schema.STRICT
    arch: str | None = None
    labels: str | None = None
    preprocess: PreprocessTable | None = None
