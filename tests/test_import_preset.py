"""The `gavrikov2024` preset: Gavrikov & Keuper's published table (raw-data/benchmark.csv of
github.com/paulgavrikov/biases_vs_generalization) imported through the shipped mapping.

The fixture is a table with the real header of benchmark.csv (all 1600 columns, in order; its sha256
is the real file's header's) and a few synthetic rows whose expected imported values are computed by
hand below. With BIASBENCH_GAVRIKOV_CSV pointing at the real file, one more test checks the preset's
declared defects against it (skipped otherwise: no network in tests)."""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from biasbench.reports.importer import TableImportError, preset_text, presets, read_mapping, read_table
from tests.harness_fixtures import bench

# --- the real header of benchmark.csv: 206 named columns, 128 layers × 10 filter-quality statistics,
# the 107 weight-reset columns of a ResNet-50, and 7 more named columns
HEAD = """
    model top1_acc/imagenet top1_acc/imagenet-a top1_acc/imagenet-r top1_acc/imagenet-v2
    top1_acc/imagenet-sketch top1_acc/shot_noise_2 top1_acc/speckle_noise_2 top1_acc/fog_4
    top1_acc/spatter_2 top1_acc/elastic_transform_3 top1_acc/saturate_2 top1_acc/saturate_3
    top1_acc/fog_2 top1_acc/saturate_1 top1_acc/gaussian_blur_2 top1_acc/gaussian_blur_4
    top1_acc/motion_blur_3 top1_acc/gaussian_blur_1 top1_acc/frost_4 top1_acc/defocus_blur_5
    top1_acc/defocus_blur_1 top1_acc/saturate_4 top1_acc/zoom_blur_5 top1_acc/glass_blur_2
    top1_acc/defocus_blur_4 top1_acc/motion_blur_5 top1_acc/defocus_blur_3 top1_acc/gaussian_noise_5
    top1_acc/gaussian_noise_3 top1_acc/snow_2 top1_acc/spatter_4 top1_acc/gaussian_noise_4
    top1_acc/frost_5 top1_acc/pixelate_1 top1_acc/fog_3 top1_acc/shot_noise_4
    top1_acc/jpeg_compression_4 top1_acc/fog_1 top1_acc/speckle_noise_1 top1_acc/glass_blur_3
    top1_acc/motion_blur_2 top1_acc/gaussian_noise_2 top1_acc/fog_5 top1_acc/contrast_1
    top1_acc/shot_noise_3 top1_acc/pixelate_4 top1_acc/jpeg_compression_3 top1_acc/spatter_3
    top1_acc/contrast_2 top1_acc/gaussian_blur_5 top1_acc/impulse_noise_3 top1_acc/elastic_transform_4
    top1_acc/zoom_blur_4 top1_acc/glass_blur_5 top1_acc/speckle_noise_5 top1_acc/jpeg_compression_5
    top1_acc/brightness_4 top1_acc/jpeg_compression_2 top1_acc/impulse_noise_2 top1_acc/impulse_noise_4
    top1_acc/shot_noise_5 top1_acc/defocus_blur_2 top1_acc/spatter_5 top1_acc/brightness_5
    top1_acc/snow_3 top1_acc/zoom_blur_2 top1_acc/glass_blur_1 top1_acc/speckle_noise_3
    top1_acc/zoom_blur_3 top1_acc/gaussian_blur_3 top1_acc/contrast_4 top1_acc/brightness_3
    top1_acc/pixelate_3 top1_acc/motion_blur_1 top1_acc/shot_noise_1 top1_acc/motion_blur_4
    top1_acc/snow_5 top1_acc/elastic_transform_2 top1_acc/elastic_transform_5 top1_acc/brightness_2
    top1_acc/frost_3 top1_acc/gaussian_noise_1 top1_acc/contrast_5 top1_acc/jpeg_compression_1
    top1_acc/contrast_3 top1_acc/impulse_noise_5 top1_acc/impulse_noise_1 top1_acc/speckle_noise_4
    top1_acc/pixelate_2 top1_acc/frost_2 top1_acc/spatter_1 top1_acc/glass_blur_4 top1_acc/frost_1
    top1_acc/saturate_5 top1_acc/snow_1 top1_acc/snow_4 top1_acc/brightness_1 top1_acc/pixelate_5
    top1_acc/elastic_transform_1 top1_acc/zoom_blur_1 top1_acc/imagenet-c top1_acc/brownish_noise_1
    top1_acc/caustic_refraction_5 top1_acc/inverse_sparkles_1 top1_acc/sparkles_5
    top1_acc/checkerboard_cutout_1 top1_acc/brownish_noise_4 top1_acc/perlin_noise_1
    top1_acc/inverse_sparkles_5 top1_acc/checkerboard_cutout_5 top1_acc/perlin_noise_4
    top1_acc/sparkles_4 top1_acc/inverse_sparkles_2 top1_acc/cocentric_sine_waves_3
    top1_acc/checkerboard_cutout_2 top1_acc/cocentric_sine_waves_2 top1_acc/caustic_refraction_3
    top1_acc/checkerboard_cutout_4 top1_acc/single_frequency_greyscale_5 top1_acc/inverse_sparkles_4
    top1_acc/cocentric_sine_waves_1 top1_acc/perlin_noise_3 top1_acc/perlin_noise_5
    top1_acc/single_frequency_greyscale_2 top1_acc/inverse_sparkles_3 top1_acc/blue_noise_sample_2
    top1_acc/caustic_refraction_2 top1_acc/caustic_refraction_4 top1_acc/single_frequency_greyscale_4
    top1_acc/blue_noise_sample_4 top1_acc/sparkles_1 top1_acc/plasma_noise_5 top1_acc/brownish_noise_5
    top1_acc/single_frequency_greyscale_3 top1_acc/sparkles_2 top1_acc/checkerboard_cutout_3
    top1_acc/perlin_noise_2 top1_acc/plasma_noise_2 top1_acc/cocentric_sine_waves_4
    top1_acc/brownish_noise_2 top1_acc/brownish_noise_3 top1_acc/plasma_noise_3
    top1_acc/blue_noise_sample_1 top1_acc/plasma_noise_4 top1_acc/blue_noise_sample_3
    top1_acc/caustic_refraction_1 top1_acc/plasma_noise_1 top1_acc/sparkles_3
    top1_acc/blue_noise_sample_5 top1_acc/cocentric_sine_waves_5 top1_acc/single_frequency_greyscale_1
    top1_acc/imagenet-cbar top1_acc/low-pass top1_acc/eidolonIII top1_acc/contrast top1_acc/ood_mean
    top1_acc/rotation top1_acc/false-colour top1_acc/eidolonI top1_acc/stylized top1_acc/cue-conflict
    top1_acc/eidolonII top1_acc/high-pass top1_acc/silhouette top1_acc/phase-scrambling
    top1_acc/power-equalisation top1_acc/edge top1_acc/colour top1_acc/uniform-noise top1_acc/sketch
    shape-bias top1_acc/PGD-40/low top1_acc/PGD-40/high metric/erf/area metric/erf/max_amplitude
    metric/bandpass/HFC/0.01 metric/bandpass/HFC/0.1 metric/bandpass/HFC/0.2 metric/bandpass/HFC/0.3
    metric/bandpass/HFC/0.4 metric/bandpass/HFC/0.5 metric/bandpass/HFC/0.6 metric/bandpass/HFC/0.7
    metric/bandpass/HFC/0.8 metric/bandpass/HFC/0.9 metric/bandpass/HFC/0.99 metric/bandpass/LFC/0.01
    metric/bandpass/LFC/0.1 metric/bandpass/LFC/0.2 metric/bandpass/LFC/0.3 metric/bandpass/LFC/0.4
    metric/bandpass/LFC/0.5 metric/bandpass/LFC/0.6 metric/bandpass/LFC/0.7 metric/bandpass/LFC/0.8
    metric/bandpass/LFC/0.9 metric/bandpass/LFC/0.99 metric/quality/ve_wmean metric/quality/ve_max
    metric/quality/ve_min metric/quality/sparsity_wmean metric/quality/sparsity_max
    metric/quality/orthogonality_wmean metric/quality/orthogonality_max metric/quality/orthogonality_min
""".split()
QUALITY_LAYERS = """
    layer1.0.conv2 layer1.1.conv2 layer1.2.conv2 layer2.0.conv2 layer2.1.conv2 layer2.2.conv2
    layer2.3.conv2 layer3.0.conv2 layer3.1.conv2 layer3.2.conv2 layer3.3.conv2 layer3.4.conv2
    layer3.5.conv2 layer4.0.conv2 layer4.1.conv2 layer4.2.conv2 model.stages.0.blocks.0.conv2
    model.stages.0.blocks.1.conv2 model.stages.0.blocks.2.conv2 model.stages.1.blocks.0.conv2
    model.stages.1.blocks.1.conv2 model.stages.1.blocks.2.conv2 model.stages.1.blocks.3.conv2
    model.stages.2.blocks.0.conv2 model.stages.2.blocks.1.conv2 model.stages.2.blocks.2.conv2
    model.stages.2.blocks.3.conv2 model.stages.2.blocks.4.conv2 model.stages.2.blocks.5.conv2
    model.stages.3.blocks.0.conv2 model.stages.3.blocks.1.conv2 model.stages.3.blocks.2.conv2
    stem.conv1.conv stem.conv2.conv stem.conv3.conv stages.0.0.conv2_kxk.conv stages.0.1.conv2_kxk.conv
    stages.0.2.conv2_kxk.conv stages.1.0.conv2_kxk.conv stages.1.1.conv2_kxk.conv
    stages.1.2.conv2_kxk.conv stages.2.0.conv2_kxk.conv stages.2.2.conv2_kxk.conv
    stages.2.4.conv2_kxk.conv stages.3.0.conv2_kxk.conv stages.3.2.conv2_kxk.conv model.stages.0.0.conv2
    model.stages.0.1.conv2 model.stages.0.2.conv2 model.stages.1.0.conv2 model.stages.1.1.conv2
    model.stages.1.2.conv2 model.stages.1.3.conv2 model.stages.2.0.conv2 model.stages.2.1.conv2
    model.stages.2.2.conv2 model.stages.2.3.conv2 model.stages.2.4.conv2 model.stages.2.5.conv2
    model.stages.3.0.conv2 model.stages.3.1.conv2 model.stages.3.2.conv2 layer2.4.conv2 layer2.5.conv2
    layer2.6.conv2 layer2.7.conv2 layer3.6.conv2 layer3.7.conv2 layer3.8.conv2 layer3.9.conv2
    layer3.10.conv2 layer3.11.conv2 layer3.12.conv2 layer3.13.conv2 layer3.14.conv2 layer3.15.conv2
    layer3.16.conv2 layer3.17.conv2 layer3.18.conv2 layer3.19.conv2 layer3.20.conv2 layer3.21.conv2
    layer3.22.conv2 layer3.23.conv2 layer3.24.conv2 layer3.25.conv2 layer3.26.conv2 layer3.27.conv2
    layer3.28.conv2 layer3.29.conv2 layer3.30.conv2 layer3.31.conv2 layer3.32.conv2 layer3.33.conv2
    layer3.34.conv2 layer3.35.conv2 layer1.0.conv1 layer1.1.conv1 layer1.2.conv1 layer2.0.conv1
    layer2.1.conv1 layer2.2.conv1 layer2.3.conv1 layer3.0.conv1 layer3.1.conv1 layer3.2.conv1
    layer3.3.conv1 layer3.4.conv1 layer3.5.conv1 layer4.0.conv1 layer4.1.conv1 layer4.2.conv1
    module.layer1.0.conv2 module.layer1.1.conv2 module.layer1.2.conv2 module.layer2.0.conv2
    module.layer2.1.conv2 module.layer2.2.conv2 module.layer2.3.conv2 module.layer3.0.conv2
    module.layer3.1.conv2 module.layer3.2.conv2 module.layer3.3.conv2 module.layer3.4.conv2
    module.layer3.5.conv2 module.layer4.0.conv2 module.layer4.1.conv2 module.layer4.2.conv2
""".split()
TAIL = """
    top1_acc/imagenet-real metric/criticalband/bw metric/criticalband/cf metric/criticalband/pns
    metric/criticalband/bw_norm metric/criticalband/cf_norm metric/criticalband/pns_norm
""".split()
QUALITY_STATS = "ve ve_clean ve_norm ve_clean_norm sp or norm_l1_norm norm_l2_norm norm_l1 norm_l2".split()
HEADER_SHA256 = "9832ac7177aaee1912c1cf78b3cf65c9c58fb8251cb0cb5720e1f26a1f06ca17"  # of the file's first line


def _weight_reset() -> list[str]:
    names = ["conv1", "bn1"]
    for layer, blocks in ((1, 3), (2, 4), (3, 6), (4, 3)):
        for b in range(blocks):
            for k in (1, 2, 3):
                names += [f"layer{layer}.{b}.conv{k}", f"layer{layer}.{b}.bn{k}"]
            if b == 0:
                names += [f"layer{layer}.0.downsample.0", f"layer{layer}.0.downsample.1"]
    return [f"metric/weight_reset/{n}" for n in [*names, "fc"]]


def header() -> list[str]:
    quality = [f"metric/quality/layer/{lay}/{s}" for lay in QUALITY_LAYERS for s in QUALITY_STATS]
    return [*HEAD, *quality, *_weight_reset(), *TAIL]


# --- synthetic rows (percent where the study has percent). Hand-computed imports:
#   id = mean(val, v2, real) / 100, robustness = mean(a, c, cbar) / 100,
#   concepts = mean(imagenet-sketch, r, stylized) / 100, adversarial = PGD-40/low / 100,
#   LPP / HPP = mean of the five LFC / HFC ratios at 0.1 … 0.5.
# fmt: off
ROWS = {  # val v2 real | a c cbar | sketch r stylized | pgd | shape | LFC 0.1…0.5 | HFC 0.1…0.5 | bw cf pns
    "tv_resnet50": (76, 64, 88, 2, 40, 42, 24, 36, 12, 30, 0.20, (0.1, 0.2, 0.3, 0.4, 0.5),
                    (0.05, 0.04, 0.03, 0.02, 0.01), 4.5, 40, 0.9),
    "resnet50_trained_on_SIN": (60, 48, 72, 1, 35, 39, 30, 45, 90, 20, 0.80, (0.2, 0.3, 0.4, 0.5, 0.6),
                                (0.10, 0.08, 0.06, 0.04, 0.02), 5.0, 50, 1.0),
    "robust_resnet50_linf_eps4.0": (63, 51, 75, 3, 45, 48, 27, 39, 45, 66, 0.60, (0.3, 0.4, 0.5, 0.6, 0.7),
                                    (0.01, 0.01, 0.01, 0.01, 0.01), 6.0, 35, 0.5),
    "resnet50.a1_in1k": (80, 69, 91, 10, 50, 51, 30, 40, 35, 12, 0.15, (0.05, 0.10, 0.15, 0.20, 0.25),
                         (0.2, 0.1, 0.05, 0.03, 0.02), 3.5, 45, 0.95),
    "resnet18": (70, 58, 80, 1, 39, 40, 20, 33, 10, 25, 0.21, (0.1, 0.2, 0.3, 0.4, 0.5),
                 (0.05, 0.04, 0.03, 0.02, 0.01), 4.0, 41, 0.9),  # not one of the study's 48: left out
}
# fmt: on
EXPECTED = {  # id, robustness, concepts, adversarial, LPP, HPP
    "tv_resnet50": (0.76, 0.28, 0.24, 0.30, 0.30, 0.03),
    "resnet50_trained_on_SIN": (0.60, 0.25, 0.55, 0.20, 0.40, 0.06),
    "robust_resnet50_linf_eps4.0": (0.63, 0.32, 0.37, 0.66, 0.50, 0.01),
    "resnet50.a1_in1k": (0.80, 0.37, 0.35, 0.12, 0.15, 0.08),
}
# the cutoffs outside 0.1 … 0.5, the same in every row
OTHER_LFC = {"0.01": 0.001, "0.6": 0.7, "0.7": 0.8, "0.8": 0.9, "0.9": 0.95, "0.99": 1.0}
OTHER_HFC = {"0.01": 0.002, "0.6": 0.004, "0.7": 0.01, "0.8": 0.05, "0.9": 0.3, "0.99": 0.75}
CUTS = ("0.1", "0.2", "0.3", "0.4", "0.5")
STUDY_KEYS = {
    "ood.id",
    "ood.robustness",
    "ood.concepts",
    "ood.adversarial",
    "shape_bias.shape_bias",
    "spectral.LPP",
    "spectral.HPP",
    "critical_band.bandwidth_norm",
    "critical_band.centre_frequency_norm",
    "critical_band.peak_noise_sensitivity_norm",
}


def _cells(row: tuple) -> dict[str, object]:
    val, v2, real, a, c, cbar, sk, r, sty, pgd, shape, lfc, hfc, bw, cf, pns = row
    t = "top1_acc/"
    cells: dict[str, object] = {
        f"{t}imagenet": val, f"{t}imagenet-v2": v2, f"{t}imagenet-real": real, f"{t}imagenet-a": a,
        f"{t}imagenet-c": c, f"{t}imagenet-cbar": cbar, f"{t}imagenet-sketch": sk, f"{t}imagenet-r": r,
        f"{t}stylized": sty, f"{t}PGD-40/low": pgd, "shape-bias": shape,
        "metric/criticalband/bw_norm": bw, "metric/criticalband/cf_norm": cf,
        "metric/criticalband/pns_norm": pns,
        # columns the preset leaves alone (the raw fit's degenerate value, a 16-class sketch set, …)
        "metric/criticalband/bw": 11295.346977268, f"{t}sketch": 61.5, "metric/erf/area": 1.5,
    }  # fmt: skip
    for cut, lo, hi in zip(CUTS, lfc, hfc, strict=True):
        cells[f"metric/bandpass/LFC/{cut}"], cells[f"metric/bandpass/HFC/{cut}"] = lo, hi
    for cut, v in OTHER_LFC.items():
        cells[f"metric/bandpass/LFC/{cut}"] = v
    for cut, v in OTHER_HFC.items():
        cells[f"metric/bandpass/HFC/{cut}"] = v
    return cells


def fixture_csv() -> bytes:
    cols = header()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for ckpt, row in ROWS.items():
        cells = {"model": ckpt, **_cells(row)}
        assert set(cells) <= set(cols)
        w.writerow([cells.get(c, "") for c in cols])
    return buf.getvalue().encode()


def _write(tmp_path: Path) -> Path:
    p = tmp_path / "benchmark.csv"
    p.write_bytes(fixture_csv())
    return p


def _imported(csv_bytes: bytes | None = None):
    return read_table(
        csv_bytes or fixture_csv(),
        preset_text("gavrikov2024"),
        source="gavrikov2024",
        file_name="benchmark.csv",
        preset="gavrikov2024",
    )


def test_the_fixture_header_is_the_real_header_of_benchmark_csv():
    cols = header()
    assert len(cols) == 1600 == len(set(cols))
    assert hashlib.sha256(",".join(cols).encode()).hexdigest() == HEADER_SHA256


def test_the_preset_imports_the_study_aggregates_as_fractions_by_hand():
    t = _imported()
    v = {(r.checkpoint, f"{r.metric}.{r.key}"): r.value for r in t.results.itertuples()}
    assert sorted({c for c, _ in v}) == sorted(EXPECTED)
    for ckpt, (id_, rob, con, adv, lpp, hpp) in EXPECTED.items():
        assert v[(ckpt, "ood.id")] == pytest.approx(id_)
        assert v[(ckpt, "ood.robustness")] == pytest.approx(rob)
        assert v[(ckpt, "ood.concepts")] == pytest.approx(con)
        assert v[(ckpt, "ood.adversarial")] == pytest.approx(adv)
        assert v[(ckpt, "spectral.LPP")] == pytest.approx(lpp)
        assert v[(ckpt, "spectral.HPP")] == pytest.approx(hpp)
    # one row in full: the parts, shape bias (a fraction already), the ratios, the normalised fit
    a = "tv_resnet50"
    assert v[(a, "ood.imagenet_top1")] == pytest.approx(0.76)
    assert v[(a, "ood.v2_top1")] == pytest.approx(0.64)
    assert v[(a, "ood.real_top1")] == pytest.approx(0.88)
    assert v[(a, "ood.a_top1")] == pytest.approx(0.02)
    assert v[(a, "ood.c19_mean")] == pytest.approx(0.40)
    assert v[(a, "ood.cbar_mean")] == pytest.approx(0.42)
    assert v[(a, "ood.sketch_top1")] == pytest.approx(0.24)
    assert v[(a, "ood.r_top1")] == pytest.approx(0.36)
    assert v[(a, "ood.stylized16_acc16")] == pytest.approx(0.12)
    assert v[(a, "ood.pgd40_top1")] == pytest.approx(0.30)
    assert v[(a, "shape_bias.shape_bias")] == pytest.approx(0.20)
    assert v[(a, "spectral.lowpass_ratio@0.3")] == pytest.approx(0.3)
    assert v[(a, "spectral.lowpass_ratio@0.7")] == pytest.approx(0.8)
    assert v[(a, "spectral.highpass_ratio@0.99")] == pytest.approx(0.75)
    assert v[(a, "spectral.highpass_ratio@0.01")] == pytest.approx(0.002)
    assert v[(a, "critical_band.bandwidth_norm")] == pytest.approx(4.5)
    assert v[(a, "critical_band.centre_frequency_norm")] == pytest.approx(40)
    assert v[(a, "critical_band.peak_noise_sensitivity_norm")] == pytest.approx(0.9)
    keys = {k for c, k in v if c == a}
    assert STUDY_KEYS <= keys and len(keys) == 42 and not t.skipped
    assert all(0 <= val <= 1 for (_, k), val in v.items() if k.startswith("ood."))
    # not imported: the raw critical-band fit, the 16-class sketch set, everything else unmapped
    assert {"metric/criticalband/bw", "top1_acc/sketch", "metric/erf/area"} <= set(t.unused)


def test_the_study_categories_and_the_adversarial_epsilon_become_tags_and_other_rows_are_left_out():
    t = _imported()
    assert t.tags == {
        "tv_resnet50": {"category": "baseline"},
        "resnet50_trained_on_SIN": {"category": "stylized"},
        "robust_resnet50_linf_eps4.0": {"category": "adversarial_training", "norm": "linf", "eps": "4/255"},
        "resnet50.a1_in1k": {"category": "training_recipes"},
    }
    assert t.left_out == ["resnet18"]
    assert len(t.absent) == 48 - 4  # the study's other ResNet-50s, not in this small table
    spec = read_mapping(preset_text("gavrikov2024"))
    cats = [tags["category"] for tags in spec.checkpoint_tags.values()]
    assert len(cats) == 48 and cats.count("adversarial_training") == 15
    assert spec.checkpoint_tags["robust_resnet50_l2_eps3"] == {
        "category": "adversarial_training",
        "norm": "l2",
        "eps": "3",
    }


def test_the_preset_declares_the_tables_defects_as_notes_in_the_provenance():
    t = _imported()
    prov = t.provenance
    assert prov["preset"] == "gavrikov2024" and prov["source"] == "gavrikov2024"
    notes = prov["notes"]
    assert len(notes) == 3
    assert "last batch" in notes[0] and "326" in notes[0]
    assert "50,048" in notes[1]
    assert "27 of the 48" in notes[2] and "11295.35" in notes[2]


def test_the_mapping_names_only_keys_our_installed_metrics_declare():
    from biasbench.metrics.discovery import METRICS
    from biasbench.reports.roles import key_role

    spec = read_mapping(preset_text("gavrikov2024"))
    mapped = {f"{t.metric}.{t.key}" for t in spec.targets}
    assert STUDY_KEYS <= mapped
    for t in spec.targets:
        roles = METRICS.get(t.metric).key_roles
        assert t.key in roles or any(fnmatch.fnmatchcase(t.key, p) for p in roles), (
            f"{t.metric}.{t.key}: not a key {t.metric} declares"
        )
        if (
            f"{t.metric}.{t.key}" in STUDY_KEYS
        ):  # the study's axes: declared by name, as bias / generalization
            assert t.key in roles
            assert key_role(t.metric, t.key).role in ("bias", "generalization")
    # and every column it names is a column of the real table
    cols = set(header())
    assert all(c in cols for t in spec.targets for c in t.columns)
    assert spec.checkpoint == "model"


def test_bench_import_preset_then_the_report_shows_the_notes(tmp_path):
    import biasbench

    csv_path, db = _write(tmp_path), tmp_path / "g.duckdb"
    r = bench(["import", str(csv_path), "--preset", "gavrikov2024", "--db", str(db)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "imported 168 values of 4 checkpoints" in r.stdout and "'gavrikov2024'" in r.stdout
    assert "left out: resnet18" in r.stderr and "note: ReaL" in r.stderr
    rep = biasbench.report(db, resamples=200, predict=False)
    notes = [n for n in rep.scores.notes if n.startswith("imported table gavrikov2024 (benchmark.csv): ")]
    assert len(notes) == 3 and "50,048" in notes[1]
    md = rep.to_markdown()
    assert "27 of the 48 raw critical-band fits" in md and "k/326" in md
    assert "ood.id" in rep.cols and "shape_bias.shape_bias" in rep.rows
    # the provenance of the JSON report names the preset and carries the notes
    doc = json.loads(
        bench(
            ["report", "--db", str(db), "--format", "json", "--resamples", "200", "--no-predict"], tmp_path
        ).stdout
    )
    (imp,) = doc["provenance"]["imports"]
    assert imp["preset"] == "gavrikov2024" and len(imp["notes"]) == 3


def test_the_python_api_takes_a_preset(tmp_path):
    import biasbench

    table = biasbench.import_table(_write(tmp_path), preset="gavrikov2024", db=tmp_path / "g.duckdb")
    assert table.provenance["source"] == "gavrikov2024" and table.results["checkpoint"].nunique() == 4
    with pytest.raises(TableImportError, match="not both"):
        biasbench.import_table(
            _write(tmp_path), tmp_path / "m.toml", preset="gavrikov2024", db=tmp_path / "x"
        )
    with pytest.raises(TableImportError, match=r"unknown preset 'gavrikov' \(known: gavrikov2024\)"):
        biasbench.import_table(_write(tmp_path), preset="gavrikov", db=tmp_path / "x")


def test_preset_and_mapping_together_are_refused_and_one_of_them_is_needed(tmp_path):
    csv_path = _write(tmp_path)
    (tmp_path / "m.toml").write_text('checkpoint = "model"\n[keys]\n"ood.id" = "top1_acc/imagenet"\n')
    db = str(tmp_path / "x.duckdb")
    both = bench(
        ["import", str(csv_path), "--preset", "gavrikov2024", "--mapping", "m.toml", "--db", db], tmp_path
    )
    assert both.returncode == 2 and "not both" in both.stderr
    neither = bench(["import", str(csv_path), "--source", "s", "--db", db], tmp_path)
    assert neither.returncode == 2 and "not neither" in neither.stderr and "gavrikov2024" in neither.stderr
    no_source = bench(["import", str(csv_path), "--mapping", "m.toml", "--db", db], tmp_path)
    assert no_source.returncode == 2 and "--source" in no_source.stderr
    assert not Path(db).exists()


def test_an_unknown_preset_names_the_known_ones(tmp_path):
    r = bench(["import", str(_write(tmp_path)), "--preset", "gavrikov2023", "--db", "x.duckdb"], tmp_path)
    assert r.returncode == 2
    assert "unknown preset 'gavrikov2023' (known: gavrikov2024)" in r.stderr
    assert "did you mean gavrikov2024" in r.stderr
    assert "gavrikov2024" in presets()
    help_ = bench(["import", "--help"], tmp_path)
    assert "--preset" in help_.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("only_tagged = true\n", "needs a \\[checkpoint_tags\\]"),
        ('notes = "one"\n', "`notes` must be a list"),
        ('[checkpoint_tags]\n"a b" = { category = "x" }\n', "not a checkpoint id"),
        ('[checkpoint_tags]\n"m1" = { category = 3 }\n', "must be a non-empty string"),
        ('[checkpoint_tags]\n"m1" = { family = "x" }\n', "also a `tags` column"),
    ],
)
def test_a_bad_notes_or_checkpoint_tags_entry_is_an_error(extra, message):
    head, _, table = extra.partition("[checkpoint_tags]")
    mapping = 'checkpoint = "model"\ntags = ["family"]\n' + head + '[keys]\n"ood.id" = "acc"\n'
    if table:
        mapping += "[checkpoint_tags]" + table
    with pytest.raises(TableImportError, match=message):
        read_table(b"model,family,acc\nm1,a,0.5\n", mapping, source="s", file_name="t.csv")


def test_checkpoint_tags_join_the_column_tags_and_rows_keep_their_file_numbers():
    mapping = (
        'checkpoint = "model"\ntags = ["family"]\nonly_tagged = true\nnotes = ["hand-made"]\n'
        '[keys]\n"ood.id" = "acc"\n[checkpoint_tags]\n"m2" = { eps = "1" }\n"m9" = { eps = "2" }\n'
    )
    t = read_table(b"model,family,acc\nm1,a,0.5\nm2,b,0.7\n", mapping, source="s", file_name="t.csv")
    assert t.tags == {"m2": {"family": "b", "eps": "1"}} and t.left_out == ["m1"] and t.absent == ["m9"]
    assert t.provenance["notes"] == ["hand-made"] and "preset" not in t.provenance
    with pytest.raises(TableImportError, match=r"row 3 \(m2\), column 'acc'"):
        read_table(b"model,family,acc\nm1,a,0.5\nm2,b,n/a\n", mapping, source="s", file_name="t.csv")


@pytest.mark.skipif(
    not os.environ.get("BIASBENCH_GAVRIKOV_CSV"),
    reason="set BIASBENCH_GAVRIKOV_CSV to the study's raw-data/benchmark.csv to check it",
)
def test_the_declared_defects_hold_in_the_real_table():
    import pandas as pd

    raw = Path(os.environ["BIASBENCH_GAVRIKOV_CSV"]).read_bytes()
    assert hashlib.sha256(raw.split(b"\n", 1)[0].rstrip(b"\r")).hexdigest() == HEADER_SHA256
    t = _imported(raw)
    assert t.results["checkpoint"].nunique() == 48 and len(t.left_out) == 22 and not t.absent
    v = t.results.set_index(["checkpoint", "metric", "key"])["value"]
    real = v.xs(("ood", "real_top1"), level=("metric", "key")) * 326
    assert ((real - real.round()).abs() < 1e-9).all() and len(real) == 48  # the last batch: k / 326
    pgd = v.xs(("ood", "pgd40_top1"), level=("metric", "key")) * 50_048
    assert ((pgd - pgd.round()).abs() < 1e-6).all()  # k / 50,048
    assert not ((pgd / 50_048 * 50_000 - (pgd / 50_048 * 50_000).round()).abs() < 1e-6).all()
    table = pd.read_csv(io.BytesIO(raw)).set_index("model").loc[sorted(t.tags)]
    bw = table["metric/criticalband/bw"].round(6)
    assert bw.value_counts().iloc[0] == 27 and bw.value_counts().index[0] == pytest.approx(11295.346977)
