"""Our exact BackSelect vs a straightforward NumPy implementation of the reference algorithm (target ≥ 10×).

The reference follows Carter et al.'s google-research ``sufficient_input_subsets/sis.py`` (written here
from its description, not copied): per input, a boolean mask (True = unmasked) of shape (1, H, W); at
every step all "next masks" (one more position masked) are built on the host in NumPy, the candidate
inputs are ``np.where(next_masks, x, fully_masked)``, and the black-box ``f`` is called once per step
on that batch (NumPy → torch → model → softmax of ``c0`` → NumPy); the best candidate (``np.argmax``:
ties → lowest index) becomes the new mask. Inputs are processed one at a time, as its API takes them.

Ours (:func:`biasbench.metrics.sis_backselect.exact_backselect`) builds the candidates on the device
by writing one baseline pixel into copies of the current images, for every image of the batch at once,
and evaluates them in chunks under ``inference_mode``. Both run the same tiny CNN on the same images
and must produce the same removal orders (checked). Two ratios are printed: one image (the per-input
overhead alone), and ``--images`` images (the reference loops over them, ours batches them — what the
metric does).

    python benchmarks/sis_exact_vs_reference.py                 # CPU: 12×12 px, 16 images
    python benchmarks/sis_exact_vs_reference.py --device cuda --size 24 --images 64
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from biasbench.metrics.base import ModelWrapper
from biasbench.metrics.sis_backselect import exact_backselect


def tiny_mlp(size: int, num_classes: int = 10) -> nn.Module:
    """A one-hidden-layer perceptron on the pixels (the "tiny model" regime where per-call costs dominate)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 32), nn.ReLU(), nn.Linear(32, num_classes))
    with torch.no_grad():
        net[-1].weight.mul_(4.0)
    return net


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    """Two small convolutions (8, 16 channels), global pooling, a linear head."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
    with torch.no_grad():
        net[-1].weight.mul_(20.0)  # confident enough that the traces are not flat
    return net


# ----------------------------------------------------------------------------------------------------
# The reference algorithm, NumPy candidates on the host, one model call per step
# ----------------------------------------------------------------------------------------------------


def _next_masks(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All masks with one more position masked (False), and the positions (row-major order)."""
    idxs = np.transpose(np.nonzero(mask))  # (U, mask.ndim), increasing row-major
    if idxs.size == 0:
        return np.empty((0,) + mask.shape, bool), idxs
    masks = np.repeat(mask[None], idxs.shape[0], axis=0)
    masks[(np.arange(idxs.shape[0]),) + tuple(idxs.T)] = False
    return masks, idxs


def reference_backselect(f, x: np.ndarray, fully_masked: np.ndarray) -> tuple[list[int], list[float]]:
    """BackSelect as in the reference: returns masked positions (flat) and f after each masking."""
    mask = np.ones((1,) + x.shape[1:], dtype=bool)  # broadcast over channels
    order: list[int] = []
    values: list[float] = []
    masks, idxs = _next_masks(mask)
    while idxs.size > 0:
        candidates = np.where(masks, x, fully_masked)  # (U, C, H, W) on the host
        vals = f(candidates)
        best = int(np.argmax(vals))
        order.append(int(np.ravel_multi_index(tuple(idxs[best]), mask.shape)))
        values.append(float(vals[best]))
        mask = masks[best]
        masks, idxs = _next_masks(mask)
    return order, values


def make_f(model: nn.Module, c0: int, device: torch.device):
    def f(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
            return model(t).float().softmax(1)[:, c0].cpu().numpy()

    return f


def run_reference(
    model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, device: torch.device
) -> np.ndarray:
    """Orders (B, P) from the reference, one image at a time (timed by the caller)."""
    b, _, h, w = x.shape
    xs = x.cpu().numpy()
    full = baseline.cpu().expand(1, 3, h, w)[0].numpy()
    out = np.empty((b, h * w), dtype=np.int64)
    for i in range(b):
        with torch.no_grad():
            c0 = int(model(x[i : i + 1].to(device)).argmax(1))
        removal, _ = reference_backselect(make_f(model, c0, device), xs[i], full)
        out[i, removal] = np.arange(h * w)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=12, help="image side (P = size², ≤ 1024)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=4096, help="candidate images per forward (ours)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.rand(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(
        device
    )
    p = args.size**2
    nets = {"mlp": lambda: tiny_mlp(args.size), "cnn": tiny_cnn}
    print(
        f"exact BackSelect on {device} ({torch.get_num_threads()} CPU threads), {args.size}×{args.size} = {p} px, "
        f"{p * (p + 1) // 2} candidate forwards per image on both sides"
    )
    for name in args.models.split(","):
        model = ModelWrapper(
            nets[name](), mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=10, label_space="toy"
        )
        model = model.to(device).eval()
        base = model.pixel_mean
        # warm-up both paths
        exact_backselect(model, x[:2], base, chunk_size=args.chunk)
        run_reference(model, x[:1], base, device)

        def ours(n: int, model: nn.Module = model, base: torch.Tensor = base) -> np.ndarray:
            tr = exact_backselect(model, x[:n], base, chunk_size=args.chunk, max_pixels=None)
            _sync(device)
            return tr.order.numpy()

        for n in sorted({1, args.images}):
            ref_order, t_ref = timed(
                lambda n=n, model=model, base=base: run_reference(model, x[:n], base, device)
            )
            our_order, t_ours = timed(lambda n=n, ours=ours: ours(n))
            agree = float((ref_order == our_order).all(axis=1).mean())
            print(
                f"tiny {name}, {n:3d} image(s): reference {t_ref:8.2f} s, ours {t_ours:8.2f} s, "
                f"ratio = {t_ref / t_ours:6.1f}×  (identical removal orders: {agree:.0%})"
            )
    print("target ≥ 10× (the metric runs many images at once; one image shows the per-input overhead alone)")


if __name__ == "__main__":
    main()
