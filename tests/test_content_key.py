"""A job's content key (``config_hash``, docs/architecture.md §5) holds what the job computes: a label
space's ``defaults_version`` joins it when set, so results computed under former label-space defaults
(e.g. the demo world's image counts) are not taken for current ones, while label spaces that set none
keep the documented eight-part key — and every hash ever stored under it."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from biasbench.core import labels
from biasbench.core.hashing import config_hash
from biasbench.core.labels import DEMO_WORLD, IMAGENET_1K
from biasbench.core.preprocess import Preprocess
from biasbench.harness.plan import ResolvedDataset, job_hash
from biasbench.metrics.base import DatasetRequest
from biasbench.metrics.spectral import Spectral

WEIGHTS = "ab" * 32


def _hash(space: str) -> str:
    pre = Preprocess()
    data = {"images": ResolvedDataset(DatasetRequest("some-set"), None, "m1")}
    return job_hash(SimpleNamespace(labels=space), WEIGHTS, pre, Spectral(), data, 0)


def _documented_parts(space: str) -> dict:
    return {
        "weights": WEIGHTS,
        "preprocess": dataclasses.asdict(Preprocess()),
        "labels": space,
        "metric": "spectral",
        "version": Spectral.version,
        "params": dataclasses.asdict(Spectral().params),
        "seed": 0,
        "datasets": {"images": {"name": "some-set", "manifest": "m1", "preprocess": "as-stored"}},
    }


def test_a_label_space_without_a_defaults_version_keeps_the_documented_eight_part_key():
    assert labels.get(IMAGENET_1K).defaults_version == ""
    assert _hash(IMAGENET_1K) == config_hash(_documented_parts(IMAGENET_1K))


def test_the_demo_worlds_defaults_version_is_part_of_its_jobs_keys():
    version = labels.get(DEMO_WORLD).defaults_version
    assert version  # its defaults changed (spectral and OOD image counts): its jobs are new jobs
    assert _hash(DEMO_WORLD) == config_hash({**_documented_parts(DEMO_WORLD), "defaults_version": version})
    assert _hash(DEMO_WORLD) != config_hash(_documented_parts(DEMO_WORLD))


def test_bumping_a_defaults_version_changes_the_key(monkeypatch: pytest.MonkeyPatch):
    before = _hash(DEMO_WORLD)
    space = dataclasses.replace(labels.get(DEMO_WORLD), defaults_version="99")
    real_find = labels.find
    monkeypatch.setattr(labels, "find", lambda name: space if name == DEMO_WORLD else real_find(name))
    assert _hash(DEMO_WORLD) != before
