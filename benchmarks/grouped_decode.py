"""Decode work per image: dataset-major (grouped, K checkpoints per decoded batch) vs checkpoint-major.

The same K checkpoints (timm ``--model`` with K random seeds, one preprocessing) evaluate ``accuracy``
on a **streamed** JPEG set (cache budget 0: every pass decodes, as for ImageNet-C, which no cache
holds). Checkpoint-major is today's order: each checkpoint decodes the whole set
(``Accuracy.evaluate`` per model); grouped passes each decoded batch through all K
(``Accuracy.evaluate_group``, what ``bench run --group K`` runs). Both are measured in this run, and
their per-image logits are checked to be identical.

    python benchmarks/grouped_decode.py --data ../shared/data/imagenet-sample --model resnet18 --k 4

Prints the images decoded per image evaluated and the wall time of each order; the last lines are the
ratios checkpoint-major / grouped (decode work: the issue's target is ≥ 0.9 × K).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import timm
import torch

from biasbench.core.preprocess import Preprocess
from biasbench.core.streaming import DECODE_STATS, StreamedImages, decode_batch_cpu
from biasbench.harness.datasets.folders import list_labeled_files
from biasbench.metrics.accuracy import Accuracy
from biasbench.metrics.base import EvalContext, ImageSet, ModelWrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/imagenet-sample"))
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--images", type=int, default=300, help="the first N images of the folder")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)

    files = list_labeled_files(args.data, "wnid-prefix")[: args.images]
    paths = [args.data / f for f, _ in files]
    models = []
    for seed in range(args.k):
        torch.manual_seed(seed)
        net = timm.create_model(args.model, pretrained=False).eval()
        cfg = timm.data.resolve_data_config({}, model=net)
        model = ModelWrapper(
            net, mean=cfg["mean"], std=cfg["std"], num_classes=1000, label_space="imagenet-1k"
        )
        models.append(model.eval().requires_grad_(False).to(device).to(memory_format=torch.channels_last))
    crop = cfg["input_size"][-1]
    pre = Preprocess(
        resize=round(crop / cfg["crop_pct"]),
        crop=crop,
        mean=cfg["mean"],
        std=cfg["std"],
        interpolation="bilinear",
    )
    ds = ImageSet(
        name="streamed",
        images=StreamedImages(paths, pre, (crop, crop)),  # what a set over the cache budget is
        labels=torch.tensor([lab for _, lab in files]),
        class_names=[str(i) for i in range(1000)],
        label_space="imagenet-1k",
        item_ids=[f for f, _ in files],
        manifest_hash="bench",
    )

    def ctx() -> EvalContext:
        amp = torch.bfloat16 if device.type == "cuda" else None
        return EvalContext(device=device, batch_size=args.batch_size, amp_dtype=amp, channels_last=True)

    t0 = time.perf_counter()
    decode_batch_cpu(paths[: args.batch_size], pre)  # warm the decode pool and the page cache
    warm = time.perf_counter() - t0

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    metric = Accuracy()
    DECODE_STATS.reset()
    t0 = time.perf_counter()
    major = [metric.evaluate(m, {"images": ds}, ctx()) for m in models]
    sync()
    t_major, d_major = time.perf_counter() - t0, DECODE_STATS.decoded

    DECODE_STATS.reset()
    t0 = time.perf_counter()
    grouped = metric.evaluate_group(models, {"images": ds}, ctx())
    sync()
    t_grouped, d_grouped = time.perf_counter() - t0, DECODE_STATS.decoded

    same = all(
        not isinstance(g, Exception) and g.scalars == m.scalars and g.items.equals(m.items)
        for g, m in zip(grouped, major, strict=True)
    )
    n = len(paths)
    print(f"images: {n}  model: {args.model} × {args.k} seeds  device: {device}  (warm-up {warm:.2f} s)")
    print(f"checkpoint-major: {d_major} images decoded = {d_major / n:.2f} per image, {t_major:.2f} s")
    print(
        f"grouped (K={args.k}): {d_grouped} images decoded = {d_grouped / n:.2f} per image, {t_grouped:.2f} s"
    )
    print(f"results identical (scalars and per-item outputs): {same}")
    print(
        f"ratio decode work per image, checkpoint-major / grouped: {d_major / d_grouped:.2f}x (K = {args.k})"
    )
    print(f"ratio wall time, checkpoint-major / grouped: {t_major / t_grouped:.2f}x")


if __name__ == "__main__":
    main()
