"""Registry files (TOML), the registries we ship, and bare command-line targets.

A registry file is a list of ``[[checkpoint]]`` tables (README, "Adding checkpoints")::

    [[checkpoint]]
    id = "resnet50_trained_on_SIN"           # required, unique across everything resolved together
    arch = "timm:resnet50"                   # required: timm:<name> | torchvision:<name> | zoo:<name>
    weights = "https://…/resnet50_sin.pth.tar"   # optional: default = the arch's own pretrained weights
    sha256 = "…"                             # required for URLs; verified for every source when given
    adapter = "strip-prefix:module."         # a string or a list, applied in order
    preprocess = { resize = 256, crop = 224, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225],
                   interpolation = "bilinear" }
        # optional. Absent: the architecture's defaults (timm's data config, …; see
        # loading.resolve_preprocess). A partial table: the missing fields take the classic ImageNet
        # values above (not the architecture's), so a table means the same under every timm version.
    labels = "imagenet-1k"                   # label space (default imagenet-1k)
    num_classes = 1000                       # optional; default from the label space
    tags = { category = "stylized", paper = "gavrikov2024" }   # free-form covariates for reports

A checkpoint shipped as several files (a backbone and a linear head) lists them, each with its own pin
and adapter chain; the adapted parts are merged (a key in two parts is an error) and loaded strictly::

    weights = [
      { source = "https://…/backbone.pth" },
      { source = "https://…/head.pth", adapter = ["select:state_dict", "rename:module.linear.=fc."] },
    ]

An ensemble (:mod:`biasbench.registry.ensembles`) names its members, by the id of another entry
resolved together with it (this file, or another target of the same command) or as an inline table
(an entry of its own syntax, not benchmarked on its own), and how their outputs combine; it takes its
architecture, weights, preprocessing and labels from its members and may only set ``id``, ``ensemble``,
``combine``, ``wrap`` and ``tags``::

    [[checkpoint]]
    id = "zoo-ensemble"
    ensemble = ["zoo-plain", "zoo-blur", { id = "zoo-mixup-copy", arch = "zoo:resnet50-w8", weights = "zoo:mixup", labels = "demo-world" }]
    combine = "mean-probs"                   # default; or "mean-logits"

Any entry (an ensemble too) may be wrapped at inference time (:mod:`biasbench.registry.wrappers`),
innermost first; the wrappers and all their parameters are part of its identity::

    wrap = [{ kind = "input-dropout", keep = 0.8, samples = 8, seed = 0 }]

Member ids that name nothing, an ensemble that contains itself, a member listed twice, members with
different label spaces: errors naming the entry and the member (a preprocessing mismatch, which may
need an architecture's defaults, is found when the checkpoint is planned or loaded).

A registry-wide ``[defaults]`` table gives ``arch``, ``labels`` and ``preprocess`` for every entry that
does not set them (an entry's partial ``preprocess`` table is completed from the defaults' table).

A source that must be pinned (a URL, ``gdrive:``) may leave out ``sha256`` in a registry file: the
entry is then *unpinned*, and ``bench lock`` records its hash in a lock file beside the registry
(:mod:`biasbench.registry.lock`); ``bench run`` refuses it until then.

Unknown keys (top level or in an entry) are errors naming the key and the file. Relative weight
paths are relative to the registry file. Duplicate ids are errors naming both places
(``<file>:[[checkpoint]] #<n>``, n counted from 1).

The tables' shapes (keys, types, ranges, choices) are declared once, as pydantic models, in
:mod:`biasbench.registry.entry_models`; this module checks what needs more than one value.

Limits (a hostile or mistyped file fails here, with its file, entry and key, not later in a job):
ids are at most :data:`MAX_ID_LENGTH` (128) characters of ``A-Z a-z 0-9 _ . + - = @`` (an id names
per-item files); ``arch`` holds no whitespace or control characters and ``weights`` no control
characters; a URL must parse and needs a host and a file name; ``resize``/``crop`` are at most
:data:`MAX_IMAGE_SIZE`; ``num_classes`` at most :data:`MAX_NUM_CLASSES`; ``mean``/``std`` and every
float in ``tags`` are finite. Every error is a :class:`RegistryError` (a :class:`CheckpointError`).

Bare targets on the command line (:func:`resolve_targets`), tried in this order:

1. the name of a shipped registry (``biasbench/registry/files/<name>.toml``: ``efficientnet-lite``, …);
2. a path to a ``.toml`` registry file;
3. ``ARCH@WEIGHTS``: an architecture and a weight source, e.g. ``timm:resnet18@/x/w.pth``,
   ``torchvision:resnet50@./sin.pth.tar``, ``timm:resnet50@hf-hub:org/repo/model.safetensors``
   (a bare arch name means timm; the id is derived from the weights, e.g. the file stem ``w``);
4. a timm model name with pretrained weights, ``resnet50``, ``timm:resnet50`` or
   ``timm:resnet50.a1_in1k`` (id = the name), or ``torchvision:<model>`` (its DEFAULT weights;
   id ``torchvision_<model>.<MEMBER>``).

A weights file alone is refused (it needs an architecture: ``ARCH@PATH``); a URL needs a sha256, so
it goes in a registry file. Nothing here runs at import time.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import re
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import pydantic

from biasbench.core import labels, names, schema
from biasbench.core.plugins import suggest
from biasbench.core.preprocess import Preprocess
from biasbench.registry import architectures, ensembles, sources, wrappers
from biasbench.registry.adapters import parse_adapters
from biasbench.registry.entry_models import (  # the limits are re-exported: the module docstring names them
    INTERPOLATIONS,  # noqa: F401
    MAX_IMAGE_SIZE,  # noqa: F401
    MAX_NUM_CLASSES,  # noqa: F401
    Defaults,
    Ensemble,
    Entry,
    Part,
    PreprocessTable,
)
from biasbench.registry.spec import ENSEMBLE_ARCH, CheckpointError, CheckpointSpec, WeightPart, WrapperSpec

FILES_DIR = Path(__file__).resolve().parent / "files"

#: Every key an entry may have (a plain entry's, then an ensemble's own).
ENTRY_KEYS = (*Entry.model_fields, "ensemble", "combine")
#: The keys an ensemble entry may set (the rest comes from its members).
ENSEMBLE_KEYS = tuple(Ensemble.model_fields)
TOP_LEVEL_KEYS = ("checkpoint", "defaults")

#: Longest checkpoint id: ids name per-item files (``<id>__<config hash>.parquet``), whose names must
#: stay below the file systems' 255-byte limit.
MAX_ID_LENGTH = names.MAX_ID_LENGTH
# always used with fullmatch: ``$`` would also match before a trailing newline
_ID_RE = names.ID_RE
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class RegistryError(CheckpointError):
    """A registry file or a command-line target is invalid (the message names the file/entry or target)."""


# ----------------------------------------------------------------------------------------------------
# Shipped registries
# ----------------------------------------------------------------------------------------------------


def shipped_registries() -> dict[str, Path]:
    """Registries shipped with the package: name (file stem) -> TOML file in ``registry/files/``."""
    if not FILES_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(FILES_DIR.glob("*.toml"))}


# ----------------------------------------------------------------------------------------------------
# Registry files
# ----------------------------------------------------------------------------------------------------


def _where(path: Path, index: int) -> str:
    return f"{path}:[[checkpoint]] #{index}"


def _validated(
    model: type[pydantic.BaseModel], table: dict[str, Any], where: str, path: Path | None = None
) -> Any:
    """``table`` as a ``model`` (:mod:`biasbench.registry.entry_models`); the first problem is a
    :class:`RegistryError` naming ``where`` and the key."""
    try:
        return model.model_validate(schema.as_tuples(table))
    except pydantic.ValidationError as e:
        err = schema.errors(e)[0]
    key = err["loc"][0] if len(err["loc"]) == 1 else None
    if err["type"] == "extra_forbidden" and key is not None and model in (Entry, Ensemble):
        if model is Ensemble and key in ENTRY_KEYS:
            raise RegistryError(
                f"{where}: an ensemble takes its architecture, weights, preprocessing and labels from its "
                f"members; {key!r} cannot be set on it (an ensemble sets {', '.join(ENSEMBLE_KEYS)})"
            )
        raise RegistryError(f"{where}: unknown key {key!r} in {path}; known keys: {', '.join(ENTRY_KEYS)}")
    raise RegistryError(f"{where}: {schema.describe(err, model, table)}")


def _jsonable_tag(v: Any, where: str, key: str) -> Any:
    """Tags as JSON-able values (dates as ISO strings); a NaN or infinite float is an error (it has no
    JSON form and means nothing as a covariate)."""
    if isinstance(v, dict):
        for k in v:
            if names.CONTROL_RE.search(str(k)):
                raise RegistryError(f"{where}: {key} name {str(k)!r} contains control characters")
        return {str(k): _jsonable_tag(x, where, f"{key}.{k}") for k, x in v.items()}
    if isinstance(v, str) and names.CONTROL_RE.search(v):
        raise RegistryError(f"{where}: {key} = {v[:60]!r} contains control characters")
    if isinstance(v, list):
        return [_jsonable_tag(x, where, f"{key}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, float) and not math.isfinite(v):
        raise RegistryError(f"{where}: {key} must be a finite number, got {v!r}")
    if isinstance(v, (_dt.date, _dt.time, _dt.datetime)):
        return v.isoformat()
    return v


def _preprocess(table: PreprocessTable, where: str) -> Preprocess:
    """A validated ``preprocess`` table; missing fields: the classic ImageNet recipe (Preprocess defaults)."""
    pre = Preprocess.from_mapping(table.model_dump(exclude_none=True))
    if pre.resize < pre.crop:
        raise RegistryError(f"{where}: preprocess.resize ({pre.resize}) is smaller than crop ({pre.crop})")
    return pre


def _resolve_weights_path(weights: str, base_dir: Path, where_or_id: str) -> str:
    src = sources.parse_weights(weights, where_or_id)
    if src.kind != sources.PATH_KIND:
        return weights
    p = sources.expand_path(src.value)
    if not p.is_absolute():
        p = base_dir / p
    try:
        return str(p.resolve())
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a name too long, …
        raise RegistryError(f"{where_or_id}: weights path {weights!r} cannot be resolved: {e}") from e


def _check_id(cid: str, where: str) -> None:
    problem = names.id_problem(cid)
    if problem:
        raise RegistryError(f"{where}: invalid id {cid[:60]!r} ({problem})")


def _check_weights_string(weights: str, where: str) -> None:
    if _CONTROL_RE.search(weights):
        raise RegistryError(f"{where}: weights {weights!r} contains control characters")
    if re.match(r"(?i)https?://", weights.strip()):
        try:
            parts = urllib.parse.urlsplit(weights.strip())
            parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535", …
            raise RegistryError(f"{where}: weights URL {weights!r} is not a valid URL: {e}") from e
        if not parts.hostname or not parts.path.rstrip("/").rsplit("/", 1)[-1]:
            raise RegistryError(
                f"{where}: weights URL {weights!r} needs a host and a file name (https://host/path/w.pth)"
            )


def _adapters(adapter: str | tuple[str, ...], cid: str) -> tuple[str, ...]:
    chain = (adapter,) if isinstance(adapter, str) else adapter
    parse_adapters(list(chain), cid)
    return chain


def _checked_weights(weights: str, cid: str, path: Path, where: str) -> str:
    """A weights string checked (syntax, source known) and, for a local path, made absolute. A source
    that must be pinned may stay unpinned here: a lock file pins it (``bench lock``)."""
    _check_weights_string(weights, where)
    sources.parse_weights(weights, cid)
    return _resolve_weights_path(weights, path.parent, where)


def _parse_parts(items: list[Any], cid: str, path: Path, where: str) -> tuple[WeightPart, ...]:
    if not items:
        raise RegistryError(f"{where}: weights is an empty list")
    parts = []
    for n, item in enumerate(items, start=1):
        pw = f"{where} weights[{n}]"
        if not isinstance(item, dict):
            raise RegistryError(f"{pw}: a part must be a table {{ source = …, sha256 = …, adapter = […] }}")
        part = _validated(Part, item, pw)
        weights = _checked_weights(part.source, cid, path, pw)
        sha = part.sha256.lower() if part.sha256 else None
        parts.append(WeightPart(weights, sha, _adapters(part.adapter, cid)))
    return tuple(parts)


def _with_defaults(entry: dict[str, Any], defaults: dict[str, Any], where: str) -> dict[str, Any]:
    """The entry completed from the registry's ``[defaults]`` table."""
    out = {k: v for k, v in defaults.items() if k != "preprocess"}
    out.update(entry)
    if "preprocess" in defaults:
        pre = entry.get("preprocess", {})
        if not isinstance(pre, dict):
            raise RegistryError(f"{where}: preprocess must be a table, got {type(pre).__name__}")
        out["preprocess"] = {**defaults["preprocess"], **pre}
    return out


@dataclass
class _Parsed:
    """An entry as read: its spec, and for an ensemble its members as declared (ids of other entries,
    or inline entries), linked into ``spec.members`` by :func:`_link`."""

    spec: CheckpointSpec
    refs: tuple[str | _Parsed, ...] | None = None


def _parse_wrap(value: dict[str, Any] | list[Any], cid: str, where: str) -> tuple[WrapperSpec, ...]:
    try:
        return tuple(
            wrappers.parse_wrapper(item, cid) for item in ([value] if isinstance(value, dict) else value)
        )
    except CheckpointError as e:
        raise RegistryError(f"{where}: {e}") from e


def _parse_ensemble(
    entry: dict[str, Any], path: Path, where: str, defaults: dict[str, Any] | None
) -> _Parsed:
    """An ensemble entry: its id, members as declared (ids or inline tables), rule, wrappers, tags."""
    cid = _validated(Ensemble, entry, where, path).id
    _check_id(cid, where)
    refs: list[str | _Parsed] = [
        item
        if isinstance(item, str)
        else _parse_entry(item, path, 0, defaults, where=f"{where} ensemble[{i}]")
        for i, item in enumerate(entry["ensemble"])
    ]
    ids = [r if isinstance(r, str) else r.spec.id for r in refs]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise RegistryError(f"{where}: ensemble lists member {twice[0]!r} more than once")
    try:
        combine = ensembles.check_combine(entry.get("combine", ensembles.DEFAULT_COMBINE), cid)
    except CheckpointError as e:
        raise RegistryError(f"{where}: {e}") from e
    spec = CheckpointSpec(
        id=cid,
        arch=ENSEMBLE_ARCH,
        tags=_jsonable_tag(entry.get("tags", {}), where, "tags"),
        source=where,
        registry=str(path),
        combine=combine,
        wrap=_parse_wrap(entry.get("wrap", []), cid, where),
    )
    return _Parsed(spec, tuple(refs))


def _link(parsed: list[_Parsed]) -> list[CheckpointSpec]:
    """The specs of ``parsed`` with every ensemble's members filled in: a member id names another
    entry of ``parsed`` (in any order); an unknown id, an ensemble that contains itself and members of
    different label spaces or class counts are :class:`RegistryError` naming the entry and member."""
    by_id = {p.spec.id: p for p in parsed}
    done: dict[int, CheckpointSpec] = {}

    def resolve(p: _Parsed, chain: tuple[str, ...]) -> CheckpointSpec:
        if p.refs is None:
            return p.spec
        if id(p) in done:
            return done[id(p)]
        where = p.spec.source
        if p.spec.id in chain:
            raise RegistryError(
                f"{where}: ensemble {p.spec.id!r} contains itself ({' -> '.join((*chain, p.spec.id))})"
            )
        members = []
        for r in p.refs:
            if isinstance(r, str):
                target = by_id.get(r)
                if target is None:
                    raise RegistryError(
                        f"{where}: ensemble member {r!r} is not a checkpoint resolved with it"
                        f"{suggest(r, sorted(by_id))} (members are ids of entries of the same registry "
                        "files or targets, or inline tables)"
                    )
                r = target
            members.append(resolve(r, (*chain, p.spec.id)))
        facts = [ensembles.MemberFacts(m.id, m.labels, _declared_classes(m)) for m in members]
        try:
            ensembles.check_members(p.spec.id, facts)
        except CheckpointError as e:
            raise RegistryError(f"{where}: {e}") from e
        spec = replace(
            p.spec, members=tuple(members), labels=members[0].labels, num_classes=members[0].num_classes
        )
        done[id(p)] = spec
        return spec

    return [resolve(p, ()) for p in parsed]


def _declared_classes(spec: CheckpointSpec) -> int | None:
    return spec.num_classes if spec.num_classes is not None else labels.num_classes(spec.labels)


def _inline_ids(p: _Parsed) -> list[_Parsed]:
    """The inline members of an ensemble entry, nested ones included."""
    out: list[_Parsed] = []
    for r in p.refs or ():
        if isinstance(r, _Parsed):
            out += [r, *_inline_ids(r)]
    return out


def _parse_entry(
    entry: Any, path: Path, index: int, defaults: dict[str, Any] | None = None, where: str | None = None
) -> _Parsed:
    where = where or _where(path, index)
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: an entry must be a table")
    if "ensemble" in entry:
        return _parse_ensemble(entry, path, where, defaults)
    if "combine" in entry:
        raise RegistryError(f'{where}: combine belongs to an ensemble (ensemble = ["id1", "id2", …])')
    if defaults:
        entry = _with_defaults(entry, defaults, where)
    m: Entry = _validated(Entry, entry, where, path)
    cid, arch = m.id, m.arch
    _check_id(cid, where)
    family, sep, name = arch.partition(":")
    if not sep or family not in architectures.families() or not name or re.search(r"[\s\x00-\x1f\x7f]", arch):
        raise RegistryError(
            f"{where}: arch {arch!r} must be <family>:<name> of an installed architecture family: "
            f"{architectures.syntax_hint()}"
        )
    weights, parts = m.weights, ()
    try:
        if isinstance(m.weights, tuple):
            for k in ("sha256", "adapter"):
                if k in entry:
                    raise RegistryError(
                        f"{where}: {k} belongs in each part of a multi-file checkpoint (weights = [{{ source "
                        f"= …, {k} = … }}, …]), not in the entry"
                    )
            parts, weights = _parse_parts(entry["weights"], cid, path, where), None
        elif m.weights is not None:
            weights = _checked_weights(m.weights, cid, path, where)
        adapter = _adapters(m.adapter, cid)
    except RegistryError:
        raise
    except CheckpointError as e:
        raise RegistryError(f"{where}: {e}") from e
    if m.num_classes is None and labels.find(m.labels) is None:
        raise RegistryError(
            f"{where}: label space {m.labels!r} is not one we know ({', '.join(labels.known())}); give num_classes"
        )
    spec = CheckpointSpec(
        id=cid,
        arch=arch,
        weights=weights,
        sha256=m.sha256.lower() if m.sha256 else None,
        adapter=adapter,
        preprocess=None if m.preprocess is None else _preprocess(m.preprocess, where),
        labels=m.labels,
        num_classes=m.num_classes,
        tags=_jsonable_tag(entry.get("tags", {}), where, "tags"),
        source=where,
        parts=parts,
        registry=str(path),
        wrap=_parse_wrap(entry.get("wrap", []), cid, where),
    )
    return _Parsed(spec)


def _parse_defaults(table: Any, path: Path) -> dict[str, Any]:
    where = f"{path}:[defaults]"
    if not isinstance(table, dict):
        raise RegistryError(f"{where}: must be a table")
    declared = _validated(Defaults, table, where)
    if declared.preprocess is not None:
        _preprocess(declared.preprocess, where)
    return dict(table)


def load_registry_file(path: Path) -> list[CheckpointSpec]:
    """Parse and validate one registry file (no weights are touched). Errors name the file, the entry
    (``[[checkpoint]] #n``, from 1) and the offending key; duplicate ids name both entries. Every
    failure - unreadable, not a regular file, not UTF-8, not TOML, nested too deeply - is a
    :class:`RegistryError`. An ensemble's members must be entries of this file (or inline);
    :func:`resolve_targets` also links members across its targets."""
    return _link(_read_registry_file(path))


def _read_registry_file(path: Path) -> list[_Parsed]:
    """The entries of a registry file, ensembles not yet linked (:func:`load_registry_file`)."""
    path = Path(path)
    problem = sources.path_problem(path)
    if problem is not None:
        raise RegistryError(
            f"cannot read registry file {path}: it {problem}"
            if problem.startswith("is ")
            else f"cannot read registry file {path}: {problem}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RegistryError(f"cannot read registry file {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise RegistryError(f"registry file {path} is not UTF-8 text (byte {e.start}: {e.reason})") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"registry file {path} is not valid TOML: {e}") from e
    except RecursionError as e:
        raise RegistryError(
            f"registry file {path} is not valid TOML: its arrays or tables nest too deeply"
        ) from e
    unknown = [k for k in data if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise RegistryError(
            f"registry file {path}: unknown top-level key {unknown[0]!r} (a registry is a list of [[checkpoint]] tables)"
        )
    defaults = _parse_defaults(data.get("defaults", {}), path)
    entries = data.get("checkpoint", [])
    if not isinstance(entries, list):
        raise RegistryError(f"registry file {path}: 'checkpoint' must be an array of tables ([[checkpoint]])")
    parsed: list[_Parsed] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries, start=1):
        p = _parse_entry(entry, path, i, defaults)
        for q in (p, *_inline_ids(p)):  # an inline member's id is unique too (it keys its lock pins)
            if q.spec.id in seen:
                raise RegistryError(
                    f"duplicate checkpoint id {q.spec.id!r}: {seen[q.spec.id]} and {q.spec.source}"
                )
            seen[q.spec.id] = q.spec.source
        parsed.append(p)
    return parsed


# ----------------------------------------------------------------------------------------------------
# Bare command-line targets
# ----------------------------------------------------------------------------------------------------


def _sanitize_id(s: str) -> str:
    """A valid id derived from ``s``: other characters become ``_``; one longer than
    :data:`MAX_ID_LENGTH` keeps its start plus ``-`` and 8 hex digits of its sha256 (still unique)."""
    out = re.sub(r"[^A-Za-z0-9_.+\-=@]", "_", s)
    out = out if out and _ID_RE.fullmatch(out) else f"_{out}"
    if len(out) > MAX_ID_LENGTH:
        out = (
            f"{out[: MAX_ID_LENGTH - 9]}-{hashlib.sha256(s.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
        )
    return out


def _id_for_weights(src: sources.WeightSource) -> str:
    return _sanitize_id(sources.source_of(src).default_id(src.value))


def _arch_of(text: str, target: str) -> str | None:
    """``<family>:<name>`` of an installed family as given; a bare known timm name -> ``timm:<name>``.
    ``module:Class`` (a family that is not installed, named like a module): an error saying to write
    ``python:module:Class``."""
    family, sep, name = text.partition(":")
    if sep:
        if family in architectures.families() and name:
            return text
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", family) and re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_.]*", name
        ):
            raise RegistryError(
                f"target {target!r}: {family!r} is no installed architecture family ({architectures.syntax_hint()}); "
                f"for a constructor of your own write python:{text}@… (it runs that code: with --trust-checkpoints)"
            )
        return None
    if re.fullmatch(r"[A-Za-z0-9_.\-]+", text):
        import timm

        return f"timm:{text}" if timm.is_model(text) else None
    return None


def _arch_at_weights(target: str, arch: str, weights: str) -> CheckpointSpec:
    where = f"command line target {target!r}"
    try:
        src = sources.parse_weights(weights, target)
    except CheckpointError as e:
        raise RegistryError(str(e)) from e
    source = sources.source_of(src)
    if source.requires_sha256:
        raise RegistryError(
            f'{where}: weights from {source.noun()} need a sha256; put them in a registry .toml file with sha256 = "…"'
        )
    if src.kind == sources.PATH_KIND:
        p = sources.expand_path(src.value)
        problem = sources.path_problem(p)  # "not found", "is a directory, not a file", …
        if problem is not None:
            raise RegistryError(f"{where}: weights file {p} {problem}")
        weights = str(p.resolve())
    family, name = architectures.split(arch, where)
    # a family that runs code is refused later, where the run's trust is known (plan and load)
    problem = family.problem(name, trust=True)
    if problem:
        raise RegistryError(f"{where}: {problem}")
    return CheckpointSpec(
        id=_id_for_weights(src), arch=arch, weights=weights, labels=family.default_labels(name), source=where
    )


def _timm_pretrained_target(target: str, name: str) -> CheckpointSpec | None:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    if not timm.is_model(name):
        return None
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # invalid tag
        return None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return None
    base = split_model_name_tag(name)[0]
    return CheckpointSpec(
        id=_sanitize_id(name),
        arch=f"timm:{base}",
        weights=f"timm:{name}",
        source=f"command line target {target!r}",
    )


def _torchvision_target(target: str, name: str) -> CheckpointSpec | None:
    import torchvision

    if name not in torchvision.models.list_models():
        return None
    try:
        default = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None
    return CheckpointSpec(
        id=_sanitize_id(f"torchvision_{name}.{default.name}"),
        arch=f"torchvision:{name}",
        weights=f"torchvision:{default}",
        source=f"command line target {target!r}",
    )


def _resolve_one(target: str) -> list[_Parsed]:
    t = target.strip()
    shipped = shipped_registries()
    if t in shipped:
        return _read_registry_file(shipped[t])
    tried = [f"a shipped registry (known: {', '.join(sorted(shipped)) or 'none'})"]
    if _CONTROL_RE.search(t):
        raise RegistryError(f"unknown target {t!r}: it contains control characters")
    p = sources.expand_path(t)
    problem = sources.path_problem(p)  # None: an existing regular file
    if t.endswith(".toml"):
        if problem is None:
            return _read_registry_file(p)
        raise RegistryError(f"target {t!r}: registry file {p} {problem}")
    tried.append("a registry .toml file")
    arch_text, at, weights = t.partition("@")
    if at and weights:
        arch = _arch_of(arch_text, t)
        if arch is not None:
            return [_Parsed(_arch_at_weights(t, arch, weights))]
    tried.append("ARCH@WEIGHTS (e.g. timm:resnet18@/path/w.pth)")
    if problem is not None and problem.startswith("is a directory"):
        raise RegistryError(
            f"target {t!r} is a directory; give a registry .toml file, or a weights file with its architecture "
            f"(ARCH@PATH, e.g. timm:resnet50@{t}/w.pth)"
        )
    if problem is None or p.suffix in sources.WEIGHT_SUFFIXES:
        state = "a weights file" if problem is None else "a weights file path that does not exist"
        raise RegistryError(
            f"target {t!r} is {state}; a weights file needs an architecture: write ARCH@PATH, "
            f"e.g. timm:resnet50@{t}"
        )
    tried.append("a weights file")
    family, sep, name = t.partition(":")
    if sep and family == "torchvision":
        spec = _torchvision_target(t, name)
        if spec is not None:
            return [_Parsed(spec)]
        tried.append("a torchvision model with pretrained weights")
    elif (sep and family == "timm") or (not sep and "/" not in t):
        name = name if sep else t
        spec = _timm_pretrained_target(t, name)
        if spec is not None:
            return [_Parsed(spec)]
        import timm

        hint = suggest(name, sorted({n.split(".")[0] for n in timm.list_models(pretrained=True)}), cutoff=0.7)
        tried.append(f"a timm model name with pretrained weights{hint}")
    raise RegistryError(f"unknown target {t!r}: it is not " + ", not ".join(tried))


def resolve_targets(targets: list[str]) -> list[CheckpointSpec]:
    """Resolve command-line targets (see the module docstring) into checkpoint specs, in order.
    Duplicate ids across targets are an error naming both sources. An ensemble's member ids may name
    entries of any of the targets. Every failure is a
    :class:`RegistryError` naming the target (or the registry file, entry and key)."""
    parsed: list[_Parsed] = []
    seen: dict[str, str] = {}
    for t in targets:
        try:
            resolved = _resolve_one(t)
        except RegistryError:
            raise
        except CheckpointError as e:  # from a weight source's syntax check: same message, one error type
            raise RegistryError(str(e)) from e
        for p in resolved:
            for q in (p, *_inline_ids(p)):
                if q.spec.id in seen:
                    raise RegistryError(
                        f"duplicate checkpoint id {q.spec.id!r}: {seen[q.spec.id]} and {q.spec.source}"
                    )
                seen[q.spec.id] = q.spec.source
            parsed.append(p)
    return _link(parsed)
