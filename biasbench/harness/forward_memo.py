"""An ensemble's members reuse the forwards their own checkpoints ran earlier in the same run.

An ensemble whose members are also checkpoints of the run (the demo's ``zoo-ensemble-plain-noise-mixup``
of ``zoo-plain``, ``zoo-gaussian-noise`` and ``zoo-mixup``) would run each member again on exactly the
inputs that member's own jobs already saw: the test split, the cue-conflict images, every critical-band
and spectral condition, the corruption cells — inputs that do not depend on the model. The memo keeps
the outputs of those members' own inference forwards, keyed by the network (architecture, weight
fingerprint, class count) and the exact input (the sha256 of its bytes, with its shape, dtype and
memory layout, the thread count and autocast), and serves the ensemble's member calls on equal inputs
from it: the same values the member would compute again, since a forward on the CPU is deterministic
for a given input, layout and thread count (the inputs the model itself shapes, such as PGD's
adversarial steps or SIS masks, miss and run as before).

Only inference-mode forwards are kept and served (``EvalContext.predict``'s); anything under autograd runs
as usual. Only networks without wrappers take part (a wrapper may be stochastic: the input-dropout
wrapper draws new masks on every call). On CUDA the memo is off: copying a batch to the host to hash it
costs about what a forward does there. Outputs are kept up to :data:`MAX_BYTES` (the demo's three members
keep ~3 MB), then no more are added.

``jobs.timings`` of a job whose model had forwards served records their images in
:data:`SHARED_FORWARDS` (net forwards not run; ``benchmarks/demo_floor.py`` subtracts them from the work).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from biasbench.core.hashing import tensor_sha256
from biasbench.registry.ensembles import Ensemble
from biasbench.registry.spec import CheckpointSpec, LoadedCheckpoint

#: the outputs the memo keeps at most (bytes)
MAX_BYTES = 256 * 2**20
#: ``jobs.timings`` key: member-images a job's model took from the memo instead of running the member
SHARED_FORWARDS = "run.shared_forwards"


def shared_member_ids(specs: list[CheckpointSpec]) -> set[str]:
    """The ids of the checkpoints among ``specs`` that are also unwrapped members of an ensemble among
    them: their own jobs record their forwards for the ensemble."""
    own = {s.id for s in specs if not s.members and not s.wrap}
    members = {m.id for s in specs for m in s.members if not m.members and not m.wrap}
    return own & members


class ForwardMemo:
    """Inference outputs per (network, exact input); see the module docstring."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._out: dict[tuple[Any, ...], torch.Tensor] = {}
        self._bytes = 0
        self._recorded: set[str] = set()  # the networks whose own forwards are recorded
        self._last: tuple[weakref.ref[torch.Tensor], int, str] | None = None
        self.served = 0  # images served since :meth:`take_served`

    def _digest(self, x: torch.Tensor) -> str:
        """The digest of ``x``'s bytes. An ensemble's members get the same tensor (the model wrapper's
        freshly normalised input), so the digest of the tensor last hashed is reused while that very
        tensor is alive (and, outside inference mode, unchanged)."""
        last = self._last
        version = -1 if x.is_inference() else x._version  # inference tensors have no version counter
        if last is not None and last[0]() is x and last[1] == version:
            return last[2]
        t = x.detach()
        if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last):
            t = t.permute(0, 2, 3, 1)  # contiguous: no copy
        digest = tensor_sha256(t)
        self._last = (weakref.ref(x), version, digest)
        return digest

    def key(self, net: str, x: torch.Tensor) -> tuple[Any, ...] | None:
        """The memo key of ``net``'s forward on ``x``; None where the memo does not apply."""
        if x.device.type != "cpu" or not torch.is_inference_mode_enabled() or x.requires_grad:
            return None
        channels_last = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)
        return (
            net,
            self._digest(x),
            tuple(x.shape),
            x.dtype,
            channels_last,
            torch.get_num_threads(),
            torch.is_autocast_enabled("cpu"),
        )

    def get(self, key: tuple[Any, ...], images: int) -> torch.Tensor | None:
        out = self._out.get(key)
        if out is None:
            return None
        self.served += images
        return out.clone()

    def put(self, key: tuple[Any, ...], out: torch.Tensor) -> None:
        size = out.numel() * out.element_size()
        if key in self._out or self._bytes + size > self.max_bytes:
            return
        self._out[key] = out.detach().clone()
        self._bytes += size

    def take_served(self) -> int:
        """Images served since the last call (the job that just ran)."""
        served, self.served = self.served, 0
        return served

    def attach(self, loaded: LoadedCheckpoint, model: nn.Module, record: bool) -> None:
        """Route ``model``'s network through the memo: record its own forwards (``record``: an
        ensemble of the run has it as a member) and serve an ensemble's members that were recorded."""
        key = loaded.net_key
        if record and key is not None and hasattr(model, "net"):
            model.net = MemoNet(model.net, key, self, record=True)
            self._recorded.add(key)
        if isinstance(loaded.net, Ensemble):
            for i, member_key in enumerate(loaded.net.member_keys):
                if member_key in self._recorded:
                    loaded.net.members[i] = MemoNet(loaded.net.members[i], member_key, self, record=False)


class MemoNet(nn.Module):
    """``net`` whose inference forwards go through a :class:`ForwardMemo`: recorded (its own
    checkpoint's jobs) or served when recorded before (an ensemble's member)."""

    def __init__(self, net: nn.Module, key: str, memo: ForwardMemo, record: bool) -> None:
        super().__init__()
        self.net, self.key, self.record = net, key, record
        self._memo = memo  # not a submodule

    def forward(self, x: torch.Tensor) -> Any:
        key = self._memo.key(self.key, x)
        if key is None:
            return self.net(x)
        if not self.record:
            hit = self._memo.get(key, x.shape[0])
            if hit is not None:
                return hit
            return self.net(x)
        out = self.net(x)
        if isinstance(out, torch.Tensor):
            self._memo.put(key, out)
        return out
