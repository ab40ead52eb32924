"""The shipped `gavrikov2024` import preset: it parses, it maps only keys our installed metrics declare
(a renamed key breaks this test), it says the published table's known defects, and a preset is
exclusive with a mapping and an unknown one names the known presets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from biasbench.reports import importer
from biasbench.reports.roles import key_role

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_the_preset_maps_only_keys_our_metrics_declare():
    assert "gavrikov2024" in importer.presets()
    text = importer.preset_text("gavrikov2024")
    _, _, targets = importer.parse_mapping(text)
    assert {f"{t.metric}.{t.key}" for t in targets} >= {
        "ood.id",
        "ood.robustness",
        "ood.concepts",
        "ood.adversarial",
        "shape_bias.shape_bias",
        "spectral.LPP",
        "spectral.HPP",
    }
    for t in targets:
        assert key_role(t.metric, t.key).role in ("bias", "generalization", "diagnostic", "stability"), t
    ident = next(t for t in targets if (t.metric, t.key) == ("ood", "id"))
    assert ident.columns == ("top1_acc/imagenet", "top1_acc/imagenet-v2", "top1_acc/imagenet-real")
    assert ident.scale == pytest.approx(0.01)  # percent in the published table


def test_the_preset_states_the_published_tables_defects():
    notes = " ".join(tomllib.loads(importer.preset_text("gavrikov2024"))["notes"])
    assert "last batch" in notes and "k/326" in notes
    assert "50,048" in notes
    assert "27 of the 48" in notes


def test_a_preset_is_exclusive_with_a_mapping_and_an_unknown_one_names_the_known(tmp_path: Path):
    csv = tmp_path / "t.csv"
    csv.write_text("model,x\nm,1\n", encoding="utf-8")
    with pytest.raises(importer.TableImportError, match="not both"):
        importer.read_files(csv, csv, None, preset="gavrikov2024")
    with pytest.raises(importer.TableImportError, match="not neither"):
        importer.read_files(csv, None, "s")
    with pytest.raises(importer.TableImportError, match="known: gavrikov2024"):
        importer.read_files(csv, None, None, preset="gavrikov2023")
