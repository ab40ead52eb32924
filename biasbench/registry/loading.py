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

Ensembles (``spec.members``, :mod:`biasbench.registry.ensembles`): every member goes through this same
path on its own; they must share one label space and one preprocessing (refused otherwise, naming the
member), and the network is their :class:`~biasbench.registry.ensembles.Ensemble`. Wrappers
(``spec.wrap``, :mod:`biasbench.registry.wrappers`) then wrap the loaded network, innermost first. The
fingerprint of either is derived from its members' and wrappers' (:func:`weights_fingerprint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from biasbench.core import labels
from biasbench.core.preprocess import Preprocess
from biasbench.registry import adapters as _adapters
from biasbench.registry import architectures, ensembles, sources, wrappers
from biasbench.registry.spec import CheckpointError, CheckpointSpec, LoadedCheckpoint, WeightPart

# ----------------------------------------------------------------------------------------------------
# Architectures (plugins of the group biasbench.architectures: registry/architectures.py)
# ----------------------------------------------------------------------------------------------------


def check_arch(spec: CheckpointSpec, *, trust: bool = False) -> None:
    """Fail early, with a suggestion, on an architecture its family does not know (an ensemble: on
    each member's)."""
    if spec.members:
        for m in spec.members:
            check_arch(m, trust=trust)
        return
    family, name = architectures.split(spec.arch, spec.id)
    problem = family.problem(name, trust=trust)
    if problem:
        raise CheckpointError(f"checkpoint {spec.id!r}: {problem}")


def build_arch(spec: CheckpointSpec, num_classes: int, *, trust: bool = False) -> nn.Module:
    """The architecture of ``spec`` with random weights and ``num_classes`` outputs."""
    check_arch(spec, trust=trust)
    family, name = architectures.split(spec.arch, spec.id)
    try:
        return family.build(name, num_classes, spec.id, trust=trust)
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
    """``spec.num_classes`` when given, else the class count of its label space (an ensemble: its
    first member's; the members are checked to agree by :func:`resolve_preprocess`)."""
    if spec.members:
        return spec_num_classes(spec.members[0])
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
    family, name = architectures.split(spec.arch, spec.id)
    return family.default_weights(name, spec.id)


# ----------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------


def resolve_preprocess(spec: CheckpointSpec, *, trust: bool = False) -> Preprocess:
    """The checkpoint's preprocessing, without downloading anything: ``spec.preprocess`` when the
    registry entry gives one, else its architecture family's (timm: the data config of the weights'
    tag when they are timm's own, else of the arch name; torchvision: the eval transform of its weights
    enum, else of the architecture's original one; zoo: the demo world's; otherwise the classic
    ImageNet recipe, 256 / 224 bilinear). An ensemble: its members' one preprocessing; members that
    differ in it, their label space or class count are refused (:func:`check_ensemble`)."""
    if spec.members:
        return check_ensemble(spec, trust=trust)
    if spec.preprocess is not None:
        return spec.preprocess
    check_arch(spec, trust=trust)  # an unknown architecture is named as such, not as a failed config lookup
    family, name = architectures.split(spec.arch, spec.id)
    try:
        return family.preprocess(name, spec.weights, spec.id)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {spec.id!r}: cannot resolve the preprocessing of {spec.arch!r}: {type(e).__name__}: {e}"
        ) from e


def check_ensemble(spec: CheckpointSpec, *, trust: bool = False) -> Preprocess:
    """The members' shared preprocessing, after checking that every member has the first one's label
    space, class count and preprocessing (an :class:`~biasbench.registry.ensembles.EnsembleError`
    naming the member and the field otherwise) and that the rule is known."""
    ensembles.check_combine(spec.combine, spec.id)
    facts = [
        ensembles.MemberFacts(m.id, m.labels, spec_num_classes(m), resolve_preprocess(m, trust=trust))
        for m in spec.members
    ]
    ensembles.check_members(spec.id, facts)
    if spec.labels != facts[0].labels:
        raise ensembles.EnsembleError(
            f"ensemble {spec.id!r} declares labels = {spec.labels!r}, but its members' label space is "
            f"{facts[0].labels!r}"
        )
    pre = facts[0].preprocess
    assert pre is not None
    return pre


# ----------------------------------------------------------------------------------------------------
# Fingerprint
# ----------------------------------------------------------------------------------------------------


def weight_parts(spec: CheckpointSpec) -> list[WeightPart]:
    """The files of a checkpoint: the parts it declares, or one part of its architecture's own weights."""
    return spec.declared_parts() or [WeightPart(effective_weights(spec), spec.sha256, spec.adapter)]


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


def weights_fingerprint(spec: CheckpointSpec, *, cache_dir: Path, trust: bool = False) -> str:
    """sha256 of the checkpoint's weight bytes (the file's; for a state dict handed over by a package
    callable, a hash of its keys, dtypes, shapes and bytes). Cached in a sidecar keyed by
    path + size + mtime, so repeated runs do not re-hash. May download the weights to the cache.
    A declared ``sha256`` that does not match is an error. Hashing never unpickles; ``trust`` allows
    sources that run undeclared code (``package:<module>:<attr>``) to resolve. A multi-file checkpoint's
    fingerprint is :func:`combined_sha256` of its parts'. An ensemble's is
    :func:`~biasbench.registry.ensembles.ensemble_fingerprint` of its rule and its members'
    fingerprints (sorted); with wrappers, :func:`~biasbench.registry.wrappers.wrapped_fingerprint` of
    that and the wrappers' kinds and parameters. Without either it is the bytes' sha256 as before."""
    if spec.members:
        ensembles.check_combine(spec.combine, spec.id)
        member_digests = [weights_fingerprint(m, cache_dir=cache_dir, trust=trust) for m in spec.members]
        base = ensembles.ensemble_fingerprint(spec.combine, member_digests)
    else:
        digests = [_resolve_part(spec, p, Path(cache_dir), trust)[1] for p in weight_parts(spec)]
        base = digests[0] if len(digests) == 1 else combined_sha256(digests)
    return wrappers.wrapped_fingerprint(base, spec.wrap)


def resolves_locally(spec: CheckpointSpec) -> bool:
    """Whether the checkpoint's weights resolve from local files without running third-party code
    (what ``--dry-run`` may do); an ensemble's when every member's do."""
    if spec.members:
        return all(resolves_locally(m) for m in spec.members)
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
    parts = [
        text
        for text in (
            f"{len(missing)} missing keys {_fmt_keys(missing)}" if missing else "",
            f"{len(unexpected)} unexpected keys {_fmt_keys(unexpected)}" if unexpected else "",
            f"{len(shapes)} shape mismatches [{'; '.join(shapes[:10])}{'; …' if len(shapes) > 10 else ''}]"
            if shapes
            else "",
        )
        if text
    ]
    if parts:
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


def load_checkpoint(spec: CheckpointSpec, *, cache_dir: Path, trust: bool = False) -> LoadedCheckpoint:
    """Build the architecture, fetch and verify the weights, read them (``weights_only`` unless
    ``trust``), find the state dict, apply the adapters, load strictly, and switch to eval mode.

    One path for every checkpoint: each part (a single file is one part) is resolved, verified, read
    and adapted on its own, the parts are merged (a key in two parts is an error naming both) and
    loaded strictly once. A single part of the family's own weights, with no adapters, may go through
    the family's own loader instead (timm's pretrained loader).

    An ensemble loads each member by this same function, checks that they agree (label space, class
    count, preprocessing) and combines them (:class:`~biasbench.registry.ensembles.Ensemble`). The
    wrappers of ``spec.wrap`` then wrap the network; the fingerprint (``weights_sha256``) is
    :func:`weights_fingerprint`'s."""
    loaded = (
        _load_ensemble(spec, Path(cache_dir), trust) if spec.members else _load_one(spec, cache_dir, trust)
    )
    if not spec.wrap:
        return loaded
    net = wrappers.apply_wrappers(loaded.net, spec.wrap, loaded.preprocess, spec.id).eval()
    notes = [*loaded.notes, *(f"wrapped: {w.describe()}" for w in spec.wrap)]
    digest = wrappers.wrapped_fingerprint(loaded.weights_sha256, spec.wrap)
    return LoadedCheckpoint(
        spec, net, loaded.preprocess, loaded.num_classes, loaded.label_space, digest, notes
    )


def _load_ensemble(spec: CheckpointSpec, cache_dir: Path, trust: bool) -> LoadedCheckpoint:
    preprocess = check_ensemble(spec, trust=trust)
    members = [load_checkpoint(m, cache_dir=cache_dir, trust=trust) for m in spec.members]
    net = ensembles.Ensemble([m.net for m in members], spec.combine, [m.net_key for m in members]).eval()
    digest = ensembles.ensemble_fingerprint(spec.combine, [m.weights_sha256 for m in members])
    notes = [f"ensemble ({spec.combine}) of {len(members)} members: {', '.join(m.spec.id for m in members)}"]
    for m in members:
        notes.append(f"member {m.spec.id!r}: fingerprint {m.weights_sha256}")
        notes.extend(f"member {m.spec.id!r}: {n}" for n in m.notes)
    return LoadedCheckpoint(spec, net, preprocess, spec_num_classes(spec), spec.labels, digest, notes)


def _load_one(spec: CheckpointSpec, cache_dir: Path, trust: bool) -> LoadedCheckpoint:
    """One network with its weights (no ensemble, no wrappers): :func:`load_checkpoint`'s path."""
    num_classes = spec_num_classes(spec)
    check_arch(spec, trust=trust)
    preprocess = resolve_preprocess(spec, trust=trust)
    family, name = architectures.split(spec.arch, spec.id)
    parts = weight_parts(spec)
    single = len(parts) == 1
    resolved = [_resolve_part(spec, part, Path(cache_dir), trust) for part in parts]
    chains = [_adapters.parse_adapters(part.adapter, spec.id) for part in parts]
    digests = [digest for _, digest in resolved]
    digest = digests[0] if single else combined_sha256(digests)

    def label(n: int) -> str:
        return "" if single else f"part {n} "

    notes: list[str] = []
    for n, (rw, d) in enumerate(resolved, start=1):
        notes += [f"{label(n)}weights: {rw.description}", f"{label(n)}sha256: {d}"]
    if not single:
        notes.insert(0, f"sha256 of the {len(digests)} parts' sha256s: {digest}")
    if single and family.native_load(spec, resolved[0][0].source, chains[0]):
        rw = resolved[0][0]
        sd = {} if family.reads_file_natively(rw) else _read_state_dict(spec, rw, chains[0], trust, notes, "")
        net = family.load_native(spec, rw, sd, num_classes)
        notes.append(
            f"loaded by {family.family}'s own pretrained loader (its checkpoint filter applies; strict)"
        )
    else:
        net = build_arch(spec, num_classes, trust=trust)
        model_sd = net.state_dict()
        merged: dict[str, torch.Tensor] = {}
        owner: dict[str, int] = {}
        for n, ((rw, _), adapters) in enumerate(zip(resolved, chains, strict=True), start=1):
            sd = _read_state_dict(spec, rw, adapters, trust, notes, label(n))
            sd, fix_notes = family.fix_state_dict(name, rw.source, sd)
            notes.extend(label(n) + f for f in fix_notes)
            sd, adapter_notes = _adapters.apply_adapters(sd, adapters, model_sd, spec.id)
            notes.extend(f"{label(n)}adapter {a}" for a in adapter_notes)
            clash = [k for k in sd if k in merged]
            if clash:
                raise CheckpointError(
                    f"checkpoint {spec.id!r}: parts {owner[clash[0]]} and {n} both hold {len(clash)} keys "
                    f"{_fmt_keys(clash)}; each key must come from one part (drop it from one with drop:<regex>)"
                )
            merged.update(sd)
            owner.update(dict.fromkeys(sd, n))
            del sd
        strict_load(net, merged, spec, notes)
    net.eval()
    return LoadedCheckpoint(spec, net, preprocess, num_classes, spec.labels, digest, notes)


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
