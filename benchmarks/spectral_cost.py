"""Cost of every spectral-bias condition as a ratio to plain clean inference (target: ≤ 1.2×).

Baseline: ``EvalContext.predict`` of the same model on the same images with no transform, measured
in the same process. Every batch is timed clean and with the condition back to back (order
alternating between passes); the printed ratio is the median over these pairs, so load changes on a
shared machine hit both sides of a pair alike; the seconds columns are totals over all passes. A condition = the batched box filter (``rfft2`` · mask · ``irfft2``, clip)
inside ``predict``'s transform + the model. Also printed: the filter alone, in ms per image.

    python benchmarks/spectral_cost.py                       # CPU, timm resnet18, 32 images
    python benchmarks/spectral_cost.py --device cuda --model resnet50 --n 1024 --batch-size 256 --amp
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from biasbench.metrics.base import EvalContext, ModelWrapper
from biasbench.metrics.spectral import Spectral


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_model(name: str, device: torch.device, channels_last: bool) -> ModelWrapper:
    import timm

    net = timm.create_model(name, pretrained=False, num_classes=1000).eval().to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return ModelWrapper(
        net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), num_classes=1000, label_space="x"
    )


def timed_predict(
    ctx: EvalContext, model: ModelWrapper, images: torch.Tensor, transform: Callable | None = None
) -> float:
    sync(ctx.device)
    t0 = time.perf_counter()
    ctx.predict(model, images, transform=transform)
    sync(ctx.device)
    return time.perf_counter() - t0


def paired_ratio(
    ctx: EvalContext, model: ModelWrapper, images: torch.Tensor, transform: Callable, repeats: int
) -> tuple[float, float, float]:
    """(median over pairs of condition/clean time, total clean s, total condition s).

    Each pair times one batch clean and the same batch with the transform back to back (the order
    alternates), so load changes on a shared machine hit both sides of a pair alike.
    """
    bs = ctx.batch_size
    ratios, clean_total, cond_total = [], 0.0, 0.0
    for rep in range(repeats):
        for start in range(0, images.shape[0], bs):
            sl = slice(start, min(start + bs, images.shape[0]))

            def shifted(x: torch.Tensor, s: slice, off: int = start) -> torch.Tensor:
                return transform(x, slice(s.start + off, s.stop + off))

            if rep % 2 == 0:
                clean = timed_predict(ctx, model, images[sl])
                cond = timed_predict(ctx, model, images[sl], shifted)
            else:
                cond = timed_predict(ctx, model, images[sl], shifted)
                clean = timed_predict(ctx, model, images[sl])
            ratios.append(cond / clean)
            clean_total += clean
            cond_total += cond
    return statistics.median(ratios), clean_total, cond_total


def timed_transform(ctx: EvalContext, images: torch.Tensor, transform: Callable) -> float:
    """Seconds for the transform alone over all batches (data already on the device)."""
    batches = list(ctx.batches(images))
    sync(ctx.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for sl, x in batches:
            transform(x, sl)
    sync(ctx.device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18", help="timm architecture (random weights)")
    ap.add_argument("--n", type=int, default=32, help="images")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="passes over the images (pairs = passes x batches)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    ctx = EvalContext(
        device=device,
        batch_size=args.batch_size,
        amp_dtype=torch.bfloat16 if args.amp else None,
        channels_last=cuda,
    )
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, args.size, args.size), generator=g, dtype=torch.uint8)
    model = make_model(args.model, device, ctx.channels_last)
    metric = Spectral()
    ctx.predict(model, images[: args.batch_size])  # warm-up

    print(
        f"spectral conditions vs clean inference: {args.model}, {args.n} images of {args.size} px, "
        f"batch {args.batch_size}, {device}{' bf16' if args.amp else ''}, threads {torch.get_num_threads()}, "
        f"{args.repeats} passes, ratio = median over (batch, pass) pairs"
    )
    print(f"{'condition':<16}{'clean s':>9}{'cond s':>9}{'ratio':>8}{'filter ms/img':>15}")
    ratios = []
    for kind, c in metric.conditions():
        tf = Spectral.transform(kind, c, ctx)
        ratio, clean, cond = paired_ratio(ctx, model, images, tf, args.repeats)
        filt = timed_transform(ctx, images, tf) / args.n * 1e3
        ratios.append(ratio)
        print(f"{kind + '@' + format(c, 'g'):<16}{clean:>9.3f}{cond:>9.3f}{ratio:>8.3f}{filt:>15.3f}")
    print(f"ratio: max {max(ratios):.3f}, mean {sum(ratios) / len(ratios):.3f} (target ≤ 1.2)")


if __name__ == "__main__":
    main()
