"""Imports every module that registers datasets, so the catalog is complete."""

from biasbench.harness.datasets import folders, stimuli, synthetic  # noqa: F401
