"""``bench run --compile``: the models' inference forwards through ``torch.compile`` (inductor).

**What is compiled.** Only the harness's plain inference path: the forwards that
:meth:`~biasbench.metrics.base.EvalContext.predict` and ``predict_group`` make (inference mode, the
float32 or bf16-autocast batches of accuracy, the OOD sets, corruption cells, spectral and
critical-band conditions) call :meth:`ModelWrapper.infer <biasbench.metrics.base.ModelWrapper.infer>`,
which runs the compiled network when gradients are off and the input is not float64. Every other call
runs the eager module, unchanged: gradients (PGD inside ``ood``, SIS's backward selection),
``sis precision=fp64`` (a float64 model and input), and any metric that calls ``model(x)`` itself. So
compile never meets autograd or a dtype switch, and a metric that needs either works as without it.

**Mode.** Inductor's ``default`` mode: fused kernels, no autotuning. ``max-autotune`` benchmarks
kernel choices while compiling (minutes per architecture and input shape, for a few per cent on a
GPU); ``reduce-overhead`` records CUDA graphs, which pin a static memory pool per model and input shape
(K models of a group × the shapes of a run) and do nothing on the CPU.

**Warm-up amortised over a group.** Each checkpoint's network gets its own ``torch.compile`` wrapper,
but dynamo caches compiled code per Python code object (the architecture class's ``forward``) and
inlines nn modules with their parameters as graph inputs, so checkpoints of one architecture share one
graph: verified on torch 2.14.1 by ``torch._dynamo.utils.counters["stats"]["unique_graphs"]`` staying
at 1 for 4 resnet18 instances (the first call 23.5 s, each of the others 0.11 s, on one CPU thread), and
pinned by ``tests/test_compile.py``; the graph holds no reference to the models, so a released group
is freed.
The first batch of another size (a run's last, partial batch) recompiles once with a dynamic batch
dimension (automatic dynamic shapes); later sizes reuse it. Dynamo keeps at most
``torch._dynamo.config.recompile_limit`` (8) variants per code object; past that (a run of many
configurations of one class) it runs the eager code, with torch's own warning.

**Why off by default** (``benchmarks/compile_vs_eager.py``: resnet18 × 4, 300 photos, one CPU
thread): a compiled pass is 1.17× faster, but the first run's warm-up (29 s with an empty inductor
cache) makes the group 0.61× of eager; with inductor's on-disk cache warm (a later process) 1.11×. It
pays for long runs (the full study), not for a first small one.

**Results** equal the eager ones up to float reassociation in fused kernels: logits within
:data:`LOGIT_ATOL` + :data:`LOGIT_RTOL` × |logit| (tested on the CPU), so a metric's argmax can differ
only on a near-tie.

**When compile cannot work.** :func:`check_available` compiles a two-op function on the run's device
before anything loads; if that fails (no C++ compiler for the CPU backend, no Triton for CUDA, a
Python torch.compile does not support) the run ends with one message (:class:`CompileUnavailable`).
A model whose own compile fails later (an inductor error on an unusual layer) runs eagerly from then
on, with a logged warning; its results are the eager ones.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch._dynamo.exc import BackendCompilerFailed

from biasbench.core.errors import StateError
from biasbench.metrics.base import ModelWrapper

log = logging.getLogger(__name__)

#: ``torch.compile`` backend and mode (module docstring: why ``default``)
BACKEND: str | Callable[..., Any] = "inductor"
MODE: str | None = "default"
#: the agreement of compiled and eager logits the tests pin down (float32)
LOGIT_ATOL = 1e-4
LOGIT_RTOL = 1e-4

#: what a backend's compile failure raises (an inductor error is a subclass)
_COMPILE_ERRORS = (BackendCompilerFailed,)


class CompileUnavailable(StateError):
    """``--compile`` was asked for, but ``torch.compile`` does not work here."""


class CompiledNet:
    """A network's compiled forward with an eager fallback: the first compile failure (an inductor
    error) logs a warning and every call from then on runs ``net`` eagerly. Not an ``nn.Module``: the
    wrapper holds it beside its registered ``net`` (no second copy of the parameters in a state dict)."""

    def __init__(self, net: nn.Module, *, label: str, backend: str | Callable[..., Any], mode: str | None):
        self.net, self.label = net, label
        self.compiled: Callable[[torch.Tensor], Any] | None = torch.compile(
            net, backend=backend, **({"mode": mode} if mode is not None and backend == "inductor" else {})
        )

    @property
    def active(self) -> bool:
        """Still compiled (no compile failure fell back to eager)."""
        return self.compiled is not None

    def __call__(self, x: torch.Tensor) -> Any:
        if self.compiled is None:
            return self.net(x)
        try:
            return self.compiled(x)
        except _COMPILE_ERRORS as e:
            log.warning("--compile: %s does not compile (%s); it runs eagerly", self.label, _reason(e))
            self.compiled = None
            return self.net(x)


def compile_model(
    model: ModelWrapper, *, backend: str | Callable[..., Any] | None = None, mode: str | None = None
) -> ModelWrapper:
    """Give ``model`` a compiled inference forward (``model.compiled_net``; see the module for when it
    is used). ``backend`` and ``mode`` default to :data:`BACKEND` and :data:`MODE`. Returns ``model``."""
    model.compiled_net = CompiledNet(
        model.net,
        label=model.checkpoint_id,
        backend=BACKEND if backend is None else backend,
        mode=MODE if mode is None else mode,
    )
    return model


def is_compiled(model: nn.Module) -> bool:
    """``model`` runs its inference forwards compiled (``--compile`` on, no fallback to eager)."""
    compiled = getattr(model, "compiled_net", None)
    return isinstance(compiled, CompiledNet) and compiled.active


def check_available(device: torch.device, backend: str | Callable[..., Any] | None = None) -> None:
    """Raise :class:`CompileUnavailable` with one message if ``torch.compile`` cannot compile and run
    a two-op function on ``device`` (checked once per device and backend in a process)."""
    error = _probe(str(device), BACKEND if backend is None else backend)
    if error is not None:
        raise CompileUnavailable(
            f"--compile: torch.compile does not work on {device} here ({error}); run without --compile"
        )


@functools.cache
def _probe(device: str, backend: str | Callable[..., Any]) -> str | None:
    """``None`` when a compiled ``x * 2 + 1`` gives the right answer on ``device``, else why not."""

    def two_ops(x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1

    try:
        x = torch.arange(4, dtype=torch.float32, device=device)
        got = torch.compile(two_ops, backend=backend)(x)
        if not torch.equal(got, two_ops(x)):
            return "a compiled test function returned wrong values"
    except Exception as e:  # noqa: BLE001 - any failure means: unavailable, with its reason
        return _reason(e)
    return None


def _reason(e: BaseException) -> str:
    """One line: the exception a backend raised (dynamo wraps it), its type and first line."""
    inner: BaseException = e
    if isinstance(e, BackendCompilerFailed):
        inner = getattr(e, "inner_exception", None) or e.__cause__ or e
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__
