"""Report speed at zoo scale: `bench import` and `bench report --format json` on synthetic tables.

A synthetic published table (48 and 300 checkpoints by default: the study's zoo and an
imagenet-testbed-sized one) with the study preset's shape — six biases, four generalization
aggregates, ID top-1, a category and an ε tag — is written as CSV with a mapping and timed as a
user runs it, each command a fresh process:

* ``import``: ``bench import t.csv --mapping m.toml`` into a new database;
* ``report``: ``bench report -f json --by category=adversarial`` (the issue's command: every table for
  all checkpoints and both groups, the bias × bias and generalization × generalization matrices, the
  cross-validated prediction with 1,000 permutations);
* baselines measured in the same run: ``startup`` — ``bench --help`` (interpreter and CLI import);
  ``report --no-predict`` — the same report without the prediction (so ``report / no-predict`` is
  what the prediction and its permutations cost); ``import torch`` — the part of every command that
  loads the metric plugins to read their declared key roles.

Each command runs ``--repeats`` times (default 3); the medians of wall time and of the child's CPU
time (user + sys) are printed with ratios against the baselines. On a shared machine the wall times
are noisy (other processes compete for the cores); the CPU times are the steadier figure.

    python benchmarks/report_speed.py [--sizes 48 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BIASES = [
    "shape_bias.shape_bias",
    "spectral.LPP",
    "spectral.HPP",
    "critical_band.bandwidth_norm",
    "critical_band.centre_frequency_norm",
    "critical_band.peak_noise_sensitivity_norm",
]
AXES = ["ood.id", "ood.robustness", "ood.concepts", "ood.adversarial"]
CATEGORIES = ["adversarial", "plain", "augmented", "self-supervised"]


def _bench() -> list[str]:
    found = shutil.which("bench")
    return [found] if found else [sys.executable, "-m", "biasbench.cli"]


def write_table(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """A wide CSV of ``n`` checkpoints and its import mapping (values with real correlation structure:
    the axes are noisy linear functions of the biases and of ID accuracy)."""
    rng = np.random.default_rng(seed)
    b = rng.uniform(0, 1, (n, len(BIASES)))
    idacc = rng.uniform(0.6, 0.85, n)
    frame = pd.DataFrame(b, columns=BIASES)
    frame["ood.id"] = idacc
    frame["ood.robustness"] = 0.5 * idacc + 0.2 * b[:, 2] + 0.05 * rng.normal(size=n)
    frame["ood.concepts"] = 0.3 * idacc + 0.3 * b[:, 0] + 0.05 * rng.normal(size=n)
    frame["ood.adversarial"] = 0.4 * b[:, 1] + 0.05 * rng.normal(size=n)
    frame["accuracy.top1"] = idacc + 0.01 * rng.normal(size=n)
    frame.insert(0, "model", [f"model-{i:03d}" for i in range(n)])
    frame["category"] = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    frame["eps"] = [f"{(i % 5) / 255:.5f}" for i in range(n)]
    csv = folder / f"table{n}.csv"
    frame.to_csv(csv, index=False)
    keys = [*BIASES, *AXES, "accuracy.top1"]
    mapping = folder / "mapping.toml"
    mapping.write_text(
        'checkpoint = "model"\ntags = ["category", "eps"]\n[keys]\n'
        + "".join(f'"{k}" = "{k}"\n' for k in keys),
        encoding="utf-8",
    )
    return csv, mapping


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and the child's CPU seconds (user + sys) of one command, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def median_of(argv: list[str], cwd: Path, repeats: int, fresh: Path | None = None) -> tuple[float, float]:
    """Medians of :func:`timed` over ``repeats`` runs (``fresh``: a file removed before each run)."""
    walls, cpus = [], []
    for _ in range(repeats):
        if fresh is not None:
            fresh.unlink(missing_ok=True)
        w, c = timed(argv, cwd)
        walls.append(w)
        cpus.append(c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[48, 300])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bench = _bench()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("medians of", args.repeats, "runs; wall s (child CPU s); ratios are of wall and of CPU time")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        startup = median_of([*bench, "--help"], folder, args.repeats)
        torch_import = median_of([sys.executable, "-c", "import torch"], folder, args.repeats)
        print(f"baseline bench --help: {startup[0]:.2f} s ({startup[1]:.2f} s CPU)")
        print(f"baseline import torch: {torch_import[0]:.2f} s ({torch_import[1]:.2f} s CPU)")
        for n in args.sizes:
            csv, mapping = write_table(folder, n)
            db = folder / f"b{n}.duckdb"
            imp = median_of(
                [
                    *bench,
                    "import",
                    str(csv),
                    "--mapping",
                    str(mapping),
                    "--source",
                    "synthetic",
                    "--db",
                    str(db),
                ],
                folder,
                args.repeats,
                fresh=db,
            )
            report_args = [*bench, "report", "--db", str(db), "-f", "json", "--by", "category=adversarial"]
            base = median_of([*report_args, "--no-predict"], folder, args.repeats)
            full = median_of(report_args, folder, args.repeats)
            print(f"\n{n} checkpoints, {len(BIASES)} biases × {len(AXES)} axes")
            for name, (w, c) in [("import", imp), ("report --no-predict", base), ("report", full)]:
                print(
                    f"  {name:<20} {w:7.2f} s ({c:6.2f} s CPU)   "
                    f"× startup {w / startup[0]:5.1f} ({c / startup[1]:5.1f} CPU)"
                )
            print(
                f"  report / report --no-predict: {full[0] / base[0]:.2f} wall, {full[1] / base[1]:.2f} CPU "
                "(what the prediction and its permutations add)"
            )


if __name__ == "__main__":
    main()
