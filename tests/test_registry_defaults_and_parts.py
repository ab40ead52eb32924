"""Registry files: a ``[defaults]`` table, multi-file ``weights = [{ source = … }, …]`` entries, and
URL/Drive entries left unpinned for a lock file."""

from __future__ import annotations

import pytest

from biasbench.registry.registry_files import RegistryError, load_registry_file
from biasbench.registry.spec import WeightPart

SHA = "ab" * 32


def _write(tmp_path, text: str):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_defaults_fill_arch_labels_and_complete_a_partial_preprocess_table(tmp_path):
    path = _write(
        tmp_path,
        '[defaults]\narch = "timm:resnet50"\n'
        'preprocess = { resize = 256, crop = 224, interpolation = "bilinear", mean = [0.4, 0.4, 0.4] }\n'
        '[[checkpoint]]\nid = "a"\n'
        '[[checkpoint]]\nid = "b"\narch = "timm:resnet18"\npreprocess = { mean = [0.0, 0.0, 0.0] }\n',
    )
    a, b = load_registry_file(path)
    assert a.arch == "timm:resnet50" and b.arch == "timm:resnet18"
    assert (a.preprocess.resize, a.preprocess.crop, a.preprocess.mean) == (256, 224, (0.4, 0.4, 0.4))
    assert (b.preprocess.resize, b.preprocess.interpolation, b.preprocess.mean) == (
        256,
        "bilinear",
        (0, 0, 0),
    )
    assert b.preprocess.std == (0.229, 0.224, 0.225)  # neither table gives std: the classic ImageNet value


def test_an_unknown_defaults_key_is_an_error_naming_it(tmp_path):
    path = _write(tmp_path, '[defaults]\nweights = "x"\n[[checkpoint]]\nid = "a"\narch = "timm:x"\n')
    with pytest.raises(RegistryError, match=r"\[defaults\]: unknown key 'weights'; known keys: arch, labels"):
        load_registry_file(path)


def test_a_multi_file_entry_keeps_each_parts_pin_and_adapters(tmp_path):
    path = _write(
        tmp_path,
        '[[checkpoint]]\nid = "m"\narch = "timm:resnet50"\nweights = [\n'
        f'  {{ source = "https://e.org/backbone.pth", sha256 = "{SHA}" }},\n'
        '  { source = "head.pth", adapter = ["select:state_dict", "rename:module.linear.=fc."] },\n]\n',
    )
    [spec] = load_registry_file(path)
    assert spec.weights is None and spec.sha256 is None
    assert spec.parts == (
        WeightPart("https://e.org/backbone.pth", SHA, ()),
        WeightPart(str(tmp_path / "head.pth"), None, ("select:state_dict", "rename:module.linear.=fc.")),
    )
    assert spec.to_row()["weights"] == f"https://e.org/backbone.pth + {tmp_path / 'head.pth'}"


@pytest.mark.parametrize(
    ("weights", "extra", "pattern"),
    [
        ("[]", "", r"weights is an empty list"),
        ('[{ source = "a.pth", sha = "x" }]', "", r"weights\[1\]: unknown key 'sha'; known keys: source"),
        ('[{ adapter = "by-position" }]', "", r"weights\[1\]: source must be a string"),
        ('[{ source = "a.pth", adapter = "strip:x" }]', "", r"unknown adapter 'strip:x'"),
        ('[{ source = "a.pth", sha256 = "12" }]', "", r"weights\[1\]: sha256 must be 64 hex digits"),
        ('[{ source = "a.pth" }]', 'adapter = "by-position"', r"adapter belongs in each part"),
        ('[{ source = "a.pth" }]', f'sha256 = "{SHA}"', r"sha256 belongs in each part"),
        ('["a.pth"]', "", r"weights\[1\]: a part must be a table"),
    ],
)
def test_malformed_parts_are_errors_naming_the_entry_and_part(tmp_path, weights, extra, pattern):
    path = _write(tmp_path, f'[[checkpoint]]\nid = "m"\narch = "timm:x"\nweights = {weights}\n{extra}\n')
    with pytest.raises(RegistryError, match=rf"r\.toml:\[\[checkpoint\]\] #1.*{pattern}"):
        load_registry_file(path)


def test_a_url_or_drive_entry_without_sha256_parses_as_unpinned(tmp_path):
    path = _write(
        tmp_path,
        '[[checkpoint]]\nid = "u"\narch = "timm:x"\nweights = "https://e.org/w.pth"\n'
        '[[checkpoint]]\nid = "g"\narch = "timm:x"\nweights = "gdrive:1abcdefghijklmnopqrstuvwxyz012"\n',
    )
    u, g = load_registry_file(path)
    assert (u.sha256, g.sha256) == (None, None)
    assert u.registry == g.registry == str(path)
