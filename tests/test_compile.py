"""``bench run --compile``: compiled inference forwards equal the eager ones, gradient and float64 passes
stay eager, instances of one architecture share one compiled graph, a compile that cannot work ends
the run with one message (or, for one model, falls back to eager), and compile is no part of a job's
content key."""

from __future__ import annotations

import gc
import logging
import weakref
from pathlib import Path

import pytest
import timm
import torch
from torch._dynamo.utils import counters

from biasbench.harness import compiling
from biasbench.harness.store import Store
from biasbench.metrics.base import EvalContext, ModelWrapper
from tests.harness_fixtures import bench
from tests.test_grouped_execution import N_IMAGES, _data_root, _registry

#: the one input shape every compiled forward here sees (the end-to-end run's too: a single batch of
#: N_IMAGES 32-px crops), so the session compiles the test architecture once
BATCH = N_IMAGES


def _wrapper(seed: int) -> ModelWrapper:
    """timm ``test_resnet`` (1000 classes, random weights ``seed``), eval, channels_last, as the
    executor wraps a checkpoint."""
    torch.manual_seed(seed)
    net = timm.create_model("test_resnet", pretrained=False)
    model = ModelWrapper(net, mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=1000, label_space="imagenet-1k")
    return model.eval().requires_grad_(False).to(memory_format=torch.channels_last)


def _images(seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def _graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def _failing_backend(gm: torch.fx.GraphModule, example_inputs: list) -> None:
    raise RuntimeError("this backend cannot compile anything")


@pytest.mark.slow
def test_compiled_predictions_equal_eager_and_gradient_and_float64_passes_stay_eager():
    ctx = EvalContext(batch_size=BATCH, channels_last=True)
    images = _images()
    models = [_wrapper(seed) for seed in (1, 2)]
    eager = [ctx.predict(m, images) for m in models]
    before = _graphs()
    for m in models:
        compiling.compile_model(m)
    compiled = [ctx.predict(models[0], images)]
    graphs = _graphs()
    assert graphs - before <= 1  # 0 when an earlier test of the session compiled this architecture
    compiled.append(ctx.predict(models[1], images))
    assert _graphs() == graphs  # the second instance runs the first one's graph
    assert all(compiling.is_compiled(m) for m in models)
    for e, c in zip(eager, compiled, strict=True):
        assert not torch.equal(e, torch.zeros_like(e))
        torch.testing.assert_close(c, e, atol=compiling.LOGIT_ATOL, rtol=compiling.LOGIT_RTOL)
        assert torch.equal(c.argmax(1), e.argmax(1))

    # a gradient pass (PGD, SIS) through the compiled model: eager, the same gradient as without compile
    model, x = models[0], ctx.to_device(images[:4])
    grads = []
    for m in (model, model.net):
        xa = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = model.infer(xa) if m is model else model._logits(model.net, xa)
            (g,) = torch.autograd.grad(out.logsumexp(1).sum(), xa)
        grads.append(g)
    assert torch.equal(grads[0], grads[1])

    # float64 (sis precision=fp64): eager, the float64 model's own output
    model.to(torch.float64)
    try:
        with torch.inference_mode():
            got = model.infer(x.double())
            want = model(x.double())
        assert got.dtype == torch.float64 and torch.equal(got, want)
    finally:
        model.to(torch.float32)
    assert _graphs() == graphs  # neither pass compiled anything


def test_a_released_compiled_model_is_freed_so_groups_do_not_pile_up():
    """The executor drops a group's models before loading the next: the compiled graph they shared
    must not keep them (their parameters) alive."""
    ctx = EvalContext(batch_size=BATCH, channels_last=True)
    model = compiling.compile_model(_wrapper(4))
    ctx.predict(model, _images(2))
    net, param = weakref.ref(model.net), weakref.ref(next(model.net.parameters()))
    del model
    gc.collect()
    assert net() is None and param() is None


def test_a_model_whose_compile_fails_runs_eagerly_with_a_logged_warning(caplog: pytest.LogCaptureFixture):
    model, images = _wrapper(3), _images(1)[:4]
    ctx = EvalContext(batch_size=4, channels_last=True)
    eager = ctx.predict(model, images)
    compiling.compile_model(model, backend=_failing_backend)
    with caplog.at_level(logging.WARNING, logger=compiling.__name__):
        got = ctx.predict(model, images)
        again = ctx.predict(model, images)  # no second attempt: eager from now on
    assert torch.equal(got, eager) and torch.equal(again, eager)
    assert not compiling.is_compiled(model)
    warnings = [r for r in caplog.records if r.name == compiling.__name__]
    assert len(warnings) == 1 and "runs eagerly" in warnings[0].getMessage()


@pytest.fixture()
def setup(tmp_path: Path, cache_dir: Path):
    return _registry(tmp_path / "reg", n=2), _data_root(tmp_path / "data"), tmp_path


def _run(setup, db: str, *extra: str):
    reg, data, tmp = setup
    args = ["run", str(reg), "-m", "accuracy", "-p", "accuracy.dataset=imagenet-sample", "--data-root"]
    args += [str(data), "--db", str(tmp / db), "--batch-size", str(BATCH), "--device", "cpu", *extra]
    return bench(args, tmp)


def test_compile_unavailable_ends_the_run_with_one_message_before_anything_runs(setup, monkeypatch):
    monkeypatch.setattr(compiling, "BACKEND", _failing_backend)
    r = _run(setup, "c.duckdb", "--compile")
    assert r.returncode != 0
    assert "--compile: torch.compile does not work on cpu here" in r.stderr
    assert "this backend cannot compile anything" in r.stderr and "Traceback" not in r.stderr + r.stdout
    assert not (setup[2] / "c.duckdb").exists()


def _jobs(db: Path):
    with Store(db, read_only=True) as s:
        jobs = s.query(
            "SELECT checkpoint_id, config_hash, json_extract(timings, '$.\"run.compiled\"')::INT AS compiled "
            "FROM jobs ORDER BY 1"
        )
        res = s.query("SELECT checkpoint_id, key, value, n FROM results ORDER BY 1, 2")
    return jobs, res


def test_a_compiled_grouped_run_stores_the_eager_results_under_the_same_job_keys(setup, monkeypatch):
    tmp = setup[2]
    assert _run(setup, "eager.duckdb").returncode == 0
    calls: list[bool] = []
    call = compiling.CompiledNet.__call__

    def spy(self: compiling.CompiledNet, x: torch.Tensor):
        calls.append(self.active)
        return call(self, x)

    monkeypatch.setattr(compiling.CompiledNet, "__call__", spy)
    r = _run(setup, "compiled.duckdb", "--compile", "--group", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert calls == [True, True]  # one batch through each of the 2 compiled models
    eager_jobs, eager = _jobs(tmp / "eager.duckdb")
    compiled_jobs, compiled = _jobs(tmp / "compiled.duckdb")
    assert list(eager_jobs["compiled"]) == [0, 0] and list(compiled_jobs["compiled"]) == [1, 1]
    assert list(eager_jobs["config_hash"]) == list(compiled_jobs["config_hash"])
    assert eager[["checkpoint_id", "key", "n"]].equals(compiled[["checkpoint_id", "key", "n"]])
    assert (eager["value"] - compiled["value"]).abs().max() <= 1 / N_IMAGES  # at most one near-tie flips
    # compile is an execution option: the eagerly stored jobs count as done for a compiled run
    again = _run(setup, "eager.duckdb", "--compile")
    assert again.returncode == 0 and "Nothing to compute" in again.stdout
