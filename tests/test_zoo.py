"""The demo mini zoo: shipped weights, their manifest, the biases they must show, and `bench zoo train`.

Inference-only checks on the shipped weights (fast), plus one from-scratch training run of a few steps.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biasbench.core import world as W
from biasbench.core.labels import DEMO_WORLD
from biasbench.metrics.base import EvalContext, ModelWrapper
from biasbench.registry import zoo
from biasbench.registry.zoo import training

MANIFEST = zoo.weights_dir() / "manifest.json"


def _load(name: str) -> ModelWrapper:
    net = zoo.ARCHITECTURES[zoo.ARCH_NAME](zoo.NUM_CLASSES)
    sd = load_file(str(zoo.weights_file(name)))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    p = zoo.WORLD_PREPROCESS
    return ModelWrapper(
        net.eval(),
        mean=p.mean,
        std=p.std,
        num_classes=zoo.NUM_CLASSES,
        label_space=DEMO_WORLD,
        checkpoint_id=name,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    return {s: W.generate(s, cache_dir=cache) for s in ("test", "cue-conflict", "gaussian_noise-5")}


@pytest.fixture(scope="module")
def predictions(data: dict) -> dict[str, dict[str, torch.Tensor]]:
    ctx = EvalContext(batch_size=500)
    out = {}
    for name in training.RECIPES:
        model = _load(name)
        out[name] = {s: ctx.predict(model, ds.images).argmax(1) for s, ds in data.items()}
    return out


def _shape_rate(pred: torch.Tensor, cc) -> float:
    ns = int((pred == cc.meta["shape"]).sum())
    nt = int((pred == cc.meta["texture"]).sum())
    return ns / max(1, ns + nt)


def test_contract() -> None:
    assert set(zoo.ARCHITECTURES) == {zoo.ARCH_NAME}
    assert zoo.NUM_CLASSES == W.NUM_CLASSES
    assert zoo.WORLD_PREPROCESS.crop == W.WorldConfig().size
    assert training.RECIPES == list(zoo.RECIPES) and len(training.RECIPES) >= 8
    with pytest.raises(KeyError):
        zoo.weights_file("no-such-recipe")
    net = zoo.ARCHITECTURES[zoo.ARCH_NAME](zoo.NUM_CLASSES)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, zoo.NUM_CLASSES)
    # ResNet-50 topology: 16 bottleneck blocks in stages of 3, 4, 6, 3
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]


def test_weights_and_manifest() -> None:
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["arch"] == zoo.ARCH_NAME
    assert set(manifest["checkpoints"]) == set(training.RECIPES)
    total = 0
    for name in training.RECIPES:
        path = zoo.weights_file(name)
        entry = manifest["checkpoints"][name]
        assert path.is_file(), path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name
        assert entry["recipe"]["name"] == name and entry["steps"] >= 1 and entry["epochs"] > 0
        for key in ("seed", "test_acc", "train_seconds", "cue_conflict_shape_rate", "gaussian_noise_5_acc"):
            assert key in entry, (name, key)
        total += path.stat().st_size
    assert total < 10 * 2**20, f"shipped weights are {total / 2**20:.1f} MB"


def test_every_model_is_accurate(predictions: dict, data: dict) -> None:
    manifest = json.loads(MANIFEST.read_text())["checkpoints"]
    for name, pred in predictions.items():
        acc = float((pred["test"] == data["test"].labels).float().mean())
        assert acc >= 0.90, f"{name}: test accuracy {acc:.3f}"
        assert abs(acc - manifest[name]["test_acc"]) <= 0.005, (
            f"{name}: manifest says {manifest[name]['test_acc']}"
        )


def test_biases_move_the_way_the_literature_says(predictions: dict, data: dict) -> None:
    cc = data["cue-conflict"]
    rate = {name: _shape_rate(p["cue-conflict"], cc) for name, p in predictions.items()}
    assert rate["texture-rand"] > rate["plain"] > rate["shape-rand"], rate
    # half texture-randomised (SIN+IN analogue) is already nearly fully shape-biased in this world
    assert rate["texture-rand-half"] > rate["plain"] + 0.2, rate
    noise = data["gaussian_noise-5"]
    acc = {
        name: float((p["gaussian_noise-5"] == noise.labels).float().mean()) for name, p in predictions.items()
    }
    assert acc["gaussian-noise"] > acc["plain"] + 0.2, acc


def test_demo_registry_lists_the_zoo() -> None:
    from biasbench.registry.registry_files import load_registry_file, shipped_registries

    specs = load_registry_file(shipped_registries()["demo"])
    specs = [s for s in specs if not s.members and not s.wrap]  # beside them: an ensemble, a wrapped recipe
    assert [s.id for s in specs] == [f"zoo-{r}" for r in training.RECIPES]
    for s in specs:
        assert s.arch == f"zoo:{zoo.ARCH_NAME}" and s.weights == f"zoo:{s.tags['recipe']}"
        assert s.labels == DEMO_WORLD and s.tags["category"] == zoo.RECIPES[s.tags["recipe"]].category


def test_demo_checkpoint_loads_through_the_registry(tmp_path: Path, data: dict) -> None:
    from biasbench.registry.loading import load_checkpoint
    from biasbench.registry.registry_files import load_registry_file, shipped_registries

    spec = next(s for s in load_registry_file(shipped_registries()["demo"]) if s.id == "zoo-plain")
    loaded = load_checkpoint(spec, cache_dir=tmp_path)
    assert loaded.preprocess == zoo.WORLD_PREPROCESS and loaded.label_space == DEMO_WORLD
    model = ModelWrapper(
        loaded.net.eval(), mean=loaded.preprocess.mean, std=loaded.preprocess.std,
        num_classes=zoo.NUM_CLASSES, label_space=DEMO_WORLD,
    )  # fmt: skip
    pred = EvalContext(batch_size=500).predict(model, data["test"].images).argmax(1)
    assert float((pred == data["test"].labels).float().mean()) >= 0.90


def test_training_from_scratch_is_quick_and_deterministic(tmp_path: Path, cache_dir: Path) -> None:
    """`bench zoo train --recipe R --steps 3` in seconds: weights, manifest entry, bit-identical reruns."""
    logs: list[str] = []
    a = training.train("gaussian-noise", tmp_path / "a", steps=3, log=logs.append, evaluate_after=False)
    b = training.train("gaussian-noise", tmp_path / "b", steps=3, log=logs.append, evaluate_after=False)
    assert a.name == "gaussian-noise.safetensors" and a.is_file()
    assert a.read_bytes() == b.read_bytes()
    entry = json.loads((tmp_path / "a" / "manifest.json").read_text())["checkpoints"]["gaussian-noise"]
    assert entry["steps"] == 3 and entry["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert any("step 3/3" in line for line in logs)
    sd = load_file(str(a))
    assert all(v.dtype == torch.float16 for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    net = zoo.ARCHITECTURES[zoo.ARCH_NAME](zoo.NUM_CLASSES)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    # another seed gives other weights; the evaluation path fills in the manifest's metrics
    c = training.train("plain", tmp_path / "a", steps=2, seed=7, log=logs.append)
    assert c.read_bytes() != a.read_bytes()
    entry = json.loads((tmp_path / "a" / "manifest.json").read_text())["checkpoints"]["plain"]
    assert entry["seed"] == 7 and 0.0 <= entry["test_acc"] <= 1.0
    assert set(json.loads((tmp_path / "a" / "manifest.json").read_text())["checkpoints"]) == {
        "gaussian-noise",
        "plain",
    }


def test_augmentations_keep_the_batch_contract() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    y = torch.arange(8) % zoo.NUM_CLASSES
    net = training.Normalized(zoo.ARCHITECTURES[zoo.ARCH_NAME](zoo.NUM_CLASSES))
    for name in training.RECIPES:
        xa, t = training.augment(zoo.RECIPES[name], net, x, y, g)
        assert xa.shape == x.shape and float(xa.min()) >= 0 and float(xa.max()) <= 1, name
        assert t.shape == (8, zoo.NUM_CLASSES) and torch.allclose(t.sum(1), torch.ones(8)), name
