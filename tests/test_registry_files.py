"""Registry files (TOML schema, validation, duplicate ids), shipped registries and bare command-line
targets (issue 2)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from biasbench.core.preprocess import Preprocess
from biasbench.registry import loading
from biasbench.registry.registry_files import (
    RegistryError,
    load_registry_file,
    resolve_targets,
    shipped_registries,
)
from biasbench.registry.spec import CheckpointError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture()
def weights(tmp_path) -> Path:
    import timm

    torch.manual_seed(0)
    p = tmp_path / "weights" / "tiny.pth"
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), p)
    return p


FULL = """
[[checkpoint]]
id = "resnet50_trained_on_SIN"
arch = "timm:resnet50"
weights = "https://example.org/models/resnet50_train_60_epochs-c8e5653e.pth.tar"
sha256 = "C8E5653E00000000000000000000000000000000000000000000000000000000"
adapter = "strip-prefix:module."
preprocess = { resize = 256, crop = 224, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }
labels = "imagenet-1k"
tags = { category = "stylized", paper = "gavrikov2024", year = 2019, trained = 2019-02-01 }

[[checkpoint]]
id = "local_one"
arch = "torchvision:resnet18"
weights = "weights/tiny.pth"
adapter = ["select:model", "rename:fc.=fc.", "drop:^aux"]
num_classes = 10
labels = "birds"
"""


# ----------------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------------


def test_full_schema_parses_into_specs(tmp_path):
    path = write(tmp_path / "reg" / "r.toml", FULL)
    a, b = load_registry_file(path)
    assert a.id == "resnet50_trained_on_SIN" and a.arch == "timm:resnet50"
    assert a.sha256 == "c8e5653e" + "0" * 56  # normalised to lower case
    assert a.adapter == ("strip-prefix:module.",)
    assert a.preprocess == Preprocess(resize=256, crop=224, interpolation="bilinear")
    assert a.tags == {"category": "stylized", "paper": "gavrikov2024", "year": 2019, "trained": "2019-02-01"}
    assert a.source == f"{path}:[[checkpoint]] #1" and b.source == f"{path}:[[checkpoint]] #2"
    assert b.adapter == ("select:model", "rename:fc.=fc.", "drop:^aux")
    assert b.num_classes == 10 and b.labels == "birds" and b.preprocess is None
    # relative weight paths are relative to the registry file, not the working directory
    assert b.weights == str((tmp_path / "reg" / "weights" / "tiny.pth").resolve())


def test_partial_preprocess_table_fills_the_rest_with_the_classic_imagenet_recipe(tmp_path):
    path = write(
        tmp_path / "r.toml",
        """
        [[checkpoint]]
        id = "a"
        arch = "timm:tf_efficientnet_lite0"
        weights = "/x.pth"
        preprocess = { crop = 200, resize = 230 }
    """,
    )
    (spec,) = load_registry_file(path)
    assert spec.preprocess == Preprocess(resize=230, crop=200)
    assert spec.preprocess.mean == (0.485, 0.456, 0.406) and spec.preprocess.interpolation == "bilinear"


def test_unknown_entry_key_names_the_key_and_the_file(tmp_path):
    path = write(
        tmp_path / "r.toml", '[[checkpoint]]\nid = "a"\narch = "timm:resnet50"\nweigths = "/x.pth"\n'
    )
    with pytest.raises(
        RegistryError, match=rf"{path}:\[\[checkpoint\]\] #1: unknown key 'weigths' in {path}"
    ):
        load_registry_file(path)


def test_unknown_top_level_key_and_unknown_preprocess_key_are_errors(tmp_path):
    path = write(tmp_path / "r.toml", 'name = "x"\n[[checkpoint]]\nid = "a"\narch = "timm:resnet50"\n')
    with pytest.raises(RegistryError, match=rf"registry file {path}: unknown top-level key 'name'"):
        load_registry_file(path)
    path = write(
        tmp_path / "p.toml", '[[checkpoint]]\nid = "a"\narch = "timm:resnet50"\npreprocess = { size = 3 }\n'
    )
    with pytest.raises(RegistryError, match=r"#1: unknown preprocess key 'size'"):
        load_registry_file(path)


def test_duplicate_ids_in_one_file_name_both_entries(tmp_path):
    path = write(
        tmp_path / "r.toml",
        """
        [[checkpoint]]
        id = "a"
        arch = "timm:resnet50"
        [[checkpoint]]
        id = "b"
        arch = "timm:resnet50"
        [[checkpoint]]
        id = "a"
        arch = "timm:resnet18"
    """,
    )
    with pytest.raises(RegistryError) as e:
        load_registry_file(path)
    assert (
        str(e.value) == f"duplicate checkpoint id 'a': {path}:[[checkpoint]] #1 and {path}:[[checkpoint]] #3"
    )


def test_duplicate_ids_across_files_name_both_files(tmp_path):
    one = write(tmp_path / "one.toml", '[[checkpoint]]\nid = "a"\narch = "timm:resnet50"\n')
    two = write(
        tmp_path / "two.toml",
        '[[checkpoint]]\nid = "b"\narch = "timm:resnet50"\n[[checkpoint]]\nid = "a"\narch = "timm:resnet18"\n',
    )
    with pytest.raises(RegistryError) as e:
        resolve_targets([str(one), str(two)])
    assert str(e.value) == f"duplicate checkpoint id 'a': {one}:[[checkpoint]] #1 and {two}:[[checkpoint]] #2"


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        ('arch = "timm:resnet50"', r"missing required key 'id'"),
        ('id = "a"', r"missing required key 'arch'"),
        ('id = "a b"\narch = "timm:x"', r"invalid id 'a b'"),
        (
            'id = "a"\narch = "resnet50"',
            r"arch 'resnet50' must be <family>:<name> of an installed architecture family: .*timm:<name>, torchvision:<name>, zoo:<name>",
        ),
        (
            'id = "a"\narch = "timm:x"\nweights = "https://e.org/w.pth"\nadapter = "drop:^x"\nweights2 = 1',
            r"unknown key 'weights2'",
        ),
        ('id = "a"\narch = "timm:x"\nsha256 = "abc"', r"sha256 must be 64 hex digits"),
        (
            'id = "a"\narch = "timm:x"\nadapter = "strip:module."',
            r"unknown adapter 'strip:module\.'; known adapters",
        ),
        ('id = "a"\narch = "timm:x"\nadapter = 3', r"adapter must be a string or a list of strings"),
        ('id = "a"\narch = "timm:x"\nnum_classes = 0', r"num_classes must be a positive integer"),
        ('id = "a"\narch = "timm:x"\ntags = "x"', r"tags must be a table"),
        ('id = "a"\narch = "timm:x"\nweights = 3', r"weights must be a string"),
        (
            'id = "a"\narch = "timm:x"\npreprocess = { resize = 200, crop = 224, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5], interpolation = "bilinear" }',
            r"resize \(200\) is smaller than crop \(224\)",
        ),
        (
            'id = "a"\narch = "timm:x"\npreprocess = { mean = [0.5, 0.5] }',
            r"preprocess.mean must be a list of 3 numbers",
        ),
        (
            'id = "a"\narch = "timm:x"\npreprocess = { interpolation = "cubic" }',
            r"interpolation 'cubic' is not one of",
        ),
        ('id = "a"\narch = "timm:x"\nweights = "ftp://e.org/w.pth"', r"unsupported URL scheme"),
        (
            'id = "a"\narch = "timm:x"\nlabels = "birds"',
            r"label space 'birds' is not one we know .*give num_classes",
        ),
    ],
)
def test_invalid_entries_are_errors_naming_file_and_entry(tmp_path, entry, pattern):
    path = write(tmp_path / "r.toml", "[[checkpoint]]\n" + entry + "\n")
    with pytest.raises(RegistryError, match=pattern) as e:
        load_registry_file(path)
    assert str(path) in str(e.value)


def test_invalid_toml_and_missing_file_are_errors(tmp_path):
    path = write(tmp_path / "r.toml", "[[checkpoint]\nid = \n")
    with pytest.raises(RegistryError, match=rf"registry file {path} is not valid TOML"):
        load_registry_file(path)
    with pytest.raises(RegistryError, match="cannot read registry file"):
        load_registry_file(tmp_path / "nope.toml")


def test_registry_errors_are_checkpoint_errors():
    assert issubclass(RegistryError, CheckpointError)


def test_a_registry_entry_loads_end_to_end(tmp_path, weights, cache_dir):
    path = write(
        tmp_path / "r.toml",
        f"""
        [[checkpoint]]
        id = "tiny"
        arch = "timm:test_resnet"
        weights = "{weights.relative_to(tmp_path)}"
        sha256 = "{loading.sources.sha256_file(weights)}"
        preprocess = {{ resize = 64, crop = 64, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }}
        tags = {{ seed = 0 }}
    """,
    )
    (spec,) = load_registry_file(path)
    lc = loading.load_checkpoint(spec, cache_dir=cache_dir)
    assert lc.preprocess.crop == 64 and lc.spec.tags == {"seed": 0}


# ----------------------------------------------------------------------------------------------------
# Shipped registries and bare targets
# ----------------------------------------------------------------------------------------------------


def test_shipped_registries_include_efficientnet_lite_and_all_parse():
    shipped = shipped_registries()
    assert "efficientnet-lite" in shipped
    for name, path in shipped.items():
        assert path.suffix == ".toml" and path.stem == name
    specs = resolve_targets(["efficientnet-lite"])
    assert [s.id for s in specs] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize(
    ("target", "cid", "arch", "weights"),
    [
        ("test_resnet", "test_resnet", "timm:test_resnet", "timm:test_resnet"),
        ("timm:test_resnet", "test_resnet", "timm:test_resnet", "timm:test_resnet"),
        ("timm:resnet50.a1_in1k", "resnet50.a1_in1k", "timm:resnet50", "timm:resnet50.a1_in1k"),
        (
            "torchvision:resnet50",
            "torchvision_resnet50.IMAGENET1K_V2",
            "torchvision:resnet50",
            "torchvision:ResNet50_Weights.IMAGENET1K_V2",
        ),
        (
            "timm:resnet18@hf-hub:org/repo/model.safetensors",
            "repo.model",
            "timm:resnet18",
            "hf-hub:org/repo/model.safetensors",
        ),
        ("timm:resnet18@package:tiny_pkg:PATH", "tiny_pkg", "timm:resnet18", "package:tiny_pkg:PATH"),
        ("zoo:resnet50-w8@zoo:plain", "plain", "zoo:resnet50-w8", "zoo:plain"),
    ],
)
def test_bare_targets_resolve_to_specs(target, cid, arch, weights):
    (spec,) = resolve_targets([target])
    assert (spec.id, spec.arch, spec.weights) == (cid, arch, weights)
    assert spec.source == f"command line target {target!r}"


def test_arch_at_path_target_uses_the_file_stem_as_id(tmp_path, weights, monkeypatch, cache_dir):
    (spec,) = resolve_targets([f"timm:test_resnet@{weights}"])
    assert (spec.id, spec.arch, spec.weights) == ("tiny", "timm:test_resnet", str(weights.resolve()))
    monkeypatch.chdir(weights.parent)
    (rel,) = resolve_targets(["test_resnet@tiny.pth"])  # bare arch = timm; relative to the cwd
    assert rel.weights == str(weights.resolve()) and rel.arch == "timm:test_resnet"
    assert loading.load_checkpoint(rel, cache_dir=cache_dir).spec.id == "tiny"


def test_weights_file_without_arch_asks_for_arch_at_path(weights):
    with pytest.raises(
        RegistryError,
        match=rf"is a weights file; a weights file needs an architecture: write ARCH@PATH, e\.g\. timm:resnet50@{weights}",
    ):
        resolve_targets([str(weights)])


def test_arch_at_path_with_a_missing_file_or_unknown_arch_is_an_error(tmp_path, weights):
    with pytest.raises(RegistryError, match=r"weights file .*nope\.pth not found"):
        resolve_targets([f"timm:test_resnet@{tmp_path / 'nope.pth'}"])
    with pytest.raises(RegistryError, match=r"unknown timm architecture 'nonet'"):
        resolve_targets([f"timm:nonet@{weights}"])
    with pytest.raises(
        RegistryError, match=r"weights from a URL need a sha256; put them in a registry \.toml"
    ):
        resolve_targets(["timm:resnet18@https://e.org/w.pth"])


def test_unknown_target_says_everything_that_was_tried():
    with pytest.raises(RegistryError) as e:
        resolve_targets(["resnet5O"])
    msg = str(e.value)
    assert msg.startswith("unknown target 'resnet5O': it is not a shipped registry (known: ")
    for tried in (
        "efficientnet-lite",
        "a registry .toml file",
        "ARCH@WEIGHTS",
        "a weights file",
        "a timm model name with pretrained weights",
        "did you mean",
    ):
        assert tried in msg


def test_missing_toml_target_and_timm_model_without_pretrained_weights(tmp_path):
    with pytest.raises(RegistryError, match=r"registry file .*nope\.toml not found"):
        resolve_targets([str(tmp_path / "nope.toml")])
    with pytest.raises(RegistryError, match="unknown target 'timm:resnet50.no_such_tag'"):
        resolve_targets(["timm:resnet50.no_such_tag"])


def test_duplicate_ids_across_targets_name_both_sources(tmp_path):
    with pytest.raises(RegistryError) as e:
        resolve_targets(["test_resnet", "timm:test_resnet"])
    assert str(e.value) == (
        "duplicate checkpoint id 'test_resnet': command line target 'test_resnet' and command line target "
        "'timm:test_resnet'"
    )
    reg = write(tmp_path / "r.toml", '[[checkpoint]]\nid = "test_resnet"\narch = "timm:test_resnet"\n')
    with pytest.raises(
        RegistryError,
        match=rf"'test_resnet': command line target 'test_resnet' and {reg}:\[\[checkpoint\]\] #1",
    ):
        resolve_targets(["test_resnet", str(reg)])


def test_nothing_heavy_happens_at_import_time():
    code = (
        "import sys; import biasbench.registry.registry_files, biasbench.registry.loading, "
        "biasbench.registry.sources, biasbench.registry.adapters; "
        "print(sorted(m for m in ('timm', 'torchvision', 'huggingface_hub', 'biasbench.registry.zoo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
