"""A third party's dataset is fetchable: a pip-installed throwaway package declares a dataset whose
entry carries its own download spec (``DatasetEntry.download``), and ``bench data fetch`` downloads it
from a local HTTP server (127.0.0.1), verifies the archive's sha256, extracts it, ``bench data verify``
checks it, and the dataset then loads through the Python API - no file of biasbench edited."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from tests.harness_fixtures import REPO, bench_subprocess, install_throwaway_package

DATASET = '''
    """Dataset toy-download: <data-root>/toy-download/images.npz, fetched from {url}/toy.tar.gz."""
    import hashlib
    from pathlib import Path

    import numpy as np
    import torch

    from biasbench.core.images import ImageSet
    from biasbench.harness.datasets.catalog import DatasetEntry, DatasetMissing
    from biasbench.harness.datasets.download_spec import ArchiveDownload, DownloadSpec


    def _file(root):
        path = Path(root) / "toy-download" / "images.npz"
        if not path.is_file():
            raise DatasetMissing(f"toy-download not found: looked for {{path}}; bench data fetch toy-download")
        return path


    def manifest(root, pre):
        return hashlib.sha256(_file(root).read_bytes()).hexdigest()[:16]


    def load(root, pre, cache_dir):
        z = np.load(_file(root))
        return ImageSet(
            name="toy-download", images=torch.from_numpy(z["images"]), labels=torch.from_numpy(z["labels"]),
            class_names=["a", "b"], label_space="cifar10",
            item_ids=[f"i{{i}}" for i in range(len(z["labels"]))], manifest_hash=manifest(root, pre),
        )


    TOY = DatasetEntry(
        name="toy-download", description="toy images from a download", label_space="cifar10",
        manifest=manifest, load=load, as_stored=True, location=lambda root: Path(root) / "toy-download",
        download=DownloadSpec(
            name="toy-download",
            license="CC0",
            source={{"repository": "{url}", "release": "0.1"}},
            archive=ArchiveDownload(url="{url}/toy.tar.gz", sha256="{sha256}", strip_prefix="toy/"),
        ),
    )
'''


def toy_archive(path: Path) -> str:
    """``toy.tar.gz`` holding ``toy/images.npz`` (6 images, labels 0/1); returns its sha256."""
    buf = io.BytesIO()
    np.savez(buf, images=np.full((6, 3, 8, 8), 7, dtype=np.uint8), labels=np.arange(6) % 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("toy/images.npz")
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_third_party_dataset_declares_its_download_and_bench_data_fetch_gets_it(tmp_path, http_server):
    served = tmp_path / "served"
    sha = toy_archive(served / "toy.tar.gz")
    url = http_server(served)
    site = install_throwaway_package(
        tmp_path,
        "bb-fetchable",
        "bb_fetchable",
        {"datasets.py": DATASET.format(url=url, sha256=sha)},
        '[project.entry-points."biasbench.datasets"]\ntoy-download = "bb_fetchable.datasets:TOY"',
    )
    data = tmp_path / "data"
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{site}", "BIASBENCH_MIRROR": None}

    r = bench_subprocess(["data", "fetch", "toy-download", "--data-root", str(data)], tmp_path, env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"{url}/toy.tar.gz" in r.stderr and "verified" in r.stderr
    assert (data / "toy-download" / "images.npz").is_file()
    r = bench_subprocess(["data", "verify", "toy-download", "--data-root", str(data)], tmp_path, env)
    assert r.returncode == 0 and "matches its download spec" in r.stdout, r.stderr

    load = (
        "import sys; from biasbench.harness.datasets import catalog; "
        "ds = catalog.get('toy-download').load(sys.argv[1], None, sys.argv[2]); print(len(ds), ds.labels.tolist())"
    )
    got = subprocess.run(
        [sys.executable, "-c", load, str(data), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": env["PYTHONPATH"]},
        timeout=300,
    )
    assert got.stdout.split("\n")[0] == "6 [0, 1, 0, 1, 0, 1]", got.stderr

    # a damaged file is caught by `bench data verify`; a served archive with other bytes is refused
    (data / "toy-download" / "images.npz").write_bytes(b"broken")
    r = bench_subprocess(["data", "verify", "toy-download", "--data-root", str(data)], tmp_path, env)
    assert r.returncode == 1 and "sha256 mismatch" in r.stderr
    (served / "toy.tar.gz").write_bytes((served / "toy.tar.gz").read_bytes() + b"\0")
    r = bench_subprocess(
        ["data", "fetch", "toy-download", "--data-root", str(tmp_path / "other")], tmp_path, env
    )
    assert r.returncode == 2 and "sha256 mismatch" in r.stderr
    assert not (tmp_path / "other" / "toy-download").exists()
