"""Architecture families: the ``<family>:<name>`` of a checkpoint's ``arch`` (entry-point group
``biasbench.architectures``).

A family is an :class:`ArchitectureFamily` subclass in one module, declared with one entry-point line
exactly like ours in ``pyproject.toml``::

    [project.entry-points."biasbench.architectures"]
    open-clip = "my_package.open_clip_family:OpenClip"

It answers what a registry entry needs: does a model name exist (:meth:`~ArchitectureFamily.problem`),
build it with a class count and random weights (:meth:`~ArchitectureFamily.build`), its own pretrained
weights when an entry gives none (:meth:`~ArchitectureFamily.default_weights`, a ``weights`` string of
any source), its preprocessing when an entry gives none (:meth:`~ArchitectureFamily.preprocess`), and
optionally a native loader for its own weights (timm's pretrained loader) and a fix of its own weight
files' keys (torchvision's DenseNet). Ours, one module each under :mod:`biasbench.registry.arch_families`:

=======================  ====================================================================
``timm:<name>``          ``timm.create_model(name, pretrained=False, num_classes=…)``
``torchvision:<name>``   ``torchvision.models.get_model(name, weights=None, num_classes=…)``
``zoo:<name>``           the demo mini zoo's ``ARCHITECTURES[name](num_classes)``
``python:<module>:<fn>`` a lab's own constructor ``fn(num_classes=…)`` (runs code: only trusted);
``python:<name>``        a module handed to ``biasbench.evaluate`` in this process
=======================  ====================================================================

Every failure is a :class:`~biasbench.registry.spec.CheckpointError` naming the checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from biasbench.core.plugins import PluginError, PluginRegistry, Provider, first_paragraph
from biasbench.core.preprocess import Preprocess
from biasbench.registry.spec import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from biasbench.registry.sources import ResolvedWeights, WeightSource
    from biasbench.registry.spec import CheckpointSpec

GROUP = "biasbench.architectures"


class ArchitectureFamily:
    """An architecture family plugin; ``family`` is its entry-point name (``timm`` for ``timm:<name>``).
    ``syntax`` and the class docstring's first line are shown in listings and errors. ``runs_code``:
    building (or checking) a name runs code the registry names (only with ``--trust-checkpoints``)."""

    family: ClassVar[str] = ""
    syntax: ClassVar[str] = ""

    def problem(self, name: str, *, trust: bool = False) -> str | None:
        """Why ``name`` is not an architecture of this family (``None``: it is), e.g. ``"unknown timm
        architecture 'x'; did you mean …"`` — checked before anything is downloaded."""
        return None

    def build(self, name: str, num_classes: int, checkpoint_id: str, *, trust: bool = False) -> nn.Module:
        """The architecture with random weights and ``num_classes`` outputs."""
        raise NotImplementedError

    def default_weights(self, name: str, checkpoint_id: str) -> str:
        """The family's own pretrained weights for ``name`` as a ``weights`` string, for an entry that
        gives none; a :class:`CheckpointError` when there are none."""
        raise CheckpointError(
            f'checkpoint {checkpoint_id!r}: a {self.family} architecture needs explicit weights (weights = "…")'
        )

    def default_labels(self, name: str) -> str:
        """The label space of a bare ``ARCH@WEIGHTS`` target of this family (a registry entry names its
        own with ``labels``); default ``imagenet-1k``."""
        return "imagenet-1k"

    def preprocess(self, name: str, weights: str | None, checkpoint_id: str) -> Preprocess:
        """The preprocessing for an entry that gives none (``weights``: the entry's, if any); default
        the classic ImageNet recipe (256 / 224, bilinear)."""
        return Preprocess()

    def native_load(
        self,
        spec: CheckpointSpec,
        source: WeightSource,
        adapters: list[Any],
    ) -> bool:
        """Whether :meth:`load_native` loads these weights (the family's own, no adapters) instead of a
        strict load into :meth:`build`'s module."""
        return False

    def load_native(
        self, spec: CheckpointSpec, rw: ResolvedWeights, sd: dict[str, torch.Tensor], num_classes: int
    ) -> nn.Module:
        raise NotImplementedError

    def reads_file_natively(self, rw: ResolvedWeights) -> bool:
        """A native load that reads the file itself (no state dict read by us first, e.g. ``.npz``)."""
        return False

    def fix_state_dict(
        self, name: str, source: WeightSource, sd: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The family's own fix of its own weight files' keys (before the adapters), with notes."""
        return sd, []

    @classmethod
    def summary(cls) -> str:
        return first_paragraph(cls.__doc__)


def _check(name: str, obj: Any, p: Provider) -> ArchitectureFamily:
    if not (isinstance(obj, type) and issubclass(obj, ArchitectureFamily)):
        raise PluginError(
            f"architecture family {name!r} from {p.provider}: {p.target} is not an ArchitectureFamily subclass"
        )
    if name != obj.family:
        raise PluginError(
            f"architecture entry point {name!r} from {p.provider} points to {p.target}, family {obj.family!r}"
        )
    return obj()


#: Every installed architecture family, by name.
ARCHITECTURES: PluginRegistry[ArchitectureFamily] = PluginRegistry("architecture family", GROUP, _check)


def families() -> list[str]:
    return ARCHITECTURES.names()


def syntax_hint() -> str:
    """``timm:<name>, torchvision:<name>, …`` — what an ``arch`` may be."""
    return ", ".join(ARCHITECTURES.get(f).syntax or f"{f}:<name>" for f in families())


def split(arch: str, checkpoint_id: str) -> tuple[ArchitectureFamily, str]:
    """``"timm:resnet50"`` -> (the timm family, ``"resnet50"``); an unknown family is an error."""
    family, sep, name = arch.partition(":")
    if not sep or not name or family not in ARCHITECTURES.providers():
        raise CheckpointError(f"checkpoint {checkpoint_id!r}: unknown arch {arch!r}; write {syntax_hint()}")
    return ARCHITECTURES.get(family), name
