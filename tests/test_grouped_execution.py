"""Dataset-major execution (``bench run --group K|auto``): each decoded batch goes through K checkpoints,
results identical to checkpoint-major order, failures stay per job, one-model plugins unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from biasbench.core import labels
from biasbench.core.streaming import DECODE_STATS
from biasbench.harness.grouping import auto_group_size, model_bytes, parse_group
from biasbench.harness.store import Store
from biasbench.metrics.base import EvalContext, Metric, MetricResult, ModelWrapper
from biasbench.metrics.common import dataset_request
from biasbench.metrics.discovery import METRICS
from tests.harness_fixtures import bench, tiny_checkpoint

N_IMAGES = 24
N_CHECKPOINTS = 4


def _data_root(root: Path) -> Path:
    """``<root>/imagenet-sample``: ``N_IMAGES`` synthetic JPEGs named by ImageNet wnids (10 classes)."""
    folder = root / "imagenet-sample"
    folder.mkdir(parents=True)
    wnids = labels.get("imagenet-1k").class_ids[:10]
    rng = np.random.default_rng(1)
    for i in range(N_IMAGES):
        small = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
        Image.fromarray(small).resize((88, 72), Image.BILINEAR).save(folder / f"{wnids[i % 10]}_{i}.JPEG")
    return root


def _registry(dirpath: Path, n: int = N_CHECKPOINTS) -> Path:
    """``n`` tiny ImageNet checkpoints (timm ``test_resnet``, random weights) with one 32-px
    preprocessing, so they can share a group."""
    entries = []
    for i in range(n):
        w = tiny_checkpoint(dirpath / f"w{i}.pth", seed=i)
        entries.append(
            f'[[checkpoint]]\nid = "tiny{i}"\narch = "timm:test_resnet"\nweights = "{w}"\n'
            'labels = "imagenet-1k"\n'
            "preprocess = { resize = 36, crop = 32, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }\n"
        )
    path = dirpath / "tiny.toml"
    path.write_text("\n".join(entries))
    return path


@pytest.fixture()
def setup(tmp_path: Path, cache_dir: Path):
    reg = _registry(tmp_path / "reg")
    return reg, _data_root(tmp_path / "data"), tmp_path


def _run(setup, db: str, *extra: str, metrics: str = "accuracy") -> None:
    reg, data, tmp = setup
    args = ["run", str(reg), "-m", metrics, "-p", "accuracy.dataset=imagenet-sample"]
    # one thread for every run: the runs compared bit for bit must not pick their thread counts from
    # the machine's load (floating-point sums are ordered by it)
    args += ["--data-root", str(data), "--db", str(tmp / db), "--batch-size", "16", "--threads", "1", *extra]
    r = bench(args, tmp)
    assert r.returncode == 0, r.stdout + r.stderr


def _results(db: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    with Store(db, read_only=True) as s:
        res = s.query("SELECT checkpoint_id, metric, key, value, n FROM results ORDER BY 1, 2, 3")
        jobs = s.query("SELECT checkpoint_id, metric FROM item_outputs ORDER BY 1, 2")
        items = {
            f"{r.checkpoint_id}/{r.metric}": s.items(r.checkpoint_id, r.metric) for r in jobs.itertuples()
        }
    return res, items


def test_grouped_results_equal_checkpoint_major_and_each_image_is_decoded_once_per_group(setup):
    """4 checkpoints with one preprocessing, a streamed set (cache budget 0): checkpoint-major decodes it
    4 times, --group 3 twice (a group of 3 and one of 1); the stored results are the same numbers."""
    tmp = setup[2]
    DECODE_STATS.reset()
    _run(setup, "major.duckdb", "--cache-budget", "0")
    assert DECODE_STATS.decoded == 4 * N_IMAGES
    DECODE_STATS.reset()
    _run(setup, "grouped.duckdb", "--cache-budget", "0", "--group", "3")
    assert DECODE_STATS.decoded == 2 * N_IMAGES
    major, major_items = _results(tmp / "major.duckdb")
    grouped, grouped_items = _results(tmp / "grouped.duckdb")
    assert len(major) == 8  # top1 and top5 of 4 checkpoints
    pd.testing.assert_frame_equal(major, grouped, check_exact=True)
    assert major_items.keys() == grouped_items.keys()
    for k in major_items:
        pd.testing.assert_frame_equal(major_items[k], grouped_items[k], check_exact=True)
    with Store(tmp / "grouped.duckdb", read_only=True) as s:
        sizes = sorted(
            s.query("SELECT json_extract(timings, '$.\"run.group_size\"')::INT AS g FROM jobs")["g"]
        )
    assert sizes == [1, 3, 3, 3]


def test_a_checkpoint_that_fails_to_load_leaves_the_rest_of_its_group_running(setup):
    reg, data, tmp = setup
    (reg.parent / "w2.pth").write_bytes(b"not a checkpoint")  # tiny2's weights: hashed fine, unloadable
    args = ["run", str(reg), "-m", "accuracy", "-p", "accuracy.dataset=imagenet-sample", "--data-root"]
    args += [str(data), "--db", str(tmp / "g.duckdb"), "--group", "4", "--batch-size", "16"]  # one group
    r = bench(args, tmp)
    assert r.returncode == 1  # a failed job: exit 1, every other result stored
    with Store(tmp / "g.duckdb", read_only=True) as s:
        done = sorted(s.query("SELECT checkpoint_id FROM jobs")["checkpoint_id"])
        failed = s.failures()
    assert done == ["tiny0", "tiny1", "tiny3"]
    assert list(failed["checkpoint_id"]) == ["tiny2"] and list(failed["metric"]) == ["accuracy"]


@dataclass
class _Calls:
    n: int = 0


class _MeanLogit(Metric):
    """A one-model plugin: the mean logit on the clean set (no evaluate_group of its own)."""

    name = "mean_logit_test"
    calls = _Calls()

    def datasets(self, label_space):
        return {"images": dataset_request(self.name, label_space, "imagenet-sample")}

    def evaluate(self, model, data, ctx):
        type(self).calls.n += 1
        logits = ctx.predict(model, data["images"].images)
        return MetricResult({"mean_logit": float(logits.double().mean())}, n=len(logits))


def test_a_one_model_plugin_runs_unchanged_in_a_group(setup):
    METRICS.register(_MeanLogit.name, _MeanLogit)
    try:
        _run(setup, "major.duckdb", metrics=f"{_MeanLogit.name},accuracy")
        _MeanLogit.calls.n = 0
        _run(setup, "grouped.duckdb", "--group", "auto", metrics=f"{_MeanLogit.name},accuracy")
        assert _MeanLogit.calls.n == N_CHECKPOINTS  # evaluate, once per checkpoint
    finally:
        METRICS.unregister(_MeanLogit.name)
    major, _ = _results(setup[2] / "major.duckdb")
    grouped, _ = _results(setup[2] / "grouped.duckdb")
    assert (major["metric"] == _MeanLogit.name).sum() == N_CHECKPOINTS
    pd.testing.assert_frame_equal(major, grouped, check_exact=True)


class _Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("this model is broken")


def _wrapped(net: nn.Module, cid: str) -> ModelWrapper:
    return ModelWrapper(
        net, mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=7, label_space="x", checkpoint_id=cid
    )


def test_predict_group_equals_predict_per_model_and_keeps_a_failure_to_its_model():
    torch.manual_seed(0)
    nets = [
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))
        for _ in range(2)
    ]
    models = [_wrapped(nets[0], "a"), _wrapped(_Broken(), "b"), _wrapped(nets[1], "c")]
    images = torch.randint(0, 256, (13, 3, 16, 16), dtype=torch.uint8)
    ctx = EvalContext(batch_size=5)
    got = ctx.predict_group(models, images)
    assert isinstance(got[1], RuntimeError) and "broken" in str(got[1])
    assert torch.equal(got[0], ctx.predict(models[0], images))
    assert torch.equal(got[2], ctx.predict(models[2], images))


def test_group_sizes_parse_and_auto_fits_the_free_memory():
    assert parse_group("4") == 4 and parse_group("auto") == "auto" and parse_group(None) == 1
    for bad in ("0", "-2", "many"):
        with pytest.raises(ValueError, match="--group"):
            parse_group(bad)
    net = nn.Linear(1000, 1000)  # 4,004,000 bytes of float32 parameters
    assert model_bytes(net) == 4_004_000
    cpu = torch.device("cpu")
    act = 8 * 3 * 32 * 32 * 4 * 64  # one batch of 8 at 32 px, ACTIVATION_FACTOR 64
    # 0.7 × free − activations = room for 3 more models besides the loaded one → K = 4
    free = int((act + 3 * 4_004_000) / 0.7) + 10
    assert auto_group_size(cpu, net, 8, (3, 32, 32), free=lambda d: free) == 4
    assert auto_group_size(cpu, net, 8, (3, 32, 32), free=lambda d: 0) == 1
    assert auto_group_size(cpu, net, 8, (3, 32, 32), free=lambda d: 10**15) == 16
