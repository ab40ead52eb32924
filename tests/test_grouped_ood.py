"""``ood`` in a group (``bench run --group``): its sets' predictions are served once for all the models
(``metrics.lockstep``), PGD still runs per model, and the results equal each model's own ``evaluate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

from biasbench.core import labels
from biasbench.core.streaming import DECODE_STATS, StreamedImages
from biasbench.metrics.base import EvalContext, ImageSet, ModelWrapper
from biasbench.metrics.ood import OOD

N = 12  # images per set
SPACE = "demo-world"


def _model(seed: int) -> ModelWrapper:
    torch.manual_seed(seed)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    m = ModelWrapper(
        net, mean=(0.5,) * 3, std=(0.28,) * 3, num_classes=10, label_space=SPACE, checkpoint_id=f"m{seed}"
    )
    return m.eval().requires_grad_(False)


def _set(name: str, images) -> ImageSet:
    return ImageSet(
        name=name,
        images=images,
        labels=torch.arange(N) % 10,
        class_names=list(labels.get(SPACE).class_names),
        label_space=SPACE,
        item_ids=[f"{name}/{i}" for i in range(N)],
        manifest_hash=name,
    )


def _data(metric: OOD, folder: Path) -> dict[str, ImageSet]:
    """Random 32-px sets for every role; the clean set ``imagenet`` streamed from PNG files."""
    g = torch.Generator().manual_seed(0)
    data = {}
    for role in metric.datasets(SPACE):
        data[role] = _set(role, torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g))
    folder.mkdir()
    paths = []
    for i, img in enumerate(data["imagenet"].images):
        paths.append(folder / f"{i}.png")
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(paths[-1])
    data["imagenet"] = _set("imagenet", StreamedImages(paths, None, (32, 32)))
    return data


def _same(a, b) -> None:
    """Accuracies (decisions) exactly equal; the calibration keys, which read the probabilities
    themselves, to float32 round-off (a group's batches may reach the convolutions in another
    arrangement, which moves logits by ~1e-7 and no argmax)."""
    calibration = {k for k in a.scalars if any(m in k for m in ("_ece", "_nll", "_brier"))}
    assert calibration  # the keys this tolerance is for exist
    assert {k: v for k, v in a.scalars.items() if k not in calibration} == {
        k: v for k, v in b.scalars.items() if k not in calibration
    }
    assert {k: b.scalars[k] for k in calibration} == pytest.approx(
        {k: a.scalars[k] for k in calibration}, rel=1e-6
    )
    assert a.n == b.n and a.flags == b.flags
    pd.testing.assert_frame_equal(a.items, b.items, check_exact=True)


def test_ood_in_a_group_equals_each_models_own_evaluation_and_decodes_the_streamed_set_once(tmp_path):
    # three predicted sets and PGD (one image: it runs per model, between the shared prediction passes)
    metric = OOD(max_per_set=N, pgd_n_images=1, sets=("imagenet", "edges", "silhouettes", "pgd40"))
    data = _data(metric, tmp_path / "clean")
    models = [_model(s) for s in range(3)]
    DECODE_STATS.reset()
    alone = [metric.evaluate(m, data, EvalContext(batch_size=8)) for m in models]
    assert DECODE_STATS.decoded == 3 * N  # the streamed clean set, once per model
    DECODE_STATS.reset()
    grouped = metric.evaluate_group(models, data, EvalContext(batch_size=8))
    assert DECODE_STATS.decoded == N  # once for the group
    for a, g in zip(alone, grouped, strict=True):
        _same(a, g)
    assert np.isfinite(alone[0].scalars["adversarial"])


def test_a_model_that_fails_in_an_ood_group_fails_alone(tmp_path):
    metric = OOD(max_per_set=N, sets=("imagenet", "edges"))
    data = _data(metric, tmp_path / "clean")
    broken = _model(7)
    broken.num_classes = 5  # its logits (10) do not match: the wrapper's check raises on the first batch
    models = [_model(0), broken, _model(1)]
    grouped = metric.evaluate_group(models, data, EvalContext(batch_size=8))
    assert isinstance(grouped[1], Exception) and "class count" in str(grouped[1])
    _same(grouped[0], metric.evaluate(models[0], data, EvalContext(batch_size=8)))
    _same(grouped[2], metric.evaluate(models[2], data, EvalContext(batch_size=8)))
