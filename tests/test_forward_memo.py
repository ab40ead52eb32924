"""An ensemble's members reuse the forwards their own checkpoints ran in the same run
(biasbench/harness/forward_memo.py): the same outputs bit for bit, no second forward on an input a
member saw, and never a reuse where the answer could differ (another input, gradients, a wrapper)."""

from __future__ import annotations

import json

import duckdb
import pytest
import torch
from torch import nn

import biasbench
from biasbench.harness.forward_memo import SHARED_FORWARDS, ForwardMemo, MemoNet, shared_member_ids
from biasbench.registry.ensembles import Ensemble
from biasbench.registry.registry_files import load_registry_file
from biasbench.registry.spec import ENSEMBLE_ARCH, CheckpointSpec, WrapperSpec

ZOO = 'arch = "zoo:resnet50-w8"\nlabels = "demo-world"\n'


class Counting(nn.Module):
    """A small conv net that counts its forward calls and the images they saw."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)
        self.calls = self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def _batch(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(8, 3, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)


def test_a_member_is_served_what_its_own_checkpoint_computed_and_the_ensemble_output_is_unchanged():
    a, b = Counting(0), Counting(1)
    x = _batch(0)
    with torch.inference_mode():
        expect = Ensemble([a, b]).eval()(x)  # without the memo
    a.calls = b.calls = 0
    memo = ForwardMemo()
    with torch.inference_mode():
        MemoNet(a, "a", memo, record=True)(x)  # a's own job
        MemoNet(b, "b", memo, record=True)(x.clone())  # an equal input in another tensor
        assert (a.calls, b.calls) == (1, 1)
        got = Ensemble([MemoNet(a, "a", memo, record=False), MemoNet(b, "b", memo, record=False)])(x)
    assert (a.calls, b.calls) == (1, 1)  # no member ran again
    assert torch.equal(got, expect)
    assert memo.take_served() == 16 and memo.take_served() == 0


def test_another_input_gradients_or_another_network_run_the_member():
    a = Counting(0)
    memo = ForwardMemo()
    x = _batch(0)
    with torch.inference_mode():
        MemoNet(a, "a", memo, record=True)(x)
    served = MemoNet(a, "a", memo, record=False)
    with torch.inference_mode():
        served(_batch(1))  # other pixels
        served(x.contiguous())  # the same values in another memory layout
        served(x[:4])  # another shape
        MemoNet(a, "a-other-weights", memo, record=False)(x)
    assert a.calls == 5 and memo.take_served() == 0
    xg = x.clone().requires_grad_(True)
    out = served(xg)  # under autograd (PGD, SIS): always computed, and differentiable
    out.sum().backward()
    assert a.calls == 6 and xg.grad is not None and memo.take_served() == 0
    with torch.inference_mode():
        served(x)
    assert a.calls == 6 and memo.take_served() == 8


def test_the_memo_keeps_no_more_outputs_than_its_byte_limit():
    a = Counting(0)
    memo = ForwardMemo(max_bytes=8 * 5 * 4)  # one batch of 8 × 5 float32 logits
    with torch.inference_mode():
        for s in (0, 1):
            MemoNet(a, "a", memo, record=True)(_batch(s))
        for s in (0, 1):
            MemoNet(a, "a", memo, record=False)(_batch(s))
    assert a.calls == 3 and memo.take_served() == 8  # the second batch was not kept


def test_only_unwrapped_checkpoints_that_an_ensemble_of_the_run_uses_record():
    plain = CheckpointSpec(id="p", arch="zoo:resnet50-w8", weights="zoo:plain", labels="demo-world")
    noise = CheckpointSpec(id="n", arch="zoo:resnet50-w8", weights="zoo:gaussian-noise", labels="demo-world")
    drop = CheckpointSpec(
        id="d",
        arch="zoo:resnet50-w8",
        weights="zoo:plain",
        labels="demo-world",
        wrap=(WrapperSpec("input-dropout", (("keep", 0.8), ("samples", 2), ("seed", 0))),),
    )
    ens = CheckpointSpec(id="e", arch=ENSEMBLE_ARCH, members=(plain, drop), labels="demo-world")
    assert shared_member_ids([plain, noise, drop, ens]) == {"p"}  # the wrapped member may be stochastic
    assert shared_member_ids([noise, drop, ens]) == set()  # its members are not in the run


@pytest.mark.usefixtures("cache_dir", "one_thread")
def test_a_run_serves_the_ensemble_from_its_members_jobs_with_the_values_it_computes_alone(tmp_path):
    reg = tmp_path / "mine.toml"
    reg.write_text(
        f'[[checkpoint]]\nid = "p"\n{ZOO}weights = "zoo:plain"\ntags = {{ role = "member" }}\n'
        f'[[checkpoint]]\nid = "n"\n{ZOO}weights = "zoo:gaussian-noise"\ntags = {{ role = "member" }}\n'
        '[[checkpoint]]\nid = "pn"\nensemble = ["p", "n"]\ntags = { role = "ensemble" }\n'
    )
    params = {"spectral": {"n_images": 24}}
    together, alone = tmp_path / "together.duckdb", tmp_path / "alone.duckdb"
    # a fixed thread count: the memo serves only forwards run with the same one, and the default re-chooses
    # threads between checkpoints from the CPUs the other test processes leave free
    summary = biasbench.run(
        [str(reg)], ["accuracy", "spectral"], params, db=together, batch_size=256, threads=1
    )
    assert summary.failed == 0, [o.summary for o in summary.outcomes]
    # the ensemble with no member of its own in the run: nothing to reuse, every forward computed
    (ens,) = [s for s in load_registry_file(reg) if s.id == "pn"]
    assert shared_member_ids([ens]) == set()
    summary = biasbench.run(
        [str(reg)],
        ["accuracy", "spectral"],
        params,
        db=alone,
        where=["role=ensemble"],
        batch_size=256,
        threads=1,
    )
    assert summary.failed == 0, [o.summary for o in summary.outcomes]

    def stored(db):
        with duckdb.connect(str(db), read_only=True) as con:
            values = con.execute(
                "SELECT metric, key, value FROM results WHERE checkpoint_id = 'pn' ORDER BY metric, key"
            ).fetchall()
            timings = dict(
                con.execute(
                    "SELECT metric, CAST(timings AS VARCHAR) FROM jobs WHERE checkpoint_id = 'pn'"
                ).fetchall()
            )
        return values, {m: json.loads(t).get(SHARED_FORWARDS, 0.0) for m, t in timings.items()}

    values_together, shared_together = stored(together)
    values_alone, shared_alone = stored(alone)
    assert values_together == values_alone and len(values_together) > 40  # bit for bit
    # 2 members × (1000 test images; 24 images × 23 spectral conditions)
    assert shared_together == {"accuracy": 2 * 1000, "spectral": 2 * 24 * 23}
    assert shared_alone == {"accuracy": 0.0, "spectral": 0.0}
