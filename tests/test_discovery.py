"""Metric discovery: entry points, the env-var route, duplicates named with both providers."""

from __future__ import annotations

import pytest

from biasbench.metrics import discovery
from biasbench.metrics.base import Metric


def test_in_tree_metrics_are_registered_through_entry_points():
    provs = discovery.providers()
    assert provs["accuracy"].provider == "package biasbench"
    assert issubclass(discovery.load_metric("accuracy"), Metric)


def test_env_var_adds_a_plugin_without_installing(monkeypatch):
    monkeypatch.setenv(discovery.ENV_VAR, "tests.plugins.probes:SlowProbe")
    assert discovery.load_metric("slow_probe").name == "slow_probe"


def test_duplicate_metric_names_are_an_error_naming_both(monkeypatch):
    monkeypatch.setenv(discovery.ENV_VAR, "tests.plugins.dup_accuracy:Accuracy2")
    with pytest.raises(discovery.PluginError, match=r"provided twice.*package biasbench.*BIASBENCH_METRICS"):
        discovery.providers()


def test_unknown_metric_lists_the_installed_ones():
    with pytest.raises(discovery.PluginError, match="known: .*accuracy"):
        discovery.load_metric("nope")
