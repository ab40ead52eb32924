"""How close the cold demo is to its compute floor, measured in one run on this machine.

1. The floor: the demo net's (``zoo:resnet50-w8``, 32 px) best inference throughput in images/s over batch
   sizes and memory formats (``torch.inference_mode``, the run's thread count), random inputs.
2. The work: a cold ``bench run`` (the README's main command: the demo registry, every metric, an empty
   cache and database, in a temporary folder, as a subprocess) and, from its stored jobs, each metric's
   images × conditions (``jobs.timings`` ``run.images_x_conditions``, i.e. ``Metric.work``) and seconds.
3. The ratios: per metric and overall, **efficiency = (images × conditions / best throughput) / wall**,
   and the share of the wall outside jobs (planning, the world's rendering, loading, writing).

Efficiency 1 means the run did nothing but model work at the best rate measured here; a metric whose
``work`` undercounts its forwards reads lower than it is. Machines differ 2–3× in speed, so only the
ratios travel.

    python benchmarks/demo_floor.py                 # every CPU this process may use
    python benchmarks/demo_floor.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import torch

REPO = Path(__file__).resolve().parents[1]
UNITS = "run.images_x_conditions"


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


def cold_demo(threads: int) -> tuple[float, dict[str, tuple[float, float]]]:
    """Wall seconds of a cold demo run and, per metric, (images × conditions, job seconds)."""
    with tempfile.TemporaryDirectory(prefix="biasbench-floor-") as tmp:
        env = {**os.environ, "BIASBENCH_CACHE": str(Path(tmp) / "cache"), "PYTHONPATH": str(REPO)}
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "biasbench.cli", "run", "--threads", str(threads), "--db", "bench.duckdb"],
            cwd=tmp,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - start
        with duckdb.connect(str(Path(tmp) / "bench.duckdb"), read_only=True) as con:
            rows = con.execute("SELECT metric, seconds, CAST(timings AS VARCHAR) FROM jobs").fetchall()
    per: dict[str, tuple[float, float]] = {}
    for metric, seconds, timings in rows:
        units = float(json.loads(timings or "{}").get(UNITS, 0.0))
        u, s = per.get(metric, (0.0, 0.0))
        per[metric] = (u + units, s + float(seconds or 0.0))
    return wall, per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    print(f"floor: the demo net's inference throughput ({args.threads} threads)")
    rate, where = best_throughput(args.threads)
    print(f"  best: {rate:.0f} img/s ({where})")
    print("work: a cold `bench run` of the demo (empty cache and database)")
    wall, per = cold_demo(args.threads)
    print(f"\n{'metric':15s} {'img×cond':>10s} {'floor s':>9s} {'job s':>8s} {'efficiency':>10s}")
    total_units = total_jobs = 0.0
    for metric, (units, seconds) in sorted(per.items()):
        floor = units / rate
        total_units, total_jobs = total_units + units, total_jobs + seconds
        eff = floor / seconds if seconds else float("nan")
        print(f"{metric:15s} {units:10.0f} {floor:9.1f} {seconds:8.1f} {eff:10.2f}")
    floor = total_units / rate
    print(f"{'all jobs':15s} {total_units:10.0f} {floor:9.1f} {total_jobs:8.1f} {floor / total_jobs:10.2f}")
    print(
        f"\ncold run wall {wall:.1f} s; efficiency (floor / wall) {floor / wall:.2f}; "
        f"outside jobs {1 - total_jobs / wall:.0%} of the wall"
    )


if __name__ == "__main__":
    main()
