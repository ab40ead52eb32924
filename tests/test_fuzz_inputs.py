"""Fuzzing the inputs a user (or a hostile file) hands us (issue 14, "Reliability").

Three kinds of input, each driven by hypothesis with a fixed seed (``derandomize=True``, no example
database), so CI sees the same examples on every run:

* registry TOML files -> :func:`load_registry_file` / :func:`resolve_targets`: only
  :class:`RegistryError` (a :class:`CheckpointError`), with a message naming the file (and the entry
  ``[[checkpoint]] #n`` where one is at fault); valid entries round-trip;
* ``-p METRIC.KEY=VALUE`` parameters -> every installed metric class: accepted, or
  :class:`ParamError` naming the parameter;
* dataset manifests (JSON) -> :func:`fetch.parse_manifest`: only :class:`ManifestError` naming the
  manifest; what is accepted is safe to use (paths stay under the data root).

Each kind counts the examples it tried and prints one summary line at the end of the module (visible
with ``pytest -s``). Below the fuzzers: one regression test for each defect the fuzzing found.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import math
import re
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from biasbench.harness.datasets import download_spec as S
from biasbench.harness.datasets import downloadable as D
from biasbench.harness.datasets import fetch as F
from biasbench.metrics.base import ParamError
from biasbench.metrics.discovery import all_metrics
from biasbench.registry import registry_files as R
from biasbench.registry.registry_files import RegistryError, load_registry_file, resolve_targets
from biasbench.registry.spec import CheckpointError

#: examples tried per input kind, and their outcomes ("accepted" / "refused"), printed at the end
TRIED: collections.Counter[str] = collections.Counter()
OUTCOMES: collections.Counter[tuple[str, str]] = collections.Counter()


def outcome(kind: str, what: str) -> None:
    OUTCOMES[kind, what] += 1
    event(f"{kind}: {what}")


def fuzz(n: int):
    """Hypothesis settings of this module: ``n`` examples, reproducible (fixed seed, no database)."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    for kind, n in sorted(TRIED.items()):
        split = ", ".join(f"{OUTCOMES[kind, w]} {w}" for w in ("accepted", "refused") if OUTCOMES[kind, w])
        print(f"\nfuzz {kind}: {n} examples tried" + (f" ({split})" if split else ""))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ----------------------------------------------------------------------------------------------------
# A tiny TOML writer for generated values (the inverse of tomllib for what the strategies produce)
# ----------------------------------------------------------------------------------------------------


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if any(c in r for c in ".e") else r + ".0"
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def toml_doc(top: dict, entries: list[dict]) -> str:
    lines = [f"{toml_str(k)} = {toml_value(v)}" for k, v in top.items()]
    for e in entries:
        lines.append("[[checkpoint]]")
        lines += [f"{toml_str(k)} = {toml_value(v)}" for k, v in e.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
ident = st.text(string.ascii_letters + string.digits + "_.+-=@", min_size=1, max_size=30).filter(
    lambda s: s[0] not in ".+-=@"
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
)
toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
    | st.dates()
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)

HEX = "0123456789abcdef"
sha_good = st.text(HEX + HEX.upper(), min_size=64, max_size=64)
ids = st.one_of(
    ident,
    st.just("x" * 300),
    st.just("a" * 128),
    st.just("a" * 129),
    st.just("abc\n"),
    st.just(""),
    st.just("../evil"),
    text,
)
archs = st.one_of(
    st.sampled_from(
        [
            "timm:resnet18",
            "torchvision:resnet50",
            "zoo:resnet50-w8",
            "timm:",
            "resnet50",
            "timm:a b",
            "timm:x\n",
            "foo:bar",
            ":",
            "",
        ]
    ),
    text,
)
weights_values = st.one_of(
    st.sampled_from(
        [
            "w.pth",
            "../w.pth",
            "../../../../etc/passwd",
            "/abs/w.pth",
            "/",
            ".",
            "..",
            "~/w.pth",
            "~nosuchuser/w.pth",
            "https://e.org/w.pth",
            "https://",
            "http://e.org/",
            "https://[::1/w.pth",
            "https://h:99999/w.pth",
            "https://h:x/w.pth",
            "ftp://e.org/w.pth",
            "file:///etc/passwd",
            "hf-hub:org/repo/f.safetensors",
            "hf-hub:",
            "package:",
            "package:x:y",
            "timm:resnet18",
            "torchvision:ResNet50_Weights.IMAGENET1K_V1",
            "zoo:plain",
            "zoo:",
            "a\x00b",
            "w\n.pth",
            " ",
            "x" * 5000,
        ]
    ),
    text,
)
adapters = st.one_of(
    st.sampled_from(
        [
            "strip-prefix:module.",
            "rename:fc.=head.",
            "rename:=x",
            "drop:^aux",
            "drop:(",
            "drop:a{4294967296}",
            "drop:" + "(" * 300 + ")" * 300,
            "by-position",
            "by-position:x",
            "select:ema.model",
            "select:",
            "strip:x",
            "",
        ]
    ),
    text,
)
preprocess_tables = st.dictionaries(
    st.sampled_from(["resize", "crop", "mean", "std", "interpolation"]) | text,
    st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5), max_size=4),
        st.sampled_from(["bilinear", "bicubic", "cubic", ""]),
        toml_values,
    ),
    max_size=5,
)
entry_values = {
    "id": ids,
    "arch": archs,
    "weights": weights_values,
    "sha256": st.one_of(
        sha_good, sha_good.map(lambda s: s + "\n"), st.sampled_from(["abc", "g" * 64, ""]), text
    ),
    "adapter": st.one_of(adapters, st.lists(adapters, max_size=3)),
    "preprocess": preprocess_tables,
    "labels": st.sampled_from(["imagenet-1k", "imagenet16", "demo-world", "birds", ""]) | text,
    "num_classes": st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from([0, 1, 10, 10**7])
    ),
    "tags": st.dictionaries(text, toml_values, max_size=4),
}


@st.composite
def entries(draw) -> dict:
    keys = draw(st.lists(st.sampled_from(list(entry_values)), unique=True, max_size=len(entry_values)))
    # mostly give the required keys, so that the entry gets past the first checks
    for k in ("id", "arch"):
        if k not in keys and draw(st.integers(0, 9)) > 0:
            keys.append(k)
    entry = {}
    for k in keys:
        if k in ("id", "arch") and draw(st.booleans()):  # valid half the time, to reach the later checks
            entry[k] = draw(ident if k == "id" else st.sampled_from(["timm:resnet18", "zoo:resnet50-w8"]))
            continue
        # hostile values mixed with type confusion: any TOML value for any key
        entry[k] = draw(entry_values[k] if draw(st.integers(0, 5)) else toml_values)
    if draw(st.integers(0, 7)) == 0:
        entry[draw(text)] = draw(toml_values)  # an unknown key
    return entry


@st.composite
def registry_docs(draw) -> str:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=200)).decode("latin-1")  # noise (written as bytes below)
    if kind == 1:
        return "a = " + "[" * draw(st.integers(50, 3000)) + "]" * 10  # nested too deeply
    top = {}
    if draw(st.integers(0, 9)) == 0:
        top = draw(st.dictionaries(text, toml_values, max_size=2))
    if draw(st.integers(0, 14)) == 0:
        top["checkpoint"] = draw(toml_values)
    es = draw(st.lists(entries(), max_size=3))
    if es and draw(st.integers(0, 5)) == 0:
        es.append(dict(es[0]))  # a duplicate id
    return toml_doc(top, es)


valid_entries = st.fixed_dictionaries(
    {"id": ident, "arch": st.sampled_from(["timm:resnet18", "torchvision:resnet50", "zoo:resnet50-w8"])},
    optional={
        "weights": st.one_of(
            st.sampled_from(["timm:resnet18", "zoo:plain", "hf-hub:org/repo/f.safetensors"]),
            st.lists(ident.filter(lambda s: s not in (".", "..")), min_size=1, max_size=3).map("/".join),
        ),
        "sha256": sha_good,
        "adapter": st.lists(
            st.sampled_from(["strip-prefix:module.", "rename:fc.=head.", "drop:^aux", "by-position"]),
            max_size=3,
        ),
        "preprocess": st.fixed_dictionaries(
            {},
            optional={
                "crop": st.integers(1, 512),
                "mean": st.lists(st.floats(-10, 10), min_size=3, max_size=3),
                "std": st.lists(st.floats(0.01, 10), min_size=3, max_size=3),
                "interpolation": st.sampled_from(R.INTERPOLATIONS),
            },
        ).map(lambda p: {**p, "resize": p.get("crop", 224) + 32}),
        "num_classes": st.integers(1, R.MAX_NUM_CLASSES),
        "tags": st.dictionaries(
            ident,
            st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)  # no control characters
            | st.booleans(),
            max_size=3,
        ),
    },
)


# ----------------------------------------------------------------------------------------------------
# (a) registry files and command-line targets
# ----------------------------------------------------------------------------------------------------


def _n_entries(doc: str) -> int:
    """How many entries the document holds ([[checkpoint]] tables or an inline `checkpoint = [...]`)."""
    try:
        entries = R.tomllib.loads(doc).get("checkpoint")
    except (R.tomllib.TOMLDecodeError, RecursionError):
        return doc.count("[[checkpoint]]")
    return len(entries) if isinstance(entries, list) else 0


def _check_registry_outcome(path: Path, doc: str) -> None:
    n_entries = _n_entries(doc)
    try:
        specs = load_registry_file(path)
    except RegistryError as e:
        msg = str(e)
        assert str(path) in msg, msg
        m = re.search(r"\[\[checkpoint\]\] #(\d+)", msg)
        if m:
            assert 1 <= int(m.group(1)) <= n_entries, msg
        outcome("registry files", "refused")
        return
    outcome("registry files", "accepted")
    assert len({s.id for s in specs}) == len(specs)
    for s in specs:
        assert len(s.id) <= R.MAX_ID_LENGTH and R._ID_RE.fullmatch(s.id)
        assert s.source.startswith(f"{path}:[[checkpoint]] #")
        assert s.sha256 is None or re.fullmatch("[0-9a-f]{64}", s.sha256)
        json.dumps(s.tags, allow_nan=False)  # stored as JSON: finite numbers only
        if s.preprocess is not None:
            pre = s.preprocess
            assert 0 < pre.crop <= pre.resize <= R.MAX_IMAGE_SIZE
            assert all(math.isfinite(x) for x in (*pre.mean, *pre.std)) and min(pre.std) > 0
        assert s.num_classes is None or 0 < s.num_classes <= R.MAX_NUM_CLASSES


@fuzz(600)
@given(doc=registry_docs())
@example(doc='[[checkpoint]]\nid = "' + "x" * 300 + '"\narch = "timm:resnet18"\n')
@example(doc='[[checkpoint]]\nid = "a"\narch = "timm:resnet18"\nweights = "a\\u0000b"\n')
@example(doc='[[checkpoint]]\nid = "a"\narch = "timm:resnet18"\nadapter = "drop:a{4294967296}"\n')
@example(
    doc=f'[[checkpoint]]\nid = "a"\narch = "timm:x"\nweights = "https://[::1/w.pth"\nsha256 = "{"a" * 64}"\n'
)
def test_fuzz_registry_files_raise_only_registry_errors_naming_the_file(workdir, doc):
    TRIED["registry files"] += 1
    path = workdir / "fuzz registry.toml"
    path.write_text(doc, encoding="utf-8")
    _check_registry_outcome(path, doc)
    # the same file as a command-line target: the same contract
    try:
        resolve_targets([str(path)])
    except RegistryError as e:
        assert str(path) in str(e)


@fuzz(100)
@given(doc=st.binary(max_size=300))
def test_fuzz_registry_file_bytes(workdir, doc):
    TRIED["registry files (raw bytes)"] += 1
    path = workdir / "bytes.toml"
    path.write_bytes(doc)
    try:
        load_registry_file(path)
    except RegistryError as e:
        assert str(path) in str(e)


@fuzz(150)
@given(entry=valid_entries)
def test_fuzz_valid_entries_round_trip(workdir, entry):
    TRIED["registry round trips"] += 1
    path = workdir / "valid.toml"
    path.write_text(toml_doc({}, [entry]), encoding="utf-8")
    (spec,) = load_registry_file(path)
    assert (spec.id, spec.arch) == (entry["id"], entry["arch"])
    w = entry.get("weights")
    if w is None or ":" in w:
        assert spec.weights == w
    else:  # a relative path: relative to the registry file, made absolute
        assert spec.weights == str((workdir / w).resolve())
    assert spec.sha256 == (entry["sha256"].lower() if "sha256" in entry else None)
    assert spec.adapter == tuple(entry.get("adapter", ()))
    assert spec.num_classes == entry.get("num_classes")
    assert spec.tags == entry.get("tags", {})
    if "preprocess" in entry:
        got = spec.preprocess.to_json()
        for k, v in entry["preprocess"].items():
            assert got[k] == (tuple(v) if isinstance(v, list) else v)
    else:
        assert spec.preprocess is None


targets = st.one_of(
    text,
    st.sampled_from(
        [
            "",
            " ",
            "~nosuchuser/x.toml",
            "x" * 5000,
            "x" * 5000 + ".toml",
            "timm:resnet18@" + "x" * 5000,
            "/",
            "/dev/null",
            "/dev/null.toml",
            "/etc",
            "timm:resnet18@/tmp",
            "timm:resnet18@zoo:",
            "resnet18@hf-hub:",
            "timm:resnet18@https://",
            "a\x00b.toml",
            "@",
            "timm:@w.pth",
            "torchvision:",
            "timm:resnet50.no_such_tag",
            "zoo:x@zoo:plain",
            "timm:resnet18@ftp://x/y",
        ]
    ),
    st.builds(lambda a, w: f"{a}@{w}", archs, weights_values),
)


@fuzz(200)
@given(t=targets)
def test_fuzz_command_line_targets_raise_only_registry_errors(t):
    TRIED["command-line targets"] += 1
    try:
        specs = resolve_targets([t])
    except RegistryError as e:
        assert str(e)
        outcome("command-line targets", "refused")
        return
    outcome("command-line targets", "accepted")
    for s in specs:
        assert len(s.id) <= R.MAX_ID_LENGTH and R._ID_RE.fullmatch(s.id)


# ----------------------------------------------------------------------------------------------------
# (b) -p metric parameters
# ----------------------------------------------------------------------------------------------------

METRICS = dict(sorted(all_metrics().items()))
FIELDS = sorted({f.name for cls in METRICS.values() for f in dataclasses.fields(cls.Params)})
#: names of ``Metric.__init__``'s own arguments: a parameter of that name is refused, naming it
RESERVED = ("params", "self")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=10,
)
plausible_values = st.one_of(
    st.integers(-3, 64),
    st.floats(-1, 2),
    st.sampled_from(
        [
            "mean",
            "sum",
            "bilinear",
            "bicubic",
            "edges",
            "cue-conflict",
            "imagenet-sample",
            "batched-gradient",
            "zero",
            "blur",
            "",
            "nope",
        ]
    ),
    st.lists(
        st.floats(-0.5, 1.5) | st.sampled_from(["edges", "filled-silhouettes", "stylized-16", "x"]),
        max_size=5,
    ),
)


@st.composite
def metric_params(draw) -> tuple[str, str, object]:
    """(metric, name, value): mostly a real parameter of the metric with a plausible or hostile value."""
    metric = draw(st.sampled_from(sorted(METRICS)))
    own = {f.name: f.default for f in dataclasses.fields(METRICS[metric].Params)}
    if own and draw(st.integers(0, 3)):
        name = draw(st.sampled_from(sorted(own)))
    else:
        name = draw(st.one_of(st.sampled_from(FIELDS + list(RESERVED)), ident, text))
    kind = draw(st.integers(0, 2))
    if kind == 0 and name in own:
        value = draw(_like(own[name]))
    else:
        value = draw(plausible_values if kind == 1 else json_values)
    return metric, name, value


def _like(default: object) -> st.SearchStrategy:
    """Values of the default's JSON type, in and out of range (as `-p` would parse them)."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-5, 10**6) | st.integers()
    if isinstance(default, float):
        return st.floats(-2, 2) | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5)
    if isinstance(default, str):
        return st.just(default) | plausible_values.filter(lambda v: isinstance(v, str)) | text
    if isinstance(default, tuple):
        return st.lists(st.sampled_from(default) if default else text, max_size=6) | st.lists(
            st.floats(), max_size=4
        )
    return st.integers(-5, 10**6) | st.floats(-2, 2) | plausible_values  # None: an optional value


@fuzz(600)
@given(mnv=metric_params())
@example(mnv=("critical_band", "contrast", float("nan")))
@example(mnv=("sis", "n_images", 10**30))
def test_fuzz_metric_params_are_accepted_or_param_errors_naming_the_parameter(mnv):
    TRIED["metric parameters"] += 1
    metric, name, value = mnv
    cls = METRICS[metric]
    try:
        cls(**{name: value})
    except ParamError as e:
        outcome("metric parameters", "refused")
        assert name in str(e), str(e)
        return
    outcome("metric parameters", "accepted")


@pytest.mark.parametrize("name", RESERVED)
def test_param_names_that_collide_with_metric_init_arguments_are_param_errors(name):
    with pytest.raises(ParamError, match=name):
        METRICS["accuracy"](**{name: 1})


def test_acc16_sets_of_the_wrong_type_is_a_param_error_naming_sets():
    with pytest.raises(ParamError, match="sets"):
        METRICS["acc16"](sets=5)


# ----------------------------------------------------------------------------------------------------
# (c) dataset manifests
# ----------------------------------------------------------------------------------------------------

GOOD_SHA = "0" * 64
relpaths = st.one_of(
    st.sampled_from(
        [
            "cat/cat1.png",
            "../x.png",
            "/abs.png",
            "a//b.png",
            "./a.png",
            "a/./b.png",
            ".",
            "",
            "a\\b.png",
            "a\x00b",
            ".biasbench-files.json",
            ".downloads/x",
            "a/" + "b" * 300 + ".png",
        ]
    ),
    text,
)
manifest_field_values = {
    "name": st.sampled_from(["edges", "x/y", "../evil", "", "/abs", "a" * 200]) | text | json_values,
    "target": st.sampled_from(["edges", "../../etc", "/tmp/x", ".", "a/../b", "a\n"]) | text | json_values,
    "description": text | json_values,
    "source": st.dictionaries(text, text | json_values, max_size=3) | json_values,
    "license": text | json_values,
    "license_url": text,
    "citation": text,
    "n_files": st.integers() | json_values,
    "files": st.dictionaries(
        relpaths,
        st.sampled_from([GOOD_SHA, GOOD_SHA + "\n", "abc", GOOD_SHA.upper()]) | json_values,
        max_size=4,
    )
    | json_values,
    "base_url": st.sampled_from(
        [
            "https://e.org/d/",
            "ftp://e.org/",
            "https://",
            "javascript:alert(1)",
            "file:///data/",
            "http://[::1/",
        ]
    )
    | text
    | json_values,
    "archive": st.fixed_dictionaries(
        {},
        optional={
            "url": st.sampled_from(["https://e.org/a.tar.gz", "https://e.org/", "ftp://x/a.zip"])
            | text
            | json_values,
            "sha256": st.sampled_from([GOOD_SHA, None, "", "xyz", GOOD_SHA + "\n"]) | json_values,
            "format": st.sampled_from([*S.ARCHIVE_FORMATS, "rar", ""]) | json_values,
            "strip_prefix": st.sampled_from(["stylized/", "../", "/abs", ""]) | text | json_values,
            "n_files": st.integers() | json_values,
            "sha256_note": text,
            "extra": json_values,
        },
    )
    | json_values,
}


@st.composite
def manifest_texts(draw) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    if kind == 2:
        return b"[" * draw(st.integers(100, 5000))
    base = json.loads(
        json.dumps(
            {
                "name": "fuzz-set",
                "target": "fuzz-set",
                "license": "CC0",
                "n_files": 1,
                "files": {"cat/cat1.png": GOOD_SHA},
                "base_url": "https://e.org/data/",
            }
        )
    )
    if draw(st.booleans()):
        base = {
            "name": "fuzz-arch",
            "archive": {"url": "https://e.org/a.tar.gz", "sha256": None, "n_files": 3},
        }
    for k in draw(st.lists(st.sampled_from(list(manifest_field_values)), unique=True, max_size=4)):
        base[k] = draw(manifest_field_values[k])
    for k in draw(st.lists(st.sampled_from(sorted(base)), unique=True, max_size=1)):
        if draw(st.integers(0, 3)) == 0:
            del base[k]
    return json.dumps(base, allow_nan=True).encode("utf-8", "surrogatepass")


@fuzz(600)
@given(data=manifest_texts())
def test_fuzz_manifests_raise_only_manifest_errors_and_accept_only_safe_ones(data):
    TRIED["dataset manifests"] += 1
    where = "manifest fuzz.json"
    try:
        m = S.parse_download_spec(data, where)
    except S.DownloadSpecError as e:
        assert where in str(e), str(e)
        outcome("dataset manifests", "refused")
        return
    outcome("dataset manifests", "accepted")
    root = Path("/data-root")
    target = root / m.target
    assert target.resolve().is_relative_to(root) and target != root
    for rel, sha in m.files.items():
        assert (target / rel).resolve().is_relative_to(target.resolve()) and re.fullmatch("[0-9a-f]{64}", sha)
        if m.base_url:
            assert m.file_url(rel).startswith(m.base_url.rstrip("/") + "/")
        assert m.file_url(rel, "http://mirror").startswith("http://mirror/")
    if m.archive is not None:
        assert m.archive.format in S.ARCHIVE_FORMATS and m.archive.filename
        assert m.archive_url("http://mirror").startswith("http://mirror/")
        assert ".." not in m.archive.strip_prefix.split("/")
    assert isinstance(m.pinned, str) and m.n_files >= 0


def test_shipped_manifests_parse_with_the_strict_parser():
    for name, m in D.download_specs().items():
        assert m.name == name and len(m.digest) == 64


# ----------------------------------------------------------------------------------------------------
# (d) weights files: mutated checkpoint bytes, and what a file may hold
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_weights(workdir) -> dict[str, bytes]:
    import torch
    from safetensors.torch import save_file

    sd = {"a.weight": torch.randn(3, 4), "a.bias": torch.zeros(3), "n": torch.arange(5)}
    torch.save({"state_dict": sd, "epoch": 3}, workdir / "good.pth")
    save_file(sd, str(workdir / "good.safetensors"))
    return {s: (workdir / f"good{s}").read_bytes() for s in (".pth", ".safetensors")}


edits = st.lists(
    st.tuples(
        st.sampled_from(["set", "delete", "insert"]),
        st.floats(0, 1, exclude_max=True),
        st.binary(min_size=1, max_size=16),
    ),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, where, payload in ops:
        i = int(where * len(b)) if b else 0
        if op == "set":
            b[i : i + len(payload)] = payload
        elif op == "delete":
            del b[i : i + len(payload) * 8]
        else:
            b[i:i] = payload
    return bytes(b)


@fuzz(150)
@given(suffix=st.sampled_from([".pth", ".safetensors"]), ops=edits)
def test_fuzz_mutated_weights_files_raise_only_checkpoint_errors(workdir, good_weights, suffix, ops):
    from biasbench.registry import sources

    TRIED["weights files (mutated bytes)"] += 1
    path = workdir / f"mutated{suffix}"
    path.write_bytes(mutate(good_weights[suffix], ops))
    try:
        sd, _rule = sources.extract_state_dict(sources.read_weights_file(path, "fuzzed"), "fuzzed")
    except CheckpointError as e:
        assert "checkpoint 'fuzzed'" in str(e)
        outcome("weights files (mutated bytes)", "refused")
        return
    outcome("weights files (mutated bytes)", "accepted")
    assert sd and all(isinstance(k, str) for k in sd)


def _containers():
    import torch

    leaves = st.one_of(
        st.none(),
        st.integers(),
        st.floats(),
        text,
        st.integers(0, 3).map(lambda n: torch.zeros(n)),
        st.just(torch.ones(2, 2)),
    )
    keys = st.sampled_from([*R.sources.NESTED_RULES, "ema", "w", "x.y"]) | text
    tensors = st.integers(0, 3).map(lambda n: torch.zeros(n))
    state_dicts = st.dictionaries(keys, tensors, min_size=1, max_size=4)
    wrapped = st.recursive(  # a state dict under a few levels of {"model": {...}, "epoch": 3}
        state_dicts,
        lambda inner: st.builds(
            lambda k, v, extra: {k: v, **extra}, keys, inner, st.dictionaries(keys, leaves, max_size=2)
        ),
        max_leaves=5,
    )
    junk = st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys | st.integers(), inner, max_size=4),
        max_leaves=15,
    )
    return wrapped | junk


@fuzz(200)
@given(
    obj=_containers(),
    select=st.none() | st.sampled_from(["state_dict", "ema", "a.b", "", ".", "model.w"]) | text,
)
def test_fuzz_loaded_objects_yield_a_state_dict_or_a_checkpoint_error(obj, select):
    from biasbench.registry import sources

    TRIED["loaded checkpoint objects"] += 1
    try:
        sd, rule = sources.extract_state_dict(obj, "fuzzed", select=select)
    except CheckpointError as e:
        assert "checkpoint 'fuzzed'" in str(e)
        outcome("loaded checkpoint objects", "refused")
        return
    outcome("loaded checkpoint objects", "accepted")
    import torch

    assert sd and rule and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())


# ----------------------------------------------------------------------------------------------------
# Regression tests: one per defect the fuzzing found
# ----------------------------------------------------------------------------------------------------


def _registry(tmp_path: Path, body: str, *, entry: str = 'id = "a"\narch = "timm:resnet18"\n') -> Path:
    path = tmp_path / "r.toml"
    path.write_text("[[checkpoint]]\n" + entry + body + "\n")
    return path


def _refused(path: Path, pattern: str) -> str:
    with pytest.raises(RegistryError, match=pattern) as e:
        load_registry_file(path)
    assert f"{path}:[[checkpoint]] #1" in str(e.value)
    return str(e.value)


def test_regression_300_character_id_is_refused_128_accepted(tmp_path):
    # was: accepted; the job computed, then writing its per-item file failed "File name too long"
    msg = _refused(
        _registry(tmp_path, "", entry=f'id = "{"x" * 300}"\narch = "timm:resnet18"\n'),
        r"is 300 characters long; at most 128",
    )
    assert len(msg) < 400
    assert (
        load_registry_file(_registry(tmp_path, "", entry=f'id = "{"x" * 128}"\narch = "timm:resnet18"\n'))[
            0
        ].id
        == "x" * 128
    )


def test_regression_derived_ids_of_long_file_names_are_shortened_uniquely(tmp_path):
    import timm
    import torch

    stems = ["w" * 200 + "a", "w" * 200 + "b"]
    for s in stems:
        torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / f"{s}.pth")
    a, b = resolve_targets([f"timm:test_resnet@{tmp_path / (s + '.pth')}" for s in stems])
    assert len(a.id) == len(b.id) == R.MAX_ID_LENGTH and a.id != b.id


@pytest.mark.parametrize(
    ("entry", "body", "pattern"),
    [
        # was accepted: `$` matches before a trailing newline
        ('id = "abc\\n"\narch = "timm:resnet18"\n', "", r"invalid id 'abc\\n'"),
        # was accepted, and could never match the weights' digest later
        ('id = "a"\narch = "timm:resnet18"\n', f'sha256 = "{"a" * 64}\\n"', r"sha256 must be 64 hex digits"),
        # was accepted
        ('id = "a"\narch = "timm:resnet 18"\n', "", r"arch 'timm:resnet 18' must be"),
    ],
)
def test_regression_trailing_newlines_and_spaces_in_id_sha256_and_arch(tmp_path, entry, body, pattern):
    _refused(_registry(tmp_path, body, entry=entry), pattern)


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (
            'weights = "a\\u0000b"',
            r"weights 'a\\x00b' contains control characters",
        ),  # was ValueError: embedded null
        ('adapter = "drop:a{4294967296}"', r"invalid regex"),  # was OverflowError
        ('adapter = "drop:' + "(" * 2000 + ")" * 2000 + '"', r"invalid regex"),  # was RecursionError
        (
            'weights = "https://"\nsha256 = "' + "a" * 64 + '"',
            r"needs a host and a file name",
        ),  # was accepted
        # found in this file's own first URL check: urlsplit raises ValueError on these
        (
            'weights = "https://[::1/w.pth"\nsha256 = "' + "a" * 64 + '"',
            r"is not a valid URL: Invalid IPv6 URL",
        ),
        (
            'weights = "https://h:99999/w.pth"\nsha256 = "' + "a" * 64 + '"',
            r"is not a valid URL: Port out of range",
        ),
        ("preprocess = { mean = [nan, 0.1, 0.2] }", r"preprocess.mean must be finite \(no nan or inf\)"),
        ("preprocess = { std = [inf, 0.1, 0.2] }", r"preprocess.std must be finite \(no nan or inf\)"),
        (
            "preprocess = { resize = 9223372036854775807 }",
            r"preprocess.resize must be a positive integer of at most",
        ),
        ("num_classes = 9223372036854775807", r"num_classes must be a positive integer of at most"),
        ("tags = { a = { b = [1, nan] } }", r"tags.a.b\[1\] must be a finite number"),  # NaN has no JSON form
    ],
)
def test_regression_hostile_entry_values_are_registry_errors(tmp_path, body, pattern):
    _refused(_registry(tmp_path, body), pattern)


def test_regression_registry_file_that_is_not_utf8_or_nests_too_deeply(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes(b"\xff\xfe[[checkpoint]]")  # was UnicodeDecodeError
    with pytest.raises(RegistryError, match=rf"registry file {re.escape(str(path))} is not UTF-8 text"):
        load_registry_file(path)
    path.write_text("a = " + "[" * 5000)  # was RecursionError
    with pytest.raises(RegistryError, match=r"is not valid TOML"):
        load_registry_file(path)


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        (
            "~nosuchuser/x.toml",
            r"registry file ~nosuchuser/x.toml not found",
        ),  # was RuntimeError (no home dir)
        ("x" * 5000, r"unknown target"),  # was OSError: File name too long
        ("x" * 5000 + ".toml", r"cannot be examined: File name too long"),
        ("timm:resnet18@" + "x" * 5000, r"cannot be examined: File name too long"),
        ("timm:resnet18@a\x00b", r"contains control characters"),
        (
            "resnet18@zoo:",
            r"checkpoint 'resnet18@zoo:': weights 'zoo:' names no zoo source",
        ),  # was a bare CheckpointError
    ],
)
def test_regression_hostile_targets_are_registry_errors(target, pattern):
    with pytest.raises(RegistryError, match=pattern):
        resolve_targets([target])


@pytest.mark.parametrize(
    ("patch", "pattern"),
    [
        ({"files": {"a.png": "0" * 64 + "\n"}}, r"bad sha256"),  # was accepted (`$` before a newline)
        (
            {"target": "../../etc"},
            r"target '../../etc' must be a relative directory",
        ),  # was accepted: wrote outside
        ({"files": {".": "0" * 64}}, r"unsafe relative path '\.'"),  # was accepted: the dataset folder itself
        ({"files": ["a"]}, r"files must be a JSON object"),  # was ValueError from dict()
        ({"n_files": "12"}, r"n_files must be a JSON integer"),  # was silently int("12")
        ({"source": {"commit": "abc"}}, None),  # was KeyError in Manifest.pinned (no repository)
        ({"archive": [1]}, r"archive must be a JSON object"),  # was TypeError
        ({"archive": {"url": "https://e.org/a.rar", "format": "rar"}}, r"format 'rar' is not one of"),
    ],
)
def test_regression_malformed_manifests_are_manifest_errors(patch, pattern):
    raw = {"name": "m", "files": {"a.png": "0" * 64}, "base_url": "https://e.org/", **patch}
    if pattern is None:
        assert S.parse_download_spec(json.dumps(raw), "manifest m.json").pinned == "@abc"
        return
    with pytest.raises(S.DownloadSpecError, match=pattern) as e:
        S.parse_download_spec(json.dumps(raw), "manifest m.json")
    assert "manifest m.json" in str(e.value)
    assert issubclass(S.DownloadSpecError, ValueError)  # `bench data fetch` reports ValueErrors cleanly


def test_regression_given_archive_digest_must_be_exactly_64_hex_digits(tmp_path, monkeypatch):
    # was `_HEX64.match`: 65 digits (or 64 + junk) passed the check
    with pytest.raises(ValueError, match="--sha256 must be 64 hex digits"):
        F.fetch_dataset("stylized-16", tmp_path, sha256="a" * 65, log=lambda _m: None)


def test_registry_errors_are_checkpoint_errors():
    assert issubclass(RegistryError, CheckpointError)
