"""``--where KEY=VALUE`` tag filters (biasbench.registry.select) on the shipped ResNet-50 zoo."""

from __future__ import annotations

import pytest

from biasbench.registry.registry_files import RegistryError, resolve_targets
from biasbench.registry.select import parse_where, select
from tests.harness_fixtures import bench

ZOO = resolve_targets(["resnet50-zoo"])


def _ids(*where: str) -> list[str]:
    return [s.id for s in select(ZOO, parse_where(list(where)))]


def test_one_filter_keeps_a_category():
    assert len(_ids("category=adversarial_training")) == 15
    assert _ids("category=freezing") == ["resnet50_frozen_random"]


def test_different_keys_must_all_match_and_one_keys_values_are_alternatives():
    assert _ids("norm=l2", "eps=3", "eps=5") == ["robust_resnet50_l2_eps3", "robust_resnet50_l2_eps5"]


def test_numbers_compare_as_numbers():
    assert _ids("norm=linf", "eps=4") == _ids("norm=linf", "eps=4.0") == ["robust_resnet50_linf_eps4.0"]


def test_no_match_is_an_error_listing_the_values_the_tag_takes():
    with pytest.raises(
        RegistryError, match=r"no checkpoint matches --where category=adversarial .*adversarial_training"
    ):
        _ids("category=adversarial")
    with pytest.raises(RegistryError, match=r"no checkpoint has the tag 'colour'"):
        _ids("colour=red")


def test_a_filter_without_equals_sign_is_an_error():
    with pytest.raises(RegistryError, match=r"--where 'category': expected KEY=VALUE"):
        parse_where(["category"])


def test_run_where_plans_only_the_selected_checkpoints(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    env = {"BIASBENCH_CACHE": str(tmp_path / "cache"), "BIASBENCH_DATA": str(empty)}
    args = ["run", "resnet50-zoo", "--where", "category=stylized", "--dry-run", "-m", "accuracy"]
    r = bench([*args, "--db", str(tmp_path / "b.duckdb")], tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert "3 weight file(s) of 3 checkpoint(s) are not pinned" in " ".join(r.stderr.split())
    bad = bench(["run", "resnet50-zoo", "--where", "category", "--dry-run"], tmp_path, env)
    assert bad.returncode == 2 and "expected KEY=VALUE" in bad.stderr
