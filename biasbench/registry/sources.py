"""Weight sources: where a checkpoint's weight bytes come from, and how they are read safely.

A checkpoint's ``weights`` string names one source by its scheme (README, "Adding checkpoints"). Every source is a
plugin of the entry-point group ``biasbench.sources`` (a :class:`Source` subclass; ours are declared in
``pyproject.toml`` like a third party's, one module each under :mod:`biasbench.registry.weight_sources`):

==============================  =====================================================================
``timm:<name>[.<tag>]``         timm's pretrained weights (``weight_sources/timm_hub.py``)
``torchvision:<Enum>.<MEMBER>`` a torchvision weights enum (``weight_sources/torchvision_enum.py``)
``/a/path.pth`` (any path)      a local file (``weight_sources/local.py``); the source of every string
                                without a registered scheme
``https://…`` / ``http://…``    downloaded, sha256 required and verified (``weight_sources/url.py``)
``hf-hub:<org>/<repo>[@rev]/<file>``  one file of a Hugging Face hub repository (``weight_sources/hf_hub.py``)
``package:<module>:<attr>``     weights shipped inside a Python package (``weight_sources/package.py``)
``zoo:<name>``                  a checkpoint of the demo mini zoo (``weight_sources/zoo.py``)
==============================  =====================================================================

A new source is one module with a :class:`Source` subclass plus one entry-point line::

    [project.entry-points."biasbench.sources"]
    s3 = "my_package.s3_source:S3Source"

Files are read with ``torch.load(path, map_location="cpu", weights_only=True)``; only ``trust=True``
(``--trust-checkpoints``) allows pickled code/objects. The state dict inside a loaded object is found
by the explicit rules of :data:`NESTED_RULES` (see :func:`extract_state_dict`).

Nothing here touches the network at import time; downloads happen only when a function asks for the
weight bytes. See ``docs/architecture.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from biasbench.core.paths import special_file_kind
from biasbench.core.plugins import PluginError, PluginRegistry, Provider, first_paragraph
from biasbench.registry.download import sha256_file
from biasbench.registry.spec import CheckpointError

#: File suffixes read as local weights files (``.safetensors`` with safetensors, the rest with torch.load).
WEIGHT_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors")

#: Keys under which a state dict is looked for inside a loaded checkpoint object, in this order
#: (the first key present whose value is a dict wins; the search repeats inside it, up to 4 levels).
#: ``online_backbone``: the online network of BYOL-style training scripts, which some of the ResNet-50
#: zoo's Google Drive files store their weights under.
NESTED_RULES = ("state_dict", "model_state_dict", "model_state", "model", "module", "online_backbone")

GROUP = "biasbench.sources"

#: The source of a ``weights`` string with no registered scheme (a local file path).
PATH_KIND = "path"


# ----------------------------------------------------------------------------------------------------
# The plugin contract
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSource:
    """A parsed ``weights`` string: ``kind`` is the scheme of the source plugin (``path`` for a local
    file), ``value`` what follows ``<scheme>:`` (the whole string for sources that keep their scheme,
    such as URLs)."""

    kind: str
    value: str
    keeps_scheme: bool = False

    def __str__(self) -> str:
        return self.value if self.keeps_scheme or self.kind == PATH_KIND else f"{self.kind}:{self.value}"


@dataclass
class ResolvedWeights:
    """Where a checkpoint's weights are: a file ``path``, or an in-memory ``state_dict`` (a package
    callable that returns one). ``description`` says how they were found, for messages and notes."""

    source: WeightSource
    path: Path | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    description: str = ""
    notes: list[str] = field(default_factory=list)


class Source:
    """A weight source plugin. ``scheme`` is its entry-point name (``timm`` for ``timm:<name>``);
    ``keeps_scheme``: the value handed to :meth:`resolve` is the whole string (``https://…``).
    ``syntax`` and the class docstring's first line are shown in listings and errors."""

    scheme: ClassVar[str] = ""
    #: further entry-point names of the same source (``http`` beside ``https``)
    aliases: ClassVar[tuple[str, ...]] = ()
    syntax: ClassVar[str] = ""
    keeps_scheme: ClassVar[bool] = False
    #: the bytes must be pinned, by the entry's ``sha256`` or by the registry's lock file (downloads from
    #: hosts that check nothing themselves); a bare command-line target cannot use such a source
    requires_sha256: ClassVar[bool] = False
    #: what the source itself checks when nothing pins it (``ls checkpoints`` shows it), e.g. a hash prefix
    self_check: ClassVar[str] = ""
    #: resolving reads only local files and runs no third-party code (``--dry-run`` resolves only these)
    local: ClassVar[bool] = False

    def validate(self, value: str, checkpoint_id: str) -> None:
        """Check the value's syntax without any I/O (raise :class:`CheckpointError`)."""
        if not value or value == f"{self.scheme}:":
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: weights '{self.scheme}:' names no {self.scheme} source"
            )

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> ResolvedWeights:
        """Make the weights available locally (downloading if needed) and say where they are; raise
        :class:`CheckpointError` naming the checkpoint for every failure."""
        raise NotImplementedError

    def observe(self, value: str, checkpoint_id: str, *, cache_dir: Path) -> Path:
        """Get weights that nothing pins yet (``bench lock``, ``--allow-unpinned``) and return the local
        file; the caller hashes it and records the hash. A later :meth:`resolve` with that sha256 must
        find the same file in the cache (or fetch and verify it again)."""
        rw = self.resolve(value, checkpoint_id, sha256=None, cache_dir=Path(cache_dir))
        if rw.path is None:
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: weights '{value}' are not a file to lock")
        return rw.path

    def needs_trust(self, value: str) -> bool:
        """True when resolving ``value`` would run code that nobody declared safe (refused unless the
        user passes ``--trust-checkpoints``)."""
        return False

    def trust_hint(self) -> str:
        """What to do instead of ``--trust-checkpoints`` (shown when :meth:`needs_trust` refuses)."""
        return "use a declared source"

    def noun(self) -> str:
        """How messages name this source ("a URL", "'timm:'")."""
        return f"'{self.scheme}:'"

    def default_id(self, value: str) -> str:
        """A checkpoint id for a bare command-line target with these weights (sanitised by the caller)."""
        return value

    @classmethod
    def summary(cls) -> str:
        return first_paragraph(cls.__doc__)


class DownloadedFile(Source):
    """A source whose weights are one downloaded file, kept in the weights cache: pinned files at
    ``<cache>/weights/<sha256>/<file name>`` (:func:`pinned_download`), files nothing pins yet placed
    there by their digest (:func:`place_by_sha256`). A subclass says how to download and names the file."""

    requires_sha256 = True

    def download(
        self, value: str, checkpoint_id: str, dest: Path, cache_dir: Path, sha256: str | None
    ) -> None:
        """Write the file to ``dest`` (verified against ``sha256`` where the transport can; raise
        :class:`CheckpointError` naming the checkpoint)."""
        raise NotImplementedError

    def file_name(self, value: str) -> str:
        """The file's name in the cache."""
        raise NotImplementedError

    def shown(self, value: str) -> str:
        """How messages write the weights (``gdrive:<id>``, the URL)."""
        return str(WeightSource(self.scheme, value, self.keeps_scheme))

    def unpinned(self, value: str, checkpoint_id: str) -> str:
        """The error when a resolve gets no sha256."""
        return (
            f"checkpoint {checkpoint_id!r}: {self.shown(value)} is not pinned: give the entry a sha256, run "
            "`bench lock` on its registry, or pass --allow-unpinned to `bench run`"
        )

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> ResolvedWeights:
        if not sha256:
            raise CheckpointError(self.unpinned(value, checkpoint_id))
        cache_dir = Path(cache_dir)

        def download(tmp: Path) -> None:
            self.download(value, checkpoint_id, tmp, cache_dir, sha256.lower())

        shown = self.shown(value)
        dest = pinned_download(cache_dir, sha256, self.file_name(value), download, shown, checkpoint_id)
        return ResolvedWeights(
            WeightSource(self.scheme, value, self.keeps_scheme),
            path=dest,
            description=f"{shown} (cached at {dest})",
        )

    def observe(self, value: str, checkpoint_id: str, *, cache_dir: Path) -> Path:
        tmp = Path(cache_dir) / "weights" / "unpinned" / self.file_name(value)
        tmp.unlink(missing_ok=True)  # a complete file left here would be trusted; a .part is resumed
        self.download(value, checkpoint_id, tmp, Path(cache_dir), None)
        return place_by_sha256(tmp, tmp.name, cache_dir)[0]


def _check(name: str, obj: Any, p: Provider) -> Source:
    if not (isinstance(obj, type) and issubclass(obj, Source)):
        raise PluginError(f"weight source {name!r} from {p.provider}: {p.target} is not a Source subclass")
    if name not in (obj.scheme, *obj.aliases):
        raise PluginError(
            f"weight source entry point {name!r} from {p.provider} points to {p.target}, scheme {obj.scheme!r}"
        )
    return obj()


#: Every installed weight source, by scheme.
SOURCES: PluginRegistry[Source] = PluginRegistry("weight source", GROUP, _check)


# ----------------------------------------------------------------------------------------------------
# Parsing and resolution
# ----------------------------------------------------------------------------------------------------

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


def parse_weights(weights: str, checkpoint_id: str) -> WeightSource:
    """Parse a ``weights`` string into a :class:`WeightSource` (no I/O): a registered scheme prefix
    names its source; anything else is a local path (an unknown ``scheme://`` is an error)."""
    w = weights.strip()
    if not w:
        raise CheckpointError(f"checkpoint {checkpoint_id!r}: empty weights string")
    m = _SCHEME.match(w)
    schemes = SOURCES.providers()
    if m and m.group(1) in schemes:
        src = SOURCES.load(schemes[m.group(1)])
        value = w if src.keeps_scheme else w[m.end() :]
        src.validate(value, checkpoint_id)
        return WeightSource(m.group(1) if not src.keeps_scheme else src.scheme, value, src.keeps_scheme)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", w):
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: unsupported URL scheme in weights {w!r} (use https:// or http://; "
            f"installed weight sources: {', '.join(sorted(schemes))})"
        )
    return WeightSource(PATH_KIND, w)


def strip_weight_suffixes(name: str) -> str:
    """``resnet50.pth.tar`` -> ``resnet50`` (every weights-file suffix removed)."""
    stem = name
    while Path(stem).suffix in WEIGHT_SUFFIXES:
        stem = Path(stem).stem
    return stem


def source_of(src: WeightSource) -> Source:
    """The plugin that resolves a parsed weight source."""
    return SOURCES.get(src.kind)


def resolves_locally(weights: str, checkpoint_id: str) -> bool:
    """Whether resolving ``weights`` reads only local files and runs no third-party code."""
    return source_of(parse_weights(weights, checkpoint_id)).local


def resolve_weights(
    weights: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path, trust: bool = False
) -> ResolvedWeights:
    """Make a checkpoint's weights available locally (downloading if needed) and say where they are.

    Raises :class:`CheckpointError` naming the checkpoint for every failure (missing file, download
    error, sha256 missing for a URL or mismatched, unknown enum/package/zoo entry, a source that would
    run undeclared code without ``trust``).
    """
    src = parse_weights(weights, checkpoint_id)
    source = source_of(src)
    if not trust and source.needs_trust(src.value):
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: weights '{src}' would import and run code that no installed "
            f"package declares as a weights provider. Checkpoints are data, not code: {source.trust_hint()} "
            f"or pass --trust-checkpoints to run it anyway"
        )
    rw = source.resolve(src.value, checkpoint_id, sha256=sha256, cache_dir=Path(cache_dir))
    rw.source = src
    return rw


# ----------------------------------------------------------------------------------------------------
# Fingerprints: sha256 of the weight bytes, cached in a sidecar keyed by path + size + mtime
# ----------------------------------------------------------------------------------------------------

_INDEX_NAME = "sha256-index.json"


def _index_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / "weights" / _INDEX_NAME


def _index_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _read_index(cache_dir: Path) -> dict[str, Any]:
    try:
        return json.loads(_index_path(cache_dir).read_text())
    except (OSError, ValueError):
        return {}


def place_by_sha256(tmp: Path, name: str, cache_dir: Path) -> tuple[Path, str]:
    """Move a freshly downloaded, not yet pinned file to ``<cache>/weights/<sha256>/<name>`` (where a
    pinned resolve looks for it) and return the new path and the sha256."""
    digest = sha256_file(tmp)
    dest = Path(cache_dir) / "weights" / digest / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    remember_sha256(dest, digest, cache_dir)
    return dest, digest


def pinned_download(
    cache_dir: Path, sha256: str, name: str, download: Callable[[Path], None], what: str, checkpoint_id: str
) -> Path:
    """The file pinned by ``sha256`` in the weights cache (``<cache>/weights/<sha256>/<name>``), got by
    ``download(tmp)`` when it is not there yet and verified before it is placed: one path for every
    source that downloads pinned files. A mismatch deletes the download and names ``what``."""
    expected = sha256.lower()
    dest = Path(cache_dir) / "weights" / expected / name
    if dest.is_file() and cached_sha256(dest, cache_dir) == expected:
        return dest
    tmp = dest.with_name(dest.name + ".download")
    dest.parent.mkdir(parents=True, exist_ok=True)
    download(tmp)
    got = cached_sha256(tmp, cache_dir)
    if got != expected:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: sha256 mismatch for {what}: expected {expected}, got {got}; "
            "the download was deleted"
        )
    return place_by_sha256(tmp, name, cache_dir)[0]


def remember_sha256(path: Path, digest: str, cache_dir: Path) -> None:
    """Record ``digest`` for ``path`` (at its current size and mtime) in the sidecar index."""
    key, size, mtime = _index_key(path)
    index = {k: v for k, v in _read_index(cache_dir).items() if os.path.exists(k)}
    index[key] = {"size": size, "mtime_ns": mtime, "sha256": digest}
    target = _index_path(cache_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(index, indent=0, sort_keys=True))
        os.replace(tmp, target)
    except OSError:  # a read-only cache only costs re-hashing next time
        pass


def cached_sha256(path: Path, cache_dir: Path) -> str:
    """sha256 of a file, from the sidecar index when path, size and mtime are unchanged."""
    key, size, mtime = _index_key(path)
    hit = _read_index(cache_dir).get(key)
    if hit and hit.get("size") == size and hit.get("mtime_ns") == mtime:
        return str(hit["sha256"])
    digest = sha256_file(path)
    remember_sha256(path, digest, cache_dir)
    return digest


def state_dict_sha256(sd: Mapping[str, torch.Tensor]) -> str:
    """A content hash of an in-memory state dict (keys, dtypes, shapes and bytes, in key order); used
    when a package hands over a state dict instead of a file."""
    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------
# Reading files safely and finding the state dict inside
# ----------------------------------------------------------------------------------------------------

# Messages of torch's weights-only unpickler that mean "this pickle wants to build objects / call code"
# (as opposed to garbage bytes, which it reports as an unsupported operand).
_REFUSAL_MARKERS = (
    "Unsupported global",
    "unsupported GLOBAL",
    "Trying to call reduce",
    "Can only create new object",
    "Can only build",
)


def expand_path(value: str) -> Path:
    """``Path(value).expanduser()``, but a ``~user`` whose home cannot be found stays as written
    (it is then reported as not found instead of raising ``RuntimeError``)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        return Path(value)


def path_problem(path: Path | str) -> str | None:
    """Why ``path`` is not a regular file, as the rest of a sentence that starts with the path
    (``"not found"``, ``"is a directory, not a file"``, ``"is a FIFO (named pipe), not a regular file"``,
    ``"cannot be examined: File name too long"``); ``None`` for a regular file (symlinks followed).
    Never raises: every ``OSError``/``ValueError`` of ``stat`` becomes a phrase."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "not found"
    except OSError as e:
        return f"cannot be examined: {e.strerror or e}"
    except ValueError as e:  # an embedded NUL byte
        return f"cannot be examined: {e}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    kind = special_file_kind(mode)
    return f"is {kind}, not a regular file" if kind else "is not a regular file"


def _sniff(path: Path) -> str:
    """What a file that is not a readable checkpoint looks like, for error messages ('' if unknown)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return ""
    if size == 0:
        return "the file is empty (0 bytes)"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights (fetch the real file, e.g. `git lfs pull`)"
    if b"\0" in head:
        return ""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a multi-byte character cut at 4096 bytes
            return ""
        text = head[: e.start].decode("utf-8")
    low = text.lstrip().lower()
    if low.startswith(("<!doctype html", "<html")):
        return "it is an HTML page, not a checkpoint (a download that returned an error or login page?)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"it is a text file, not a checkpoint (first line: {first[:60]!r})"


def read_weights_file(path: Path, checkpoint_id: str, *, trust: bool = False) -> Any:
    """Read a weights file: safetensors by suffix, else ``torch.load(map_location="cpu",
    weights_only=not trust)``. Every failure is a :class:`CheckpointError` naming the checkpoint and
    the path: a path that is missing, a directory or not a regular file (a FIFO would block forever)
    is refused before reading; a refused pickle and an unreadable file are distinct errors, and an
    unreadable file says what it looks like (empty, a text file, an HTML page, a Git LFS pointer)."""
    path = Path(path)
    cid = checkpoint_id
    problem = path_problem(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint {cid!r}: weights file {path} {problem}")

    def unreadable(e: BaseException, cause: str) -> CheckpointError:
        looks = _sniff(path)
        return CheckpointError(
            f"checkpoint {cid!r}: cannot read weights file {path}: {f'{looks}; ' if looks else ''}{cause}"
        )

    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors raises several error types
            raise unreadable(e, f"{type(e).__name__}: {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for bad files
        msg = str(e)
        if not trust and any(m in msg for m in _REFUSAL_MARKERS):
            what = re.search(r"GLOBAL (\S+)", msg) or re.search(r"(?:function|got) ([^\n]+)", msg)
            detail = f" ({what.group(1)})" if what else ""
            raise CheckpointError(
                f"checkpoint {cid!r}: weights file {path} contains pickled code/objects{detail}, which "
                f"torch.load(weights_only=True) refuses to run; if you trust this file, load it with "
                f"--trust-checkpoints (that executes whatever code the pickle contains)"
            ) from e
        cause = msg.strip().splitlines()[-1] if msg.strip() else ""
        if "WeightsUnpickler error" in msg:
            cause = msg.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0] or cause
        cause = (
            f"{type(e).__name__}: {cause}"
            if cause
            else f"{type(e).__name__} (truncated or not a checkpoint?)"
        )
        raise unreadable(e, cause) from e


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:12]
        return f"a dict with keys {keys}{' …' if len(obj) > 12 else ''}"
    return f"a {type(obj).__name__}"


def extract_state_dict(
    obj: Any, checkpoint_id: str, *, select: str | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Find the state dict inside a loaded checkpoint object; return it and the rule that found it.

    Rules, in order (explicit, named; the rule used is reported):

    1. ``select:<key>`` adapter given: take ``obj[<key>]`` (dotted keys descend: ``a.b``).
    2. ``nn.Module`` (a pickled whole model, only with ``--trust-checkpoints``): its ``state_dict()``.
    3. ``flat``: a dict whose values are all tensors is the state dict.
    4. ``key:<k>`` for ``k`` in :data:`NESTED_RULES` (``state_dict``, ``model_state_dict``,
       ``model_state``, ``model``, ``module``): the first key present whose value is a dict (or an
       ``nn.Module``) is descended into, and the rules repeat there (up to 4 levels).

    Non-tensor entries inside an otherwise flat dict are an error naming them.
    """
    cid = checkpoint_id
    path: list[str] = []
    if select:
        for part in select.split("."):
            if not isinstance(obj, Mapping) or part not in obj:
                raise CheckpointError(
                    f"checkpoint {cid!r}: adapter select:{select} found no key {part!r} in {_describe(obj)}"
                )
            obj = obj[part]
        path.append(f"select:{select}")
    for _ in range(5):
        if isinstance(obj, torch.nn.Module):
            obj = obj.state_dict()
            path.append("module-object")
        if _is_state_dict(obj):
            rule = " -> ".join([*path, "flat"]) if path else "flat"
            return dict(obj), rule
        if not isinstance(obj, Mapping):
            break
        for k in NESTED_RULES:
            if k in obj and isinstance(obj[k], (Mapping, torch.nn.Module)):
                obj = obj[k]
                path.append(f"key:{k}")
                break
        else:
            break
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj):
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if 0 < len(bad) < len(obj):
            raise CheckpointError(
                f"checkpoint {cid!r}: the state dict found by rule {' -> '.join(path) or 'flat'} has "
                f"{len(bad)} non-tensor entries {bad[:10]} beside its tensors, so it is not a plain state dict; "
                f"if the weights are under another key, name it with the adapter 'select:<key>'"
            )
    where = " -> ".join(path) or "the top level"
    raise CheckpointError(
        f"checkpoint {cid!r}: no state dict found at {where}: it is {_describe(obj)}; the rules look for a flat "
        f"dict of tensors or one under the keys {list(NESTED_RULES)}; name the key with the adapter "
        f"'select:<key>'"
    )
