"""A CIFAR-10 checkpoint through ``bench run``: timm's ``test_resnet`` with 10 outputs at 32 px
(random weights saved as safetensors), every installed metric, on a synthetic ``cifar10/test``.

Known answers by construction: the test batch's labels are the model's own predictions (computed
here with the checkpoint's declared normalisation), so clean top-1 is exactly 1 for accuracy and
spectral; critical band's clean condition is the study's gray low-contrast rendering, whose accuracy
is computed here through PIL's own ``convert("L")``; the last layer is scaled so the model is confident on most images, and SIS
(τ = 0.99, the cifar10 label space's default) covers exactly those whose clean confidence is ≥ τ. The metrics that need another label space's data — shape_bias and
acc16 (cue-conflict and 16-class stimuli, a decision rule onto imagenet16) and ood (OOD sets and
corruptions of the label space) — are listed as n/a with their reasons, not failed.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from biasbench.metrics.discovery import all_metrics
from tests.cifar_files import batch_dict, meta_dict, py2_pickle
from tests.harness_fixtures import bench

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
N = 6
ARCH = "test_resnet"
APPLIES = {"accuracy", "spectral", "critical_band", "sis"}
NOT_APPLICABLE = {
    "shape_bias": "no cue-conflict stimuli for label space 'cifar10'",
    "acc16": "no 16-class sets for label space 'cifar10'",
    "ood": "no OOD sets for label space 'cifar10'",
}


def _confident_net() -> torch.nn.Module:
    """timm's ``test_resnet`` (a ResNet of 0.37 M parameters) with 10 outputs and random weights."""
    torch.manual_seed(0)
    net = timm.create_model(ARCH, pretrained=False, num_classes=10).eval()
    with torch.no_grad():
        net.fc.weight.mul_(400.0)  # random features, but a decisive last layer
    return net


def _gray_low_contrast(images: np.ndarray) -> torch.Tensor:
    """Critical band's clean stimulus: PIL grayscale, (x − mean) · 0.2 + 0.449, three channels."""
    gray = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L")) for im in images])
    g = gray.astype(np.float32) / 255
    g = (g - g.mean(axis=(1, 2), keepdims=True)) * 0.2 + 0.449
    return torch.from_numpy(np.repeat(g[:, None], 3, axis=1))


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _write_cifar(root, images: np.ndarray, labels: list[int]) -> None:
    d = root / "cifar10"
    d.mkdir(parents=True)
    (d / "batches.meta").write_bytes(py2_pickle(meta_dict()))
    (d / "test_batch").write_bytes(
        py2_pickle(batch_dict(images.reshape(len(labels), -1), labels, "test_batch"))
    )


@pytest.mark.slow  # ~20 s of CPU (measured: 26 s user time, 8 s of it imports): SIS, spectral and critical band grids
def test_a_cifar10_timm_checkpoint_runs_every_metric_that_applies(tmp_path, one_thread):
    net = _confident_net()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (N, 3, 32, 32), dtype=np.uint8)
    with torch.no_grad():
        probs = net(_normalised(torch.from_numpy(images).float() / 255)).softmax(dim=1)
        gray_pred = net(_normalised(_gray_low_contrast(images))).argmax(dim=1)
    labels = probs.argmax(dim=1).tolist()
    gray_acc = float((gray_pred == torch.tensor(labels)).float().mean())
    confident = probs.max(dim=1).values >= 0.99  # SIS (τ = 0.99 on cifar10) covers exactly these
    assert 0 < int(confident.sum()) < N

    weights = tmp_path / "cifar10-resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    reg = tmp_path / "cifar.toml"
    reg.write_text(
        f'[[checkpoint]]\nid = "c10-tiny"\narch = "timm:{ARCH}"\n'
        f'weights = "{weights}"\nlabels = "cifar10"\n'
        f"preprocess = {{ resize = 32, crop = 32, mean = {list(MEAN)}, std = {list(STD)} }}\n"
    )
    data = tmp_path / "data"
    _write_cifar(data, images, labels)
    env = {"BIASBENCH_CACHE": str(tmp_path / "cache"), "BIASBENCH_DATA": str(data)}
    db = tmp_path / "b.duckdb"
    metrics = sorted(all_metrics())
    assert set(metrics) >= APPLIES | set(NOT_APPLICABLE)
    r = bench(["run", str(reg), "--metrics", ",".join(metrics), "--db", str(db)], tmp_path, env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    for metric, why in NOT_APPLICABLE.items():
        assert why in out, (metric, r.stdout)

    with duckdb.connect(str(db), read_only=True) as con:
        jobs = {m for (m,) in con.execute("SELECT metric FROM jobs").fetchall()}
        failures = con.execute("SELECT metric, error FROM failures").fetchall()
    assert failures == []
    assert jobs >= APPLIES and not jobs & set(NOT_APPLICABLE)
    res = bench(["results", "--db", str(db), "--format", "csv"], tmp_path, env)
    rows = {
        (m, k): (float(v), int(n))
        for _, m, k, v, n, *_ in (line.split(",") for line in res.stdout.splitlines()[1:])
    }
    assert rows[("accuracy", "top1")] == (1.0, N)
    assert rows[("spectral", "clean_acc")] == (1.0, N)
    assert rows[("critical_band", "clean_acc")] == (gray_acc, N)
    assert rows[("critical_band", "n_bands")][0] == 4  # 32 px: a 4-level pyramid
    assert rows[("sis", "coverage")][0] == int(confident.sum()) / N
