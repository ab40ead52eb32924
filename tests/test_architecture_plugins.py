"""Architecture families are plugins (group ``biasbench.architectures``): a throwaway package adds one
in one file plus one entry-point line and is benchmarked through `bench run` and the Python API; a
lab's own constructor without a package is ``arch = "python:<module>:<callable>"``, trusted runs only.

The constructed network ignores its input (zero features) and has the classifier bias (1, 0, …, 0):
it predicts class 0 for every image, so on the balanced 10-class demo test set its top-1 is exactly
0.1 and its top-5 exactly 0.5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import torch
from safetensors.torch import save_file

from tests.harness_fixtures import REPO, bench, bench_subprocess, install_throwaway_package

NET = '''
import torch
from torch import nn


class BiasOnly(nn.Module):
    """Zero features into a linear classifier: the bias decides."""

    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)) * 0)


def make(num_classes):
    return BiasOnly(num_classes)
'''

FAMILY = (
    '''
"""Architecture family tiny: tiny:bias-only."""
from biasbench.registry.architectures import ArchitectureFamily
'''
    + NET
    + '''

class Tiny(ArchitectureFamily):
    """Tiny test networks."""

    family = "tiny"
    syntax = "tiny:<name>"

    def problem(self, name, *, trust=False):
        return None if name == "bias-only" else f"unknown tiny architecture {name!r}; known: bias-only"

    def build(self, name, num_classes, checkpoint_id, *, trust=False):
        return BiasOnly(num_classes)
'''
)

ENTRY_POINTS = '[project.entry-points."biasbench.architectures"]\ntiny = "bb_arch.family:Tiny"\n'
DEMO_PRE = "preprocess = { resize = 32, crop = 32, mean = [0.5, 0.5, 0.5], std = [0.28, 0.28, 0.28] }\n"


def _always_class_0(path: Path) -> Path:
    bias = torch.zeros(10)
    bias[0] = 1.0
    save_file({"fc.weight": torch.zeros(10, 3), "fc.bias": bias}, str(path))
    return path


def _registry(tmp_path: Path, arch: str) -> Path:
    w = _always_class_0(tmp_path / "always0.safetensors")
    reg = tmp_path / "reg.toml"
    reg.write_text(
        f'[[checkpoint]]\nid = "always0"\narch = "{arch}"\nweights = "{w}"\nlabels = "demo-world"\n{DEMO_PRE}'
    )
    return reg


def _top(db: Path) -> dict[str, float]:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute("SELECT key, value FROM results WHERE metric = 'accuracy'").fetchall())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("bb_arch")
    site = install_throwaway_package(where, "bb-arch", "bb_arch", {"family.py": FAMILY}, ENTRY_POINTS)
    assert sorted(p.name for p in (site / "bb_arch").glob("*.py")) == ["__init__.py", "family.py"]
    return site


def test_a_third_party_family_runs_through_bench_run_and_the_python_api(site, tmp_path):
    reg = _registry(tmp_path, "tiny:bias-only")
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{site}", "BIASBENCH_CACHE": str(tmp_path / "cache")}
    listed = bench_subprocess(["ls", "architectures"], tmp_path, env)
    assert listed.returncode == 0 and "tiny:<name>" in listed.stdout and "bb-arch" in listed.stdout
    db = tmp_path / "cli.duckdb"
    r = bench_subprocess(["run", str(reg), "-m", "accuracy", "--db", str(db)], tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert _top(db) == {"top1": 0.1, "top5": 0.5}
    code = (
        "import biasbench, json, sys; s = biasbench.run([sys.argv[1]], ['accuracy'], db=sys.argv[2]); "
        "print(json.dumps(biasbench.results(sys.argv[2]).set_index('key')['value'].to_dict()))"
    )
    api = subprocess.run(
        [sys.executable, "-c", code, str(reg), str(tmp_path / "api.duckdb")],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert api.returncode == 0, api.stderr
    assert json.loads(api.stdout.strip().splitlines()[-1]) == {"top1": 0.1, "top5": 0.5}


def test_without_the_package_the_family_is_unknown_and_the_installed_ones_are_listed(tmp_path):
    reg = _registry(tmp_path, "tiny:bias-only")
    r = bench(["run", str(reg), "--dry-run", "--db", str(tmp_path / "b.duckdb")], tmp_path)
    assert r.returncode == 2
    assert "arch 'tiny:bias-only' must be <family>:<name> of an installed architecture family" in r.stderr
    assert "timm:<name>, torchvision:<name>, zoo:<name>" in r.stderr


@pytest.fixture()
def labnets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lab's own module, importable (on sys.path), no package, no entry point."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "labnets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.delitem(sys.modules, "labnets", raising=False)
    return mods


def test_a_labs_own_constructor_runs_only_when_the_run_trusts_its_checkpoints(labnets, tmp_path):
    reg = _registry(tmp_path, "python:labnets:make")
    db = tmp_path / "b.duckdb"
    refused = bench(["run", str(reg), "-m", "accuracy", "--db", str(db)], tmp_path)
    assert refused.returncode == 1 and "labnets" not in sys.modules  # its code never ran
    said = " ".join(refused.stderr.split())
    assert "arch 'python:labnets:make' runs the code of 'labnets'; pass --trust-checkpoints" in said
    ok = bench(["run", str(reg), "-m", "accuracy", "--db", str(db), "--trust-checkpoints"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert _top(db) == {"top1": 0.1, "top5": 0.5}


def test_module_colon_class_on_the_command_line_says_to_write_python_prefix(tmp_path):
    w = _always_class_0(tmp_path / "w.safetensors")
    r = bench(["run", f"labnets:make@{w}", "--dry-run", "--db", str(tmp_path / "b.duckdb")], tmp_path)
    assert r.returncode == 2
    said = " ".join(r.stderr.split())
    assert "'labnets' is no installed architecture family" in said
    assert "write python:labnets:make@… (it runs that code: with --trust-checkpoints)" in said
    assert "does not exist" not in said
