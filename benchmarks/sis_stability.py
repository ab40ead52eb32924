"""How far Batched-Gradient BackSelect traces part ways under floating-point noise (issue 17), on real weights.

For each image of a seeded subset of ``imagenet-sample`` (the subset ``bench run -m sis -p
sis.n_images=N`` takes with seed 0), for each precision and ranking tolerance asked for, BackSelect
runs along two mathematically equal paths — path a: the images in batches of ``--batch`` with model
and input channels-last (what the harness does); path b: each image alone, model and input contiguous
(``SIS`` with ``-p sis.stability=N`` does the same) — and one JSON line per image and configuration is
appended to ``--out``: the first step at which the removal sets differ (``T`` if never), both SIS
fractions at τ, their Jaccard overlap, seconds. ``--summary`` prints, per configuration, the medians
the closing note of issue 17 quotes, with the bootstrap CI of the median SIS fraction
(:func:`biasbench.core.statistics.bootstrap_ci`). Rerunning appends only what is missing.

    python benchmarks/sis_stability.py --out /tmp/sis17/fp32.jsonl --precision fp32 --rank-tol 0 1e-4
    python benchmarks/sis_stability.py --out /tmp/sis17/fp64.jsonl --precision fp64 --batch 2 --n 8
    python benchmarks/sis_stability.py --out /tmp/sis17/named.jsonl --items vizsla Weimaraner --batch 2
    python benchmarks/sis_stability.py --summary /tmp/sis17/fp32.jsonl /tmp/sis17/fp64.jsonl

Cost on one CPU thread (efficientnet-lite0, 224 px, k = 100, 503 steps): fp32 ≈ 0.07 s per image-step
(≈ 34 s per image and path), fp64 ≈ 0.27 s contiguous / 0.54 s channels-last.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from biasbench.core.statistics import bootstrap_ci
from biasbench.metrics.base import ModelWrapper, seeded_subset
from biasbench.metrics.sis import default_k, default_tau, model_as
from biasbench.metrics.sis_backselect import batched_gradient_backselect
from biasbench.metrics.sis_stability import pair_stats
from biasbench.metrics.sis_traces import sis_mask

DTYPES = {"fp32": torch.float32, "fp64": torch.float64}


def load(cache: Path, data: Path) -> tuple[ModelWrapper, object]:
    from biasbench.harness.datasets import catalog
    from biasbench.registry import loading
    from biasbench.registry.registry_files import resolve_targets

    spec = {s.id: s for s in resolve_targets(["efficientnet-lite"])}["efficientnet_lite0"]
    lc = loading.load_checkpoint(spec, cache_dir=cache)
    ds = catalog.get("imagenet-sample").load(data, lc.preprocess, cache)
    model = ModelWrapper(
        lc.net,
        mean=lc.preprocess.mean,
        std=lc.preprocess.std,
        num_classes=1000,
        label_space="imagenet-1k",
        checkpoint_id=spec.id,
    ).eval()
    return model.to(memory_format=torch.channels_last), ds


def frac(order: np.ndarray, conf: np.ndarray, tau: float) -> float:
    m = sis_mask(order, conf, tau)
    return math.nan if m is None else float(m.mean())


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model, ds = load(Path(args.cache), Path(args.data))
    if args.items:
        idx = np.array([i for i, it in enumerate(ds.item_ids) if any(name in it for name in args.items)])
    else:
        idx = seeded_subset(len(ds), args.n, args.seed)
    if args.reverse:  # a second process can work from the other end of the same list
        idx = idx[::-1].copy()
    out = Path(args.out)

    def done() -> set[tuple[str, str, float]]:  # read afresh: another process may append
        lines = out.read_text().splitlines() if out.exists() else []
        return {(r["item"], r["precision"], r["rank_tol"]) for r in map(json.loads, lines)}

    dtype = DTYPES[args.precision]
    _, _, h, w = ds.images.shape
    k, tau = default_k("imagenet-1k", h, w), default_tau("imagenet-1k")
    base = model.pixel_mean.to(dtype)
    while True:
        have = done()
        pending = [
            i
            for i in idx.tolist()
            if any((ds.item_ids[i], args.precision, t) not in have for t in args.rank_tol)
        ]
        if not pending:
            break
        chunk = pending[: args.batch]
        items = [ds.item_ids[i] for i in chunk]
        x = ds.images[torch.as_tensor(chunk)].to(dtype).div(255.0)
        for tol in args.rank_tol:
            if all((it, args.precision, tol) in have for it in items):
                continue
            with model_as(model, dtype, torch.channels_last, restore_format=torch.channels_last):
                t0 = time.perf_counter()
                a = batched_gradient_backselect(
                    model, x.contiguous(memory_format=torch.channels_last), base, k, rank_tol=tol
                )
                sec_a = (time.perf_counter() - t0) / len(chunk)
            with model_as(model, dtype, torch.contiguous_format, restore_format=torch.channels_last):
                bs = []
                for b in range(len(chunk)):
                    t0 = time.perf_counter()
                    bs.append(
                        (
                            batched_gradient_backselect(
                                model, x[b : b + 1].contiguous(), base, k, rank_tol=tol
                            ),
                            time.perf_counter() - t0,
                        )
                    )
            with out.open("a") as f:
                for b, item in enumerate(items):
                    tb, sec_b = bs[b]
                    oa, ca, ob, cb = (
                        a.order[b].numpy(),
                        a.conf[b].numpy(),
                        tb.order[0].numpy(),
                        tb.conf[0].numpy(),
                    )
                    ps = pair_stats(oa, ca, int(a.c0[b]), ob, cb, int(tb.c0[0]), tau)
                    rec = {
                        "item": item,
                        "precision": args.precision,
                        "rank_tol": tol,
                        "steps": int(ca.size - 1),
                        "tau": tau,
                        "clean_conf": float(ca[0]),
                        "frac_a": frac(oa, ca, tau),
                        "frac_b": frac(ob, cb, tau),
                        **ps,
                        "seconds_a": sec_a,
                        "seconds_b": sec_b,
                    }
                    f.write(json.dumps(rec) + "\n")
                    print(json.dumps(rec), flush=True)


def summary(paths: list[str]) -> None:
    recs = {}
    for p in paths:  # one record per (image, precision, tolerance): the first written
        for line in Path(p).read_text().splitlines():
            r = json.loads(line)
            recs.setdefault((r["item"], r["precision"], r["rank_tol"]), r)
    recs = list(recs.values())
    configs = sorted({(r["precision"], r["rank_tol"]) for r in recs})
    print(
        "| precision | rank_tol | images | identical | median first divergence (of T) | median abs dSIS frac | "
        "median Jaccard | median SIS frac a [95% CI] | median SIS frac b | s/image/path |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for prec, tol in configs:
        rs = [r for r in recs if r["precision"] == prec and r["rank_tol"] == tol]
        cov = [r for r in rs if not (math.isnan(r["frac_a"]) or math.isnan(r["frac_b"]))]
        fa = np.array([r["frac_a"] for r in cov])
        fb = np.array([r["frac_b"] for r in cov])
        lo, hi = bootstrap_ci(fa)
        ident = sum(r["first_divergence"] == r["steps"] for r in rs)
        sec = np.mean([(r["seconds_a"] + r["seconds_b"]) / 2 for r in rs])
        print(
            f"| {prec} | {tol:g} | {len(rs)} ({len(cov)} covered) | {ident} | "
            f"{np.median([r['first_divergence'] for r in rs]):.0f} ({rs[0]['steps']}) | "
            f"{np.median(np.abs(fa - fb)) if cov else math.nan:.4f} | "
            f"{np.median([r['jaccard'] for r in cov]) if cov else math.nan:.3f} | "
            f"{np.median(fa) if cov else math.nan:.4f} [{lo:.4f}, {hi:.4f}] | "
            f"{np.median(fb) if cov else math.nan:.4f} | {sec:.0f} |"
        )
    for prec, tol in configs:  # which photos parted, and where
        parted = [
            r
            for r in recs
            if (r["precision"], r["rank_tol"]) == (prec, tol) and r["first_divergence"] < r["steps"]
        ]
        for r in sorted(parted, key=lambda r: r["first_divergence"]):
            print(
                f"parted ({prec}, rank_tol {tol:g}): {r['item']} at step {r['first_divergence']:.0f}, "
                f"SIS {r['frac_a']:.4f} vs {r['frac_b']:.4f}"
            )
    ref = {r["item"]: r for r in recs if (r["precision"], r["rank_tol"]) == ("fp64", 0.0)}
    for prec, tol in configs:  # path a against fp64's path a: how far the rounding of fp32 moves the SIS
        if (prec, tol) == ("fp64", 0.0) or not ref:
            continue
        pairs = [
            (r["frac_a"], ref[r["item"]]["frac_a"])
            for r in recs
            if (r["precision"], r["rank_tol"]) == (prec, tol) and r["item"] in ref
        ]
        both = np.array([(x, y) for x, y in pairs if not (math.isnan(x) or math.isnan(y))]).reshape(-1, 2)
        if len(both):
            d = np.abs(both[:, 0] - both[:, 1])
            print(
                f"{prec}, rank_tol {tol:g} vs fp64 (path a, {len(pairs)} photos, {len(both)} covered in both): "
                f"same SIS size {int((d == 0).sum())}, median |dSIS frac| {np.median(d):.4f}, max {d.max():.4f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="JSON-lines file to append to")
    ap.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--rank-tol", type=float, nargs="+", default=[0.0])
    ap.add_argument("--n", type=int, default=32, help="images (seeded subset of imagenet-sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--items", nargs="+", help="instead of --n: the photos whose file names contain these")
    ap.add_argument("--batch", type=int, default=4, help="path a's batch size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reverse", action="store_true", help="work through the images last to first")
    ap.add_argument("--cache", default="/tmp/biasbench-cache")
    ap.add_argument("--data", default="/work/shared/data")
    ap.add_argument("--summary", nargs="+", metavar="JSONL", help="print the summary table and exit")
    args = ap.parse_args()
    if args.summary:
        summary(args.summary)
    else:
        run(args)


if __name__ == "__main__":
    main()
