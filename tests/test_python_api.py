"""The Python API: ``biasbench.run`` stores what ``bench run`` stores, row for row; ``biasbench.evaluate``
benchmarks a module that exists only in memory, with the identity of its tensors (same tensors → same
results and a resumed second call; one changed weight → a new identity); known answers through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import biasbench
from biasbench.harness.store import Store
from biasbench.registry.loading import load_checkpoint
from biasbench.registry.registry_files import resolve_targets
from tests.harness_fixtures import REPO, bench, demo_registry
from tests.test_shape_bias import LITE0_SHAPE_BIAS, LITE0_SHAPE_DECISIONS


def _rows(db: Path) -> list[tuple]:
    with Store(db, read_only=True) as s:
        df = s.results()
    return sorted(
        zip(df["checkpoint"], df["metric"], df["key"], df["value"], df["n"], df["config_hash"], strict=True)
    )


@pytest.fixture()
def reg(tmp_path: Path) -> Path:
    return demo_registry(tmp_path, n=2)


def test_run_from_python_and_bench_run_store_identical_rows(tmp_path, reg, one_thread):
    cache = tmp_path / "cache"
    a, b = tmp_path / "cli.duckdb", tmp_path / "api.duckdb"
    r = bench(
        ["run", str(reg), "-m", "accuracy", "--db", str(a), "--cache-dir", str(cache), "--threads", "1"],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    summary = biasbench.run([str(reg)], ["accuracy"], db=b, cache_dir=cache, threads=1)
    assert summary.failed == 0 and summary.count("done") == 2
    assert _rows(a) == _rows(b) and len(_rows(a)) == 4
    again = biasbench.run([str(reg)], ["accuracy"], db=b, cache_dir=cache, threads=1)
    assert again.count("stored") == 2 and again.count("done") == 0  # resumed: nothing computed
    with Store(b, read_only=True) as s:
        assert list(s.runs()["status"]) == ["ok"]


def test_evaluate_on_an_in_memory_copy_gives_the_registry_paths_scalars_and_resumes(
    tmp_path, reg, one_thread
):
    cache = tmp_path / "cache"
    reg_db = tmp_path / "reg.duckdb"
    assert (
        bench(
            ["run", str(reg), "-m", "accuracy", "--db", str(reg_db), "--cache-dir", str(cache)], tmp_path
        ).returncode
        == 0
    )
    spec = resolve_targets([str(reg)])[0]
    loaded = load_checkpoint(spec, cache_dir=cache)
    net = loaded.net.train()  # the caller's module in train mode: a copy is evaluated, in eval mode
    before = {k: v.clone() for k, v in net.state_dict().items()}

    db = tmp_path / "mem.duckdb"

    def evaluate() -> biasbench.Results:  # the same in-memory checkpoint, into the same database
        return biasbench.evaluate(
            net,
            labels="demo-world",
            preprocess=loaded.preprocess,
            metrics=["accuracy"],
            name="mine",
            db=db,
            cache_dir=cache,
        )

    res = evaluate()
    reg_vals = {row[2]: row[3] for row in _rows(reg_db) if row[0] == spec.id}
    assert (
        res.value("accuracy", "top1") == reg_vals["top1"]
        and res.value("accuracy", "top5") == reg_vals["top5"]
    )
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with Store(db, read_only=True) as s:
        row = s.query("SELECT * FROM checkpoints").set_index("id").loc["mine"]
        assert row["source"] == "python (biasbench.evaluate)" and row["weights"] == "python:mine"
        hash1 = s.results()["config_hash"].iloc[0]

    again = evaluate()
    assert [o.status for o in again.summary.outcomes] == ["stored"]

    with torch.no_grad():
        next(net.parameters()).view(-1)[0] += 1.0  # one weight changed: a new identity, computed anew
    third = evaluate()
    assert [o.status for o in third.summary.outcomes] == ["done"]
    with Store(db, read_only=True) as s:
        assert set(s.query("SELECT DISTINCT config_hash FROM jobs")["config_hash"]) - {hash1}


class AlwaysClassZero(nn.Module):
    """Ignores its input: logits favour class 0 of ``n`` classes."""

    def __init__(self, n: int = 10) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.arange(n, 0, -1, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1) + 0 * x.mean()


DEMO_PRE = {"resize": 32, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.28, 0.28, 0.28]}


def test_a_model_that_always_says_class_zero_gets_top1_one_tenth_on_the_balanced_demo_set(
    tmp_path, one_thread
):
    res = biasbench.evaluate(
        AlwaysClassZero(),
        labels="demo-world",
        preprocess=DEMO_PRE,
        metrics=["accuracy"],
        cache_dir=tmp_path / "c",
    )
    frame = res.to_frame()
    assert list(frame.columns) == ["checkpoint", "metric", "key", "value", "n", "variant", "datasets"]
    n = int(frame.set_index("key").loc["top1", "n"])
    assert n % 10 == 0 and res.value("accuracy", "top1") == 0.1  # the demo set holds n/10 of each class
    assert res.value("accuracy", "top5") == 0.5
    assert res.db is None and not list(tmp_path.glob("*.duckdb"))


def test_a_module_with_the_wrong_class_count_fails_its_job_with_the_files_message(tmp_path, one_thread):
    res = biasbench.evaluate(
        AlwaysClassZero(7),
        labels="demo-world",
        preprocess=DEMO_PRE,
        metrics=["accuracy"],
        cache_dir=tmp_path / "c",
    )
    (outcome,) = res.summary.outcomes
    assert outcome.status == "failed" and "wrong class count" in outcome.summary
    assert res.frame.empty


def test_importing_biasbench_loads_nothing_heavy_and_exposes_the_api():
    code = "import sys, biasbench; assert 'torch' not in sys.modules; print(callable(biasbench.run), callable(biasbench.evaluate))"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["True", "True"], r.stderr


@pytest.mark.slow
def test_the_readme_python_example_runs_and_gives_lite0s_known_top1_and_shape_bias(
    tmp_path, shared_data, monkeypatch
):
    """The README's "Using biasbench from Python" block, run as written (its database under tmp_path):
    the in-memory lite0 gets the top-1 the efficientnet-lite registry entry gets on the sample photos
    (0.883 = 265/300, README "CLI reference" example) and lite0's known shape bias on the 1,280 real
    cue-conflict stimuli (the suite's one lite0 pass over them: ``tests/test_shape_bias.py``)."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Using biasbench from Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    db = tmp_path / "bench.duckdb"
    block = block.replace('"bench.duckdb"', repr(str(db))).replace('"../shared/data"', repr(str(shared_data)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BIASBENCH_CACHE", str(tmp_path / "cache"))
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["summary"].failed == 0
    assert scope["res"].value("accuracy", "top1") == 265 / 300
    res = scope["res"].to_frame().set_index(["metric", "key"])
    decisions = tuple(int(res.loc[("shape_bias", k), "value"]) for k in ("n_shape", "n_texture", "n_other"))
    assert decisions == LITE0_SHAPE_DECISIONS
    assert res.loc[("shape_bias", "shape_bias"), "value"] == pytest.approx(LITE0_SHAPE_BIAS, abs=5e-5)
    # the 80 stimuli whose cues agree are left out (tests/test_stimuli.py counts them in the stored set)
    assert res.loc[("shape_bias", "cue_conflict_acc16"), "n"] == 1200
    assert db.is_file()  # the run() part wrote its database
    # the report's ρ is Spearman's over the 13 demo checkpoints' stored values (scipy, independently)
    from scipy.stats import spearmanr

    wide = biasbench.results(db).pivot_table(index="checkpoint", columns=["metric", "key"], values="value")
    rho = spearmanr(wide[("shape_bias", "shape_bias")], wide[("accuracy", "top1")]).statistic
    (row,) = scope["rep"].table.itertuples()
    assert row.n == 13 and row.r == pytest.approx(rho, abs=1e-12)
