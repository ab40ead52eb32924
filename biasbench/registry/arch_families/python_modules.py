"""``python:<module>:<callable>`` — a lab's own architecture, built by ``callable(num_classes=N)`` from an
importable module (no package, no entry point needed); and ``python:<name>`` — a module handed to
``biasbench.evaluate`` in this process (:mod:`biasbench.registry.in_memory`).

Importing a module named by a registry runs its code, so ``python:<module>:<callable>`` is refused
unless the run trusts its checkpoints (``--trust-checkpoints``, ``trust_checkpoints=True``), exactly
like ``package:`` weights. Its weights must be given (a file, a URL, …) and load strictly; its
preprocessing is the entry's, else the classic ImageNet recipe.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from biasbench.core.plugins import import_target
from biasbench.registry import in_memory
from biasbench.registry.architectures import ArchitectureFamily
from biasbench.registry.spec import CheckpointError


def _untrusted(name: str) -> str:
    return (
        f"arch 'python:{name}' runs the code of {name.partition(':')[0]!r}; pass --trust-checkpoints "
        "(trust_checkpoints=True in Python) to allow it, or make it an architecture family plugin"
    )


def _constructor(name: str, checkpoint_id: str) -> Any:
    try:
        fn = import_target(name)
    except Exception as e:  # noqa: BLE001 - an import runs arbitrary code
        raise CheckpointError(
            f"checkpoint {checkpoint_id!r}: cannot import arch 'python:{name}': {type(e).__name__}: {e}"
        ) from e
    if not callable(fn):
        raise CheckpointError(f"checkpoint {checkpoint_id!r}: arch 'python:{name}' is not callable")
    return fn


class Python(ArchitectureFamily):
    """A constructor of your own, python:<module>:<callable> (trusted runs only), or a module handed to
    biasbench.evaluate, python:<name>."""

    family = "python"
    syntax = "python:<module>:<callable>"

    def problem(self, name: str, *, trust: bool = False) -> str | None:
        if ":" not in name:
            return in_memory.missing_problem(name)
        return None if trust else _untrusted(name)

    def build(self, name: str, num_classes: int, checkpoint_id: str, *, trust: bool = False) -> nn.Module:
        if ":" not in name:  # the caller's module, copied; its class count is checked on its outputs
            return in_memory.build(name, checkpoint_id)
        if not trust:
            raise CheckpointError(f"checkpoint {checkpoint_id!r}: {_untrusted(name)}")
        net = _constructor(name, checkpoint_id)(num_classes=num_classes)
        if not isinstance(net, nn.Module):
            raise CheckpointError(
                f"checkpoint {checkpoint_id!r}: arch 'python:{name}' returned a {type(net).__name__}, "
                "not a torch.nn.Module"
            )
        return net

    def default_weights(self, name: str, checkpoint_id: str) -> str:
        if ":" not in name:
            return f"{in_memory.SCHEME}:{name}"
        return super().default_weights(name, checkpoint_id)
