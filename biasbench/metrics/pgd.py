"""L∞ projected gradient descent (Madry et al. 2018) in pixel space, as in the study's evaluation.

Definition (foolbox ``LinfPGD(steps=40, abs_stepsize=2/255)`` with ε = 0.5/255, the constants of
Gavrikov & Keuper 2024): images ``x ∈ [0, 1]``; start at ``x + U(−ε, ε)`` (seeded; or at ``x`` with
``random_start=False``) clipped to [0, 1]; then ``steps`` times: ``x ← x + step · sign(∇ₓ CE(f(x), y))``,
project onto the ε-ball around the clean image (``clip(x, x₀ − ε, x₀ + ε)``) and clip to [0, 1]. The
loss is the cross-entropy of the logits with the true label, summed over the batch (per-image
gradients are independent). Robust accuracy is the top-1 accuracy on the final images (a clean error
stays an error: it counts as a success of the attack).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biasbench.core.errors import InputError


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step: float,
    steps: int,
    generator: torch.Generator | None = None,
    random_start: bool = True,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Adversarial images for ``x`` (float (N, 3, H, W) in [0, 1] on the model's device) and labels
    ``y``: every image stays within ``eps`` of its clean image (L∞) and within [0, 1]. ``noise``:
    U[0, 1) draws of ``x``'s shape for the random start (else drawn with ``generator``)."""
    if eps < 0 or step < 0 or steps < 0:
        raise InputError(f"PGD needs eps, step, steps ≥ 0; got {eps}, {step}, {steps}")
    x0 = x.detach().float()
    if random_start and eps > 0:
        if noise is None:
            noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        xa = (x0 + (noise.to(x0.dtype) * 2 - 1) * eps).clamp(0, 1)
    else:
        xa = x0.clone()
    lo, hi = x0 - eps, x0 + eps
    for _ in range(steps):
        xa.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xa).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xa)
        xa = torch.minimum(torch.maximum(xa.detach() + step * grad.sign(), lo), hi).clamp(0, 1)
    return xa.detach()
