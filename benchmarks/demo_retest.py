"""Do the demo's image counts measure what its report correlates? Test–retest at two seeds.

The report correlates each bias with each generalization measure across the demo's checkpoints. A
per-checkpoint value measured on a sample of images carries sampling noise; what matters is that noise
against the spread between checkpoints. This runs the demo's metrics (a cold ``bench run`` in a temporary
folder, as a subprocess) at ``--seed 0`` and ``--seed 1`` — another seeded choice of images, noise and
subsets — with the given parameter overrides, and prints for every bias and generalization key:

* ``between``: the SD of the key across checkpoints (mean of the two seeds' SDs);
* ``noise``: the SD of one measurement, from the seed-to-seed differences (``sd(a − b) / √2``);
* ``reliability``: ``1 − noise² / between²`` (the share of the spread that is the checkpoints'; a
  correlation with another key is attenuated by about its square root);
* ``retest r``: the Pearson correlation of the two seeds' values across checkpoints;
* ``seconds``: the two runs' job time per metric.

    python benchmarks/demo_retest.py -m spectral,critical_band,ood
    python benchmarks/demo_retest.py -m spectral -p spectral.n_images=250
    python benchmarks/demo_retest.py -m spectral,ood --repo /tmp/base --keep /tmp/before   # another checkout
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def run(seed: int, metrics: str, params: list[str], where: list[str], tmp: Path, repo: Path) -> Path:
    db = tmp / f"seed{seed}.duckdb"
    env = {**os.environ, "BIASBENCH_CACHE": str(tmp / "cache"), "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "biasbench.cli", "run", "--seed", str(seed), "--db", str(db), "-m", metrics]
    cmd += [a for p in params for a in ("-p", p)] + [a for w in where for a in ("--where", w)]
    subprocess.run(cmd, cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return db


def frame(db: Path) -> tuple[pd.DataFrame, pd.Series]:
    with duckdb.connect(str(db), read_only=True) as con:
        values = con.execute("SELECT checkpoint_id, metric, key, value FROM results").df()
        seconds = con.execute("SELECT metric, sum(seconds) AS s FROM jobs GROUP BY metric").df()
    return values, seconds.set_index("metric")["s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--metrics", required=True, help="comma-separated metrics (bench run -m)")
    ap.add_argument("-p", "--param", action="append", default=[], help="METRIC.KEY=VALUE (bench run -p)")
    ap.add_argument("--where", action="append", default=[], help="a slice of the demo (bench run --where)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the two databases in this folder")
    ap.add_argument(
        "--repo", type=Path, default=REPO, help="the checkout whose bench runs (default: this one)"
    )
    args = ap.parse_args()
    from biasbench.reports.roles import key_role

    with tempfile.TemporaryDirectory(prefix="biasbench-retest-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        (a, sa), (b, sb) = (
            frame(run(s, args.metrics, args.param, args.where, where, args.repo.resolve())) for s in (0, 1)
        )
    both = a.merge(b, on=["checkpoint_id", "metric", "key"], suffixes=("_0", "_1"))
    print(f"parameters: {' '.join(args.param) or '(defaults)'}; job seconds, seed 0 / seed 1:")
    for metric in sorted(sa.index):
        print(f"  {metric:15s} {sa[metric]:7.1f} {sb.get(metric, float('nan')):7.1f}")
    print(f"\n{'metric.key':42s} {'role':14s} {'between':>8s} {'noise':>8s} {'reliab.':>8s} {'retest r':>8s}")
    for (metric, key), g in both.groupby(["metric", "key"], sort=True):
        role = key_role(metric, key).role
        if role not in ("bias", "generalization"):
            continue
        x, y = g["value_0"].to_numpy(float), g["value_1"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3:
            continue
        x, y = x[ok], y[ok]
        between = (x.std(ddof=1) + y.std(ddof=1)) / 2
        noise = (x - y).std(ddof=1) / np.sqrt(2)
        rel = 1 - noise**2 / between**2 if between > 0 else float("nan")
        r = np.corrcoef(x, y)[0, 1] if x.std() > 0 and y.std() > 0 else float("nan")
        print(f"{metric + '.' + key:42s} {role:14s} {between:8.4f} {noise:8.4f} {rel:8.3f} {r:8.3f}")


if __name__ == "__main__":
    main()
