"""The last module the fork server of a run's workers preloads (:mod:`biasbench.harness.process_start`).

Imported by that server — while ``multiprocessing.forkserver.main`` runs its preloads — it makes the
server end with ``os._exit`` when its interpreter exits (the run's process has ended and closed the
server's pipe): a normal exit would first tear down the torch, timm and scipy it preloaded, ~2 s during
which the server still holds the run's stdout and stderr, so ``bench run … | tee log`` (or a caller
reading its output) waited that long after the run had ended. The server holds no file, lock or
database to close; its workers are forked and never run its exit handlers. Being the last preload, it
also freezes the server's heap (:mod:`biasbench.harness.heap`): each worker forks with every preloaded
object out of its collector's full passes (and their pages shared with the server, not copied by a
collection's writes). Imported anywhere else (a test that imports every module), it does nothing.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys


def _in_fork_server() -> bool:
    """Whether this import runs inside ``multiprocessing.forkserver.main`` (the server's preloads)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back
    return False


if _in_fork_server():
    atexit.register(os._exit, 0)
    gc.freeze()
