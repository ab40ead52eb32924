"""Facts about where a run happens: versions, git sha, host, device selection."""

from __future__ import annotations

import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from biasbench.core.errors import InputError, StateError


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("biasbench", "torch", "torchvision", "timm", "duckdb", "pandas", "numpy", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_sha() -> str | None:
    """The commit of the biasbench source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def hostname() -> str:
    return socket.gethostname()


DEVICES = ("auto", "cpu", "cuda", "cuda:<N>")


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cpu``; ``cuda`` / ``cuda:N`` (an error without that
    GPU). Any other device type is refused here, not after every job has failed on it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"--device {name!r} is not a device; choose one of {', '.join(DEVICES)}") from e
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name!r}: only {', '.join(DEVICES)} are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StateError("--device cuda was asked for, but torch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise StateError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return dev


def default_threads() -> int:
    """CPU threads for a run: ``$BIASBENCH_THREADS``, else the CPUs this process may use."""
    import os

    env = os.environ.get("BIASBENCH_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError as e:
            raise InputError(f"BIASBENCH_THREADS={env!r} is not a whole number") from e
        if n < 1:
            raise InputError(f"BIASBENCH_THREADS={env!r} must be ≥ 1")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def describe_device(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
