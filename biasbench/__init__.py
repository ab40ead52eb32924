"""biasbench: benchmark image-classifier checkpoints for their biases and their generalization.

The Python API (what ``bench`` itself calls; see the README, "Using biasbench from Python"):

* :func:`run` — targets × metrics into a results database, exactly as ``bench run``;
* :func:`evaluate` — a ``torch.nn.Module`` that exists only in this process;
* :func:`results` — the stored long table (checkpoint, metric, key, value, n).

Importing ``biasbench`` loads nothing heavy; the API is imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Results", "RunOptions", "RunSummary", "evaluate", "results", "run"]


def __getattr__(name: str) -> Any:
    if name in ("run", "evaluate", "results", "Results", "RunOptions"):
        from biasbench.harness import session

        return getattr(session, name)
    if name == "RunSummary":
        from biasbench.harness.executor import RunSummary

        return RunSummary
    raise AttributeError(f"module 'biasbench' has no attribute {name!r}")
