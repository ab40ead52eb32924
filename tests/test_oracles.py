"""The known-answer oracles (tests/oracles.py) are what they claim: accurate, and blind to the other cue.

Measured on the seed-0 world: shape oracle 100 % on test / cue-conflict (shape) / silhouette; texture
oracle 100 % on texture-only, 99.0 % on cue-conflict (texture), 98.2 % on test. The bounds below leave
a little room for other CPUs' rounding, not for a different behaviour.
"""

from __future__ import annotations

import pytest
import torch

from biasbench.core import world as W
from biasbench.core.labels import DEMO_WORLD
from biasbench.metrics.base import EvalContext, ModelWrapper
from tests.oracles import ShapeOnlyOracle, TextureOnlyOracle, segment

K = W.NUM_CLASSES


@pytest.fixture(scope="module")
def shape_oracle() -> ShapeOnlyOracle:
    return ShapeOnlyOracle().eval()


@pytest.fixture(scope="module")
def texture_oracle() -> TextureOnlyOracle:
    return TextureOnlyOracle().eval()


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    return {s: W.generate(s, cache_dir=cache) for s in ("test", "cue-conflict", "silhouette", "texture-only")}


def _predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        logits = model(images.float() / 255.0)
    assert logits.shape == (images.shape[0], K) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    return logits.argmax(1)


def _rate(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred == target).float().mean())


def test_segmentation_matches_the_generator() -> None:
    r = W.render_split("test", limit=200)
    mask, _, has_bg = segment(W.to_uint8(r.images).float() / 255.0)
    assert has_bg.all()
    # pixels fully inside / fully outside the shape are classified right; partial ones may go either way
    inside, outside = r.mask > 0.99, r.mask < 0.01
    assert float(mask[inside].mean()) == 1.0 and float(mask[outside].mean()) == 0.0
    only = W.render_split("texture-only", limit=50)
    assert not segment(W.to_uint8(only.images).float() / 255.0)[2].any()


def test_shape_oracle_accuracy(shape_oracle: ShapeOnlyOracle, splits: dict) -> None:
    for name in ("test", "cue-conflict", "silhouette"):
        ds = splits[name]
        assert _rate(_predict(shape_oracle, ds.images), ds.meta["shape"]) >= 0.99, name


def test_texture_oracle_accuracy(texture_oracle: TextureOnlyOracle, splits: dict) -> None:
    assert (
        _rate(_predict(texture_oracle, splits["texture-only"].images), splits["texture-only"].labels) >= 0.99
    )
    cc = splits["cue-conflict"]
    assert _rate(_predict(texture_oracle, cc.images), cc.meta["texture"]) >= 0.97
    test = splits["test"]
    assert _rate(_predict(texture_oracle, test.images), test.meta["texture"]) >= 0.96


def test_oracles_pin_shape_bias(
    shape_oracle: ShapeOnlyOracle, texture_oracle: TextureOnlyOracle, splits: dict
) -> None:
    """Cue-conflict shape-decision rate n_shape / (n_shape + n_texture): 1 for shape, ~0 for texture."""
    cc = splits["cue-conflict"]

    def shape_bias(pred: torch.Tensor) -> tuple[float, int, int]:
        ns, nt = int((pred == cc.meta["shape"]).sum()), int((pred == cc.meta["texture"]).sum())
        return ns / (ns + nt), ns, nt

    sb, _, n_texture = shape_bias(_predict(shape_oracle, cc.images))
    assert sb == 1.0 and n_texture == 0
    sb, n_shape, n_texture = shape_bias(_predict(texture_oracle, cc.images))
    assert sb <= 0.005 and n_texture >= 0.97 * len(cc)


def test_oracles_are_blind_to_the_other_cue(
    shape_oracle: ShapeOnlyOracle, texture_oracle: TextureOnlyOracle, splits: dict
) -> None:
    # no shape in texture-only frames: the shape oracle is at chance; no texture on silhouettes: likewise
    assert _rate(_predict(shape_oracle, splits["texture-only"].images), splits["texture-only"].labels) <= 0.2
    assert _rate(_predict(texture_oracle, splits["silhouette"].images), splits["silhouette"].labels) <= 0.2
    # same pose and colours, other textures: the shape oracle's decisions do not move
    ids = torch.arange(200) % K
    a = W.render(ids, ids, torch.Generator().manual_seed(3))
    b = W.render(ids, (ids + 3) % K, torch.Generator().manual_seed(3))
    pa = _predict(shape_oracle, W.to_uint8(a.images))
    pb = _predict(shape_oracle, W.to_uint8(b.images))
    assert _rate(pa, pb) >= 0.99
    # same texture family, other shapes: the texture oracle's decisions follow the texture
    c = W.render((ids + 5) % K, ids, torch.Generator().manual_seed(4))
    assert _rate(_predict(texture_oracle, W.to_uint8(c.images)), ids) >= 0.96


def test_oracles_run_behind_the_model_wrapper(shape_oracle: ShapeOnlyOracle, splits: dict) -> None:
    """They plug into the harness like a checkpoint: identity normalisation, ctx.predict batching."""
    model = ModelWrapper(
        shape_oracle, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), num_classes=K, label_space=DEMO_WORLD
    )
    ds = splits["silhouette"]
    logits = EvalContext(batch_size=64).predict(model, ds.images)
    assert logits.shape == (len(ds), K)
    assert _rate(logits.argmax(1), ds.labels) >= 0.99
