"""Training on pixel subsets (issue 24, part 6; Carter et al. 2021): which pixels a subset keeps, that
training on every pixel is ordinary training, and the commands `bench zoo train --subsets` and
`bench zoo subsets`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from biasbench.core.errors import InputError
from biasbench.harness import subset_training as st
from biasbench.metrics.base import ModelWrapper
from biasbench.registry import zoo
from biasbench.registry.registry_files import resolve_targets
from biasbench.registry.zoo import training
from tests.harness_fixtures import bench
from tests.test_sis import OnePixel


def _u8(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )


def test_random_subsets_keep_ceil_q_pixels_seeded_by_image_only() -> None:
    # 32 × 32 = 1,024 pixels; q = 5 % → ceil(51.2) = 52 pixels per image
    a = st.keep_masks(_u8(6, 32, 0), "random", 0.05, seed=3)
    b = st.keep_masks(_u8(6, 32, 1), "random", 0.05, seed=3)  # other pixels, same subsets
    assert a.shape == (6, 1, 32, 32) and a.dtype == torch.bool
    assert a.flatten(1).sum(1).tolist() == [52] * 6
    assert torch.equal(a, b)
    assert not torch.equal(a, st.keep_masks(_u8(6, 32, 0), "random", 0.05, seed=4))
    assert not torch.equal(a[0], a[1])  # each image its own draw


@pytest.mark.parametrize("k", [1, 3])
def test_the_backselect_subset_of_a_one_pixel_model_is_that_pixel(k: int) -> None:
    # Only pixel (5, 2) moves the model's output, so BackSelect masks it last (every other pixel has
    # gradient exactly 0); q = 1/64 keeps one pixel of 8 × 8: that one, in every image.
    model = ModelWrapper(OnePixel(5, 2), mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=2, label_space="toy")
    images = _u8(4, 8, 2)
    images[:, 0, 5, 2] = 255
    keep = st.keep_masks(images, "backselect", 1 / 64, source=model.eval(), k=k)
    for b in range(4):
        assert torch.nonzero(keep[b, 0]).tolist() == [[5, 2]]


def test_a_subset_keeps_its_pixels_and_sets_the_rest_to_the_world_mean() -> None:
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    keep = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    keep[0, 0, 1, 2] = keep[1, 0, 3, 3] = True
    y = training.apply_keep(x, keep)
    assert torch.equal(y[0, :, 1, 2], x[0, :, 1, 2]) and torch.equal(y[1, :, 3, 3], x[1, :, 3, 3])
    rest = ~keep.expand_as(x)
    assert torch.all(y[rest] == 0.5) and zoo.WORLD_PREPROCESS.mean == (0.5, 0.5, 0.5)


def test_training_on_every_pixel_is_ordinary_training(tmp_path: Path, cache_dir: Path) -> None:
    # keep = all pixels: apply_keep is the identity, so the weights are the same bytes as plain training
    # on the same pool (2 steps of batch 128 visit the first 256 images either way)
    plain = training.train("plain", tmp_path / "a", steps=2, log=lambda _: None, evaluate_after=False)
    every = training.PixelSubsets(
        keep=torch.ones(256, 1, 32, 32, dtype=torch.bool), name="plain-every", describe={"kind": "all"}
    )
    sub = training.train(
        "plain", tmp_path / "b", steps=2, log=lambda _: None, evaluate_after=False, subsets=every
    )
    assert sub.name == "plain-every.safetensors"
    assert sub.read_bytes() == plain.read_bytes()
    entry = json.loads((tmp_path / "b" / "manifest.json").read_text())["checkpoints"]["plain-every"]
    assert entry["pixel_subsets"] == {"kind": "all"}


def test_a_bare_zoo_target_lives_in_the_demo_world_label_space() -> None:
    (spec,) = resolve_targets(["zoo:resnet50-w8@zoo:plain"])
    assert spec.labels == "demo-world"
    (timm_spec,) = resolve_targets(["timm:resnet18@hf-hub:org/repo/model.safetensors"])
    assert timm_spec.labels == "imagenet-1k"


@pytest.mark.slow
def test_bench_zoo_trains_on_subsets_and_reports_accuracy_on_subsets(tmp_path: Path, cache_dir: Path) -> None:
    r = bench(
        ["zoo", "train", "--recipe", "plain", "--subsets", "random", "--steps", "2"]
        + ["--subset-images", "64", "--out", str(tmp_path / "w")],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    weights = tmp_path / "w" / "plain-random5.safetensors"
    entry = json.loads((tmp_path / "w" / "manifest.json").read_text())["checkpoints"]["plain-random5"]
    assert entry["pixel_subsets"] == {"kind": "random", "q": 0.05, "n_train": 64, "seed": 0}
    assert entry["epochs"] == 4.0  # 2 steps × 128 over a pool of 64 images

    rows = st.subset_accuracy(["zoo-plain", f"zoo:resnet50-w8@{weights}"], "zoo-plain", n_test=1000)
    manifest = json.loads((zoo.weights_dir() / "manifest.json").read_text())["checkpoints"]["plain"]
    # the full-image accuracy is the one `bench zoo train` measured when it wrote the shipped file
    assert rows[0].full == pytest.approx(manifest["test_acc"], abs=5e-5)
    assert rows[0].n == 1000 and all(0.0 <= v <= 1.0 for r_ in rows for v in (r_.backselect, r_.random))
    # the source keeps its own prediction on its BackSelect subsets far better than on random ones
    assert rows[0].backselect > rows[0].random

    shown = bench(["zoo", "subsets", "zoo-plain", "--source", "zoo-plain", "--n-test", "40"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    words = " ".join(shown.stdout.split())  # rich wraps the title to the terminal width
    assert "BackSelect subsets of zoo-plain" in words and "│ zoo-plain" in shown.stdout


def test_subset_training_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    r = bench(["zoo", "train", "--recipe", "plain", "--subsets", "random"], tmp_path)
    assert r.returncode == 2 and "--out DIR" in r.stderr
    r = bench(["zoo", "train", "--recipe", "plain", "--subsets", "edges", "--out", str(tmp_path)], tmp_path)
    assert r.returncode == 2 and "backselect, random" in r.stderr
    r = bench(
        ["zoo", "train", "--recipe", "plain", "--subsets", "backselect", "--out", str(tmp_path)], tmp_path
    )
    assert r.returncode == 2 and "needs --source" in r.stderr
    with pytest.raises(InputError, match="label space 'imagenet-1k'"):
        st.load_model("timm:resnet18@hf-hub:org/repo/model.safetensors")
