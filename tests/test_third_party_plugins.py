"""A dataset, a weight source and a label space from a pip-installed throwaway package, used by
`bench run` without editing biasbench: each is one file plus one entry-point line.

The package ``bb_toy`` holds exactly ``labels.py`` (label space ``toy-4``: 4 quadrant classes, default
clean set ``toy-quadrants``), ``datasets.py`` (dataset ``toy-quadrants``, read from the data root) and
``source.py`` (weight source ``blob:<name>``, files in ``$BB_BLOBS``). The checkpoint is a constructed
timm ``test_resnet`` whose weights are all zero except the classifier bias (1, 0, 0, 0): it predicts
class 0 for every image, so its accuracy on the balanced 40-image set is known exactly: 10/40 = 0.25.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.harness_fixtures import REPO, bench_subprocess, install_throwaway_package

FILES = {
    "labels.py": '''
        """Label space toy-4: which quadrant of the image is bright."""
        from biasbench.core.labels import LabelSpace

        TOY4 = LabelSpace(
            name="toy-4", num_classes=4, description="bright quadrant (toy)",
            class_names_loader=lambda: ("top-left", "top-right", "bottom-left", "bottom-right"),
            datasets={"clean": "toy-quadrants"},
        )
    ''',
    "datasets.py": '''
        """Dataset toy-quadrants: <data-root>/toy-quadrants/images.npz (uint8 images, int labels)."""
        import hashlib
        from pathlib import Path

        import numpy as np
        import torch

        from biasbench.core.images import ImageSet
        from biasbench.harness.datasets.catalog import DatasetEntry, DatasetMissing


        def _file(root):
            path = Path(root) / "toy-quadrants" / "images.npz"
            if not path.is_file():
                raise DatasetMissing(f"toy-quadrants not found: looked for {path}")
            return path


        def manifest(root, pre):
            return hashlib.sha256(_file(root).read_bytes()).hexdigest()[:16]


        def load(root, pre, cache_dir):
            z = np.load(_file(root))
            return ImageSet(
                name="toy-quadrants", images=torch.from_numpy(z["images"]), labels=torch.from_numpy(z["labels"]),
                class_names=["top-left", "top-right", "bottom-left", "bottom-right"], label_space="toy-4",
                item_ids=[f"q{i}" for i in range(len(z["labels"]))], manifest_hash=manifest(root, pre),
            )


        TOY_QUADRANTS = DatasetEntry(
            name="toy-quadrants", description="toy quadrant images", label_space="toy-4",
            manifest=manifest, load=load, as_stored=True, location=lambda root: Path(root) / "toy-quadrants",
        )
    ''',
    "source.py": '''
        """Weight source blob:<name>: <name>.safetensors in the folder $BB_BLOBS."""
        import os
        from pathlib import Path

        from biasbench.registry.sources import ResolvedWeights, Source, WeightSource
        from biasbench.registry.spec import CheckpointError


        class BlobSource(Source):
            """Weights from a local blob folder ($BB_BLOBS)."""

            scheme = "blob"
            syntax = "blob:<name>"

            def resolve(self, value, checkpoint_id, *, sha256, cache_dir):
                path = Path(os.environ["BB_BLOBS"]) / f"{value}.safetensors"
                if not path.is_file():
                    raise CheckpointError(f"checkpoint {checkpoint_id!r}: no blob {value!r} at {path}")
                return ResolvedWeights(WeightSource("blob", value), path=path, description=f"blob {path}")
    ''',
}

ENTRY_POINTS = """
[project.entry-points."biasbench.labels"]
toy-4 = "bb_toy.labels:TOY4"
[project.entry-points."biasbench.datasets"]
toy-quadrants = "bb_toy.datasets:TOY_QUADRANTS"
[project.entry-points."biasbench.sources"]
blob = "bb_toy.source:BlobSource"
"""


def quadrant_images(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 4
    images = rng.integers(0, 60, size=(n, 3, 32, 32), dtype=np.uint8)
    for i, q in enumerate(labels):
        r, c = divmod(int(q), 2)
        images[i, :, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] += 180
    return images, labels.astype(np.int64)


def always_class_0_weights() -> dict[str, torch.Tensor]:
    """timm ``test_resnet`` (4 classes) with every tensor zero but the classifier bias (1, 0, 0, 0)."""
    import timm

    sd = {
        k: torch.zeros_like(v)
        for k, v in timm.create_model("test_resnet", num_classes=4).state_dict().items()
    }
    sd["fc.bias"] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    return sd


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The throwaway package, installed: its import package holds exactly the three plugin files."""
    where = tmp_path_factory.mktemp("bb_toy")
    site = install_throwaway_package(where, "bb-toy", "bb_toy", FILES, ENTRY_POINTS)
    assert sorted(p.name for p in (site / "bb_toy").glob("*.py")) == [
        "__init__.py",
        "datasets.py",
        "labels.py",
        "source.py",
    ]
    return site


def cli(args: list[str], cwd: Path, site: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    return bench_subprocess(args, cwd, {"PYTHONPATH": f"{REPO}{os.pathsep}{site}", **extra_env})


def test_dataset_source_and_label_space_plugins_run_through_bench_run(installed, tmp_path):
    data = tmp_path / "data"
    (data / "toy-quadrants").mkdir(parents=True)
    images, labels = quadrant_images()
    np.savez(data / "toy-quadrants" / "images.npz", images=images, labels=labels)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    save_file(always_class_0_weights(), str(blobs / "always0.safetensors"))
    reg = tmp_path / "toy.toml"
    reg.write_text(
        '[[checkpoint]]\nid = "always0"\narch = "timm:test_resnet"\nweights = "blob:always0"\n'
        'labels = "toy-4"\npreprocess = { resize = 32, crop = 32 }\n'
    )
    env = {"BB_BLOBS": str(blobs), "BIASBENCH_DATA": str(data), "BIASBENCH_CACHE": str(tmp_path / "cache")}

    listed = cli(["ls", "datasets"], tmp_path, installed, env)
    assert listed.returncode == 0, listed.stderr
    assert "toy-quadrants" in listed.stdout and "toy-4" in listed.stdout and "bb-toy" in listed.stdout

    db = tmp_path / "b.duckdb"
    r = cli(["run", str(reg), "-m", "accuracy", "--db", str(db)], tmp_path, installed, env)
    assert r.returncode == 0, r.stderr + r.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT key, value, n FROM results WHERE checkpoint_id = 'always0'").fetchall()
        (datasets,) = con.execute("SELECT datasets FROM jobs").fetchone()
    assert rows == [("top1", 0.25, 40)]  # 4 classes: no top-5
    assert "toy-quadrants" in datasets

    # without the plugin package, the same registry is a clear error naming the unknown label space
    bare = subprocess.run(
        [
            sys.executable,
            "-m",
            "biasbench.cli",
            "run",
            str(reg),
            "--dry-run",
            "--db",
            str(tmp_path / "c.duckdb"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )
    assert bare.returncode != 0 and "toy-4" in bare.stderr


def test_a_plugin_that_reuses_a_name_is_an_error_naming_both_providers(installed, tmp_path):
    site = install_throwaway_package(
        tmp_path,
        "bb-dup",
        "bb_dup",
        {},
        '[project.entry-points."biasbench.datasets"]\nedges = "bb_toy.datasets:TOY_QUADRANTS"',
    )
    r = cli(["ls", "datasets"], tmp_path, Path(f"{installed}{os.pathsep}{site}"), {})
    assert r.returncode != 0
    said = " ".join((r.stderr + r.stdout).split())
    assert "'edges' is provided twice" in said and "package biasbench" in said and "package bb-dup" in said
