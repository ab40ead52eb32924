"""The README's main command, tested: `bench run` with no targets (the demo registry × every installed
metric), then `bench results`, `bench report` and `bench results --recompute sis.tau=…`, on the demo world only.

The full demo run (11 checkpoints × 6 metrics) takes ~100 s on 2 cores, so the computing run here
takes three checkpoints copied verbatim from ``biasbench/registry/files/demo.toml`` with small
``n_images``; the no-target path itself is checked by its plan over the same database: the copied
checkpoints' jobs are ``stored`` there (same content keys), every other demo job ``todo``. A bias
metric's stored value is compared with the metric called directly on a model built here from the
shipped weights file (an independent path to the same number).
"""

from __future__ import annotations

import csv
import io
import math
import re
from importlib.metadata import entry_points

import duckdb
import numpy as np
import pytest
from scipy import stats

from tests.harness_fixtures import DEMO_TOML, REPO, bench, bench_subprocess, demo_zoo_registry

ZOO = ["zoo-plain", "zoo-texture-rand", "zoo-shape-rand"]  # shape bias ≈ 0.5, ≈ 1, ≈ 0 (README)
SMALL = ["-p", "spectral.n_images=50", "-p", "critical_band.n_images=50", "-p", "sis.n_images=8"]
SMALL += ["-p", "regions.n_images=8"]
README_KEYS = (
    "accuracy.top1,shape_bias.shape_bias,acc16.silhouettes_acc16,spectral.LPP,spectral.HPP,"
    "spectral.spectral_bias,critical_band.bandwidth_norm,critical_band.centre_frequency_norm,"
    "sis.sis_frac_median"
)


def _installed_metrics() -> set[str]:
    return {ep.name for ep in entry_points(group="biasbench.metrics")}


def _demo_ids() -> list[str]:
    return re.findall(r'^id = "([^"]+)"$', DEMO_TOML.read_text(), flags=re.MULTILINE)


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _by_key(rows: list[dict], checkpoint: str, metric: str) -> dict[str, tuple[float, int]]:
    return {
        r["key"]: (float(r["value"]), int(r["n"]))
        for r in rows
        if r["checkpoint"] == checkpoint and r["metric"] == metric
    }


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """`bench run` (a real process) on three demo checkpoints with every installed metric, in a fresh
    working directory with the default database ``./bench.duckdb``, a fresh cache and an empty data
    root. Returns the directory, the environment for later commands and the completed process."""
    work = tmp_path_factory.mktemp("readme")
    (work / "empty-data-root").mkdir()
    env = {
        "BIASBENCH_CACHE": str(work / "cache"),
        "BIASBENCH_DATA": str(work / "empty-data-root"),
        "BIASBENCH_DB": None,
        "BIASBENCH_METRICS": None,
        "COLUMNS": "400",
        "PYTHONIOENCODING": "utf-8",
    }
    reg = demo_zoo_registry(work / "demo3.toml", ZOO)
    proc = bench_subprocess(["run", str(reg), *SMALL], cwd=work, env=env, timeout=300)
    return work, env, proc


@pytest.mark.slow
def test_bench_run_stores_every_metric_for_every_checkpoint_and_says_what_next(readme_run) -> None:
    work, env, proc = readme_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = " ".join(proc.stderr.split())  # progress and diagnostics
    assert f"{len(ZOO) * len(_installed_metrics())} jobs to compute" in said
    told = " ".join(proc.stdout.split())  # results: the summary and where they are, then what next
    assert "summary" in told and told.count(" done ") >= len(ZOO) * len(_installed_metrics())
    assert f"Results are in {work / 'bench.duckdb'}" in told and "`bench report`" in told
    assert (work / "bench.duckdb").is_file()
    res = bench(["results", "--format", "csv"], work, env)
    assert res.returncode == 0, res.stderr
    rows = _csv(res.stdout)
    assert {(r["checkpoint"], r["metric"]) for r in rows} == {
        (c, m) for c in ZOO for m in _installed_metrics()
    }
    assert all(math.isfinite(float(r["value"])) and int(r["n"]) >= 0 for r in rows)
    assert {"accuracy", "shape_bias", "acc16", "spectral", "critical_band", "sis"} <= _installed_metrics()
    sb = {c: _by_key(rows, c, "shape_bias")["shape_bias"][0] for c in ZOO}
    assert sb["zoo-texture-rand"] > sb["zoo-plain"] > sb["zoo-shape-rand"]  # the zoo's known ordering
    for c in ZOO:
        assert _by_key(rows, c, "accuracy")["top1"][1] == 1000  # demo-world/test
        for m in ("spectral", "critical_band"):
            assert _by_key(rows, c, m)["clean_acc"][1] == 50
        assert _by_key(rows, c, "sis")["n_images"][0] == 8  # the -p values reached the metrics


def test_bench_run_without_targets_is_the_demo_registry_times_every_installed_metric(readme_run) -> None:
    """The plan of `bench run` (no targets, the same parameters) against the database of the run
    above: every demo checkpoint × every installed metric; the copied checkpoints' jobs are stored."""
    work, env, proc = readme_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    dry = bench_subprocess(["run", *SMALL, "--dry-run", "--verbose"], cwd=work, env=env, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    rows = re.findall(r"^│ (\S+)\s+│ (\S+)\s+│ (\S+)\s+│", dry.stdout, flags=re.MULTILINE)
    rows = [r for r in rows if r[0] != "checkpoint"]
    ids = _demo_ids()
    assert len(ids) == 13  # 11 zoo recipes, an ensemble and an input-dropout wrapper
    assert sorted((c, m) for c, m, _ in rows) == sorted((c, m) for c in ids for m in _installed_metrics())
    for c, m, status in rows:
        assert status == ("stored" if c in ZOO else "todo"), (c, m, status)


def test_bench_report_prints_correlations_that_equal_scipys(readme_run) -> None:
    work, env, proc = readme_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain = bench(["report"], work, env)  # the curated bias × generalization table
    assert plain.returncode == 0, plain.stderr
    assert f"across {len(ZOO)} checkpoints, bias × generalization" in plain.stdout
    assert "shape_bias.shape_bias" in plain.stdout and "ood.id" in plain.stdout
    # the README's second command, verbatim, as CSV: every ρ against scipy on the stored values
    rep = bench(
        ["report", "--across-metrics", "--top", "10", "--keys", README_KEYS, "--format", "csv"], work, env
    )
    assert rep.returncode == 0, rep.stderr
    printed = _csv(rep.stdout)
    assert 1 <= len(printed) <= 10
    values = {}
    for r in _csv(bench(["results", "--format", "csv"], work, env).stdout):
        values.setdefault(f"{r['metric']}.{r['key']}", {})[r["checkpoint"]] = float(r["value"])
    keys = README_KEYS.split(",")
    last = math.inf
    for row in printed:
        x, y, rho, n = row["x"], row["y"], float(row["r"]), int(row["n"])
        assert x in keys and y in keys and x.split(".")[0] != y.split(".")[0], (x, y)
        both = sorted(set(values[x]) & set(values[y]))
        assert n == len(both) >= 3
        expected = stats.spearmanr([values[x][c] for c in both], [values[y][c] for c in both]).statistic
        assert rho == pytest.approx(expected, abs=1e-9), (x, y)
        assert abs(rho) <= last + 1e-9  # sorted by |ρ|
        last = abs(rho)


def _sis_by_checkpoint(stdout: str) -> dict[str, dict[str, tuple[float, int]]]:
    rows = _csv(stdout)
    assert rows and {r["metric"] for r in rows} == {"sis"}
    return {c: _by_key(rows, c, "sis") for c in {r["checkpoint"] for r in rows}}


def _sis_fraction(order: np.ndarray, conf: np.ndarray, tau: float) -> float | None:
    """The definition (README, SIS): covered iff conf[0] ≥ τ; t* = max{t : conf[t] ≥ τ};
    SIS = {i : order[i] ≥ t*}; its size over the pixel count. Written here from the README."""
    if not conf[0] >= tau:
        return None
    t_star = max(t for t in range(len(conf)) if conf[t] >= tau)
    return float((order >= t_star).sum()) / order.size


def test_bench_results_sis_tau_recomputes_the_sis_scalars_from_the_stored_traces(readme_run) -> None:
    from biasbench.harness.store import Store

    work, env, proc = readme_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    stored = _sis_by_checkpoint(bench(["results", "--metric", "sis", "--format", "csv"], work, env).stdout)
    assert set(stored) == set(ZOO)
    tau0 = stored["zoo-plain"]["tau"][0]
    assert tau0 == 0.99  # the demo world's τ
    # at the stored τ the recomputation is the stored result, value for value and count for count
    same = bench(
        ["results", "--metric", "sis", "--format", "csv", "--recompute", f"sis.tau={tau0}"], work, env
    )
    assert same.returncode == 0, same.stderr
    again = _sis_by_checkpoint(same.stdout)
    for c, keys in stored.items():
        assert again[c].keys() == keys.keys(), c
        for k, (v, n) in keys.items():
            assert again[c][k][0] == pytest.approx(v, rel=1e-9, abs=1e-12), (c, k)
            assert again[c][k][1] == n, (
                f"{c} sis.{k}: --recompute sis.tau={tau0} reports n = {again[c][k][1]}, stored n = {n}"
            )
    low = bench(["results", "--metric", "sis", "--format", "csv", "--recompute", "sis.tau=0.95"], work, env)
    assert low.returncode == 0, low.stderr
    recomputed = _sis_by_checkpoint(low.stdout)
    assert set(recomputed) == set(ZOO)
    tau_free = (
        "n_images",
        "q",
        "fully_masked_conf_mean",
        "fully_masked_conf_max",
        "forward_passes_per_image",
        "backward_passes_per_image",
        "clean_conf_all",
        "clean_top1_all",
        "backselect_subset_conf_all",
        "random_subset_conf_all",
    )
    with Store(work / "bench.duckdb", read_only=True) as st:
        for c in ZOO:
            s, r = stored[c], recomputed[c]
            assert r["tau"][0] == 0.95
            for k in tau_free:
                assert r[k][0] == pytest.approx(s[k][0], rel=1e-9, abs=1e-12), (c, k)
            traces = st.items(c, "sis")
            assert len(traces) == 8
            pairs = [
                (np.asarray(o), np.asarray(f)) for o, f in zip(traces["order"], traces["conf"], strict=True)
            ]
            fracs_low = [_sis_fraction(o, f, 0.95) for o, f in pairs]
            fracs_hi = [_sis_fraction(o, f, tau0) for o, f in pairs]
            covered = [f for f in fracs_low if f is not None]
            assert r["coverage"] == (pytest.approx(len(covered) / 8), 8)
            assert r["n_covered"][0] == len(covered)
            # a lower τ covers every image the higher one covered, with an SIS no larger
            assert r["coverage"][0] >= s["coverage"][0]
            for lo, hi in zip(fracs_low, fracs_hi, strict=True):
                assert hi is None or (lo is not None and lo <= hi)
            if covered:
                assert r["sis_frac_median"] == (
                    pytest.approx(float(np.median(covered)), abs=1e-12),
                    len(covered),
                )
                assert r["sis_frac_mean"][0] == pytest.approx(float(np.mean(covered)), abs=1e-12)
                assert r["sufficiency_rate"][0] == pytest.approx(
                    np.mean([f <= 0.05 for f in covered]), abs=1e-12
                )
            else:
                assert "sis_frac_median" not in r  # a key whose defining set is empty is left out


@pytest.fixture(scope="module")
def fresh_cue_conflict(tmp_path_factory):
    """``demo-world/cue-conflict`` rendered afresh into its own cache (not the run's cached copy)."""
    from biasbench.core import world

    return world.generate("cue-conflict", world.WorldConfig(), tmp_path_factory.mktemp("fresh-cache"))


@pytest.mark.parametrize("checkpoint", ZOO)
def test_stored_shape_bias_equals_the_metric_called_directly(
    readme_run, fresh_cue_conflict, checkpoint, one_thread
) -> None:
    """plan → executor → store against ``ShapeBias().evaluate`` on a model built here from the shipped
    safetensors file and the world rendered afresh; read back from the DuckDB file with plain SQL."""
    import torch
    from safetensors.torch import load_file

    from biasbench.metrics.base import EvalContext, ModelWrapper
    from biasbench.metrics.shape_bias import ShapeBias
    from biasbench.registry.zoo.arch import resnet50_w8

    work, _env, proc = readme_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    with duckdb.connect(str(work / "bench.duckdb"), read_only=True) as con:
        stored = dict(
            con.execute(
                "SELECT key, value FROM results WHERE checkpoint_id = ? AND metric = 'shape_bias'",
                [checkpoint],
            ).fetchall()
        )
    recipe = checkpoint.removeprefix("zoo-")
    net = resnet50_w8(10)
    net.load_state_dict(
        load_file(REPO / "biasbench" / "registry" / "zoo" / "weights" / f"{recipe}.safetensors")
    )
    model = ModelWrapper(
        net.float(),
        mean=(0.5, 0.5, 0.5),
        std=(0.28, 0.28, 0.28),
        num_classes=10,
        label_space="demo-world",
        checkpoint_id=checkpoint,
    ).eval()
    with torch.inference_mode():
        direct = (
            ShapeBias()
            .evaluate(model, {"cue_conflict": fresh_cue_conflict}, EvalContext(batch_size=100))
            .scalars
        )
    assert set(stored) == set(direct)
    for key in ("n_shape", "n_texture", "n_other"):
        assert stored[key] == direct[key], key
    assert stored["shape_bias"] == direct["shape_bias"]
    assert direct["shape_bias"] == direct["n_shape"] / (direct["n_shape"] + direct["n_texture"])
