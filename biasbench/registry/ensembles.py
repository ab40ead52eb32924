"""Ensembles as checkpoints: several registry entries evaluated as one model.

Definition (the MeanEnsemble of Carter et al., "Overinterpretation reveals image classification model
pathologies", NeurIPS 2021): for members with logits :math:`z_1(x), …, z_M(x)` over the same label
space, the ensemble's class probabilities are the mean of the members' softmax probabilities,

.. math::  p(x) = \\frac{1}{M} \\sum_{m=1}^{M} \\operatorname{softmax}(z_m(x)).

Every metric takes logits, so the ensemble returns :math:`\\log p(x)` (computed as
``logsumexp_m log_softmax(z_m) − log M``, which never takes the log of an underflowed 0). These are
valid logits of the ensemble: ``softmax(log p) = p`` because :math:`\\sum_k p_k = 1`, and the argmax is
that of ``p``; so accuracy, confidence (the softmax maximum), SIS's class probability and PGD's loss
are those of the mean-probability ensemble. ``combine = "mean-logits"`` is the other rule: the mean of
the members' logits, :math:`\\bar z(x) = \\frac{1}{M}\\sum_m z_m(x)` (softmax of the mean logits, not
the mean of the probabilities).

Registry syntax (:mod:`biasbench.registry.registry_files`)::

    [[checkpoint]]
    id = "zoo-ensemble"
    ensemble = ["zoo-plain", "zoo-blur", "zoo-mixup"]   # ids of entries resolved together, or inline tables
    combine = "mean-probs"                              # default; or "mean-logits"

Members are loaded by the normal path (:func:`biasbench.registry.loading.load_checkpoint`) and must
share one label space (``labels``, class count) and one preprocessing (resize, crop, mean, std,
interpolation): the ensemble sees one image tensor, normalised once by the model wrapper. A member
that differs is refused with an :class:`EnsembleError` naming it and the field.

Identity: an ensemble's weight fingerprint is the sha256 of ``{"combine": <rule>, "members": [<the
members' fingerprints, sorted>]}`` (:func:`ensemble_fingerprint`). Both rules are means, which do not
depend on the members' order, so the fingerprints are sorted: reordering the members keeps every stored
result; another member (other bytes, other wrappers) or another rule is another checkpoint. A member's
fingerprint is its own weight fingerprint (a wrapped member's includes its wrappers); the shared
preprocessing and label space are part of every job's key as for any checkpoint.

The module is differentiable (SIS's gradients, PGD), holds its members as submodules (``.to()``,
``eval()``, channels_last reach them), and has no parameters of its own.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from biasbench.core.preprocess import Preprocess
from biasbench.registry.spec import CheckpointError

#: The combination rules: ``mean-probs`` (default, the study's MeanEnsemble) and ``mean-logits``.
COMBINE_RULES = ("mean-probs", "mean-logits")
DEFAULT_COMBINE = "mean-probs"


class EnsembleError(CheckpointError):
    """An ensemble cannot be built: a member differs from the others in its label space or its
    preprocessing, or an unknown rule (the message names the ensemble, the member and the field)."""


def check_combine(combine: Any, ensemble_id: str) -> str:
    """``combine`` when it is a known rule; an :class:`EnsembleError` otherwise."""
    if not isinstance(combine, str) or combine not in COMBINE_RULES:
        raise EnsembleError(
            f"ensemble {ensemble_id!r}: combine must be one of {', '.join(COMBINE_RULES)}, got {combine!r}"
        )
    return combine


@dataclass(frozen=True)
class MemberFacts:
    """What every member of an ensemble must share: its label space, class count and (once resolved)
    preprocessing (``None``: not compared, e.g. while a registry file is parsed)."""

    id: str
    labels: str
    num_classes: int | None
    preprocess: Preprocess | None = None


def check_members(ensemble_id: str, members: Sequence[MemberFacts]) -> None:
    """Refuse members that do not share the first member's label space, class count and
    preprocessing: an :class:`EnsembleError` naming the ensemble, the differing member and the field."""
    if len(members) < 2:
        raise EnsembleError(f"ensemble {ensemble_id!r}: an ensemble needs at least two members")
    first = members[0]
    for m in members[1:]:
        diffs: list[tuple[str, Any, Any]] = []
        if m.labels != first.labels:
            diffs.append(("labels", m.labels, first.labels))
        elif None not in (m.num_classes, first.num_classes) and m.num_classes != first.num_classes:
            diffs.append(("num_classes", m.num_classes, first.num_classes))
        if m.preprocess is not None and first.preprocess is not None:
            mine, theirs = m.preprocess.to_json(), first.preprocess.to_json()
            diffs += [(f"preprocess.{k}", mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]]
        if diffs:
            field, got, want = diffs[0]
            raise EnsembleError(
                f"ensemble {ensemble_id!r}: member {m.id!r} has {field} = {got!r}, but member {first.id!r} "
                f"has {want!r}; every member must share one label space and one preprocessing (input size, "
                f"mean/std, interpolation, crop)"
            )


def ensemble_fingerprint(combine: str, member_fingerprints: Sequence[str]) -> str:
    """The ensemble's weight fingerprint: sha256 of the canonical JSON of the rule and the members'
    fingerprints, sorted (the mean does not depend on the order; duplicates count)."""
    blob = json.dumps(
        {"combine": combine, "members": sorted(member_fingerprints)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def combine_outputs(outputs: Sequence[torch.Tensor], combine: str) -> torch.Tensor:
    """The members' logits (each (N, C)) combined: ``mean-probs`` -> log of the mean of the softmax
    probabilities; ``mean-logits`` -> the mean of the logits."""
    outs = list(outputs)
    if len({o.dtype for o in outs}) > 1:  # members of different kinds under autocast: one common dtype
        dtype = outs[0].dtype
        for o in outs[1:]:
            dtype = torch.promote_types(dtype, o.dtype)
        outs = [o.to(dtype) for o in outs]
    stacked = torch.stack(outs)
    if combine == "mean-logits":
        return stacked.mean(dim=0)
    return torch.logsumexp(torch.log_softmax(stacked, dim=-1), dim=0) - math.log(len(outputs))


class Ensemble(nn.Module):
    """The members' outputs on the same (normalised) input, combined by ``combine``: ``mean-probs``
    returns the log of the mean of the members' softmax probabilities (its softmax *is* that mean, its
    argmax that of the mean), ``mean-logits`` the mean of their logits. See the module docstring."""

    def __init__(
        self,
        members: Sequence[nn.Module],
        combine: str = DEFAULT_COMBINE,
        member_keys: Sequence[str | None] | None = None,
    ) -> None:
        super().__init__()
        if len(members) < 1:
            raise EnsembleError("an ensemble needs members")
        self.members = nn.ModuleList(members)
        self.combine = check_combine(combine, "ensemble")
        #: each member's network identity (``LoadedCheckpoint.net_key``; None: unknown or wrapped), by
        #: which the harness serves a member's forward that its own checkpoint ran before
        #: (:mod:`biasbench.harness.forward_memo`)
        self.member_keys: tuple[str | None, ...] = tuple(member_keys or (None,) * len(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine_outputs([_logits(m(x)) for m in self.members], self.combine)

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}, members={len(self.members)}"
