"""How close the cold demo is to its compute floor, measured in one run on this machine.

1. The floor: the demo net's (``zoo:resnet50-w8``, 32 px) best inference throughput in images/s over batch
   sizes and memory formats (``torch.inference_mode``, the run's thread count), random inputs.
2. The work: a cold ``bench run`` (the README's main command: the demo registry, every metric, an empty
   cache and database, in a temporary folder, as a subprocess) and, from its stored jobs, each metric's
   images × conditions (``jobs.timings`` ``run.images_x_conditions``, i.e. ``Metric.work``, which
   counts every forward pass, a backward as 2) and seconds. A checkpoint that runs the zoo net more
   than once per forward weighs its jobs by that count (the ensemble of 3 members: 3; the input-dropout
   wrapper with 4 masks: 4), counted here by a forward hook on the zoo net; less the member forwards an
   ensemble took from its members' own jobs (``run.shared_forwards``: not run, so not work).
3. The ratios: per metric and overall, **efficiency = (net forwards / best throughput) / wall**,
   and the share of the wall outside jobs (planning, loading, writing; the world's rendering is inside
   the first job that uses each split).

Efficiency 1 means the run did nothing but model work at the best rate measured here (one process; with
``--workers`` several processes of fewer threads can pass it, which is why they are the default). Machines differ
2–3× in speed, so only the ratios travel; the load average is printed before and after, since other
processes on the machine slow the run but not the floor measured before it.

    python benchmarks/demo_floor.py                 # bench run's default threads (the free CPUs), for both
    python benchmarks/demo_floor.py --threads 2     # fixed threads, for the floor and the run alike
    python benchmarks/demo_floor.py --baseline /tmp/base --where recipe=plain   # before/after, one slice
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import torch

REPO = Path(__file__).resolve().parents[1]
UNITS = "run.images_x_conditions"
SHARED = "run.shared_forwards"


def best_throughput(threads: int, seconds: float = 2.0) -> tuple[float, str]:
    """The zoo net's best images/s (and where) over batch sizes × memory formats."""
    from biasbench.registry import zoo

    torch.set_num_threads(threads)
    net = zoo.ARCHITECTURES["resnet50-w8"](10).eval()
    best, where = 0.0, ""
    for channels_last in (False, True):
        model = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for batch in (64, 256, 1024):
            x = torch.rand(batch, 3, 32, 32)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                model(x)  # warm-up
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    model(x)
                    n += batch
                rate = n / (time.perf_counter() - start)
            fmt = "channels-last" if channels_last else "contiguous"
            print(f"  batch {batch:5d} {fmt:13s} {rate:9.0f} img/s")
            if rate > best:
                best, where = rate, f"batch {batch}, {fmt}"
    return best, where


def resnet_calls(net: torch.nn.Module) -> int:
    """How many images a timm ResNet inside ``net`` sees per image of one forward (a 32-px batch): the
    ensemble's members each see it once, the input-dropout wrapper's masked copies once each, stacked
    into one call or not."""
    from timm.models.resnet import ResNet

    images: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, args, _out: images.append(args[0].shape[0]))
        for m in net.modules()
        if isinstance(m, ResNet)
    ]
    with torch.inference_mode():
        net(torch.zeros(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    return sum(images) // 2


def net_forwards_per_forward() -> dict[str, int]:
    """Per demo checkpoint: how many zoo-net forwards one forward of the checkpoint's model runs."""
    from biasbench.harness.session import resolve
    from biasbench.registry import loading

    out: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="biasbench-floor-") as tmp:
        for spec in resolve(None):
            net = loading.load_checkpoint(spec, cache_dir=Path(tmp)).net
            out[spec.id] = max(1, resnet_calls(net))
    return out


def cold_demo(
    threads: int | None, repo: Path = REPO, where: list[str] | None = None
) -> tuple[float, dict[tuple[str, str], tuple[float, float]], list[int], int]:
    """Wall seconds of a cold demo run of the code in ``repo``, per (checkpoint, metric) job its (net
    forwards, seconds), the threads its jobs ran with, and its worker processes (1: the serial path)."""
    weight = net_forwards_per_forward()
    with tempfile.TemporaryDirectory(prefix="biasbench-floor-") as tmp:
        env = {**os.environ, "BIASBENCH_CACHE": str(Path(tmp) / "cache"), "PYTHONPATH": str(repo)}
        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "biasbench.cli", "run", *(["--threads", str(threads)] if threads else [])]
            + [a for w in where or [] for a in ("--where", w)]
            + ["--db", "bench.duckdb"],
            cwd=tmp,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wall = time.perf_counter() - start
        said = re.search(r"(\d+) worker processes", run.stderr)  # harness/workers.py says how many
        workers = int(said.group(1)) if said else 1
        print(f"  cold run wall {wall:.1f} s", flush=True)
        with duckdb.connect(str(Path(tmp) / "bench.duckdb"), read_only=True) as con:
            rows = con.execute(
                "SELECT checkpoint_id, metric, seconds, CAST(timings AS VARCHAR) FROM jobs"
            ).fetchall()
    jobs: dict[tuple[str, str], tuple[float, float]] = {}
    threads: set[int] = set()
    for checkpoint, metric, seconds, timings in rows:
        t = json.loads(timings or "{}")
        # less the member forwards an ensemble took from its members' own jobs (harness/forward_memo.py)
        units = float(t.get(UNITS, 0.0)) * weight.get(checkpoint, 1) - float(t.get(SHARED, 0.0))
        threads.add(int(t.get("run.threads", 0)))
        jobs[(checkpoint, metric)] = (units, float(seconds or 0.0))
    return wall, jobs, sorted(threads), workers


def table(
    title: str, wall: float, jobs: dict[tuple[str, str], tuple[float, float]], rate: float, workers: int = 1
) -> dict[str, float]:
    """Print per metric: net forwards, their seconds at the best rate, job seconds, efficiency; and
    the run's totals. With ``workers`` processes the jobs' seconds add up over the workers (each ran
    with its share of the threads), so the totals divide them by ``workers``. Returns the job seconds
    per metric (and ``"wall"``)."""
    per: dict[str, tuple[float, float]] = {}
    for (_, metric), (units, seconds) in jobs.items():
        u, sec = per.get(metric, (0.0, 0.0))
        per[metric] = (u + units, sec + seconds)
    print(f"\n{title}\n{'metric':15s} {'forwards':>10s} {'floor s':>9s} {'job s':>8s} {'efficiency':>10s}")
    total_units = total_jobs = 0.0
    for metric, (units, seconds) in sorted(per.items()):
        floor = units / rate
        total_units, total_jobs = total_units + units, total_jobs + seconds
        eff = floor / seconds if seconds else float("nan")
        print(f"{metric:15s} {units:10.0f} {floor:9.1f} {seconds:8.1f} {eff:10.2f}")
    floor = total_units / rate
    print(f"{'all jobs':15s} {total_units:10.0f} {floor:9.1f} {total_jobs:8.1f} {floor / total_jobs:10.2f}")
    if workers > 1:
        print(f"({workers} worker processes: {total_jobs / workers:.1f} job s per worker)")
    print(
        f"cold run wall {wall:.1f} s; efficiency (floor / wall) {floor / wall:.2f}; "
        f"outside jobs {1 - total_jobs / workers / wall:.0%} of the wall"
    )
    # per metric its job seconds per worker (what it adds to the wall), comparable across worker counts
    return {**{m: sec / workers for m, (_, sec) in per.items()}, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="default: bench run's own choice")
    ap.add_argument("--where", action="append", default=[], help="a slice of the demo (bench run --where)")
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout of biasbench (e.g. `git worktree add /tmp/base main`): its cold run too, "
        "before this one, and the ratios",
    )
    args = ap.parse_args()
    from biasbench.harness.environment import default_threads

    # bench run's own default when --threads is not given: the CPUs free now (on a loaded machine a
    # thread per CPU measures the collapse, not the floor)
    floor_threads = args.threads or default_threads()
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"floor: the demo net's inference throughput ({floor_threads} threads)")
    rate, where = best_throughput(floor_threads)
    print(f"  best: {rate:.0f} img/s ({where})")
    base = None
    if args.baseline is not None:
        print(f"work: a cold `bench run` of the demo with {args.baseline} (empty cache and database)")
        base = cold_demo(args.threads, args.baseline.resolve(), args.where)
        print(f"  its jobs ran with {', '.join(map(str, base[2]))} thread(s); load {os.getloadavg()[0]:.2f}")
    print("work: a cold `bench run` of the demo (empty cache and database)")
    wall, jobs, threads, workers = cold_demo(args.threads, REPO, args.where)
    print(
        f"  its jobs ran with {', '.join(map(str, threads))} thread(s) in {workers} process(es); "
        f"load {os.getloadavg()[0]:.2f}"
    )
    now = table("this checkout", wall, jobs, rate, workers)
    if base is not None:
        # a job's work: the larger of its own count and the same job's count now (a baseline from before
        # issue 26 undercounts critical band and SIS; one that ran more, e.g. an ensemble's member
        # forwards or more PGD images, keeps its own)
        base_jobs = {k: (max(v[0], jobs.get(k, v)[0]), v[1]) for k, v in base[1].items()}
        before = table(f"baseline {args.baseline}", base[0], base_jobs, rate, base[3])
        print("\nspeed-up (baseline seconds / this checkout's; a metric's job seconds per worker process):")
        for key in sorted(now):
            if before.get(key) and now[key]:
                print(f"  {key:15s} {before[key] / now[key]:6.2f}×")


if __name__ == "__main__":
    main()
