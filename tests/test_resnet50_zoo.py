"""The shipped ResNet-50 zoo (biasbench/registry/files/resnet50-zoo.toml): for each checkpoint family a
fixture in that family's on-disk shape, made from a randomly initialised timm resnet50, loads through
the registry's own entry (its adapter chain from the shipped TOML, the source redirected to the
fixture) strictly and gives logits identical to the source model."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import timm
import torch

from biasbench.registry import loading, sources
from biasbench.registry.registry_files import resolve_targets
from biasbench.registry.spec import CheckpointError, CheckpointSpec
from biasbench.registry.weight_sources import timm_hub, torchvision_enum

ZOO = {s.id: s for s in resolve_targets(["resnet50-zoo"])}


@pytest.fixture(scope="module")
def source() -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    """A random timm resnet50 with non-trivial batch-norm statistics, its state dict and a batch."""
    torch.manual_seed(0)
    net = timm.create_model("resnet50", pretrained=False, num_classes=1000)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = net(x)
    return x, {k: v.clone() for k, v in net.state_dict().items()}, logits


def _prefixed(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


def _tf_key(k: str) -> str:
    """The SimCLRv2 TensorFlow-converted name of a torchvision/timm resnet50 key (the inverse mapping,
    written out independently of the adapter)."""
    stem = {"conv1": "net.0.0", "bn1": "net.0.1.0"}
    head, _, leaf = k.rpartition(".")
    if head in stem:
        return f"{stem[head]}.{leaf}"
    if head == "fc":
        return k
    layer, block, *mod = head.split(".")
    i = layer[len("layer") :]
    sub = {
        "conv1": "net.0",
        "bn1": "net.1.0",
        "conv2": "net.2",
        "bn2": "net.3.0",
        "conv3": "net.4",
        "bn3": "net.5.0",
        "downsample.0": "projection.shortcut",
        "downsample.1": "projection.bn.0",
    }[".".join(mod)]
    return f"net.{i}.blocks.{block}.{sub}.{leaf}"


def _files(family: str, sd: dict[str, torch.Tensor]) -> list[object]:
    """The on-disk objects of one family (one per part)."""
    backbone = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    head = {k: v for k, v in sd.items() if k.startswith("fc.")}
    linear = {"state_dict": {k.replace("fc.", "module.linear."): v for k, v in head.items()}, "epoch": 100}
    if family in ("torchvision", "timm", "path"):
        return [dict(sd)]
    if family == "madry":
        model = {
            **_prefixed(sd, "module.model."),
            **_prefixed(sd, "module.attacker.model."),
            "module.normalizer.new_mean": torch.rand(3, 1, 1),
            "module.normalizer.new_std": torch.rand(3, 1, 1),
            "module.attacker.normalize.new_mean": torch.rand(3, 1, 1),
            "module.attacker.normalize.new_std": torch.rand(3, 1, 1),
        }
        return [{"model": model, "epoch": 90}]
    if family == "dataparallel-state_dict":  # SIN, PRIME, MoCo v3, PixMix, AugMix, DeepAugment
        return [{"epoch": 60, "arch": "resnet50", "state_dict": _prefixed(sd, "module."), "best_acc1": 0.5}]
    if family == "model_state_dict":
        return [{"model_state_dict": _prefixed(sd, "module."), "epoch": 3}]
    if family == "online_backbone":
        return [{"online_backbone": _prefixed(sd, "module."), "step": 7}]
    if family == "tsbias":
        aux = {
            f"module.{k.rsplit('.', 1)[0]}.aux_bn.{k.rsplit('.', 1)[1]}": v + 1
            for k, v in sd.items()
            if ".bn" in f".{k}" or "downsample.1" in k
        }
        return [{"state_dict": {**_prefixed(sd, "module."), **aux}, "epoch": 100}]
    if family == "diffusion-noise":
        return [{"model": _prefixed(sd, "module."), "epoch": 90}]
    if family == "dino":
        return [backbone, linear]
    if family == "swav":
        extra = {
            "module.projection_head.0.weight": torch.randn(8, 2048),
            "module.prototypes.weight": torch.randn(4, 8),
        }
        return [{**_prefixed(backbone, "module."), **extra}, linear]
    if family == "simclrv2-tf":
        return [
            {"resnet": {_tf_key(k): v for k, v in sd.items()}, "head": {"linear.weight": torch.randn(4, 4)}}
        ]
    raise AssertionError(family)


#: one member per family: (checkpoint id, the family's on-disk shape)
MEMBERS = [
    ("tv_resnet50", "torchvision"),
    ("resnet50.a1_in1k", "timm"),
    ("robust_resnet50_linf_eps4.0", "madry"),
    ("resnet50_trained_on_SIN", "dataparallel-state_dict"),
    ("resnet50_prime", "dataparallel-state_dict"),
    ("resnet50_noisymix", "model_state_dict"),
    ("resnet50_opticsaugment", "online_backbone"),
    ("resnet50_tsbias_sbias", "tsbias"),
    ("resnet50_diffusionnoise_fixed_nonoise", "diffusion-noise"),
    ("resnet50_dino", "dino"),
    ("resnet50_swav", "swav"),
    ("resnet50_simclrv2", "simclrv2-tf"),
]


def _chain(spec: CheckpointSpec) -> tuple:
    """What distinguishes how an entry's files become its network: the architecture, whether timm's or
    torchvision's own loader reads them, and each part's adapter chain (URL and Drive files are read
    alike once downloaded; those sources are tested in test_gdrive_source.py and test_lock.py)."""
    parts = spec.parts or (loading.WeightPart(spec.weights or "", spec.sha256, spec.adapter),)
    kinds = {sources.parse_weights(p.weights, spec.id).kind for p in parts}
    native = kinds & {"timm", "torchvision"}
    return (spec.arch, tuple(sorted(native)), tuple(p.adapter for p in parts))


def test_the_tested_members_cover_every_loading_chain_of_the_zoo():
    tested = {_chain(ZOO[cid]) for cid, _ in MEMBERS}
    untested = {cid for cid, s in ZOO.items() if _chain(s) not in tested}
    assert untested == set()


def test_the_zoo_has_the_studys_48_checkpoints_in_7_categories():
    counts = Counter(s.tags["category"] for s in ZOO.values())
    assert len(ZOO) == 48
    assert counts == {
        "baseline": 1,
        "training_recipes": 10,
        "adversarial_training": 15,
        "stylized": 3,
        "augmentation": 12,
        "freezing": 1,
        "contrastive": 6,
    }
    eps = sorted((s.tags["norm"], s.tags["eps"]) for s in ZOO.values() if "norm" in s.tags)
    assert [e for n, e in eps if n == "l2"] == [0, 0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 3, 5]
    assert [e for n, e in eps if n == "linf"] == [0.5, 1, 2, 4, 8]


def test_every_entry_uses_the_studys_transform_and_unnormalised_ones_say_so():
    for s in ZOO.values():
        assert (s.preprocess.resize, s.preprocess.crop, s.preprocess.interpolation) == (256, 224, "bilinear")
    plain = {cid for cid, s in ZOO.items() if s.preprocess.mean == (0.0, 0.0, 0.0)}
    assert plain == {"resnet50_diffusionnoise_fixed_nonoise", "resnet50_simclrv2"}
    assert all(s.preprocess.std == (1.0, 1.0, 1.0) for cid, s in ZOO.items() if cid in plain)


def _redirected(spec: CheckpointSpec, paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> CheckpointSpec:
    """The spec with its weights read from the fixture files (adapters unchanged)."""
    kind = sources.parse_weights(spec.weights, spec.id).kind if spec.weights else None
    if kind == "timm":
        monkeypatch.setattr(timm_hub, "download_timm_pretrained", lambda name: paths[0])
        return spec
    if kind == "torchvision":
        monkeypatch.setattr(torchvision_enum, "download_torchvision_weights", lambda url: paths[0])
        return spec
    if spec.parts:
        parts = tuple(dataclasses.replace(p, weights=str(f)) for p, f in zip(spec.parts, paths, strict=True))
        return dataclasses.replace(spec, parts=parts)
    return dataclasses.replace(spec, weights=str(paths[0]), sha256=None)


@pytest.mark.parametrize(("cid", "family"), MEMBERS, ids=[m[0] for m in MEMBERS])
def test_each_family_loads_strictly_from_its_own_on_disk_shape_with_identical_logits(
    cid, family, source, tmp_path, monkeypatch
):
    x, sd, want = source
    paths = []
    for n, obj in enumerate(_files(family, sd), start=1):
        paths.append(tmp_path / f"part{n}.pth")
        torch.save(obj, paths[-1])
    spec = _redirected(ZOO[cid], paths, monkeypatch)
    loaded = loading.load_checkpoint(spec, cache_dir=tmp_path / "cache")
    with torch.no_grad():
        got = loaded.net(x)
    assert torch.equal(got, want), f"{cid}: max |diff| {float((got - want).abs().max())}"
    if len(paths) > 1:
        digests = [sources.sha256_file(p) for p in paths]
        assert loaded.weights_sha256 == loading.combined_sha256(digests)


def test_a_key_in_two_parts_is_refused_naming_both(source, tmp_path):
    _, sd, _ = source
    back, head = tmp_path / "b.pth", tmp_path / "h.pth"
    torch.save(dict(sd), back)  # the backbone file wrongly holds fc too
    torch.save(_files("dino", sd)[1], head)
    spec = ZOO["resnet50_dino"]
    parts = tuple(
        dataclasses.replace(p, weights=str(f)) for p, f in zip(spec.parts, (back, head), strict=True)
    )
    with pytest.raises(CheckpointError, match=r"parts 1 and 2 both hold 2 keys \[fc\.weight, fc\.bias\]"):
        loading.load_checkpoint(dataclasses.replace(spec, parts=parts), cache_dir=tmp_path / "c")


def test_madry_adapters_refuse_a_file_missing_the_attacker_copy(source, tmp_path):
    """The adapters say exactly which keys they drop: a file without them does not match the family."""
    _, sd, _ = source
    path = tmp_path / "m.pth"
    torch.save({"model": _prefixed(sd, "module.model.")}, path)
    spec = dataclasses.replace(ZOO["robust_resnet50_l2_eps3"], weights=str(path))
    with pytest.raises(CheckpointError, match=r"adapter drop:\^module\\\.attacker\\\. matched no key"):
        loading.load_checkpoint(spec, cache_dir=tmp_path / "c")
