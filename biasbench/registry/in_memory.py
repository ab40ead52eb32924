"""Models that exist only in this Python process (``biasbench.evaluate(model)``), as checkpoints.

A module handed over is registered under a checkpoint id; its spec then reads
``arch = "python:<id>"`` and ``weights = "python:<id>"``. The architecture is a deep copy of the module
(the caller's module is never touched: no ``eval()`` on it, no device move), and the weights are its
state dict, loaded strictly into that copy like any file's.

Identity. The weights' fingerprint is :func:`biasbench.registry.sources.state_dict_sha256` of the state
dict **in sorted key order** (each key, then each tensor's dtype, shape and raw bytes), so the same
tensors give the same content keys in any session and results resume like any checkpoint's; the
preprocessing is part of every job's key as for files. The weight source ``python:`` is registered at
run time (it cannot resolve in another process).
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import torch
from torch import nn

from biasbench.registry import sources
from biasbench.registry.spec import CheckpointError

SCHEME = "python"

_MODULES: dict[str, nn.Module] = {}
_LOCK = threading.Lock()


def register_module(name: str, module: nn.Module) -> None:
    """Make ``module`` available as ``python:<name>`` in this process (replacing an earlier one)."""
    if not isinstance(module, nn.Module):
        raise CheckpointError(f"checkpoint {name!r}: expected a torch.nn.Module, got {type(module).__name__}")
    with _LOCK:
        _MODULES[name] = module
        if SCHEME not in sources.SOURCES.providers():
            sources.SOURCES.register(SCHEME, InMemoryModule)


def unregister_module(name: str) -> None:
    """Forget the module registered as ``name`` (it is no longer held by biasbench)."""
    with _LOCK:
        _MODULES.pop(name, None)


def missing_problem(name: str) -> str | None:
    """Why ``python:<name>`` names no module here (``None``: it does)."""
    with _LOCK:
        if name in _MODULES:
            return None
    return (
        f"no in-memory model {name!r} in this process (python:<name> names a model handed to "
        "biasbench.evaluate; it cannot be used from a registry file or another process)"
    )


def registered_module(name: str, checkpoint_id: str) -> nn.Module:
    """The module registered as ``name`` (a :class:`CheckpointError` naming the checkpoint if none)."""
    with _LOCK:
        module = _MODULES.get(name)
    if module is None:
        raise CheckpointError(f"checkpoint {checkpoint_id!r}: {missing_problem(name)}")
    return module


def build(name: str, checkpoint_id: str) -> nn.Module:
    """A deep copy of the registered module, to load the weights into."""
    return copy.deepcopy(registered_module(name, checkpoint_id))


def canonical_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict in sorted key order, detached, on the CPU (what the fingerprint hashes)."""
    sd = module.state_dict()
    return {k: v.detach().to("cpu") for k, v in sorted(sd.items())}


class InMemoryModule(sources.Source):
    """A model that exists only in this Python process (handed to ``biasbench.evaluate``)."""

    scheme = SCHEME
    syntax = "python:<name>"
    self_check = "state-dict hash"
    local = True

    def resolve(
        self, value: str, checkpoint_id: str, *, sha256: str | None, cache_dir: Path
    ) -> sources.ResolvedWeights:
        module = registered_module(value, checkpoint_id)
        return sources.ResolvedWeights(
            sources.WeightSource(self.scheme, value),
            state_dict=canonical_state_dict(module),
            description=f"in-memory model {value!r} (Python, {type(module).__name__})",
        )

    def default_id(self, value: str) -> str:
        return value
