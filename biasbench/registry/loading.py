"""From a :class:`CheckpointSpec` to a network with its weights: build the architecture, get the
weight bytes, find the state dict, apply the named adapters, load strictly.

Architectures (``arch``):

* ``timm:<name>`` — ``timm.create_model(name, pretrained=False, num_classes=…)``;
* ``torchvision:<name>`` — ``torchvision.models.get_model(name, weights=None, num_classes=…)``;
* ``zoo:<name>`` — ``biasbench.registry.zoo.ARCHITECTURES[name](num_classes)`` (the demo mini zoo).

Weights (``weights``, see :mod:`biasbench.registry.sources`); when absent, the architecture's own
pretrained weights: ``timm:<name>`` for timm, the weights enum's ``DEFAULT`` for torchvision.

Loading is strict: after the adapters, the checkpoint's keys must equal the architecture's and every
shape must agree; otherwise a :class:`CheckpointError` names the missing and unexpected keys (the
first 10 of each, with counts) and the shape mismatches. The one tolerance is the one
``torch.nn.Module.load_state_dict`` itself has: ``*.num_batches_tracked`` buffers absent from old
checkpoints are kept at the architecture's value (they do not affect evaluation).

Weights are checked before they are loaded: any NaN or ±Inf is refused, naming the first bad tensors
(:func:`check_finite_weights`); an integer, bool or complex tensor where the architecture has a
floating-point one is refused, while float16 / bfloat16 / float64 weights are cast to the
architecture's dtype (the rule is in :func:`strict_load`; timm's own weights loaded by timm's loader
get the NaN/Inf check only).

timm's own pretrained weights loaded into the same timm architecture with no adapters go through
timm's loader (``pretrained_cfg_overlay``), so its per-model checkpoint filters and custom loaders
apply exactly as in ``timm.create_model(name, pretrained=True)``; the bytes are still read by us
(``weights_only`` unless trusted) and fingerprinted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biasbench.core import labels
from biasbench.core.plugins import suggest
from biasbench.core.preprocess import Preprocess
from biasbench.registry import adapters as _adapters
from biasbench.registry import in_memory, sources
from biasbench.registry.spec import CheckpointError, CheckpointSpec, LoadedCheckpoint, WeightPart
from biasbench.registry.weight_sources.torchvision_enum import torchvision_weights_enum

ARCH_FAMILIES = ("timm", "torchvision", "zoo", "python")


# ----------------------------------------------------------------------------------------------------
# Architectures
# ----------------------------------------------------------------------------------------------------


def split_arch(spec: CheckpointSpec) -> tuple[str, str]:
    """``"timm:resnet50"`` -> ``("timm", "resnet50")``; an unknown family is an error."""
    family, sep, name = spec.arch.partition(":")
    if not sep or family not in ARCH_FAMILIES or not name:
        raise CheckpointError(
            f"checkpoint {spec.id!r}: unknown arch {spec.arch!r}; write timm:<name>, torchvision:<name> or "
            f"zoo:<name>"
        )
    return family, name


def _zoo() -> Any:
    from biasbench.registry import zoo

    return zoo


def check_arch(spec: CheckpointSpec) -> None:
    """Fail early, with a suggestion, on an architecture name its library does not know."""
    family, name = split_arch(spec)
    if family == "timm":
        import timm

        if not timm.is_model(name):
            raise CheckpointError(
                f"checkpoint {spec.id!r}: unknown timm architecture {name!r}{suggest(name, timm.list_models())}"
            )
    elif family == "torchvision":
        import torchvision

        known = torchvision.models.list_models()
        if name not in known:
            raise CheckpointError(
                f"checkpoint {spec.id!r}: unknown torchvision architecture {name!r}{suggest(name, known)}"
            )
    elif family == "python":
        in_memory.registered_module(name, spec.id)
    else:
        archs = getattr(_zoo(), "ARCHITECTURES", None)
        if archs is None:
            raise CheckpointError(
                f"checkpoint {spec.id!r}: the demo zoo defines no ARCHITECTURES (not installed yet?)"
            )
        if name not in archs:
            raise CheckpointError(
                f"checkpoint {spec.id!r}: unknown zoo architecture {name!r}; known: {', '.join(sorted(archs))}"
            )


def build_arch(spec: CheckpointSpec, num_classes: int) -> nn.Module:
    """The architecture of ``spec`` with random weights and ``num_classes`` outputs."""
    check_arch(spec)
    family, name = split_arch(spec)
    try:
        if family == "timm":
            import timm

            return timm.create_model(name, pretrained=False, num_classes=num_classes)
        if family == "torchvision":
            import torchvision

            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if family == "python":  # the caller's module, copied; its class count is checked on its outputs
            return in_memory.build(name, spec.id)
        return _zoo().ARCHITECTURES[name](num_classes)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - constructors raise anything
        raise CheckpointError(
            f"checkpoint {spec.id!r}: cannot build arch {spec.arch!r}: {type(e).__name__}: {e}"
        ) from e


# ----------------------------------------------------------------------------------------------------
# Label spaces and weights defaults
# ----------------------------------------------------------------------------------------------------


def spec_num_classes(spec: CheckpointSpec) -> int:
    """``spec.num_classes`` when given, else the class count of its label space."""
    if spec.num_classes is not None:
        return int(spec.num_classes)
    n = labels.num_classes(spec.labels)
    if n is None:
        raise CheckpointError(
            f"checkpoint {spec.id!r}: unknown label space {spec.labels!r} (known: {', '.join(labels.known())}); "
            f"give the checkpoint an explicit num_classes"
        )
    return n


def effective_weights(spec: CheckpointSpec) -> str:
    """The weights string to load: ``spec.weights``, else the architecture's own pretrained weights."""
    if spec.weights:
        return spec.weights
    family, name = split_arch(spec)
    if family == "timm":
        return f"timm:{name}"
    if family == "torchvision":
        import torchvision

        try:
            default = torchvision.models.get_model_weights(name).DEFAULT
        except (ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(
                f"checkpoint {spec.id!r}: torchvision has no pretrained weights for {name!r}"
            ) from e
        return f"torchvision:{default}"
    raise CheckpointError(
        f'checkpoint {spec.id!r}: a zoo architecture needs explicit weights (weights = "zoo:<name>")'
    )


# ----------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------


def _timm_cfg_name(spec: CheckpointSpec) -> str:
    """The timm model name whose pretrained config describes this checkpoint: the weights' tag when
    the weights are timm's own for this architecture, else the arch name (with its tag if any)."""
    from timm.models import split_model_name_tag

    _, name = split_arch(spec)
    if spec.weights and spec.weights.startswith("timm:"):
        wname = spec.weights[len("timm:") :]
        if split_model_name_tag(wname)[0] == split_model_name_tag(name)[0]:
            return wname
    return name


def timm_preprocess(model_name: str) -> Preprocess:
    """timm's eval data config for ``model_name`` (``resolve_data_config`` on its pretrained config):
    crop = input size, resize = round(crop / crop_pct), the config's interpolation, mean and std.
    (Every crop mode is read as resize-short-side + centre-crop.)"""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name, allow_unregistered=True)
    return data_config_preprocess(
        resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else None)
    )


def data_config_preprocess(data: dict[str, Any]) -> Preprocess:
    """A timm data config (``resolve_data_config``'s dict) as a :class:`Preprocess`."""
    crop = int(data["input_size"][-1])
    interpolation = data.get("interpolation") or "bilinear"
    if interpolation not in ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"):
        interpolation = "bilinear"  # e.g. "random" (a training setting)
    return Preprocess(
        resize=int(round(crop / float(data["crop_pct"]))),
        crop=crop,
        mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
        interpolation=interpolation,
    )


def torchvision_preprocess(enum_member: Any) -> Preprocess:
    """The eval transform of a torchvision weights enum member as a :class:`Preprocess`."""
    t = enum_member.transforms()
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else t.resize_size
    return Preprocess(
        resize=int(resize),
        crop=int(crop),
        mean=tuple(float(v) for v in t.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in t.std),  # type: ignore[arg-type]
        interpolation=str(getattr(t.interpolation, "value", t.interpolation)),
    )


def resolve_preprocess(spec: CheckpointSpec) -> Preprocess:
    """The checkpoint's preprocessing, without downloading anything:

    1. ``spec.preprocess`` when the registry entry gives one;
    2. timm architectures: timm's data config (see :func:`timm_preprocess`) of the weights' tag when the
       weights are timm's own, else of the arch name;
    3. torchvision architectures: the eval transform of the ``torchvision:`` weights enum when the
       weights are one, else of the architecture's first (original) weights enum member;
    4. zoo architectures: ``zoo.WORLD_PREPROCESS``;
    5. otherwise the classic ImageNet recipe (:class:`Preprocess` defaults: 256 / 224, bilinear).
    """
    if spec.preprocess is not None:
        return spec.preprocess
    check_arch(spec)  # an unknown architecture is named as such, not as a failed config lookup
    family, name = split_arch(spec)
    try:
        if family == "timm":
            return timm_preprocess(_timm_cfg_name(spec))
        if family == "torchvision":
            import torchvision

            if spec.weights and spec.weights.startswith("torchvision:"):
                member = torchvision_weights_enum(spec.weights[len("torchvision:") :], spec.id)
            else:
                try:
                    member = next(iter(torchvision.models.get_model_weights(name)))
                except (ValueError, KeyError, StopIteration):
                    return Preprocess()
            return torchvision_preprocess(member)
        return _zoo().WORLD_PREPROCESS
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {spec.id!r}: cannot resolve the preprocessing of {spec.arch!r}: {type(e).__name__}: {e}"
        ) from e


# ----------------------------------------------------------------------------------------------------
# Fingerprint
# ----------------------------------------------------------------------------------------------------


def weight_parts(spec: CheckpointSpec) -> list[WeightPart]:
    """The files of a checkpoint: its ``parts``, or one part of its (effective) weights, pin and adapters."""
    if spec.parts:
        return list(spec.parts)
    return [WeightPart(effective_weights(spec), spec.sha256, spec.adapter)]


def combined_sha256(digests: list[str]) -> str:
    """The fingerprint of a multi-file checkpoint: sha256 of its parts' sha256s, in order, one per line."""
    import hashlib

    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _resolve_part(
    spec: CheckpointSpec, part: WeightPart, cache_dir: Path, trust: bool
) -> tuple[sources.ResolvedWeights, str]:
    rw = sources.resolve_weights(
        part.weights, spec.id, sha256=part.sha256, cache_dir=Path(cache_dir), trust=trust
    )
    if rw.path is not None:
        digest = sources.cached_sha256(rw.path, Path(cache_dir))
    else:
        assert rw.state_dict is not None
        digest = sources.state_dict_sha256(rw.state_dict)
    if part.sha256 and digest != part.sha256.lower():
        raise CheckpointError(
            f"checkpoint {spec.id!r}: sha256 mismatch for {rw.description}: the registry (or its lock file) "
            f"says {part.sha256.lower()}, the weights are {digest}; refusing to use them"
        )
    return rw, digest


def _resolve_and_hash(
    spec: CheckpointSpec, cache_dir: Path, trust: bool
) -> tuple[sources.ResolvedWeights, str]:
    return _resolve_part(spec, weight_parts(spec)[0], cache_dir, trust)


def weights_fingerprint(spec: CheckpointSpec, *, cache_dir: Path, trust: bool = False) -> str:
    """sha256 of the checkpoint's weight bytes (the file's; for a state dict handed over by a package
    callable, a hash of its keys, dtypes, shapes and bytes). Cached in a sidecar keyed by
    path + size + mtime, so repeated runs do not re-hash. May download the weights to the cache.
    A declared ``sha256`` that does not match is an error. Hashing never unpickles; ``trust`` allows
    sources that run undeclared code (``package:<module>:<attr>``) to resolve. A multi-file checkpoint's
    fingerprint is :func:`combined_sha256` of its parts'."""
    if spec.parts:
        return combined_sha256([_resolve_part(spec, p, Path(cache_dir), trust)[1] for p in spec.parts])
    return _resolve_and_hash(spec, Path(cache_dir), trust)[1]


def resolves_locally(spec: CheckpointSpec) -> bool:
    """Whether the checkpoint's weights resolve from local files without running third-party code
    (what ``--dry-run`` may do)."""
    return all(sources.resolves_locally(p.weights, spec.id) for p in weight_parts(spec))


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def _fmt_keys(keys: list[str], n: int = 10) -> str:
    shown = ", ".join(keys[:n])
    return f"[{shown}{', …' if len(keys) > n else ''}]"


def check_finite_weights(sd: dict[str, torch.Tensor], spec: CheckpointSpec, where: str) -> None:
    """Refuse weights holding NaN or ±Inf (a diverged or corrupted checkpoint would otherwise give
    NaN logits and meaningless metrics much later): a :class:`CheckpointError` naming the checkpoint,
    where the weights came from, how many tensors are bad and the first five of them with their counts."""
    bad: list[str] = []
    for k, t in sd.items():
        if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        if bool(torch.isfinite(t.sum())):  # fast path: any NaN or ±Inf makes the sum non-finite
            continue
        finite = torch.isfinite(t)
        if bool(finite.all()):
            continue
        n_nan = int(torch.isnan(t).sum())
        n_inf = int((~finite).sum()) - n_nan
        bad.append(f"{k!r} ({n_nan} NaN, {n_inf} Inf of {t.numel()})")
    if bad:
        raise CheckpointError(
            f"checkpoint {spec.id!r}: the weights ({where}) hold non-finite values in {len(bad)} of {len(sd)} "
            f"tensors: {', '.join(bad[:5])}{', …' if len(bad) > 5 else ''}; refusing to load them "
            f"(a diverged or corrupted checkpoint?)"
        )


def _short(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _dtype_problem(got: torch.Tensor, want: torch.Tensor) -> str | None:
    """Why ``got`` cannot stand for the architecture's ``want`` (``None``: it can, cast if needed)."""
    mismatch = f"{_short(got.dtype)}, arch {_short(want.dtype)}"
    if want.is_floating_point():
        if not got.is_floating_point():
            return mismatch
        if got.dtype != want.dtype and got.numel():
            peak = float(got.detach().abs().max())
            if peak > torch.finfo(want.dtype).max:  # the cast would turn these into Inf
                return f"{mismatch}; values up to {peak:.3g} overflow {_short(want.dtype)}"
        return None
    if want.is_complex():
        return None if got.is_complex() else mismatch
    # an integer or bool buffer (num_batches_tracked, …)
    if got.is_complex():
        return mismatch
    if got.is_floating_point() and not bool(torch.all(torch.isfinite(got) & (got == torch.round(got)))):
        return f"{mismatch}; fractional values"
    return None


def strict_load(net: nn.Module, sd: dict[str, torch.Tensor], spec: CheckpointSpec, notes: list[str]) -> None:
    """``net.load_state_dict(sd, strict=True)`` with our own message naming the missing and
    unexpected keys and the shape mismatches.

    Dtypes (``load_state_dict`` would cast silently): a floating-point parameter or buffer takes any
    floating-point tensor, and float16 / bfloat16 / float64 are cast to the architecture's dtype (a
    note counts them; values the cast would overflow to Inf are refused); an integer, bool, complex or quantized tensor for it is refused, naming the
    tensors. An integer buffer (``num_batches_tracked``) takes integer and bool tensors and
    floating-point ones whose values are all whole numbers. Non-finite values are refused earlier, by
    :func:`check_finite_weights`."""
    model_sd = net.state_dict()
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    tracked = [k for k in missing if k.endswith("num_batches_tracked")]
    if tracked:
        sd = dict(sd)
        for k in tracked:
            sd[k] = model_sd[k]
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        notes.append(
            f"{len(tracked)} num_batches_tracked buffers absent from the checkpoint kept at their defaults"
        )
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs arch {tuple(v.shape)}"
        for k, v in model_sd.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys {_fmt_keys(unexpected)}")
        if shapes:
            parts.append(
                f"{len(shapes)} shape mismatches [{'; '.join(shapes[:10])}{'; …' if len(shapes) > 10 else ''}]"
            )
        raise CheckpointError(
            f"checkpoint {spec.id!r}: the weights do not fit arch {spec.arch!r} (strict load): "
            + "; ".join(parts)
            + ". Adapters (strip-prefix:, rename:A=B, drop:regex, by-position) map a checkpoint's keys onto "
            "the architecture's"
        )
    wrong = [f"{k} ({why})" for k, v in model_sd.items() if (why := _dtype_problem(sd[k], v)) is not None]
    if wrong:
        raise CheckpointError(
            f"checkpoint {spec.id!r}: the weights do not fit arch {spec.arch!r}: {len(wrong)} of {len(model_sd)} "
            f"tensors have the wrong dtype: {', '.join(wrong[:5])}{', …' if len(wrong) > 5 else ''}; refusing "
            f"to load them (torch would cast them silently; float16/bfloat16/float64 weights are cast, integer "
            f"ones are not weights for this architecture)"
        )
    cast: dict[str, int] = {}
    for k, v in model_sd.items():
        if v.is_floating_point() and sd[k].dtype != v.dtype:
            key = f"{sd[k].dtype} -> {v.dtype}".replace("torch.", "")
            cast[key] = cast.get(key, 0) + 1
    if cast:
        notes.append("cast " + ", ".join(f"{n} tensors {how}" for how, n in sorted(cast.items())))
    try:
        net.load_state_dict(sd, strict=True)
    except Exception as e:  # noqa: BLE001 - dtype/complex errors
        raise CheckpointError(f"checkpoint {spec.id!r}: loading the state dict failed: {e}") from e


_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _torchvision_densenet_fix(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """torchvision's own fix for its DenseNet weight files (``norm.1`` -> ``norm1``), as in
    ``torchvision.models.densenet._load_state_dict``."""
    out, n = {}, 0
    for k, v in sd.items():
        m = _DENSENET_OLD_KEY.match(k)
        if m:
            k = m.group(1) + m.group(2)
            n += 1
        out[k] = v
    return out, n


def _timm_native(spec: CheckpointSpec, source: sources.WeightSource, adapters: list) -> bool:
    """timm's own weights into the same timm architecture, no adapters: use timm's loader."""
    if source.kind != "timm" or adapters or not spec.arch.startswith("timm:"):
        return False
    from timm.models import split_model_name_tag

    return split_model_name_tag(source.value)[0] == split_model_name_tag(spec.arch[len("timm:") :])[0]


def _load_timm_native(
    spec: CheckpointSpec, rw: sources.ResolvedWeights, sd: dict[str, torch.Tensor], num_classes: int
) -> nn.Module:
    import timm
    from timm.models import get_pretrained_cfg

    name = rw.source.value
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {spec.id!r}: {e}") from e
    if cfg is None:
        raise CheckpointError(f"checkpoint {spec.id!r}: timm has no pretrained config for {name!r}")
    if cfg.num_classes and cfg.num_classes != num_classes:
        raise CheckpointError(
            f"checkpoint {spec.id!r}: timm's weights {name!r} have {cfg.num_classes} classes but label space "
            f"{spec.labels!r} has {num_classes}; timm would replace the classifier with a random one"
        )
    overlay: dict[str, Any] = {"file": str(rw.path)} if cfg.custom_load and not sd else {"state_dict": sd}
    try:
        net = timm.create_model(
            name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay
        )
    except Exception as e:  # noqa: BLE001 - timm's loader raises RuntimeError (keys) and others
        msg = " ".join(str(e).split())
        raise CheckpointError(
            f"checkpoint {spec.id!r}: timm could not load its weights {name!r} into {spec.arch!r}: "
            f"{msg[:1500]}"
        ) from e
    cfg_now = getattr(net, "pretrained_cfg", None)
    if isinstance(cfg_now, dict) and "state_dict" in cfg_now:
        cfg_now["state_dict"] = None  # do not keep a second copy of the weights alive
    return net


def load_checkpoint(spec: CheckpointSpec, *, cache_dir: Path, trust: bool = False) -> LoadedCheckpoint:
    """Build the architecture, fetch and verify the weights, read them (``weights_only`` unless
    ``trust``), find the state dict, apply the adapters, load strictly, and switch to eval mode."""
    num_classes = spec_num_classes(spec)
    check_arch(spec)
    preprocess = resolve_preprocess(spec)
    if spec.parts:
        return _load_parts(spec, num_classes, preprocess, Path(cache_dir), trust)
    adapters = _adapters.parse_adapters(spec.adapter, spec.id)
    rw, digest = _resolve_and_hash(spec, Path(cache_dir), trust)
    notes = [f"weights: {rw.description}", f"sha256: {digest}"]

    native = _timm_native(spec, rw.source, adapters)
    if native and rw.path is not None and rw.path.suffix == ".npz":
        # timm's custom loaders (e.g. original JAX .npz files) read these with numpy, no pickles
        net = _load_timm_native(spec, rw, {}, num_classes)
        notes.append("loaded by timm's own custom (.npz) loader")
        net.eval()
        return LoadedCheckpoint(spec, net, preprocess, num_classes, spec.labels, digest, notes)

    sd = _read_state_dict(spec, rw, adapters, trust, notes, "")

    if native:
        net = _load_timm_native(spec, rw, sd, num_classes)
        notes.append("loaded by timm's own pretrained loader (its checkpoint filter applies; strict)")
    else:
        net = build_arch(spec, num_classes)
        family, name = split_arch(spec)
        if family == "torchvision" and rw.source.kind == "torchvision" and name.startswith("densenet"):
            sd, n = _torchvision_densenet_fix(sd)
            if n:
                notes.append(f"torchvision densenet key fix: {n} keys")
        sd, adapter_notes = _adapters.apply_adapters(sd, adapters, net.state_dict(), spec.id)
        notes.extend(f"adapter {n}" for n in adapter_notes)
        strict_load(net, sd, spec, notes)
    net.eval()
    return LoadedCheckpoint(
        spec=spec,
        net=net,
        preprocess=preprocess,
        num_classes=num_classes,
        label_space=spec.labels,
        weights_sha256=digest,
        notes=notes,
    )


def _read_state_dict(
    spec: CheckpointSpec,
    rw: sources.ResolvedWeights,
    adapters: list[Any],
    trust: bool,
    notes: list[str],
    label: str,
) -> dict[str, torch.Tensor]:
    """The resolved weights (or one part of them) as a finite state dict: the file read (pickles only
    when trusted), the state dict found inside it (the adapter chain's leading ``select`` first) and
    every tensor checked for NaN/Inf; ``label`` prefixes the note (e.g. ``"part 2 "``)."""
    select = adapters[0].arg if adapters and adapters[0].name == "select" else None
    if rw.state_dict is not None:
        raw: Any = rw.state_dict
    else:
        assert rw.path is not None
        raw = sources.read_weights_file(rw.path, spec.id, trust=trust)
    sd, rule = sources.extract_state_dict(raw, spec.id, select=select)
    del raw
    notes.append(f"{label}state dict found by rule: {rule} ({len(sd)} tensors)")
    check_finite_weights(sd, spec, rw.description)
    return sd


def _load_parts(
    spec: CheckpointSpec, num_classes: int, preprocess: Preprocess, cache_dir: Path, trust: bool
) -> LoadedCheckpoint:
    """A multi-file checkpoint: each part resolved, verified, read and adapted on its own; the parts
    merged (a key in two parts is an error naming both) and loaded strictly once."""
    net = build_arch(spec, num_classes)
    model_sd = net.state_dict()
    merged: dict[str, torch.Tensor] = {}
    owner: dict[str, int] = {}
    digests: list[str] = []
    notes: list[str] = []
    for n, part in enumerate(spec.parts, start=1):
        adapters = _adapters.parse_adapters(part.adapter, spec.id)
        rw, digest = _resolve_part(spec, part, cache_dir, trust)
        digests.append(digest)
        notes += [f"part {n} weights: {rw.description}", f"part {n} sha256: {digest}"]
        sd = _read_state_dict(spec, rw, adapters, trust, notes, f"part {n} ")
        sd, adapter_notes = _adapters.apply_adapters(sd, adapters, model_sd, spec.id)
        notes.extend(f"part {n} adapter {a}" for a in adapter_notes)
        clash = [k for k in sd if k in merged]
        if clash:
            raise CheckpointError(
                f"checkpoint {spec.id!r}: parts {owner[clash[0]]} and {n} both hold {len(clash)} keys "
                f"{_fmt_keys(clash)}; each key must come from one part (drop it from one with drop:<regex>)"
            )
        merged.update(sd)
        owner.update(dict.fromkeys(sd, n))
    strict_load(net, merged, spec, notes)
    net.eval()
    digest = combined_sha256(digests)
    notes.insert(0, f"sha256 of the {len(digests)} parts' sha256s: {digest}")
    return LoadedCheckpoint(spec, net, preprocess, num_classes, spec.labels, digest, notes)
