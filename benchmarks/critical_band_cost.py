"""Cost of every critical-band condition as a ratio to plain clean inference (target: ≤ 1.2×).

Baseline: ``EvalContext.predict`` of the same model on the same images with no transform, measured
in the same process; every batch is timed clean and with the condition back to back and the ratio
is the median over these pairs (see ``spectral_cost.py``). A condition = the
batched stimulus (PIL grayscale, contrast, per-image seeded white noise, Laplacian band by matmuls,
RMS equalisation, out-of-range rule, 3-channel stack) inside ``predict``'s transform + the model.
Also printed: the stimulus alone, in ms per image.

    python benchmarks/critical_band_cost.py                  # CPU, timm resnet18, 32 images
    python benchmarks/critical_band_cost.py --device cuda --model resnet50 --n 1024 --batch-size 256 --amp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spectral_cost import make_model, paired_ratio, timed_transform  # noqa: E402

from biasbench.metrics.base import EvalContext  # noqa: E402
from biasbench.metrics.critical_band import NOISE_SDS, CriticalBandTransform, NoiseStats  # noqa: E402
from biasbench.metrics.laplacian_pyramid import LaplacianBands  # noqa: E402


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
    ctx = EvalContext(
        device=device,
        batch_size=args.batch_size,
        amp_dtype=torch.bfloat16 if args.amp else None,
        channels_last=device.type == "cuda",
    )
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, args.size, args.size), generator=g, dtype=torch.uint8)
    model = make_model(args.model, device, ctx.channels_last)
    bands = LaplacianBands(args.size, args.size)
    index = list(range(args.n))
    stats = NoiseStats()
    conditions = [(0, 0.0)] + [(f, sd) for f in range(bands.levels) for sd in NOISE_SDS]
    ctx.predict(model, images[: args.batch_size])  # warm-up

    print(
        f"critical-band conditions vs clean inference: {args.model}, {args.n} images of {args.size} px "
        f"({bands.levels} bands), batch {args.batch_size}, {device}{' bf16' if args.amp else ''}, "
        f"threads {torch.get_num_threads()}, {args.repeats} passes, ratio = median over (batch, pass) pairs"
    )
    print(f"{'condition':<16}{'clean s':>9}{'cond s':>9}{'ratio':>8}{'stimulus ms/img':>17}")
    ratios = []
    for f, sd in conditions:
        tf = CriticalBandTransform(ctx, bands, bands.levels - 1 - f, sd, index, stats=stats)
        ratio, clean, cond = paired_ratio(ctx, model, images, tf, args.repeats)
        stim = timed_transform(ctx, images, tf) / args.n * 1e3
        ratios.append(ratio)
        name = "clean (gray)" if sd == 0 else f"f{f} sd{sd:g}"
        print(f"{name:<16}{clean:>9.3f}{cond:>9.3f}{ratio:>8.3f}{stim:>17.3f}")
    print(f"ratio: max {max(ratios):.3f}, mean {sum(ratios) / len(ratios):.3f} (target ≤ 1.2)")
    if stats.pixels:
        print(
            f"out-of-range pixels {stats.out_of_range / stats.pixels:.2e}, redrawn {stats.redrawn / stats.pixels:.2e}"
        )


if __name__ == "__main__":
    main()
