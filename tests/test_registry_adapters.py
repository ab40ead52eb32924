"""Named state-dict adapters and strict loading (issue 2): every adapter, its errors, and the strict-load
message that names missing/unexpected keys and shape mismatches."""

from __future__ import annotations

import re

import pytest
import timm
import torch

from biasbench.registry import adapters, loading
from biasbench.registry.spec import CheckpointError, CheckpointSpec


@pytest.fixture(scope="module")
def sd0() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False).state_dict()


def load(tmp_path, cache_dir, sd, adapter=(), cid="ckpt"):
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    s = CheckpointSpec(id=cid, arch="timm:test_resnet", weights=str(path), adapter=tuple(adapter))
    return loading.load_checkpoint(s, cache_dir=cache_dir)


def same_weights(net, sd) -> bool:
    got = net.state_dict()
    return set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


# ----------------------------------------------------------------------------------------------------
# Each adapter, end to end through load_checkpoint
# ----------------------------------------------------------------------------------------------------


def test_strip_prefix_removes_dataparallel_prefix(tmp_path, cache_dir, sd0):
    lc = load(tmp_path, cache_dir, {f"module.{k}": v for k, v in sd0.items()}, ["strip-prefix:module."])
    assert same_weights(lc.net, sd0)
    assert f"adapter strip-prefix:module.: {len(sd0)} keys" in lc.notes


def test_rename_replaces_a_key_prefix(tmp_path, cache_dir, sd0):
    renamed = {("classifier." + k[3:] if k.startswith("fc.") else k): v for k, v in sd0.items()}
    lc = load(tmp_path, cache_dir, renamed, ["rename:classifier.=fc."])
    assert same_weights(lc.net, sd0)


def test_rename_to_an_empty_prefix_strips_an_encoder_wrapper(tmp_path, cache_dir, sd0):
    lc = load(tmp_path, cache_dir, {f"encoder.{k}": v for k, v in sd0.items()}, ["rename:encoder.="])
    assert same_weights(lc.net, sd0)


def test_drop_removes_keys_matching_a_regex(tmp_path, cache_dir, sd0):
    extra = {**sd0, "aux_head.weight": torch.zeros(3), "aux_head.bias": torch.zeros(3)}
    lc = load(tmp_path, cache_dir, extra, [r"drop:^aux_head\."])
    assert same_weights(lc.net, sd0)
    assert "adapter drop:^aux_head\\.: dropped 2 keys" in lc.notes


def test_by_position_maps_foreign_names_in_order(tmp_path, cache_dir, sd0):
    foreign = {f"_layer{i:03d}": v for i, v in enumerate(sd0.values())}
    lc = load(tmp_path, cache_dir, foreign, ["by-position"])
    assert same_weights(lc.net, sd0)


def test_adapters_apply_in_the_order_given(tmp_path, cache_dir, sd0):
    wrapped = {f"module.backbone.{k}": v for k, v in sd0.items()} | {"module.proj.weight": torch.zeros(2)}
    lc = load(tmp_path, cache_dir, wrapped, ["strip-prefix:module.", r"drop:^proj\.", "rename:backbone.="])
    assert same_weights(lc.net, sd0)
    # the same adapters in another order do not match (rename before strip-prefix finds no 'backbone.' key)
    with pytest.raises(CheckpointError, match=r"adapter rename:backbone\.= matched no key"):
        load(tmp_path, cache_dir, wrapped, ["rename:backbone.=", "strip-prefix:module."])


# ----------------------------------------------------------------------------------------------------
# Adapter errors
# ----------------------------------------------------------------------------------------------------


def test_by_position_count_mismatch_is_an_error_with_both_counts(sd0):
    src = dict(list(sd0.items())[:-1])
    with pytest.raises(CheckpointError, match=rf"checkpoint has {len(sd0) - 1}, the architecture {len(sd0)}"):
        adapters.by_position(src, sd0, "ckpt")


def test_by_position_shape_mismatch_names_the_first_position(sd0):
    items = list(sd0.items())
    # swap two tensors of different shapes: the first mismatching position is reported
    i = next(j for j in range(len(items) - 1) if items[j][1].shape != items[j + 1][1].shape)
    items[i], items[i + 1] = items[i + 1], items[i]
    src = {f"p{j}": v for j, (_, v) in enumerate(items)}
    with pytest.raises(CheckpointError) as e:
        adapters.by_position(src, sd0, "ckpt")
    assert f"position {i} pairs the checkpoint's 'p{i}'" in str(e.value)
    assert repr(list(sd0)[i]) in str(e.value)


def test_unknown_adapter_lists_the_known_ones():
    with pytest.raises(CheckpointError) as e:
        adapters.parse_adapters(["strip_prefix:module."], "ckpt")
    msg = str(e.value)
    assert "checkpoint 'ckpt': unknown adapter 'strip_prefix:module.'" in msg
    for known in ("strip-prefix:", "rename:", "drop:", "by-position", "select:"):
        assert known in msg


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("strip-prefix:", r"needs an argument"),
        ("rename:fc.", r"must be 'rename:<old-prefix>=<new-prefix>'"),
        ("drop:([", r"invalid regex"),
        ("by-position:x", r"takes no argument"),
    ],
)
def test_malformed_adapter_arguments_are_errors(text, pattern):
    with pytest.raises(CheckpointError, match=pattern):
        adapters.parse_adapter(text, "ckpt")


def test_select_must_come_first():
    with pytest.raises(CheckpointError, match="must come first"):
        adapters.parse_adapters(["strip-prefix:module.", "select:state_dict_ema"], "ckpt")


@pytest.mark.parametrize("text", ["strip-prefix:module.", "rename:head.=fc.", r"drop:^aux\."])
def test_an_adapter_that_matches_no_key_is_an_error(sd0, text):
    with pytest.raises(
        CheckpointError, match=rf"adapter {re.escape(text)} matched no key; the checkpoint's first keys"
    ):
        adapters.apply_adapters(dict(sd0), adapters.parse_adapters([text], "ckpt"), sd0, "ckpt")


def test_an_adapter_that_collapses_keys_is_an_error():
    sd = {"a.w": torch.zeros(1), "w": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="maps 1 keys onto keys that already exist"):
        adapters.apply_adapters(sd, adapters.parse_adapters(["strip-prefix:a."], "c"), {}, "c")


# ----------------------------------------------------------------------------------------------------
# Strict load
# ----------------------------------------------------------------------------------------------------


def test_strict_load_names_missing_and_unexpected_keys_with_counts(tmp_path, cache_dir, sd0):
    bad = {k: v for k, v in sd0.items() if not k.startswith("fc.")}
    bad["head.weight"] = sd0["fc.weight"]
    bad["head.bias"] = sd0["fc.bias"]
    with pytest.raises(CheckpointError) as e:
        load(tmp_path, cache_dir, bad, cid="broken")
    msg = str(e.value)
    assert "checkpoint 'broken'" in msg and "strict load" in msg
    assert "2 missing keys [fc.weight, fc.bias]" in msg
    assert "2 unexpected keys [head.weight, head.bias]" in msg


def test_strict_load_lists_at_most_ten_keys_and_the_total(tmp_path, cache_dir, sd0):
    prefixed = {f"module.{k}": v for k, v in sd0.items()}  # the classic forgotten DataParallel prefix
    with pytest.raises(CheckpointError) as e:
        load(tmp_path, cache_dir, prefixed)
    msg = str(e.value)
    n_missing = sum(not k.endswith("num_batches_tracked") for k in sd0)  # those are tolerated (see below)
    assert f"{n_missing} missing keys [conv1" in msg and f"{len(sd0)} unexpected keys [module." in msg
    shown = re.search(r"unexpected keys \[([^\]]*)\]", msg).group(1).split(", ")
    assert len(shown) == 11 and shown[-1] == "…"
    assert "strip-prefix:" in msg  # the hint


def test_strict_load_names_shape_mismatches(tmp_path, cache_dir, sd0):
    bad = dict(sd0)
    bad["fc.bias"] = torch.zeros(10)
    with pytest.raises(
        CheckpointError, match=r"1 shape mismatches \[fc\.bias: checkpoint \(10,\) vs arch \(1000,\)\]"
    ):
        load(tmp_path, cache_dir, bad)


def test_missing_num_batches_tracked_buffers_are_tolerated_like_torch(tmp_path, cache_dir, sd0):
    old = {k: v for k, v in sd0.items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(sd0)
    lc = load(tmp_path, cache_dir, old)
    assert all(torch.equal(lc.net.state_dict()[k], v) for k, v in old.items())
    assert any("num_batches_tracked" in n for n in lc.notes)
