"""Batched Gradient SIS throughput as a fraction of plain forward+backward throughput (target ≥ 0.8).

Both sides run the same model on the same batch and make the same passes: ``steps`` forward+backward
passes (gradient with respect to the input only; parameters frozen — SIS never needs weight
gradients) plus one forward. The baseline is the bare model: ``x.requires_grad_()``, forward,
log-softmax of the predicted class, ``autograd.grad`` to the input. SIS adds what BackSelect needs on
top: the masked input ``x + M·(baseline − x)``, the gradient with respect to the pixel mask, the top-k
selection among unmasked pixels (ties → lowest index) and the bookkeeping of order and confidence.
The printed ratio is SIS image-steps/s divided by baseline image-steps/s (median of ``--repeats``
alternating runs).

    python benchmarks/sis_throughput.py                      # CPU defaults: resnet18, 8 × 3 × 112², 5 steps
    python benchmarks/sis_throughput.py --device cuda --arch resnet50 --size 224 --batch 64 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

from biasbench.metrics.base import ModelWrapper
from biasbench.metrics.sis_backselect import batched_gradient_backselect


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_forward_backward(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    """Seconds for ``steps`` forward+backward passes to the input plus one forward (no SIS)."""
    _sync(x.device)
    t0 = time.perf_counter()
    c0 = None
    for _ in range(steps):
        xi = x.detach().requires_grad_()
        logits = model(xi).float()
        if c0 is None:
            c0 = logits.argmax(1)
        logp = logits.log_softmax(1).gather(1, c0[:, None]).sum()
        (g,) = torch.autograd.grad(logp, xi)
    with torch.no_grad():
        model(x)
    _sync(x.device)
    return time.perf_counter() - t0


def sis_steps(model: ModelWrapper, x: torch.Tensor, k: int, steps: int) -> float:
    """Seconds for ``steps`` Batched Gradient BackSelect steps (+ the closing forward)."""
    _sync(x.device)
    t0 = time.perf_counter()
    batched_gradient_backselect(model, x, model.pixel_mean, k, max_steps=steps)
    _sync(x.device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="resnet18", help="timm architecture (random weights)")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--k", type=int, default=None, help="pixels per step (default 100·HW/224²)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = timm.create_model(args.arch, pretrained=False, num_classes=1000)
    model = ModelWrapper(
        net,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        num_classes=1000,
        label_space="imagenet-1k",
    )
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    k = args.k or max(1, round(100 * args.size**2 / 224**2))

    plain_forward_backward(model, x, 1)  # warm-up (kernels, allocator)
    sis_steps(model, x, k, 1)
    t_plain, t_sis = [], []
    for _ in range(args.repeats):
        t_plain.append(plain_forward_backward(model, x, args.steps))
        t_sis.append(sis_steps(model, x, k, args.steps))
    image_steps = args.batch * args.steps
    plain = image_steps / statistics.median(t_plain)
    sis = image_steps / statistics.median(t_sis)
    print(
        f"{args.arch} on {device} ({torch.get_num_threads()} CPU threads), batch {args.batch} × 3 × "
        f"{args.size}², k = {k}, {args.steps} steps, median of {args.repeats}"
    )
    print(f"plain forward+backward: {plain:10.1f} image-steps/s")
    print(f"Batched Gradient SIS:   {sis:10.1f} image-steps/s")
    print(f"ratio SIS / plain = {sis / plain:.3f}  (target ≥ 0.8)")


if __name__ == "__main__":
    main()
