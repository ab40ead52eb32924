"""Checkpoint specifications: what is benchmarked, as data (README, "Adding checkpoints")."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from biasbench.core.errors import StateError
from biasbench.core.preprocess import Preprocess


@dataclass(frozen=True)
class WeightPart:
    """One file of a multi-file checkpoint (``weights = [{ source = …, sha256 = …, adapter = […] }, …]``):
    its weight source, its pin and the adapter chain that unwraps it before the parts are merged."""

    weights: str
    sha256: str | None = None
    adapter: tuple[str, ...] = ()


@dataclass(frozen=True)
class WrapperSpec:
    """One inference-time wrapper of a checkpoint (``wrap = [{ kind = "input-dropout", keep = 0.8 }]``):
    its ``kind`` (a key of :data:`biasbench.registry.wrappers.WRAPPERS`) and every parameter, defaults
    filled in, as sorted ``(name, value)`` pairs, so that a parameter left at its default and one
    written out give the same identity (:mod:`biasbench.registry.wrappers`)."""

    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"kind": …, <param>: <value>, …}``: what the checkpoint's fingerprint hashes."""
        return {"kind": self.kind, **dict(self.params)}

    def describe(self) -> str:
        """``input-dropout(keep=0.8, samples=4, seed=0)``."""
        return f"{self.kind}({', '.join(f'{k}={v}' for k, v in self.params)})"


#: The ``arch`` of an ensemble entry (it has no architecture of its own; its members have).
ENSEMBLE_ARCH = "ensemble"


@dataclass(frozen=True)
class CheckpointSpec:
    """One checkpoint as declared in a registry file (or built from a bare command-line target).

    ``arch``: ``timm:<name>``, ``torchvision:<name>`` or ``zoo:<name>``.
    ``weights``: ``timm:<name>[.<tag>]``, ``torchvision:<WeightsEnum>``, a local path, ``https://…``
    (``sha256`` required), ``hf-hub:<repo>/<file>``, ``package:<module>:<attr>``, ``zoo:<name>``, or
    ``None`` for an architecture's own pretrained weights.
    ``adapter``: named state-dict transforms applied in order (``strip-prefix:X``, ``rename:A=B``,
    ``by-position``, ``drop:regex``); loading is strict.
    ``preprocess``: ``None`` = defaults from the architecture (timm's data config).
    ``source``: where it was declared (``file.toml:[[checkpoint]] #3`` or ``command line``).
    ``parts``: a multi-file checkpoint (``weights``, ``sha256`` and ``adapter`` are then unset): each
    part is read and adapted on its own, the parts are merged (a key in two parts is an error) and
    loaded strictly once.
    ``registry``: the registry file it came from (its lock file sits beside it; None on the command line).
    ``members``: an ensemble (``ensemble = ["id1", "id2", …]``): the member checkpoints, each loaded
    on its own; ``arch`` is then :data:`ENSEMBLE_ARCH` and the entry names no weights. ``combine``:
    how the members' outputs are combined (``mean-probs`` or ``mean-logits``,
    :mod:`biasbench.registry.ensembles`; ignored without members).
    ``wrap``: inference-time wrappers around the network, innermost first
    (:mod:`biasbench.registry.wrappers`); part of the checkpoint's fingerprint.
    """

    id: str
    arch: str
    weights: str | None = None
    sha256: str | None = None
    adapter: tuple[str, ...] = ()
    preprocess: Preprocess | None = None
    labels: str = "imagenet-1k"
    num_classes: int | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    source: str = "command line"
    parts: tuple[WeightPart, ...] = ()
    registry: str | None = None
    members: tuple[CheckpointSpec, ...] = ()
    combine: str = "mean-probs"
    wrap: tuple[WrapperSpec, ...] = ()

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    def declared_parts(self) -> list[WeightPart]:
        """The files the entry declares: its ``parts``, or one part of its ``weights`` (none when it
        names no weights: the architecture's own pretrained weights, filled in when loading)."""
        if self.parts:
            return list(self.parts)
        return [WeightPart(self.weights, self.sha256, self.adapter)] if self.weights else []

    def weights_text(self) -> str | None:
        """The weights as one string: ``weights``, or the parts' sources joined by `` + ``; an ensemble:
        ``ensemble mean-probs of a + b + c``; wrappers follow as `` | wrap input-dropout(keep=0.8, …)``."""
        if self.members:
            text: str | None = f"ensemble {self.combine} of {' + '.join(m.id for m in self.members)}"
        else:
            text = " + ".join(p.weights for p in self.parts) if self.parts else self.weights
        if self.wrap:
            wraps = ", ".join(w.describe() for w in self.wrap)
            text = f"{text or '(the architecture’s own pretrained weights)'} | wrap {wraps}"
        return text

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "arch": self.arch,
            "weights": self.weights_text(),
            "labels": self.labels,
            "tags": json.dumps(self.tags, sort_keys=True),
            "source": self.source,
        }


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to run: the network with its weights, the resolved preprocessing, and the
    identity of the weight bytes. ``notes`` say where the weights came from, which nested-dict rule
    found the state dict, and what each adapter did."""

    spec: CheckpointSpec
    net: nn.Module
    preprocess: Preprocess
    num_classes: int
    label_space: str
    weights_sha256: str
    #: How the weights were found and adapted (source, nested-dict rule, adapters), for logs and reports.
    notes: list[str] = field(default_factory=list)

    @property
    def net_key(self) -> str | None:
        """What identifies the network itself (architecture, weight fingerprint, class count): two
        checkpoints with the same key compute the same outputs from the same (normalised) input. None
        for an ensemble or a wrapped checkpoint (a wrapper may draw random masks on every call)."""
        if self.spec.members or self.spec.wrap:
            return None
        return f"{self.spec.arch}|{self.weights_sha256}|{self.num_classes}"

    @property
    def identity(self) -> str:
        """sha256 of the weight bytes plus the resolved preprocessing (README, "Adding checkpoints"). For an
        ensemble or a wrapped checkpoint ``weights_sha256`` is the fingerprint derived from its members'
        and wrappers' (:func:`biasbench.registry.ensembles.ensemble_fingerprint`,
        :func:`biasbench.registry.wrappers.wrapped_fingerprint`)."""
        blob = json.dumps({"w": self.weights_sha256, "p": self.preprocess.to_json()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


class CheckpointError(StateError):
    """A checkpoint could not be resolved or loaded (the message names the checkpoint and why)."""
