"""Facts about where a run happens: versions, git sha, host, device selection, the CPUs free for it.

torch is imported where a function needs it: ``bench run`` measures the free CPUs (:class:`FreeCpus`)
from its first moment, before torch loads."""

from __future__ import annotations

import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from biasbench.core.counts import env_count, usable_cpus
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
    import torch

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


#: the CPU time counters of /proc/stat that count as free: idle and iowait
_IDLE_FIELDS = (3, 4)


def _cpu_counters(cpus: set[int] | None) -> tuple[float, float] | None:
    """(idle, total) jiffies of ``cpus`` (all when None) from /proc/stat; None where there is none."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    idle = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit():
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]
        idle += sum(values[i] for i in _IDLE_FIELDS if i < len(values))
        total += sum(values)
    return (idle, total) if total > 0 else None


class FreeCpus:
    """How many of this process's CPUs other processes leave free, measured between two calls.

    Free = the idle share of the usable CPUs over the interval (``/proc/stat``) × their count, plus the
    CPU time this process and its live child processes used over it (its own threads, and the fork
    server its workers start from, are not "other load"). Where there is no ``/proc/stat``: the CPU
    count less the 1-minute load average. :meth:`sample` returns it and starts the next interval; the
    first interval starts when the object is made.
    """

    def __init__(self) -> None:
        import os

        try:
            self._cpus: set[int] | None = set(os.sched_getaffinity(0))
        except AttributeError:
            self._cpus = None
        self._n = usable_cpus()
        self._start = self._now()

    def _now(self) -> tuple[tuple[float, float] | None, float, dict[int, float], float]:
        import os
        import time

        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system  # + children that ended
        return _cpu_counters(self._cpus), own, _children_cpu(), time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the interval started."""
        import time

        return time.monotonic() - self._start[3]

    def sample(self) -> float:
        import os

        (c0, own0, kids0, t0), now = self._start, self._now()
        self._start = now
        c1, own1, kids1, t1 = now
        if c0 is None or c1 is None or c1[1] <= c0[1] or t1 <= t0:
            try:
                return max(0.0, self._n - os.getloadavg()[0])
            except (AttributeError, OSError):
                return float(self._n)
        kids = sum(cpu - kids0.get(pid, 0.0) for pid, cpu in kids1.items())
        return free_between(c0, c1, own1 - own0 + kids, t1 - t0, self._n)


def _children_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each live child process of this one, from /proc ({} elsewhere)."""
    import os

    me, out = os.getpid(), {}
    try:
        tick = os.sysconf("SC_CLK_TCK")
        entries = [e for e in os.scandir("/proc") if e.name.isdigit()]
    except (OSError, ValueError, AttributeError):
        return out
    for entry in entries:
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # fields: state, ppid, …, utime (12th), stime (13th)
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def free_between(
    before: tuple[float, float], after: tuple[float, float], own_cpu: float, seconds: float, n_cpus: int
) -> float:
    """Free CPUs over an interval: ``n_cpus`` × the idle share of the (idle, total) counters' growth,
    plus the CPU seconds this process used per second of it; within 0 … ``n_cpus``."""
    idle_share = (after[0] - before[0]) / (after[1] - before[1])
    return min(float(n_cpus), max(0.0, idle_share * n_cpus + own_cpu / seconds))


#: how long :func:`default_threads` watches the CPUs before a run (seconds)
PROBE_SECONDS = 0.2


def threads_for(free: float, usable: int) -> int:
    """Threads for ``free`` free CPUs out of ``usable``: the whole CPUs free (a CPU counts from 3/4
    free), at least 1. A thread more than the free CPUs shares a core with another process, and every
    parallel region of the model then waits for it: on 2 cores beside 2 busy processes the demo's jobs
    ran 20–40× slower with 2 threads than alone (``benchmarks/shared_machine.py`` measures it)."""
    return max(1, min(usable, int(free + 0.25)))


def env_threads() -> int | None:
    """``$BIASBENCH_THREADS`` as a whole number ≥ 1, or None when unset."""
    return env_count("BIASBENCH_THREADS")


def default_threads(probe: float = PROBE_SECONDS, meter: FreeCpus | None = None) -> int:
    """CPU threads for a run: ``$BIASBENCH_THREADS``, else the CPUs that are free now
    (:class:`FreeCpus` over ``probe`` seconds, :func:`threads_for`): every usable CPU on a quiet
    machine, fewer beside other load, 1 at least. ``probe = 0``: every usable CPU. ``meter``: one
    started earlier (``bench run`` starts one as it starts), read over its whole interval, at least
    ``probe`` seconds."""
    import time

    env = env_threads()
    if env is not None:
        return env
    if probe <= 0:
        return usable_cpus()
    if meter is None:
        meter = FreeCpus()
    time.sleep(max(0.0, probe - meter.elapsed()))
    return threads_for(meter.sample(), usable_cpus())


def set_torch_threads(threads: int) -> None:
    """``threads`` intra-op threads and one inter-op thread (the harness runs one model at a time; a
    second pool only competes for the same cores). The inter-op count can only be set before torch
    starts parallel work; later it stays as it is."""
    import torch

    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # torch already ran inter-op work in this process
            pass


def describe_device(dev: torch.device) -> str:
    import torch

    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
