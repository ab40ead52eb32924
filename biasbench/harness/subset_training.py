"""Training on pixel subsets (Carter et al., "Overinterpretation reveals image classification model
pathologies", NeurIPS 2021, §3: the backward-selection subsets are valid statistical patterns — a model
trained only on the 5 % subsets of the training images reaches high accuracy on the subsets of the test
images), reproduced on the demo world (issue 24, part 6).

Definitions (the SIS metric's, :mod:`biasbench.metrics.sis` and ``../shared/DESIGN.md``):

* A pixel subset of image ``x`` keeps ``n = ceil(q·H·W)`` pixels (all three channels) and sets every
  other pixel to the baseline value, the dataset mean in pixel space (the zoo's ``WORLD_PREPROCESS.mean``,
  which is also ``ModelWrapper.pixel_mean`` of a zoo checkpoint).
* ``backselect``: the top-``q`` Batched Gradient BackSelect subset of the **source** checkpoint — the
  ``n`` pixels removed last (``sis_traces.top_subset``), for the source's clean prediction ``c0``,
  ``k`` pixels per step. This is the "5 % BS subset" of the study's Table 1.
* ``random``: ``n`` pixels drawn without replacement, seeded by (seed, split, image index) only
  (``sis.random_subset``), so the subsets do not depend on any model.

``train_on_subsets`` computes the subsets of the first ``n_train`` images of ``demo-world/train`` and
trains a zoo recipe on them (``registry.zoo.training.train``, same schedule, same seeds); the result is
a checkpoint file like any other (``zoo:resnet50-w8@FILE``). ``subset_accuracy`` then tells how each
checkpoint does on the full test images, on the source's BackSelect subsets of them and on random subsets
— the three columns of the study's claim. ``bench zoo train --subsets`` and ``bench zoo subsets`` are the
commands (README, "Training on pixel subsets").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from biasbench.core import world
from biasbench.core.errors import InputError
from biasbench.core.paths import default_cache_dir
from biasbench.harness.executor import wrap_model
from biasbench.metrics.base import ModelWrapper
from biasbench.metrics.sis import random_subset
from biasbench.metrics.sis_backselect import batched_gradient_backselect
from biasbench.metrics.sis_traces import subset_size, top_subset
from biasbench.registry.loading import load_checkpoint
from biasbench.registry.registry_files import RegistryError, resolve_targets, shipped_registries
from biasbench.registry.spec import CheckpointSpec
from biasbench.registry.zoo import training
from biasbench.registry.zoo.recipes import RECIPES

SubsetKind = Literal["backselect", "random"]
KINDS: tuple[str, ...] = ("backselect", "random")
#: BackSelect pixels per step for the subsets (32 px images: 1,024 pixels, 32 steps); coarser than the
#: SIS metric's ~50 steps so that thousands of training images take minutes, not hours.
DEFAULT_K = 32
DEFAULT_BATCH = 250

Log = Callable[[str], Any]


def _one_spec(target: str) -> CheckpointSpec:
    """The checkpoint ``target`` names: a target of ``bench run`` that resolves to exactly one checkpoint,
    or the id of an entry of a shipped registry (``zoo-plain`` of ``demo``)."""
    try:
        specs = resolve_targets([target])
    except RegistryError:
        for name in shipped_registries():
            found = [s for s in resolve_targets([name]) if s.id == target]
            if found:
                return found[0]
        raise
    if len(specs) != 1:
        raise InputError(f"{target!r} names {len(specs)} checkpoints; name exactly one")
    return specs[0]


def load_model(target: str, *, trust: bool = False, cache_dir: Path | None = None) -> ModelWrapper:
    """The one checkpoint that ``target`` names (registry id, ``ARCH@WEIGHTS``, …) as a CPU
    :class:`ModelWrapper` in eval mode; it must live in the ``demo-world`` label space."""
    spec = _one_spec(target)
    if spec.labels != "demo-world":
        raise InputError(
            f"checkpoint {spec.id!r} has label space {spec.labels!r}; training on pixel subsets runs on "
            "the demo world (label space 'demo-world')"
        )
    loaded = load_checkpoint(spec, cache_dir=Path(cache_dir or default_cache_dir()), trust=trust)
    return wrap_model(loaded, torch.device("cpu"))


def keep_masks(
    images_u8: torch.Tensor,
    kind: SubsetKind,
    q: float,
    *,
    source: ModelWrapper | None = None,
    k: int = DEFAULT_K,
    seed: int = 0,
    split: str = "train",
    batch_size: int = DEFAULT_BATCH,
) -> torch.Tensor:
    """bool (N, 1, H, W): the pixel subset of each image (module docstring), ``ceil(q·H·W)`` pixels each.

    ``backselect`` needs ``source`` (the BackSelect model); ``random`` ignores it."""
    if kind not in KINDS:
        raise InputError(f"unknown subset kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not 0.0 < q <= 1.0:
        raise InputError(f"q must be in (0, 1], got {q}")
    n_img, _, h, w = images_u8.shape
    n_keep = subset_size(h * w, q)
    keep = torch.zeros(n_img, h * w, dtype=torch.bool)
    if kind == "random":
        for i in range(n_img):
            keep[i, torch.from_numpy(random_subset(h * w, n_keep, seed, f"{split}/{i}"))] = True
        return keep.view(n_img, 1, h, w)
    if source is None:
        raise InputError("backselect subsets need a source checkpoint")
    baseline = source.pixel_mean.reshape(1, 3, 1, 1)
    for start in range(0, n_img, batch_size):
        x = images_u8[start : start + batch_size].float() / 255.0
        trace = batched_gradient_backselect(source, x, baseline, k)
        order = trace.order.numpy()
        for r in range(order.shape[0]):
            keep[start + r, torch.from_numpy(top_subset(order[r], n_keep))] = True
    return keep.view(n_img, 1, h, w)


def subset_name(recipe: str, kind: SubsetKind, q: float) -> str:
    """File stem of a subset-trained checkpoint, e.g. ``plain-backselect5`` (q = 5 %)."""
    return f"{recipe}-{kind}{q * 100:g}"


def train_on_subsets(
    recipe: str,
    kind: SubsetKind,
    out_dir: Path,
    *,
    source: str | None = None,
    q: float = 0.05,
    n_train: int = 2000,
    k: int = DEFAULT_K,
    seed: int = 0,
    steps: int | None = None,
    trust: bool = False,
    log: Log = print,
) -> Path:
    """Train zoo ``recipe`` on the ``kind`` subsets of the first ``n_train`` training images; returns
    the weights file ``<out_dir>/<recipe>-<kind><q%>.safetensors`` (manifest entry beside it)."""
    if not 1 <= n_train <= world.WorldConfig().n_train:
        raise InputError(f"n_train must be in [1, {world.WorldConfig().n_train}], got {n_train}")
    if kind == "backselect" and not source:
        raise InputError(
            "--subsets backselect needs --source CHECKPOINT (the model whose subsets to train on)"
        )
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    # the recipe's own pool (texture-/shape-randomised recipes render their own), as training sees it
    images_u8, _ = training.training_pool(RECIPES[recipe], world.WorldConfig(), limit=n_train)
    model = load_model(source, trust=trust) if kind == "backselect" and source else None
    log(
        f"computing {kind} subsets (q = {q:g}) of {n_train} training images"
        + (f" of {source}" if model else "")
    )
    with torch.inference_mode(False):
        keep = keep_masks(images_u8, kind, q, source=model, k=k, seed=seed, split="train")
    describe: dict[str, Any] = {"kind": kind, "q": q, "n_train": n_train, "seed": seed}
    if kind == "backselect":
        describe.update(source=source, k=k)
    subsets = training.PixelSubsets(keep=keep, name=subset_name(recipe, kind, q), describe=describe)
    return training.train(recipe, Path(out_dir), steps=steps, log=log, subsets=subsets)


@dataclass(frozen=True)
class SubsetAccuracy:
    """Top-1 accuracy of one checkpoint (its id) on ``n`` test images: full, the source's BackSelect subsets,
    random subsets (same ``q``)."""

    checkpoint: str
    full: float
    backselect: float
    random: float
    n: int


@torch.inference_mode()
def _top1(model: ModelWrapper, x: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    pred = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    return float((pred == labels).double().mean())


def subset_accuracy(
    targets: Sequence[str],
    source: str,
    *,
    q: float = 0.05,
    n_test: int = 1000,
    k: int = DEFAULT_K,
    seed: int = 0,
    trust: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> list[SubsetAccuracy]:
    """Each target's accuracy on the first ``n_test`` images of ``demo-world/test``: full, with only
    ``source``'s top-``q`` BackSelect subset kept, and with a random ``q`` subset kept."""
    cfg = world.WorldConfig()
    if not 1 <= n_test <= cfg.n_test:
        raise InputError(f"n_test must be in [1, {cfg.n_test}], got {n_test}")
    test = world.generate("test", cfg, default_cache_dir())
    images_u8, labels = test.images[:n_test], test.labels[:n_test]
    src = load_model(source, trust=trust)
    with torch.inference_mode(False):
        bs_keep = keep_masks(images_u8, "backselect", q, source=src, k=k, split="test")
    rnd_keep = keep_masks(images_u8, "random", q, seed=seed, split="test")
    x = images_u8.float() / 255.0
    base = src.pixel_mean.reshape(1, 3, 1, 1)
    x_bs, x_rnd = torch.where(bs_keep, x, base), torch.where(rnd_keep, x, base)
    out = []
    for t in targets:
        m = src if t == source else load_model(t, trust=trust)
        out.append(
            SubsetAccuracy(
                checkpoint=m.checkpoint_id,
                full=_top1(m, x, labels, batch_size),
                backselect=_top1(m, x_bs, labels, batch_size),
                random=_top1(m, x_rnd, labels, batch_size),
                n=int(n_test),
            )
        )
    return out
