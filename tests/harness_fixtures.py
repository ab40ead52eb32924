"""Helpers for end-to-end tests: tiny real checkpoints on disk and registry files that use them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from biasbench.metrics.base import ImageSet

REPO = Path(__file__).resolve().parents[1]


def image_set(images: torch.Tensor, labels: torch.Tensor, label_space: str, n_classes: int) -> ImageSet:
    """A constructed labeled set (classes named "0" … "n−1") for metric tests."""
    return ImageSet(
        name="constructed",
        images=images,
        labels=labels,
        class_names=[str(i) for i in range(n_classes)],
        label_space=label_space,
        item_ids=[f"img{i}" for i in range(len(labels))],
        manifest_hash="constructed",
    )


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A real timm ``test_resnet`` state dict (1000 classes, random weights) saved with torch.save."""
    torch.manual_seed(seed)
    net = timm.create_model("test_resnet", pretrained=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def tiny_registry(dirpath: Path, n: int = 2, extra: str = "") -> Path:
    """A registry TOML of ``n`` tiny checkpoints (64 px preprocessing, so runs take seconds)."""
    entries = []
    for i in range(n):
        w = tiny_checkpoint(dirpath / f"w{i}.pth", seed=i)
        entries.append(
            f'[[checkpoint]]\nid = "tiny{i}"\narch = "timm:test_resnet"\nweights = "{w}"\n'
            'labels = "imagenet-1k"\n'
            'preprocess = { resize = 64, crop = 64, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }\n'
            f'tags = {{ seed = {i} }}\n'
        )
    path = dirpath / "tiny.toml"
    path.write_text("\n".join(entries) + extra)
    return path


def bench_subprocess(args: list[str], cwd: Path, env: dict[str, str] | None = None,
                     timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `bench` CLI in a subprocess (python -m biasbench.cli)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "biasbench.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def bench(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> CliResult:
    """Run the `bench` CLI in this process (typer's CliRunner) with ``env`` set and ``cwd`` as the
    working directory; faster than a subprocess, same code path."""
    from typer.testing import CliRunner

    from biasbench.cli import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, args, env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False)
    finally:
        os.chdir(old)
    return CliResult(r.exit_code, r.stdout, r.stderr)


def install_throwaway_package(where: Path, dist: str, package: str, files: dict[str, str], entry_points: str) -> Path:
    """Write a tiny distribution ``dist`` (import package ``package`` with ``files``, and the
    ``[project.entry-points…]`` tables in ``entry_points``) under ``where`` and pip-install it into
    ``where/site``, which is returned (put it on PYTHONPATH to use the plugins)."""
    import textwrap

    proj = where / f"{dist}-project"
    (proj / package).mkdir(parents=True)
    (proj / package / "__init__.py").write_text("")
    for name, text in files.items():
        (proj / package / name).write_text(textwrap.dedent(text).lstrip())
    (proj / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{dist}"\nversion = "0.1"\n{textwrap.dedent(entry_points).strip()}\n'
    )
    site = where / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(proj)], capture_output=True, text=True, timeout=300)
    if pip.returncode != 0:
        raise RuntimeError(f"pip install of the test package {dist} failed: {pip.stderr}")
    return site
