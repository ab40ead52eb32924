"""Ensembles as checkpoints (biasbench/registry/ensembles.py; Carter et al., NeurIPS 2021): known
answers for both rules, refusals naming the member, identity, and a registry-declared ensemble (and a
wrapped entry) run through the normal path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import biasbench
from biasbench.core.images import ImageSet
from biasbench.core.preprocess import Preprocess
from biasbench.metrics.accuracy import Accuracy
from biasbench.metrics.base import EvalContext, ModelWrapper
from biasbench.registry import ensembles, in_memory, loading, lock, wrappers
from biasbench.registry.ensembles import Ensemble, EnsembleError
from biasbench.registry.registry_files import RegistryError, load_registry_file, resolve_targets
from biasbench.registry.spec import ENSEMBLE_ARCH, CheckpointSpec

PRE = Preprocess(resize=4, crop=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
SPACE = "toy-space"  # a label space no plugin declares: the class count comes from num_classes
ZOO = 'arch = "zoo:resnet50-w8"\nlabels = "demo-world"\n'


class TableModel(nn.Module):
    """Fixed probabilities per image type: type 1 when the first pixel is bright, else type 0. The
    table is a parameter, so two models with different tables have different fingerprints."""

    def __init__(self, probs: list[list[float]]) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.log(torch.tensor(probs, dtype=torch.float64)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = (x[:, 0, 0, 0] > 0).long()
        return self.table[kind] + 0.0 * x.sum(dim=(1, 2, 3))[:, None]


def _images(kinds: list[int]) -> torch.Tensor:
    """uint8 (N, 3, 4, 4): black images for type 0, white for type 1."""
    return torch.stack([torch.full((3, 4, 4), 255 * k, dtype=torch.uint8) for k in kinds])


@pytest.fixture()
def toy(request):
    """``toy(name, probs)`` -> a spec of an in-memory TableModel (unregistered at the end)."""
    names: list[str] = []

    def make(name: str, probs: list[list[float]], **kw) -> CheckpointSpec:
        in_memory.register_module(name, TableModel(probs))
        names.append(name)
        fields = {"preprocess": PRE, "labels": SPACE, "num_classes": len(probs[0]), **kw}
        return CheckpointSpec(id=name, arch=f"python:{name}", weights=f"python:{name}", **fields)

    yield make
    for n in names:
        in_memory.unregister_module(n)


def _ensemble(members: list[CheckpointSpec], combine: str = "mean-probs", **kw) -> CheckpointSpec:
    return CheckpointSpec(
        id="ens", arch=ENSEMBLE_ARCH, members=tuple(members), combine=combine, labels=members[0].labels, **kw
    )


def _wrapped(spec: CheckpointSpec, tmp_path: Path) -> ModelWrapper:
    loaded = loading.load_checkpoint(spec, cache_dir=tmp_path)
    return ModelWrapper(
        loaded.net,
        mean=loaded.preprocess.mean,
        std=loaded.preprocess.std,
        num_classes=loaded.num_classes,
        label_space=loaded.label_space,
        checkpoint_id=spec.id,
    ).eval()


def _probs(model: ModelWrapper, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images.float() / 255).double().softmax(dim=1)


# ----------------------------------------------------------------------------------------------------
# Known answers
# ----------------------------------------------------------------------------------------------------


def test_mean_probs_gives_the_hand_computed_probabilities_accuracy_and_confidence(toy, tmp_path):
    # type 0: A [0.9, 0.1], B [0.3, 0.7] -> mean [0.6, 0.4]; type 1: A [0.9, 0.1], B [0.05, 0.95] -> [0.475, 0.525]
    a = toy("toy_a", [[0.9, 0.1], [0.9, 0.1]])
    b = toy("toy_b", [[0.3, 0.7], [0.05, 0.95]])
    model = _wrapped(_ensemble([a, b]), tmp_path)
    images = _images([0, 1, 0, 1])
    p = _probs(model, images)
    expected = torch.tensor([[0.6, 0.4], [0.475, 0.525]] * 2, dtype=torch.float64)
    assert torch.allclose(p, expected, atol=1e-6)
    # the output is log p: its softmax is p itself and the probabilities sum to 1 without renormalising
    with torch.no_grad():
        out = model(images.float() / 255).double()
    assert torch.allclose(out.exp(), expected, atol=1e-6)

    # through the accuracy metric: labels [0, 0, 1, 1] -> predictions [0, 1, 0, 1] -> top1 0.5
    ds = ImageSet("toy", images, torch.tensor([0, 0, 1, 1]), ["x", "y"], SPACE, ["i0", "i1", "i2", "i3"], "m")
    res = Accuracy().evaluate(model, {"images": ds}, EvalContext())
    assert res.scalars["top1"] == 0.5
    assert res.items["prediction"].tolist() == [0, 1, 0, 1]
    assert res.items["confidence"].tolist() == pytest.approx([0.6, 0.525, 0.6, 0.525], abs=1e-6)


def test_mean_logits_is_the_softmax_of_the_mean_logits_and_can_disagree_with_mean_probs(toy, tmp_path):
    # 3 classes: A [0.8, 0.19, 0.01], B [0.02, 0.19, 0.79]. Mean of probabilities [0.41, 0.19, 0.40] ->
    # class 0; mean of logits = log of the geometric mean, ∝ [√0.016, 0.19, √0.0079] -> class 1.
    a = toy("toy_a3", [[0.8, 0.19, 0.01]] * 2)
    b = toy("toy_b3", [[0.02, 0.19, 0.79]] * 2)
    images = _images([0, 1])
    probs = _probs(_wrapped(_ensemble([a, b]), tmp_path), images)
    assert torch.allclose(probs, torch.tensor([[0.41, 0.19, 0.40]] * 2, dtype=torch.float64), atol=1e-6)
    geo = torch.tensor([math.sqrt(0.8 * 0.02), math.sqrt(0.19 * 0.19), math.sqrt(0.01 * 0.79)])
    geo = (geo / geo.sum()).double()
    model = _wrapped(_ensemble([a, b], "mean-logits"), tmp_path)
    assert torch.allclose(_probs(model, images), geo.expand(2, 3), atol=1e-6)
    with torch.no_grad():
        logits = model(images.float() / 255)
    mean_logits = torch.log(torch.tensor([[0.8, 0.19, 0.01], [0.02, 0.19, 0.79]])).mean(dim=0)
    assert torch.allclose(logits, mean_logits.expand(2, 3), atol=1e-6)
    assert probs.argmax(1).tolist() == [0, 0] and logits.argmax(1).tolist() == [1, 1]


def test_the_ensemble_is_differentiable_through_every_member():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(5)) for _ in range(2)]
    x = torch.rand(2, 3, 6, 6, requires_grad=True)
    for n in nets:
        n(x)  # materialise the lazy layers
    for combine in ensembles.COMBINE_RULES:
        ens = Ensemble(nets, combine).eval()
        x.grad = None
        ens(x)[:, 0].sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        for n in nets:
            assert all(p.grad is not None for p in n.parameters())
            n.zero_grad()


def test_log_mean_probs_never_takes_the_log_of_an_underflowed_zero():
    out = ensembles.combine_outputs(
        [torch.tensor([[0.0, -200.0]]), torch.tensor([[0.0, -300.0]])], "mean-probs"
    )
    assert torch.isfinite(out).all() and out[0, 1] == pytest.approx(-200 - math.log(2), abs=1e-3)


# ----------------------------------------------------------------------------------------------------
# Members must agree
# ----------------------------------------------------------------------------------------------------


def test_a_member_of_another_label_space_is_refused_naming_it(toy, tmp_path):
    a = toy("toy_l1", [[0.9, 0.1], [0.9, 0.1]])
    b = toy("toy_l2", [[0.3, 0.7], [0.3, 0.7]], labels="other-space")
    with pytest.raises(
        EnsembleError, match=r"member 'toy_l2' has labels = 'other-space', but member 'toy_l1'"
    ):
        loading.load_checkpoint(_ensemble([a, b]), cache_dir=tmp_path)
    c = toy("toy_l3", [[0.2, 0.3, 0.5]] * 2)  # same label space name, another class count
    with pytest.raises(
        EnsembleError, match=r"member 'toy_l3' has num_classes = 3, but member 'toy_l1' has 2"
    ):
        loading.resolve_preprocess(_ensemble([a, c]))


def test_a_registry_ensemble_of_two_label_spaces_is_refused_when_the_file_is_read(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        '[[checkpoint]]\nid = "a"\narch = "zoo:resnet50-w8"\nweights = "zoo:plain"\nlabels = "demo-world"\n'
        '[[checkpoint]]\nid = "b"\narch = "timm:resnet18"\n'
        '[[checkpoint]]\nid = "e"\nensemble = ["a", "b"]\n'
    )
    with pytest.raises(
        RegistryError, match=r"#3: ensemble 'e': member 'b' has labels = 'imagenet-1k', but member 'a'"
    ):
        load_registry_file(path)


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ("{ resize = 32, crop = 32, mean = [0.4, 0.5, 0.5], std = [0.28, 0.28, 0.28] }", "preprocess.mean"),
        ("{ resize = 32, crop = 32, mean = [0.5, 0.5, 0.5], std = [0.3, 0.28, 0.28] }", "preprocess.std"),
        ("{ resize = 36, crop = 32, mean = [0.5, 0.5, 0.5], std = [0.28, 0.28, 0.28] }", "preprocess.resize"),
        ("{ resize = 32, crop = 28, mean = [0.5, 0.5, 0.5], std = [0.28, 0.28, 0.28] }", "preprocess.crop"),
        (
            '{ resize = 32, crop = 32, mean = [0.5, 0.5, 0.5], std = [0.28, 0.28, 0.28], interpolation = "bicubic" }',
            "preprocess.interpolation",
        ),
    ],
)
def test_a_member_with_another_preprocessing_is_refused_naming_it_and_the_field(tmp_path, table, field):
    path = tmp_path / "r.toml"
    path.write_text(
        f'[[checkpoint]]\nid = "a"\n{ZOO}weights = "zoo:plain"\n'
        f'[[checkpoint]]\nid = "b"\n{ZOO}weights = "zoo:blur"\npreprocess = {table}\n'
        '[[checkpoint]]\nid = "e"\nensemble = ["a", "b"]\n'
    )
    ens = next(s for s in load_registry_file(path) if s.id == "e")
    pattern = rf"ensemble 'e': member 'b' has {field} = .*, but member 'a' has"
    with pytest.raises(EnsembleError, match=pattern):
        loading.resolve_preprocess(ens)  # what planning does: the job fails before any weights are read
    with pytest.raises(EnsembleError, match=pattern):
        loading.load_checkpoint(ens, cache_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------
# Identity
# ----------------------------------------------------------------------------------------------------


def test_identity_follows_the_members_and_the_rule_not_their_order(toy, tmp_path):
    a = toy("toy_i1", [[0.9, 0.1], [0.9, 0.1]])
    b = toy("toy_i2", [[0.3, 0.7], [0.3, 0.7]])
    c = toy("toy_i3", [[0.6, 0.4], [0.6, 0.4]])

    def fp(spec: CheckpointSpec) -> str:
        return loading.weights_fingerprint(spec, cache_dir=tmp_path)

    ab, ba = fp(_ensemble([a, b])), fp(_ensemble([b, a]))
    assert ab == ba
    assert fp(_ensemble([a, c])) != ab  # another member
    assert fp(_ensemble([a, b], "mean-logits")) != ab  # another rule
    assert fp(_ensemble([a, b, c])) != ab  # one more member
    assert ab not in {fp(a), fp(b)}
    # the rule: sha256 of the rule and the members' fingerprints, sorted
    assert ab == ensembles.ensemble_fingerprint("mean-probs", [fp(b), fp(a)])
    # what loading stores is what planning keyed the jobs with; the identity adds the preprocessing
    loaded = loading.load_checkpoint(_ensemble([b, a]), cache_dir=tmp_path)
    assert loaded.weights_sha256 == ab
    assert loaded.identity == loading.load_checkpoint(_ensemble([a, b]), cache_dir=tmp_path).identity


def test_a_changed_member_weight_changes_the_ensembles_identity(tmp_path):
    def fp(text: str) -> str:
        path = tmp_path / "r.toml"
        path.write_text(text)
        ens = next(s for s in load_registry_file(path) if s.id == "e")
        return loading.weights_fingerprint(ens, cache_dir=tmp_path)

    head = f'[[checkpoint]]\nid = "a"\n{ZOO}weights = "zoo:plain"\n'
    base = fp(
        head
        + f'[[checkpoint]]\nid = "b"\n{ZOO}weights = "zoo:blur"\n[[checkpoint]]\nid = "e"\nensemble = ["a", "b"]\n'
    )
    other = fp(
        head
        + f'[[checkpoint]]\nid = "b"\n{ZOO}weights = "zoo:mixup"\n[[checkpoint]]\nid = "e"\nensemble = ["a", "b"]\n'
    )
    reordered = fp(
        head
        + f'[[checkpoint]]\nid = "b"\n{ZOO}weights = "zoo:blur"\n[[checkpoint]]\nid = "e"\nensemble = ["b", "a"]\n'
    )
    assert base != other and base == reordered


# ----------------------------------------------------------------------------------------------------
# Registry syntax
# ----------------------------------------------------------------------------------------------------


def test_registry_ensembles_link_members_in_any_order_inline_and_across_targets(tmp_path):
    one = tmp_path / "one.toml"
    one.write_text(
        '[[checkpoint]]\nid = "e"\nensemble = ["a", { id = "inline-b", arch = "zoo:resnet50-w8", '
        'weights = "zoo:blur", labels = "demo-world" }, "c"]\ncombine = "mean-logits"\n'
        'tags = { category = "ensemble" }\n'
        f'[[checkpoint]]\nid = "a"\n{ZOO}weights = "zoo:plain"\n'
    )
    two = tmp_path / "two.toml"
    two.write_text(f'[[checkpoint]]\nid = "c"\n{ZOO}weights = "zoo:mixup"\n')
    specs = resolve_targets([str(one), str(two)])
    assert [s.id for s in specs] == ["e", "a", "c"]  # an inline member is not benchmarked on its own
    e = specs[0]
    assert e.arch == ENSEMBLE_ARCH and e.combine == "mean-logits" and e.labels == "demo-world"
    assert [m.id for m in e.members] == ["a", "inline-b", "c"]
    assert [m.weights for m in e.members] == ["zoo:plain", "zoo:blur", "zoo:mixup"]
    assert e.weights_text() == "ensemble mean-logits of a + inline-b + c"
    assert lock.pin_status(e) == "local+local+local" and lock.source_kind(e) == "zoo+zoo+zoo"
    assert loading.resolves_locally(e)
    # one file alone does not know "c"
    with pytest.raises(RegistryError, match=r"ensemble member 'c' is not a checkpoint resolved with it"):
        load_registry_file(one)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('ensemble = ["a", "nope"]', r"ensemble member 'nope' is not a checkpoint resolved with it"),
        ('ensemble = ["a", "a"]', r"ensemble lists member 'a' more than once"),
        ('ensemble = ["a"]', r"ensemble must be a list of at least two members"),
        ('ensemble = ["a", "e"]', r"ensemble 'e' contains itself \(e -> e\)"),
        ('ensemble = ["a", 3]', r"ensemble\[1\] must be an entry id or an inline table"),
        ('ensemble = ["a", "b"]\ncombine = "median"', r"combine must be one of mean-probs, mean-logits"),
        (
            'ensemble = ["a", "b"]\narch = "zoo:resnet50-w8"',
            r"an ensemble takes its architecture.*'arch' cannot be set",
        ),
        ('ensemble = ["a", "b"]\nlabels = "demo-world"', r"'labels' cannot be set on it"),
        (
            'arch = "zoo:resnet50-w8"\nweights = "zoo:plain"\ncombine = "mean-probs"',
            r"combine belongs to an ensemble",
        ),
    ],
)
def test_invalid_ensemble_entries_are_errors_naming_the_entry(tmp_path, entry, message):
    path = tmp_path / "r.toml"
    path.write_text(
        f'[[checkpoint]]\nid = "a"\n{ZOO}weights = "zoo:plain"\n'
        f'[[checkpoint]]\nid = "b"\n{ZOO}weights = "zoo:blur"\n'
        f'[[checkpoint]]\nid = "e"\n{entry}\n'
    )
    with pytest.raises(RegistryError, match=message) as info:
        load_registry_file(path)
    assert "#3" in str(info.value)


def test_a_cycle_through_two_ensembles_is_refused(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        f'[[checkpoint]]\nid = "a"\n{ZOO}weights = "zoo:plain"\n'
        '[[checkpoint]]\nid = "e1"\nensemble = ["a", "e2"]\n'
        '[[checkpoint]]\nid = "e2"\nensemble = ["a", "e1"]\n'
    )
    with pytest.raises(RegistryError, match=r"contains itself \(e1 -> e2 -> e1\)"):
        load_registry_file(path)


def test_an_inline_members_id_must_not_clash_with_an_entrys(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        f'[[checkpoint]]\nid = "a"\n{ZOO}weights = "zoo:plain"\n'
        f'[[checkpoint]]\nid = "b"\n{ZOO}weights = "zoo:mixup"\n'
        '[[checkpoint]]\nid = "e"\nensemble = ["b", { id = "a", arch = "zoo:resnet50-w8", weights = "zoo:blur", '
        'labels = "demo-world" }]\n'
    )
    with pytest.raises(RegistryError, match=r"duplicate checkpoint id 'a'"):
        load_registry_file(path)


# ----------------------------------------------------------------------------------------------------
# The shipped demo registry and the normal run path
# ----------------------------------------------------------------------------------------------------


def test_the_demo_registry_has_one_ensemble_of_three_recipes_and_one_wrapped_recipe():
    specs = resolve_targets(["demo"])
    ens = [s for s in specs if s.members]
    wrapped = [s for s in specs if s.wrap]
    assert len(ens) == 1 and len(wrapped) == 1
    (e,) = ens
    assert e.combine == "mean-probs" and len({m.weights for m in e.members}) == 3
    assert all(m.weights.startswith("zoo:") and m.labels == "demo-world" for m in e.members)
    (w,) = wrapped
    assert w.wrap[0].to_json() == {"kind": "input-dropout", "keep": 0.8, "samples": 4, "seed": 0}
    plain = [s for s in specs if not s.members and not s.wrap]
    assert len(plain) == 11 and all(s.arch == "zoo:resnet50-w8" for s in plain)


def _demo_test_set(cache_dir: Path) -> ImageSet:
    from biasbench.core.paths import default_data_root
    from biasbench.harness.datasets import catalog
    from biasbench.registry import zoo

    return catalog.get("demo-world/test").load(default_data_root(), zoo.WORLD_PREPROCESS, cache_dir)


def test_a_registry_ensemble_and_a_wrapped_entry_run_accuracy_through_the_normal_path(
    tmp_path, cache_dir, one_thread
):
    reg = tmp_path / "mine.toml"
    reg.write_text(
        f'[[checkpoint]]\nid = "p"\n{ZOO}weights = "zoo:plain"\n'
        f'[[checkpoint]]\nid = "n"\n{ZOO}weights = "zoo:gaussian-noise"\n'
        '[[checkpoint]]\nid = "pn"\nensemble = ["p", "n"]\n'
        f'[[checkpoint]]\nid = "pd"\n{ZOO}weights = "zoo:plain"\n'
        'wrap = [{ kind = "input-dropout", keep = 0.7, samples = 3, seed = 5 }]\n'
    )
    db = tmp_path / "bench.duckdb"
    summary = biasbench.run([str(reg)], ["accuracy"], db=db, where=[], batch_size=256)
    assert summary.failed == 0, [o.summary for o in summary.outcomes]
    top1 = biasbench.results(db).set_index(["checkpoint", "key"])["value"]

    # independently: the members' probabilities, averaged by hand; the wrapped net's masks rebuilt
    ds = _demo_test_set(cache_dir)
    specs = {s.id: s for s in load_registry_file(reg)}
    nets = {i: loading.load_checkpoint(specs[i], cache_dir=cache_dir).net for i in ("p", "n")}
    from biasbench.registry import zoo

    pre = zoo.WORLD_PREPROCESS
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        x = (ds.images.float() / 255 - mean) / std
        probs = {i: net(x).softmax(1) for i, net in nets.items()}
        masks = [wrappers.dropout_mask(5, s, 0.7, 32, 32).float() for s in range(3)]
        dropped = torch.stack([nets["p"](x * m).softmax(1) for m in masks]).mean(0)
    expect_ens = float(((probs["p"] + probs["n"]) / 2).argmax(1).eq(ds.labels).double().mean())
    expect_drop = float(dropped.argmax(1).eq(ds.labels).double().mean())
    assert top1[("pn", "top1")] == pytest.approx(expect_ens, abs=1e-9)
    assert top1[("pd", "top1")] == pytest.approx(expect_drop, abs=1e-9)
    assert top1[("p", "top1")] == pytest.approx(float(probs["p"].argmax(1).eq(ds.labels).double().mean()))
    # a rerun computes nothing: the derived identities key the stored jobs
    again = biasbench.run([str(reg)], ["accuracy"], db=db, batch_size=256)
    assert {o.status.value for o in again.outcomes} == {"stored"}
