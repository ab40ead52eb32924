"""The cyclic garbage collector and the objects a run keeps for its whole life.

A process that has imported torch, timm, scipy and pandas tracks ~470 k container objects (modules,
functions, classes, sympy's tables), nearly all of them alive until it exits. Every full collection
of the cyclic collector walks all of them: on the 2-core development machine one checkpoint's run
(every metric, one process) made 8 full collections, 1.1 s, and the interpreter's last collection as
it exits took 2.2–2.7 s after the run had printed its last line (``gc_collect_main`` in a native
profile). :func:`gc.freeze` moves every object alive into a permanent generation that collections
skip; reference counting still frees them as usual.

* :func:`frozen_heap` — around a run's execution (``session.execute_recorded``) and a worker process's
  life: its full collections walk only what the run allocates. It unfreezes at the end, so a notebook
  that called :func:`biasbench.run` has its own objects collected as before; a process that freezes
  its heap itself is left alone.
* :func:`skip_final_collection` — the `bench` command, as it returns: the interpreter's last collection
  finds nothing to walk (2.7 s → 0.5 s from ``atexit`` to the process's end, measured with torch, timm
  and biasbench imported). Nothing of ours relies on that collection: the database, item files and
  caches are closed by ``with`` blocks before the command returns, and standard output and error are
  flushed by the interpreter itself.

Neither changes a computed value: only when unreachable cycles are found.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze every object alive now for the block, unfreeze after; nothing when the process has
    frozen objects already (it manages :func:`gc.freeze` itself)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def skip_final_collection() -> None:
    """For a process about to exit: freeze every object, so the interpreter's last collection skips
    them all."""
    gc.freeze()
