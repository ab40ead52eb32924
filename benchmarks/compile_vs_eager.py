"""``bench run --compile`` vs eager for a group of K checkpoints of one architecture.

A group (``bench run --group K``) of K checkpoints of one architecture passes the same batch stream
through each model. Eager: K passes. Compiled (:mod:`biasbench.harness.compiling`): the first model's
pass pays the compile warm-up (plus one recompile for the last, partial batch: a dynamic batch
dimension), the other K − 1 reuse its graph (dynamo caches per code object; parameters are graph
inputs). Both run ``EvalContext.predict`` on images decoded once by the harness's own loader (the
memory-mapped cache's path), in channels_last, like ``bench run``.

    OMP_NUM_THREADS=1 python benchmarks/compile_vs_eager.py --data ../shared/data/imagenet-sample

Random-init weights (``pretrained=False``): the cost of a forward does not depend on the values. The
inductor cache starts empty (a fresh ``TORCHINDUCTOR_CACHE_DIR``) unless ``--warm-cache``, so the
warm-up is what a first ``bench run --compile`` on a machine pays.

Prints per model: eager seconds, compiled seconds; then the compile warm-up, the steady-state speed-up
of a compiled pass, the agreement of the logits, and the group's ratio eager / compiled (warm-up
included) last.
"""

from __future__ import annotations

import os
import sys
import tempfile

if "--warm-cache" not in sys.argv:  # before torch is imported: inductor reads it once
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")

import argparse  # noqa: E402 - after the cache directory is chosen
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402
from timm.data import resolve_data_config  # noqa: E402

from biasbench.harness.compiling import MODE, compile_model, is_compiled  # noqa: E402
from biasbench.harness.datasets.folders import decode_files, list_labeled_files  # noqa: E402
from biasbench.metrics.base import EvalContext, ModelWrapper  # noqa: E402
from biasbench.registry.arch_families.timm_models import timm_preprocess  # noqa: E402


def _models(arch: str, k: int, device: torch.device) -> list[ModelWrapper]:
    """K random-init instances (seeds 0 … K−1), wrapped as the executor wraps a checkpoint."""
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        net = timm.create_model(arch, pretrained=False)
        cfg = resolve_data_config({}, model=net)
        m = ModelWrapper(net, mean=cfg["mean"], std=cfg["std"], num_classes=1000, label_space="imagenet-1k")
        out.append(m.eval().requires_grad_(False).to(device).to(memory_format=torch.channels_last))
    return out


def _timed(ctx: EvalContext, model: ModelWrapper, images: torch.Tensor) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    logits = ctx.predict(model, images)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/imagenet-sample"))
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("-k", type=int, default=4, help="checkpoints in the group")
    ap.add_argument("--batch-size", type=int, default=64, help="bench run's default")
    ap.add_argument("--images", type=int, default=300, help="at most this many photos")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warm-cache", action="store_true", help="keep the inductor cache of earlier runs")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast, as the harness runs)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    files = list_labeled_files(args.data, "wnid-prefix")[: args.images]
    pre = timm_preprocess(args.model)  # timm's eval data config, as the registry reads it
    images = torch.from_numpy(decode_files([args.data / f for f, _ in files], pre))
    ctx = EvalContext(
        device=device,
        batch_size=args.batch_size,
        amp_dtype=torch.bfloat16 if device.type == "cuda" else None,
        channels_last=True,
    )
    models = _models(args.model, args.k, device)
    print(
        f"{args.model} × {args.k}, {len(images)} images of {pre.crop} px, batch size {args.batch_size}, "
        f"{device}, {torch.get_num_threads()} CPU thread(s), inductor mode {MODE!r}, "
        f"inductor cache {'warm' if args.warm_cache else 'empty'}"
    )

    ctx.predict(models[0], images[: args.batch_size])  # oneDNN's own first-call set-up, outside both
    eager, eager_logits = zip(*(_timed(ctx, m, images) for m in models), strict=True)
    for m in models:
        compile_model(m)
    compiled, compiled_logits = zip(*(_timed(ctx, m, images) for m in models), strict=True)
    assert all(is_compiled(m) for m in models), "a model fell back to eager"

    for i, (e, c) in enumerate(zip(eager, compiled, strict=True)):
        note = " (incl. compile)" if i == 0 else ""
        print(f"model {i}: eager {e:.2f} s   compiled {c:.2f} s{note}")
    steady = sum(compiled[1:]) / max(1, len(compiled) - 1)
    eager_pass = sum(eager) / len(eager)
    warmup = compiled[0] - steady
    diff = max(float((a - b).abs().max()) for a, b in zip(eager_logits, compiled_logits, strict=True))
    top1 = min(
        float((a.argmax(1) == b.argmax(1)).float().mean())
        for a, b in zip(eager_logits, compiled_logits, strict=True)
    )
    print(f"eager seconds (group of {args.k}): {sum(eager):.2f}")
    print(f"compiled seconds (group of {args.k}, warm-up included): {sum(compiled):.2f}")
    print(f"compile warm-up (first compiled pass − a later one): {warmup:.2f} s")
    speedup = eager_pass / steady
    print(f"steady state: eager {eager_pass:.2f} s/pass, compiled {steady:.2f} s/pass: {speedup:.2f}x")
    if eager_pass > steady:
        print(f"break-even: the warm-up is repaid after {warmup / (eager_pass - steady):.1f} passes")
    print(f"logits: max |compiled − eager| = {diff:.2e}, top-1 agreement {top1:.4f}")
    print(f"ratio eager/compiled for the group (warm-up included): {sum(eager) / sum(compiled):.2f}x")


if __name__ == "__main__":
    main()
