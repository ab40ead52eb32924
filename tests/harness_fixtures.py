"""Helpers for end-to-end tests: tiny real checkpoints on disk and registry files that use them."""

from __future__ import annotations

import os
import re
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


def tiny_checkpoint(path: Path, seed: int = 0, num_classes: int = 1000) -> Path:
    """A real timm ``test_resnet`` state dict (``num_classes`` outputs, random weights) saved with torch.save."""
    torch.manual_seed(seed)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


#: The demo world's preprocessing (32 px as stored; the world's pixel mean and std, as in the demo zoo).
DEMO_PREPROCESS = (
    "preprocess = { resize = 32, crop = 32, mean = [0.5, 0.5, 0.5], std = [0.28, 0.28, 0.28] }\n"
)


def demo_registry(dirpath: Path, n: int = 2, extra: str = "") -> Path:
    """A registry TOML of ``n`` tiny checkpoints ``tiny0`` … for the demo world: timm ``test_resnet``
    with 10 outputs (random weights), ``labels = "demo-world"``, 32-px preprocessing. Runs on the
    generated world take seconds and need no data on disk."""
    entries = []
    for i in range(n):
        w = tiny_checkpoint(dirpath / f"w{i}.pth", seed=i, num_classes=10)
        entries.append(
            f'[[checkpoint]]\nid = "tiny{i}"\narch = "timm:test_resnet"\nweights = "{w}"\n'
            f'labels = "demo-world"\n{DEMO_PREPROCESS}tags = {{ seed = {i} }}\n'
        )
    path = dirpath / "demo-tiny.toml"
    path.write_text("\n".join(entries) + extra)
    return path


def tiny_registry(dirpath: Path, n: int = 2, extra: str = "") -> Path:
    """A registry TOML of ``n`` tiny ImageNet checkpoints (1000 classes, ``labels = "imagenet-1k"``,
    64 px preprocessing, so runs take seconds)."""
    entries = []
    for i in range(n):
        w = tiny_checkpoint(dirpath / f"w{i}.pth", seed=i)
        entries.append(
            f'[[checkpoint]]\nid = "tiny{i}"\narch = "timm:test_resnet"\nweights = "{w}"\n'
            'labels = "imagenet-1k"\n'
            "preprocess = { resize = 64, crop = 64, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }\n"
            f"tags = {{ seed = {i} }}\n"
        )
    path = dirpath / "tiny.toml"
    path.write_text("\n".join(entries) + extra)
    return path


DEMO_TOML = REPO / "biasbench" / "registry" / "files" / "demo.toml"


def demo_zoo_registry(path: Path, ids: list[str]) -> Path:
    """A registry file holding the ``[[checkpoint]]`` tables of ``ids`` copied verbatim from the
    shipped demo registry (``biasbench/registry/files/demo.toml``), in its order."""
    tables = ["[[checkpoint]]" + t for t in DEMO_TOML.read_text().split("[[checkpoint]]")[1:]]
    by_id = {}
    for t in tables:
        m = re.search(r'^id = "([^"]+)"$', t, flags=re.MULTILINE)
        assert m, f"a [[checkpoint]] table of {DEMO_TOML} without an id"
        by_id[m.group(1)] = t
    missing = [i for i in ids if i not in by_id]
    assert not missing, f"{missing} are not in {DEMO_TOML} (it has {sorted(by_id)})"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t for i, t in by_id.items() if i in ids))
    return path


def bench_subprocess(
    args: list[str], cwd: Path, env: dict[str, str | None] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the real `bench` CLI in a subprocess (python -m biasbench.cli); a ``None`` in ``env``
    removes that variable."""
    merged = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env or {})}
    full_env = {k: v for k, v in merged.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", "biasbench.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def bench(args: list[str], cwd: Path, env: dict[str, str | None] | None = None) -> CliResult:
    """Run the `bench` CLI in this process (typer's CliRunner) with ``env`` set (``None``: unset) and
    ``cwd`` as the working directory; faster than a subprocess, same code path."""
    from typer.testing import CliRunner

    from biasbench.cli import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, args, env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False)
    finally:
        os.chdir(old)
    return CliResult(r.exit_code, r.stdout, r.stderr)


def install_throwaway_package(
    where: Path, dist: str, package: str, files: dict[str, str], entry_points: str
) -> Path:
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
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(proj),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if pip.returncode != 0:
        raise RuntimeError(f"pip install of the test package {dist} failed: {pip.stderr}")
    return site
