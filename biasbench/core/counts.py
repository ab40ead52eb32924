"""Whole-number settings: ``auto`` or a count (``--group``, ``--workers``), counts from environment
variables (``$BIASBENCH_THREADS``, ``$BIASBENCH_WORKERS``), and the CPUs this process may use."""

from __future__ import annotations

import os

from biasbench.core.errors import InputError


def auto_or_int(text: str | int) -> int | str | None:
    """``"auto"`` (any case), a whole number (the caller checks its range), or None when ``text`` is
    neither."""
    if isinstance(text, int):
        return text
    t = str(text).strip()
    if t.lstrip("-").isdigit():
        return int(t)
    return "auto" if t.lower() == "auto" else None


def env_count(name: str) -> int | None:
    """The environment variable ``name`` as a whole number ≥ 1, or None when unset or empty."""
    env = os.environ.get(name)
    if not env:
        return None
    try:
        n = int(env)
    except ValueError as e:
        raise InputError(f"{name}={env!r} is not a whole number") from e
    if n < 1:
        raise InputError(f"{name}={env!r} must be ≥ 1")
    return n


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
