"""Inference-time wrappers (biasbench/registry/wrappers.py): input dropout's known answers, its
baseline and seeding, determinism across batches, identity, parameter checks, and the wrapper slot."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from biasbench.core.preprocess import Preprocess
from biasbench.metrics.base import EvalContext, ModelWrapper
from biasbench.registry import loading, wrappers
from biasbench.registry.ensembles import Ensemble
from biasbench.registry.registry_files import RegistryError, load_registry_file
from biasbench.registry.spec import WrapperSpec
from biasbench.registry.wrappers import InputDropout, Wrapper

MEAN, STD = (0.2, 0.5, 0.7), (0.25, 0.5, 0.1)
PRE = Preprocess(resize=8, crop=8, mean=MEAN, std=STD)
ZOO = 'arch = "zoo:resnet50-w8"\nweights = "zoo:plain"\nlabels = "demo-world"\n'


def _dropout(net: nn.Module, **params) -> InputDropout:
    return InputDropout(net, InputDropout.Params(**params), PRE).eval()


def _model(net: nn.Module) -> ModelWrapper:
    """The net behind the model wrapper's normalisation, as a checkpoint is run."""
    return ModelWrapper(net, mean=MEAN, std=STD, num_classes=2, label_space="toy").eval()


class OnePixel(nn.Module):
    """Logits [c·z, 0] from the normalised value z of channel 0 at pixel (0, 0)."""

    def __init__(self, c: float = 3.0) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x[:, 0, 0, 0]
        return torch.stack([self.c * z, torch.zeros_like(z)], dim=1)


class Recorder(nn.Module):
    """Records every (normalised) input it sees; logits from the channel means."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 2)
    ).eval()


# ----------------------------------------------------------------------------------------------------
# Known answers
# ----------------------------------------------------------------------------------------------------


def test_keep_one_is_exactly_the_bare_model():
    net = _small_cnn()
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(_model(_dropout(net, keep=1.0, samples=8))(x), _model(net)(x))


def test_keep_one_through_the_registry_is_exactly_the_bare_checkpoint(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        f'[[checkpoint]]\nid = "bare"\n{ZOO}'
        f'[[checkpoint]]\nid = "kept"\n{ZOO}wrap = [{{ kind = "input-dropout", keep = 1, samples = 3 }}]\n'
    )
    bare, kept = (loading.load_checkpoint(s, cache_dir=tmp_path) for s in load_registry_file(path))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(kept.net(x), bare.net(x))
    assert kept.weights_sha256 != bare.weights_sha256  # still a checkpoint of its own (declared wrapper)


def _hand_mask(seed: int, sample: int, keep: float, h: int, w: int) -> torch.Tensor:
    """The documented rule, written out again: a CPU generator seeded with the first 60 bits of
    sha256("biasbench/input-dropout:<seed>:<sample>"), uniform (H, W), kept where < keep."""
    g = torch.Generator().manual_seed(
        int(hashlib.sha256(f"biasbench/input-dropout:{seed}:{sample}".encode()).hexdigest()[:15], 16)
    )
    return torch.rand((h, w), generator=g) < keep


def test_a_fixed_seed_gives_the_hand_checked_masks_and_mean():
    d = _dropout(OnePixel(3.0), keep=0.5, samples=6, seed=7)
    masks = d.masks(8, 8)
    for s in range(6):
        assert torch.equal(masks[s], _hand_mask(7, s, 0.5, 8, 8))
    kept = int(masks[:, 0, 0].sum())
    assert 0 < kept < 6  # this seed keeps pixel (0, 0) in some samples and drops it in others
    v = torch.full((1, 3, 8, 8), 0.9)  # z = (0.9 - 0.2) / 0.25 = 2.8
    with torch.no_grad():
        p0 = float(_model(d)(v).softmax(1)[0, 0])
    sig = 1 / (1 + math.exp(-3.0 * 2.8))  # kept: softmax([c·z, 0])[0]; dropped: z = 0 -> 0.5
    assert p0 == pytest.approx((kept * sig + (6 - kept) * 0.5) / 6, abs=1e-6)


def test_many_samples_at_keep_one_half_give_the_expected_mean():
    d = _dropout(OnePixel(2.0), keep=0.5, samples=4000, seed=0)
    v = torch.full((1, 3, 8, 8), 0.45)  # z = 1.0
    with torch.no_grad():
        p0 = float(_model(d)(v).softmax(1)[0, 0])
    expected = 0.5 * (1 / (1 + math.exp(-2.0))) + 0.5 * 0.5
    # the kept fraction of 4000 Bernoulli(0.5) draws is 0.5 ± 0.008 (σ); p0 moves by 0.38 per unit
    assert p0 == pytest.approx(expected, abs=4 * 0.008 * 0.381)
    assert d.masks(8, 8).float().mean() == pytest.approx(0.5, abs=0.005)


def test_a_dropped_pixel_is_the_per_channel_mean_and_all_channels_drop_together():
    rec = Recorder()
    model = _model(_dropout(rec, keep=0.6, samples=5, seed=3))
    x = torch.rand(2, 3, 8, 8) * 0.5 + 0.25
    x[:, :, 0, 0] = torch.tensor(MEAN).view(1, 3) + 0.1  # never equal to the mean itself
    with torch.no_grad():
        model(x)
    # 2 images of 8 x 8: the 5 masked copies go through the network in one stacked forward, in sample order
    assert [len(seen) for seen in rec.seen] == [10]
    normalised = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    for seen in rec.seen[0].split(2):
        dropped = seen == 0
        # the three channels of a position are dropped together, in every image the same positions
        assert torch.equal(dropped[:, :1].expand_as(dropped), dropped)
        assert torch.equal(dropped[:1].expand_as(dropped), dropped)
        assert 0 < int(dropped[0, 0].sum()) < 64
        # dropped: 0 after normalisation = the preprocessing's per-channel mean in pixel space
        pixel = seen * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
        means = torch.tensor(MEAN).view(1, 3, 1).expand(2, 3, int(dropped[0, 0].sum()))
        assert torch.allclose(pixel[dropped].view(2, 3, -1), means)
        # kept: the image itself
        assert torch.allclose(seen[~dropped], normalised[~dropped])


def test_the_output_is_the_log_of_the_mean_softmax_over_the_masks():
    net = _small_cnn()
    d = _dropout(net, keep=0.7, samples=4, seed=1)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        out = d(x)
        by_hand = torch.stack([net(x * m.float()).softmax(1) for m in d.masks(8, 8)]).mean(0)
    assert torch.allclose(out.exp(), by_hand, atol=1e-6)
    assert torch.allclose(out.softmax(1), by_hand, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------------


def test_outputs_do_not_depend_on_the_batch_or_the_batch_size():
    model = _model(_dropout(_small_cnn(), keep=0.8, samples=4, seed=0))
    images = (torch.rand(9, 3, 8, 8) * 255).to(torch.uint8)
    outs = [EvalContext(batch_size=b).predict(model, images) for b in (1, 2, 4, 9)]
    for o in outs[1:]:
        assert torch.allclose(o, outs[0], atol=1e-6)
    # an image duplicated into two different batches, at different positions, gets the same output
    batch1 = torch.cat([images[:3], images[5:6]])
    batch2 = torch.cat([images[5:6], images[6:9]])
    with torch.no_grad():
        a = model(batch1.float() / 255)[3]
        b = model(batch2.float() / 255)[0]
        fresh = _model(_dropout(_small_cnn(), keep=0.8, samples=4, seed=0))(images[5:6].float() / 255)[0]
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, fresh, atol=1e-6)


@pytest.mark.parametrize("batch", [16, 32, 256])
def test_stacked_masks_give_the_logits_and_input_gradients_of_one_mask_per_forward(tmp_path, batch):
    """Small batches run several masked copies in one forward (BackSelect's 32 images: all 4 masks at
    once; PGD's 16: likewise; a 256-image batch: one mask per forward). On the demo net, channels-last
    as ``bench run`` runs it, the logits and the input gradient equal the one-mask-per-forward rule
    written out here, bit for bit."""
    path = tmp_path / "r.toml"
    path.write_text(
        '[[checkpoint]]\nid = "w"\narch = "zoo:resnet50-w8"\nweights = "zoo:input-dropout"\n'
        'labels = "demo-world"\nwrap = [{ kind = "input-dropout", keep = 0.8, samples = 4 }]\n'
    )
    (spec,) = load_registry_file(path)
    loaded = loading.load_checkpoint(spec, cache_dir=tmp_path)
    dropout = loaded.net.to(memory_format=torch.channels_last)
    assert isinstance(dropout, InputDropout)
    net, masks = dropout.net, dropout.masks(32, 32).float()
    assert (batch * 32 * 32 * 4 <= wrappers.STACK_PIXELS) == (batch < 64)  # stacked or not, as named

    def one_mask_per_forward(x: torch.Tensor) -> torch.Tensor:
        logps = [torch.log_softmax(net(x * m), dim=-1) for m in masks]
        return torch.logsumexp(torch.stack(logps), dim=0) - math.log(4)

    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(dropout(x), one_mask_per_forward(x))
    grads = []
    for fn in (dropout, one_mask_per_forward):
        xa = x.clone().requires_grad_(True)
        out = fn(xa)
        grads.append(torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), xa)[0])
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0


def test_another_seed_gives_other_masks_and_the_same_seed_the_same():
    a, b, c = (_dropout(nn.Identity(), keep=0.5, samples=3, seed=s).masks(8, 8) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the samples differ from each other


def test_gradients_flow_even_after_an_inference_mode_forward_cached_the_masks():
    model = _model(_dropout(_small_cnn(), keep=0.8, samples=3))
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        model(x)  # the masks are cached here
    x.requires_grad_(True)
    model(x)[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_input_dropout_around_an_ensemble_averages_over_masks_and_members():
    torch.manual_seed(1)
    nets = [_small_cnn(), nn.Sequential(nn.Flatten(), nn.Linear(192, 2)).eval()]
    d = _dropout(Ensemble(nets), keep=0.6, samples=3, seed=2)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        by_hand = torch.stack([n(x * m.float()).softmax(1) for m in d.masks(8, 8) for n in nets]).mean(0)
        assert torch.allclose(d(x).exp(), by_hand, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Identity and parameters
# ----------------------------------------------------------------------------------------------------


def _fp(tmp_path: Path, wrap: str) -> str:
    path = tmp_path / "r.toml"
    path.write_text(f'[[checkpoint]]\nid = "w"\n{ZOO}{wrap}\n')
    (spec,) = load_registry_file(path)
    return loading.weights_fingerprint(spec, cache_dir=tmp_path)


def test_the_wrappers_and_all_their_parameters_are_part_of_the_identity(tmp_path):
    bare = _fp(tmp_path, "")
    default = _fp(tmp_path, 'wrap = [{ kind = "input-dropout" }]')
    written = _fp(tmp_path, 'wrap = [{ kind = "input-dropout", keep = 0.8, samples = 8, seed = 0 }]')
    assert default == written != bare  # defaults written out or left out: the same checkpoint
    others = {
        _fp(tmp_path, f'wrap = [{{ kind = "input-dropout", {p} }}]')
        for p in ("keep = 0.7", "samples = 4", "seed = 1")
    }
    assert len(others) == 3 and default not in others
    twice = _fp(tmp_path, 'wrap = [{ kind = "input-dropout" }, { kind = "input-dropout", seed = 1 }]')
    swapped = _fp(tmp_path, 'wrap = [{ kind = "input-dropout", seed = 1 }, { kind = "input-dropout" }]')
    assert twice != swapped  # wrappers apply innermost first: their order is part of the identity
    assert default == wrappers.wrapped_fingerprint(
        bare, [WrapperSpec("input-dropout", (("keep", 0.8), ("samples", 8), ("seed", 0)))]
    )
    path = tmp_path / "r.toml"
    path.write_text(f'[[checkpoint]]\nid = "w"\n{ZOO}wrap = [{{ kind = "input-dropout", samples = 2 }}]\n')
    (spec,) = load_registry_file(path)
    loaded = loading.load_checkpoint(spec, cache_dir=tmp_path)
    assert loaded.weights_sha256 == loading.weights_fingerprint(spec, cache_dir=tmp_path)
    assert (
        isinstance(loaded.net, InputDropout)
        and "wrapped: input-dropout(keep=0.8, samples=2, seed=0)" in loaded.notes
    )


@pytest.mark.parametrize(
    ("wrap", "message"),
    [
        ('{ kind = "input-drop" }', r"unknown wrapper kind 'input-drop' \(did you mean input-dropout\?\)"),
        ("{ keep = 0.5 }", r"unknown wrapper kind None"),
        ('{ kind = "input-dropout", p = 0.5 }', r"unknown parameter 'p'; known: keep, samples, seed"),
        ('{ kind = "input-dropout", keep = 0 }', r"keep must be in \(0, 1\], got 0.0"),
        ('{ kind = "input-dropout", keep = 1.5 }', r"keep must be in \(0, 1\]"),
        ('{ kind = "input-dropout", keep = "high" }', r"keep must be float, got 'high'"),
        ('{ kind = "input-dropout", samples = 0 }', r"samples must be an integer from 1 to 1024"),
        ('{ kind = "input-dropout", samples = 2.5 }', r"samples must be int, got 2.5"),
        ('{ kind = "input-dropout", samples = true }', r"samples must be an integer, got True"),
        ('{ kind = "input-dropout", seed = -1 }', r"seed must be a non-negative integer"),
        ('"input-dropout"', r"each wrapper must be a table"),
    ],
)
def test_invalid_wrap_tables_are_errors_naming_the_entry_and_the_parameter(tmp_path, wrap, message):
    path = tmp_path / "r.toml"
    path.write_text(f'[[checkpoint]]\nid = "w"\n{ZOO}wrap = [{wrap}]\n')
    with pytest.raises(RegistryError, match=message) as info:
        load_registry_file(path)
    assert "[[checkpoint]] #1: checkpoint 'w': wrap" in str(info.value)


def test_a_new_wrapper_kind_fits_the_same_slot(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class TemperatureParams:
        t: float = 1.0

    class Temperature(Wrapper):
        """Logits divided by a temperature (a toy test-time wrapper)."""

        kind = "temperature"
        Params = TemperatureParams

        @classmethod
        def check_params(cls, params) -> str | None:
            return None if params.t > 0 else f"t must be positive, got {params.t}"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) / self.params.t

    wrappers.register_wrapper(Temperature)
    try:
        with pytest.raises(wrappers.WrapperError, match="registered twice"):
            wrappers.register_wrapper(type("Other", (Temperature,), {}))
        path = tmp_path / "r.toml"
        path.write_text(
            f'[[checkpoint]]\nid = "bare"\n{ZOO}'
            f'[[checkpoint]]\nid = "w"\n{ZOO}wrap = [{{ kind = "temperature", t = 2 }}, {{ kind = "input-dropout", keep = 1 }}]\n'
        )
        bare, spec = load_registry_file(path)
        assert spec.wrap[0] == WrapperSpec("temperature", (("t", 2.0),))
        net = loading.load_checkpoint(spec, cache_dir=tmp_path).net
        assert isinstance(net, InputDropout) and isinstance(net.net, Temperature)  # innermost first
        x = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(net(x), loading.load_checkpoint(bare, cache_dir=tmp_path).net(x) / 2)
        path.write_text(f'[[checkpoint]]\nid = "w"\n{ZOO}wrap = [{{ kind = "temperature", t = -1 }}]\n')
        with pytest.raises(RegistryError, match=r"wrap temperature: t must be positive"):
            load_registry_file(path)
    finally:
        wrappers.WRAPPERS.pop("temperature", None)
