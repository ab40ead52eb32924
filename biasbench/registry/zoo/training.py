"""Training of the demo mini zoo (``bench zoo train``): every shipped checkpoint, reproducibly.

``train(recipe, out_dir)`` trains ``resnet50-w8`` (``registry/zoo/arch.py``) with the recipe's data and
augmentation (``registry/zoo/recipes.py``) and writes ``<out_dir>/<recipe>.safetensors`` (fp16 floats,
int64 BN counters) plus an entry in ``<out_dir>/manifest.json``: recipe, seed, steps, epochs, batch size,
sha256 of the file, test accuracy (of the fp16 weights as shipped), cue-conflict shape-decision rate,
``gaussian_noise-5`` accuracy, training seconds, thread count and library versions.

Schedule (all recipes): AdamW (β = 0.9, 0.999; weight decay 0.05 on conv/linear weights only), one-cycle
learning rate with peak 4e-3 (15 % warm-up, cosine decay), batch 128, 800 steps (the recipe's
``steps``), cross-entropy (soft targets for mixup/CutMix), BN in training mode, channels-last; inputs
normalised with ``zoo.WORLD_PREPROCESS`` inside the model, as ``ModelWrapper`` does at evaluation.
Data: a pool of ``WorldConfig.n_train`` = 20,000 images rendered once and cached under
``<cache>/datasets`` (the plain pool is exactly ``demo-world/train``; texture-/shape-randomised pools
re-draw the texture/shape ids with a seeded generator and render with their own seeds), visited in
seeded random order (5.1 epochs); augmentation runs per batch on float [0, 1] tensors with the same
seeded generator.

Threads: one by default. On the shared 2-core development machine (load ~8), two OpenMP threads
spinning against other processes trained ~10× slower per CPU-second than one; on an idle machine more
threads are faster (pass ``threads=2``; the weights may then differ in the last bits).

Determinism: initialisation, batch order and augmentation come from generators seeded by (recipe,
seed); ``torch.use_deterministic_algorithms(True)`` is on during training; the thread count is fixed
(``threads``, default 1, recorded in the manifest). On the same CPU type, torch build and thread count the
weights are bit-identical; elsewhere they differ in the last bits and the metrics by noise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from biasbench.core import world
from biasbench.core.corruptions import gaussian_blur
from biasbench.core.errors import InputError, UnknownNameError
from biasbench.core.images import cached_array
from biasbench.core.paths import default_cache_dir
from biasbench.registry import zoo
from biasbench.registry.download import sha256_file
from biasbench.registry.zoo.recipes import RECIPES as _RECIPES
from biasbench.registry.zoo.recipes import Recipe

RECIPES: list[str] = list(_RECIPES)

LR = 4e-3
WEIGHT_DECAY = 0.05
WARMUP = 0.15
EVAL_BATCH = 500

Log = Callable[[str], Any]


class Normalized(nn.Module):
    """``net((x - mean) / std)``: the training-time twin of ``ModelWrapper``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        p = zoo.WORLD_PREPROCESS
        self.register_buffer("mean", torch.tensor(p.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(p.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def apply_keep(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x`` (B, 3, H, W) in [0, 1] with only the pixels of ``keep`` (bool (B, 1, H, W)) left; every other
    pixel takes the world's mean (``zoo.WORLD_PREPROCESS.mean``, the SIS baseline of the zoo models)."""
    base = torch.tensor(zoo.WORLD_PREPROCESS.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.where(keep, x, base)


def _seed(*parts: object) -> int:
    return world.seed_of("zoo", *parts)


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def training_pool(
    recipe: Recipe,
    cfg: world.WorldConfig = world.WorldConfig(),
    limit: int | None = None,
    cache_dir: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 3, H, W), int64 labels) the recipe trains on.

    The plain pool is ``demo-world/train``; a randomised pool re-draws each image's texture (with
    probability ``texture_random``) and shape (``shape_random``) uniformly from a seeded generator and
    renders with its own chunk seeds. ``limit``: only the first ``limit`` images (not cached).
    ``cache_dir``: memory-map the full pool from ``<cache_dir>/datasets`` (rendered once).
    """
    labels, _, _ = world.split_labels("train", cfg)
    if recipe.texture_random == 0 and recipe.shape_random == 0:
        if limit is None and cache_dir is not None:
            ds = world.generate("train", cfg, cache_dir)
            return ds.images, ds.labels
        r = world.render_split("train", cfg, limit=limit)
        return world.to_uint8(r.images), r.shape.clone()
    name = f"train-texture{recipe.texture_random:g}-shape{recipe.shape_random:g}"

    def build() -> np.ndarray:
        g = torch.Generator().manual_seed(_seed("pool", recipe.texture_random, recipe.shape_random, cfg.seed))
        n = labels.shape[0]
        shape, texture = labels.clone(), labels.clone()
        rand_t = torch.rand(n, generator=g) < recipe.texture_random
        texture[rand_t] = torch.randint(0, world.NUM_CLASSES, (int(rand_t.sum()),), generator=g)
        rand_s = torch.rand(n, generator=g) < recipe.shape_random
        shape[rand_s] = torch.randint(0, world.NUM_CLASSES, (int(rand_s.sum()),), generator=g)
        r = world.render_pool(name, shape, texture, cfg, "textured", limit=limit)
        return world.to_uint8(r.images).numpy()

    if limit is None and cache_dir is not None:
        arr = cached_array(Path(cache_dir), f"demo-world-{name}-{world.manifest_hash(name, cfg)}", build)
    else:
        arr = build()
    images = torch.from_numpy(arr)
    return images, labels[: images.shape[0]].clone()


def _batches(n: int, batch_size: int, g: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        perm = torch.randperm(n, generator=g)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]


# ----------------------------------------------------------------------------------------------------
# Augmentations: (model, x float [0,1], y int64, generator, params) -> (x, soft targets or labels)
# ----------------------------------------------------------------------------------------------------


def _one_hot(y: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y, world.NUM_CLASSES).float()


def augment(
    recipe: Recipe, model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's augmentation of one batch; returns (inputs, targets) with soft (N, K) targets."""
    p = recipe.params
    n = x.shape[0]
    kind = recipe.augment
    if kind == "none":
        return x, _one_hot(y)
    if kind == "gaussian-noise":
        sigma = torch.rand(n, generator=g) * p["sigma_max"]
        return (x + sigma[:, None, None, None] * torch.randn(x.shape, generator=g)).clamp(0, 1), _one_hot(y)
    if kind == "blur":
        sigma = torch.rand(n, generator=g) * p["sigma_max"] * x.shape[-1] / 32
        return gaussian_blur(x, sigma).clamp(0, 1), _one_hot(y)
    if kind == "input-dropout":
        keep = (torch.rand(n, 1, *x.shape[2:], generator=g) >= p["p"]).float()
        applied = (torch.rand(n, generator=g) < p.get("fraction", 1.0)).float().view(n, 1, 1, 1)
        keep = 1 - applied * (1 - keep)
        mean = torch.tensor(zoo.WORLD_PREPROCESS.mean).view(1, 3, 1, 1)
        return x * keep + mean * (1 - keep), _one_hot(y)
    if kind == "fgsm":
        eps, alpha = p["eps"], p["alpha"]
        delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        return (x + delta).clamp(0, 1), _one_hot(y)
    if kind in ("mixup", "cutmix"):
        alpha = p["alpha"]
        lam = float(_beta_sample(alpha, g))
        perm = torch.randperm(n, generator=g)
        t = _one_hot(y)
        if kind == "mixup":
            return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]
        h, w = x.shape[-2:]
        cut = math.sqrt(1 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam_adj = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        return out, lam_adj * t + (1 - lam_adj) * t[perm]
    raise InputError(f"recipe {recipe.name!r}: unknown augmentation {kind!r}")


def _beta_sample(alpha: float, g: torch.Generator) -> float:
    """Beta(alpha, alpha) from the seeded generator (inverse CDF via scipy on a uniform draw)."""
    from scipy.stats import beta

    u = float(torch.rand(1, generator=g))
    return float(beta.ppf(u, alpha, alpha))


# ----------------------------------------------------------------------------------------------------
# Evaluation (of the weights as shipped)
# ----------------------------------------------------------------------------------------------------


@torch.inference_mode()
def predict(model: nn.Module, images_u8: torch.Tensor) -> torch.Tensor:
    model.eval()
    out = [
        model(images_u8[i : i + EVAL_BATCH].float() / 255.0).argmax(1)
        for i in range(0, len(images_u8), EVAL_BATCH)
    ]
    return torch.cat(out)


def evaluate(
    net: nn.Module, cfg: world.WorldConfig = world.WorldConfig(), cache_dir: Path | None = None
) -> dict[str, float]:
    """test accuracy, cue-conflict shape-decision rate, gaussian_noise-5 accuracy of a bare network."""
    model = Normalized(net)
    test = world.generate("test", cfg, cache_dir)
    cc = world.generate("cue-conflict", cfg, cache_dir)
    noise = world.generate("gaussian_noise-5", cfg, cache_dir)
    acc = float((predict(model, test.images) == test.labels).float().mean())
    pred = predict(model, cc.images)
    n_shape = int((pred == cc.labels).sum())
    n_tex = int((pred == cc.meta["texture"]).sum())
    noise_acc = float((predict(model, noise.images) == noise.labels).float().mean())
    return {
        "test_acc": round(acc, 4),
        "cue_conflict_shape_rate": round(n_shape / max(1, n_shape + n_tex), 4),
        "cue_conflict_n_shape": n_shape,
        "cue_conflict_n_texture": n_tex,
        "gaussian_noise_5_acc": round(noise_acc, 4),
    }


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _deterministic(threads: int | None) -> Iterator[None]:
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def _param_groups(net: nn.Module) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
        del name
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def shipped_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """State dict as shipped: floating tensors in fp16, contiguous (integer buffers kept)."""
    return {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in net.state_dict().items()
    }


def write_weights(state: dict[str, torch.Tensor], path: Path, recipe: str) -> Path:
    """Write a zoo checkpoint atomically with reproducible bytes.

    safetensors stores ``__metadata__`` as a hash map whose key order varies from call to call, so
    the metadata is ONE key (``biasbench``: sorted JSON of arch and recipe): same tensors, same bytes.
    """
    from safetensors.torch import save_file

    meta = {"biasbench": json.dumps({"arch": zoo.ARCH_NAME, "recipe": recipe}, sort_keys=True)}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(state, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # package data: readable by everyone
    os.replace(tmp, path)
    return path


def _update_manifest(out_dir: Path, name: str, entry: dict[str, Any]) -> None:
    path = out_dir / "manifest.json"
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text())
    data.setdefault("arch", zoo.ARCH_NAME)
    data["world"] = {**world.WorldConfig().to_json(), "version": world.WORLD_VERSION}
    data["preprocess"] = zoo.WORLD_PREPROCESS.to_json()
    data.setdefault("checkpoints", {})[name] = entry
    data["checkpoints"] = dict(sorted(data["checkpoints"].items()))
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _resolve_recipe(recipe: str, seed: int | None, steps: int | None) -> tuple[Recipe, int]:
    """The recipe named ``recipe`` (with ``seed`` overriding its own) and the number of steps to train."""
    if recipe not in _RECIPES:
        raise UnknownNameError(f"unknown recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    rec = _RECIPES[recipe]
    if seed is not None:
        rec = dataclasses.replace(rec, seed=seed)
    n_steps = rec.steps if steps is None else int(steps)
    if n_steps < 1:
        raise InputError("steps must be >= 1")
    return rec, n_steps


def _init_model(rec: Recipe) -> tuple[nn.Module, Normalized]:
    """(bare network, its channels-last ``Normalized`` wrapper), initialised from the recipe's seed."""
    torch.manual_seed(_seed("init", rec.name, rec.seed))
    net = zoo.ARCHITECTURES[zoo.ARCH_NAME](world.NUM_CLASSES)
    model = Normalized(net).to(memory_format=torch.channels_last)
    return net, model


def _optimiser(net: nn.Module, n_steps: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW (weight decay on conv/linear weights only) with a one-cycle schedule over ``n_steps``."""
    opt = torch.optim.AdamW(_param_groups(net), lr=LR, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=n_steps, pct_start=WARMUP, anneal_strategy="cos"
    )
    return opt, sched


def _train_step(
    rec: Recipe,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    x_u8: torch.Tensor,
    y: torch.Tensor,
    g: torch.Generator,
    keep: torch.Tensor | None = None,
) -> float:
    """One optimiser step on a uint8 batch (augmented with ``g``); returns the batch's loss.

    ``keep``: bool (B, 1, H, W) pixel subsets; the other pixels take the baseline value
    (:func:`apply_keep`) before the recipe's augmentation."""
    x = x_u8.float() / 255.0
    if keep is not None:
        x = apply_keep(x, keep)
    x = x.contiguous(memory_format=torch.channels_last)
    x, target = augment(rec, model, x, y, g)
    loss = torch.sum(-target * F.log_softmax(model(x), dim=1), dim=1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


def _train_loop(
    rec: Recipe,
    model: Normalized,
    images: torch.Tensor,
    labels: torch.Tensor,
    n_steps: int,
    g: torch.Generator,
    log: Log,
    keep: torch.Tensor | None = None,
) -> None:
    """``n_steps`` steps over seeded random batches of the pool (with the pixel subsets ``keep`` of its
    images, if given); logs a running loss every 100 steps."""
    opt, sched = _optimiser(model.net, n_steps)
    batches = _batches(images.shape[0], min(rec.batch_size, images.shape[0]), g)
    model.train()
    t1 = time.perf_counter()
    running = 0.0
    for step in range(n_steps):
        idx = next(batches)
        loss = _train_step(
            rec, model, opt, sched, images[idx], labels[idx], g, None if keep is None else keep[idx]
        )
        running = 0.9 * running + 0.1 * loss if step else loss
        if (step + 1) % 100 == 0 or step + 1 == n_steps:
            log(
                f"{rec.name}: step {step + 1}/{n_steps} loss {running:.3f} ({time.perf_counter() - t1:.0f} s)"
            )


def _manifest_entry(
    path: Path,
    rec: Recipe,
    n_steps: int,
    pool_size: int,
    train_seconds: float,
    cpu_seconds: float,
    threads: int | None,
) -> dict[str, Any]:
    """The manifest entry of a freshly written weights file (without the evaluation keys)."""
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "recipe": rec.to_json(),
        "seed": rec.seed,
        "steps": n_steps,
        "batch_size": rec.batch_size,
        "epochs": round(n_steps * rec.batch_size / pool_size, 2),
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "threads": torch.get_num_threads() if threads is None else threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }


def _evaluate_shipped(path: Path, cfg: world.WorldConfig, cache_dir: Path | None) -> dict[str, float]:
    """``evaluate`` of the weights as written (fp16 floats loaded back into an fp32 network)."""
    from safetensors.torch import load_file

    fresh = zoo.ARCHITECTURES[zoo.ARCH_NAME](world.NUM_CLASSES)
    fresh.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    )
    return evaluate(fresh, cfg, cache_dir)


@dataclasses.dataclass(frozen=True)
class PixelSubsets:
    """Pixel subsets of the first ``len(keep)`` training images to train on (issue 24, Carter et al.'s
    "training on 5 % subsets"): ``keep`` bool (N, 1, H, W); ``name`` the checkpoint's file stem and
    manifest key; ``describe`` how they were chosen (recorded in the manifest)."""

    keep: torch.Tensor
    name: str
    describe: dict[str, Any]


def train(
    recipe: str,
    out_dir: Path,
    *,
    steps: int | None = None,
    seed: int | None = None,
    log: Log = print,
    threads: int | None = 1,
    evaluate_after: bool = True,
    cache_dir: Path | None = None,
    subsets: PixelSubsets | None = None,
) -> Path:
    """Train one zoo recipe from scratch; write ``<out_dir>/<name>.safetensors`` and its manifest entry
    (``name`` = the recipe's, or ``subsets.name`` when training on pixel subsets).

    ``steps`` / ``seed`` override the recipe's (a quick try: the pool is then cut to the images the
    steps can visit). ``threads`` fixes torch's CPU thread count during training (None: leave it).
    ``subsets``: train on pixel subsets of the pool's first ``len(subsets.keep)`` images only (the
    rest of each image at the baseline value); the manifest entry records ``subsets.describe``.
    Returns the path of the weights file.
    """
    rec, n_steps = _resolve_recipe(recipe, seed, steps)
    cfg = world.WorldConfig()
    if cache_dir is None:
        cache_dir = default_cache_dir()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    with _deterministic(threads):
        t0, c0 = time.perf_counter(), time.process_time()
        limit = None if steps is None else min(cfg.n_train, n_steps * rec.batch_size)
        if subsets is not None:
            limit = len(subsets.keep)
        images, labels = training_pool(rec, cfg, limit=limit, cache_dir=cache_dir)
        keep = None if subsets is None else subsets.keep[: images.shape[0]]
        t_data = time.perf_counter() - t0
        net, model = _init_model(rec)
        g = torch.Generator().manual_seed(_seed("data", rec.name, rec.seed))
        log(
            f"{recipe}: {n_steps} steps, batch {rec.batch_size}, pool {images.shape[0]} ({t_data:.1f} s to render)"
        )
        _train_loop(rec, model, images, labels, n_steps, g, log, keep)
        train_seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - c0

    name = recipe if subsets is None else subsets.name
    path = write_weights(shipped_state(net), out_dir / f"{name}.safetensors", recipe)
    entry = _manifest_entry(path, rec, n_steps, images.shape[0], train_seconds, cpu_seconds, threads)
    if subsets is not None:
        entry["pixel_subsets"] = subsets.describe
    if evaluate_after:
        entry.update(_evaluate_shipped(path, cfg, cache_dir))
        log(
            f"{name}: test acc {entry['test_acc']:.3f}, cue-conflict shape rate "
            f"{entry['cue_conflict_shape_rate']:.3f}, noise-5 acc {entry['gaussian_noise_5_acc']:.3f}, "
            f"{train_seconds:.0f} s"
        )
    _update_manifest(out_dir, name, entry)
    return path


def train_all(
    out_dir: Path, log: Log = print, threads: int | None = 1, steps: int | None = None
) -> list[Path]:
    """Train every recipe in order (``RECIPES``); returns the weight files. Logs the total time."""
    t0 = time.perf_counter()
    paths = [train(r, out_dir, steps=steps, log=log, threads=threads) for r in RECIPES]
    total = time.perf_counter() - t0
    log(f"trained {len(paths)} recipes in {total:.0f} s")
    path = Path(out_dir) / "manifest.json"
    data = json.loads(path.read_text())
    data["train_all_seconds"] = round(total, 1)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return paths
