"""What a new user found by probing the CLI (issue 14), each pinned: checkpoints are data, not code;
error text is never markup; validation happens before anything runs; a dry run fetches nothing;
``--seed`` reaches every metric; the thread count is chosen deliberately."""

from __future__ import annotations

import duckdb
import pytest
import torch

from tests.harness_fixtures import bench, bench_subprocess


def demo_entry(cid: str = "plain", recipe: str = "plain") -> str:
    return f'[[checkpoint]]\nid = "{cid}"\narch = "zoo:resnet50-w8"\nweights = "zoo:{recipe}"\nlabels = "demo-world"\n'


@pytest.fixture()
def env(tmp_path):
    return {"BIASBENCH_CACHE": str(tmp_path / "cache"), "BIASBENCH_DATA": str(tmp_path / "data")}


def test_a_registry_cannot_make_bench_import_and_call_code(tmp_path, env):
    reg = tmp_path / "evil.toml"
    reg.write_text(
        demo_entry()
        + '\n[[checkpoint]]\nid = "evil"\narch = "timm:test_resnet"\nweights = "package:os:abort"\n'
    )
    db = tmp_path / "b.duckdb"
    dry = bench_subprocess(["run", str(reg), "-m", "accuracy", "--dry-run", "--db", str(db)], tmp_path, env)
    assert dry.returncode == 0, dry.stderr  # os.abort would end the process with -6
    real = bench_subprocess(["run", str(reg), "-m", "accuracy", "--db", str(db)], tmp_path, env)
    assert real.returncode == 1, real.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        (error,) = con.execute("SELECT error FROM failures WHERE checkpoint_id = 'evil'").fetchone()
        assert con.execute("SELECT count(*) FROM jobs WHERE checkpoint_id = 'plain'").fetchone()[0] == 1
    assert "would import and run code" in error and "--trust-checkpoints" in error


def test_brackets_in_ids_paths_and_errors_are_printed_not_parsed_as_markup(tmp_path, env):
    import timm

    sd = timm.create_model("test_resnet", num_classes=10).state_dict()
    sd["/fc.weight"] = torch.zeros(1)  # an unexpected key: the strict-load error lists "[/fc.weight]"
    torch.save(sd, tmp_path / "w.pth")
    reg = tmp_path / "x[/b].toml"  # a folder "x[" holding "b].toml": the path reads as a closing tag
    reg.parent.mkdir(exist_ok=True)
    reg.write_text(
        f'[[checkpoint]]\nid = "odd"\narch = "timm:test_resnet"\nweights = "{tmp_path / "w.pth"}"\n'
        'labels = "demo-world"\npreprocess = { resize = 32, crop = 32 }\n\n' + demo_entry()
    )
    db = tmp_path / "b.duckdb"
    r = bench(["run", str(reg), "-m", "accuracy", "--db", str(db)], tmp_path, env)
    assert r.returncode == 1  # one failed job; the run went on to the next checkpoint
    said = " ".join(r.stderr.split())
    assert "[/fc.weight]" in said
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status FROM runs").fetchone()[0] == "failed"
        assert con.execute("SELECT count(*) FROM jobs WHERE checkpoint_id = 'plain'").fetchone()[0] == 1
    status = bench(["status", "--db", str(db)], tmp_path, env)
    assert status.returncode == 0 and "[/fc.weight]" in " ".join(status.stdout.split())
    missing = bench(["run", str(tmp_path / "nope[/x].toml"), "--db", str(db)], tmp_path, env)
    assert missing.returncode == 2 and "nope[/x].toml" in "".join(missing.stderr.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "mps"], "--device 'mps': only auto, cpu, cuda, cuda:<N> are supported"),
        (["-p", "sis.tau=abc", "-m", "sis"], "parameter tau = 'abc' is not float | None"),
        (["-p", "spectral.cutoffs=5", "-m", "spectral"], "parameter cutoffs = 5 is not tuple"),
        (["--threads", "0"], "--threads"),
        (["-m", ","], "--metrics names no metric"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(tmp_path, env, args, message):
    reg = tmp_path / "r.toml"
    reg.write_text(demo_entry())
    r = bench(["run", str(reg), *args, "--db", str(tmp_path / "b.duckdb")], tmp_path, env)
    assert r.returncode == 2
    assert message in " ".join((r.stderr + r.stdout).split())
    assert not (tmp_path / "b.duckdb").exists()


def test_an_empty_registry_and_an_unknown_timm_arch_are_clear_errors(tmp_path, env):
    empty = tmp_path / "empty.toml"
    empty.write_text("# no checkpoints yet\n")
    r = bench(["run", str(empty), "--db", str(tmp_path / "b.duckdb")], tmp_path, env)
    assert r.returncode == 2 and "no checkpoints in" in r.stderr
    reg = tmp_path / "r.toml"
    reg.write_text('[[checkpoint]]\nid = "big"\narch = "timm:resnet9000"\nweights = "/x/w.pth"\n')
    r = bench(
        ["run", str(reg), "-m", "accuracy", "--dry-run", "--verbose", "--db", str(tmp_path / "b.duckdb")],
        tmp_path,
        env,
    )
    assert "unknown timm architecture 'resnet9000'" in " ".join(r.stdout.split())


def test_a_metric_named_twice_is_planned_once(tmp_path, env):
    reg = tmp_path / "r.toml"
    reg.write_text(demo_entry())
    r = bench(
        [
            "run",
            str(reg),
            "-m",
            "accuracy,accuracy",
            "--dry-run",
            "--verbose",
            "--db",
            str(tmp_path / "b.duckdb"),
        ],
        tmp_path,
        env,
    )
    assert r.returncode == 0 and r.stdout.count(" todo ") == 1  # one plan row (the estimate names it too)


def test_a_dry_run_fetches_no_weights(tmp_path, env, monkeypatch):
    from biasbench.registry.weight_sources import timm_hub, url

    def no_network(*a, **k):
        raise AssertionError("a dry run must not download")

    monkeypatch.setattr(timm_hub, "download_timm_pretrained", no_network)
    monkeypatch.setattr(url, "fetch", no_network)
    reg = tmp_path / "r.toml"
    reg.write_text(
        '[[checkpoint]]\nid = "remote"\narch = "timm:resnet18"\nweights = "https://example.org/w.pth"\n'
        f'sha256 = "{"0" * 64}"\n'
    )
    for target in (str(reg), "resnet18"):
        r = bench(
            [
                "run",
                target,
                "-m",
                "accuracy",
                "-p",
                "accuracy.dataset=demo-world/test",
                "--dry-run",
                "--db",
                str(tmp_path / "b.duckdb"),
            ],
            tmp_path,
            env,
        )
        assert r.returncode == 0, r.stderr
        assert "weights not fetched" in " ".join(r.stdout.split())


def test_sis_results_recomputed_for_another_tau_count_like_the_metric_and_bad_tau_is_refused(tmp_path, env):
    reg = tmp_path / "r.toml"
    reg.write_text(demo_entry())
    db = tmp_path / "b.duckdb"
    r = bench(["run", str(reg), "-m", "sis", "-p", "sis.n_images=6", "--db", str(db)], tmp_path, env)
    assert r.returncode == 0, r.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        stored = dict(con.execute("SELECT key, n FROM results WHERE metric = 'sis'").fetchall())
        tau = con.execute("SELECT value FROM results WHERE metric = 'sis' AND key = 'tau'").fetchone()[0]
    again = bench(
        ["results", "--db", str(db), "--format", "csv", "--recompute", f"sis.tau={tau}"], tmp_path, env
    )
    legacy = bench(["results", "--db", str(db), "--format", "csv", "--sis-tau", str(tau)], tmp_path, env)
    assert legacy.stdout == again.stdout  # the older flag is the same request
    rows = [line.split(",") for line in again.stdout.splitlines()[1:]]
    recomputed = {key: int(n) for _, metric, key, _, n, *_ in rows if metric == "sis"}
    assert {k: v for k, v in recomputed.items() if k in stored} == {
        k: stored[k] for k in recomputed if k in stored
    }
    for bad in ("5", "0", "-0.5"):
        r = bench(["results", "--db", str(db), "--recompute", f"sis.tau={bad}"], tmp_path, env)
        assert r.returncode == 2 and "sis: parameter tau must be in (0, 1]" in r.stderr
    r = bench(["results", "--db", str(db), "--recompute", "sis.k=3"], tmp_path, env)
    assert r.returncode == 2 and "sis recomputes tau, q from its stored rows, not k" in r.stderr


def test_the_run_seed_picks_the_sis_images():
    from biasbench.core import world
    from biasbench.core.labels import DEMO_WORLD
    from biasbench.metrics.base import EvalContext, ModelWrapper
    from biasbench.metrics.sis import SIS

    ds = world.generate("test", world.WorldConfig(n_test=40))
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10))
    model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.28,) * 3, num_classes=10, label_space=DEMO_WORLD).eval()
    picked = {}
    for seed in (0, 1):
        res = SIS(n_images=5, k=200).evaluate(model, {"images": ds}, EvalContext(seed=seed))
        picked[seed] = sorted(res.items["item"])
    assert picked[0] != picked[1]
    assert "seed" not in {f for f in SIS.Params.__dataclass_fields__}  # one seed: the run's


def test_threads_option_sets_the_cpu_threads_of_the_run(tmp_path, env):
    reg = tmp_path / "r.toml"
    reg.write_text(demo_entry())
    before = torch.get_num_threads()
    try:
        r = bench(
            ["run", str(reg), "-m", "accuracy", "--threads", "1", "--db", str(tmp_path / "b.duckdb")],
            tmp_path,
            env,
        )
        assert r.returncode == 0, r.stderr
        assert "cpu (1 threads" in " ".join(r.stderr.split())
    finally:
        torch.set_num_threads(before)
