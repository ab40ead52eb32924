"""``folder:PATH`` — a folder of real photos is a dataset: ``PATH/<wnid or class index>/<image>``
labeled in ImageNet-1k (or ``#labels=SPACE``), a content-only manifest (moving the folder or touching
mtimes resumes, one changed byte does not), one clear error per bad layout; ``BIASBENCH_DATASETS`` loads
dataset plugins that are not installed. Photos: the ImageNet sample photos of ../shared/data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import biasbench
from biasbench.core.errors import InputError
from biasbench.core.labels import IMAGENET_1K
from biasbench.core.preprocess import Preprocess
from biasbench.harness.datasets import catalog
from biasbench.harness.datasets.catalog import DatasetMissing
from biasbench.harness.datasets.folder_dataset import HINT
from biasbench.harness.datasets.imagenet_files import imagenet_index
from tests.harness_fixtures import bench, demo_registry

PRE = Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
PRE_MAP = {"resize": 32, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

#: three ImageNet-1k classes and how many photos each folder gets (6 in all)
COUNTS = {"n01443537": 3, "n01514859": 2, "n01530575": 1}


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[Path]:
    """Six real ImageNet photos (any classes: the folder a photo is put in is its label)."""
    found = sorted((shared_data / "imagenet-sample").glob("*.JPEG"))[:6]
    assert len(found) == 6, f"expected ImageNet sample photos in {shared_data / 'imagenet-sample'}"
    return found


def make_folder(root: Path, photos: list[Path], counts: dict[str, int]) -> Path:
    """``root/<class>/`` with ``counts[class]`` of ``photos`` each (cycled), named p<i>.JPEG."""
    it = iter(photos * 10)
    for cls, k in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(k):
            shutil.copyfile(next(it), root / cls / f"p{i}.JPEG")
    return root


class AlwaysSays(nn.Module):
    """Ignores its input: class ``top`` gets the largest logit, the rest a fixed descending order."""

    def __init__(self, top: int, n: int = 1000) -> None:
        super().__init__()
        bias = -torch.arange(n, dtype=torch.float32) / n
        bias[top] = 10.0
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1) + 0 * x.mean()


def test_a_model_that_always_says_one_folders_class_gets_that_folders_share_as_top1(
    tmp_path, photos, one_thread
):
    root = make_folder(tmp_path / "photos", photos, COUNTS)
    index = imagenet_index()
    model = AlwaysSays(index["n01443537"])
    res = biasbench.evaluate(
        model,
        labels=IMAGENET_1K,
        preprocess=PRE_MAP,
        metrics=["accuracy"],
        params={"accuracy": {"dataset": f"folder:{root}"}},
        cache_dir=tmp_path / "cache",
    )
    assert res.summary.failed == 0, res.summary.outcomes
    assert res.value("accuracy", "top1") == 3 / 6
    top5 = set(torch.topk(model.bias.detach(), 5).indices.tolist())
    in_top5 = sum(k for wnid, k in COUNTS.items() if index[wnid] in top5)
    assert res.value("accuracy", "top5") == in_top5 / 6
    frame = res.to_frame().set_index("key")
    assert int(frame.loc["top1", "n"]) == 6


def test_wnid_folders_are_labeled_by_timms_imagenet_index_not_by_folder_order(tmp_path, photos):
    root = make_folder(tmp_path / "photos", photos, COUNTS)
    entry = catalog.get(f"folder:{root}")
    assert entry.label_space == IMAGENET_1K and not entry.as_stored
    ds = entry.load(tmp_path, PRE, tmp_path / "cache")
    index = imagenet_index()
    assert ds.labels.tolist() == [index[w] for w, k in COUNTS.items() for _ in range(k)]
    assert ds.item_ids[:2] == ["n01443537/p0.JPEG", "n01443537/p1.JPEG"]
    assert tuple(ds.images.shape) == (6, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.name == f"folder:{root}" and ds.manifest_hash == entry.manifest(tmp_path, PRE)
    assert list((tmp_path / "cache" / "datasets").glob(f"folder-{ds.manifest_hash}-*.npy"))


def test_class_index_folders_give_those_indices_and_decode_the_same_pixels(tmp_path, photos):
    by_wnid = make_folder(tmp_path / "a", photos, COUNTS)
    index = imagenet_index()
    by_index = make_folder(tmp_path / "b", photos, {str(index[w]): k for w, k in COUNTS.items()})
    a = catalog.get(f"folder:{by_wnid}").load(tmp_path, PRE, tmp_path / "cache")
    b = catalog.get(f"folder:{by_index}").load(tmp_path, PRE, tmp_path / "cache")
    assert b.labels.tolist() == a.labels.tolist()
    assert torch.equal(a.images, b.images)


def test_labels_suffix_picks_another_label_space_by_class_name_or_index(tmp_path, photos):
    names = make_folder(tmp_path / "names", photos, {"bear": 1, "airplane": 2})
    e = catalog.get(f"folder:{names}#labels=imagenet16")
    assert e.label_space == "imagenet16"
    ds = e.load(tmp_path, PRE, tmp_path / "cache")
    assert ds.label_space == "imagenet16" and ds.labels.tolist() == [0, 0, 1]
    assert ds.class_names[:2] == ["airplane", "bear"]
    idx = make_folder(tmp_path / "idx", photos, {"0": 1, "9": 1})
    demo = catalog.get(f"folder:{idx}#labels=demo-world").load(tmp_path, PRE, tmp_path / "c")
    assert demo.label_space == "demo-world" and demo.labels.tolist() == [0, 9]


def test_a_relative_path_is_taken_from_the_current_directory_not_the_data_root(tmp_path, photos, monkeypatch):
    make_folder(tmp_path / "here" / "photos", photos, {"n01443537": 1})
    monkeypatch.chdir(tmp_path / "here")
    entry = catalog.get("folder:photos")
    assert entry.location(tmp_path / "data-root") == tmp_path / "here" / "photos"
    assert entry.load(tmp_path / "data-root", PRE, tmp_path / "cache").item_ids == ["n01443537/p0.JPEG"]


def test_hidden_files_non_images_and_subfolders_of_a_class_folder(tmp_path, photos):
    root = make_folder(tmp_path / "photos", photos, {"n01443537": 1})
    (root / "n01443537" / "notes.txt").write_text("not an image")
    (root / "n01443537" / "._p0.JPEG").write_bytes(b"macOS resource fork, not a JPEG")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "README.md").write_text("ignored")
    (root / "n01443537" / "more").mkdir()
    shutil.copyfile(photos[1], root / "n01443537" / "more" / "q.jpg")
    ds = catalog.get(f"folder:{root}").load(tmp_path, PRE, tmp_path / "cache")
    assert ds.item_ids == ["n01443537/more/q.jpg", "n01443537/p0.JPEG"]


def test_the_manifest_is_content_moving_the_folder_or_touching_mtimes_keeps_it_one_byte_changes_it(
    tmp_path, photos
):
    root = make_folder(tmp_path / "old-parent" / "photos", photos, COUNTS)
    before = catalog.get(f"folder:{root}").manifest(tmp_path, PRE)
    assert catalog.get(f"folder:{root}").manifest(tmp_path / "elsewhere", None) == before  # no data root

    moved = tmp_path / "new-parent" / "photos"
    moved.parent.mkdir()
    os.rename(tmp_path / "old-parent" / "photos", moved)
    for f in moved.rglob("*"):
        os.utime(f, (1_000_000_000, 1_000_000_000))
    assert catalog.get(f"folder:{moved}").manifest(tmp_path, PRE) == before

    target = moved / "n01514859" / "p1.JPEG"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte; same size, and the mtime put back
    stat = target.stat()
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert catalog.get(f"folder:{moved}").manifest(tmp_path, PRE) != before


def test_a_run_resumes_after_the_parent_folder_is_renamed_and_recomputes_after_a_byte_changes(
    tmp_path, photos, monkeypatch, one_thread
):
    """Through ``biasbench.run`` with the demo registry: the folder named relatively, from its parent."""
    reg = demo_registry(tmp_path, n=1)
    make_folder(tmp_path / "p1" / "photos", photos, {"0": 2, "3": 1})
    params = {"accuracy": {"dataset": "folder:photos#labels=demo-world"}}
    run = {"db": tmp_path / "r.duckdb", "cache_dir": tmp_path / "cache", "threads": 1}
    monkeypatch.chdir(tmp_path / "p1")
    first = biasbench.run([str(reg)], ["accuracy"], params, **run)
    assert first.count("done") == 1 and first.failed == 0, first.outcomes

    os.rename(tmp_path / "p1", tmp_path / "p2")
    monkeypatch.chdir(tmp_path / "p2")
    for f in (tmp_path / "p2").rglob("*"):
        os.utime(f)
    again = biasbench.run([str(reg)], ["accuracy"], params, **run)
    assert again.count("stored") == 1 and again.count("done") == 0

    shutil.copyfile(photos[4], tmp_path / "p2" / "photos" / "3" / "p0.JPEG")  # other bytes
    third = biasbench.run([str(reg)], ["accuracy"], params, **run)
    assert third.count("done") == 1


def test_bench_run_takes_a_folder_dataset_parameter(tmp_path, photos, one_thread):
    reg = demo_registry(tmp_path, n=1)
    make_folder(tmp_path / "photos", photos, {"1": 2, "2": 2})
    db = tmp_path / "cli.duckdb"
    r = bench(
        ["run", str(reg), "-m", "accuracy", "-p", "accuracy.dataset=folder:photos#labels=demo-world"]
        + ["--db", str(db), "--cache-dir", str(tmp_path / "cache"), "--threads", "1"],
        tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    frame = biasbench.results(db).set_index("key")
    assert int(frame.loc["top1", "n"]) == 4


@pytest.mark.parametrize(
    ("layout", "error", "words"),
    [
        ({}, InputError, ["holds no class folders"]),
        ({"n01443537": 1, "cats": 1}, InputError, ["cats", "neither", "class id", "class index"]),
        ({"n01443537": 1, "n0144353": 1}, InputError, ["n0144353", "did you mean n01443537"]),
        ({"n01443537": 1, "7": 1}, InputError, ["mixes", "n01443537", "7"]),
        ({"5": 1, "1000": 1}, InputError, ["1000", "outside", "0..999"]),
        ({"7": 1, "007": 1}, InputError, ["007", "both name class index 7"]),
        ({"n01443537": 0}, InputError, ["n01443537", "holds no images"]),
    ],
    ids=["empty", "unknown", "near-miss", "mixed", "index-out-of-range", "one-class-twice", "no-images"],
)
def test_a_bad_layout_is_one_error_naming_the_offending_folder(tmp_path, photos, layout, error, words):
    root = make_folder(tmp_path / "photos", photos, layout) if layout else tmp_path / "photos"
    root.mkdir(exist_ok=True)
    entry = catalog.get(f"folder:{root}")
    with pytest.raises(error) as e:
        entry.manifest(tmp_path, PRE)
    assert isinstance(e.value, ValueError) and str(root) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_photos_directly_in_the_folder_are_told_to_go_into_class_folders(tmp_path, photos):
    (tmp_path / "flat").mkdir()
    shutil.copyfile(photos[0], tmp_path / "flat" / "a.JPEG")
    with pytest.raises(InputError, match="1 images lie directly in it"):
        catalog.get(f"folder:{tmp_path / 'flat'}").manifest(tmp_path, PRE)


def test_a_missing_folder_is_dataset_missing_naming_it_and_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    entry = catalog.get("folder:no-such-photos")
    for call in (lambda: entry.manifest(tmp_path, PRE), lambda: entry.load(tmp_path, PRE, tmp_path)):
        with pytest.raises(DatasetMissing) as e:
            call()
        assert str(tmp_path / "no-such-photos") in str(e.value) and "current directory" in str(e.value)


def test_a_missing_folder_fails_the_job_with_that_message(tmp_path, one_thread):
    res = biasbench.evaluate(
        AlwaysSays(0),
        labels=IMAGENET_1K,
        preprocess=PRE_MAP,
        metrics=["accuracy"],
        params={"accuracy": {"dataset": f"folder:{tmp_path / 'gone'}"}},
        cache_dir=tmp_path / "cache",
    )
    (outcome,) = res.summary.outcomes
    assert outcome.status == "failed" and str(tmp_path / "gone") in outcome.summary


def test_an_unknown_label_space_or_no_path_is_an_error_at_lookup(tmp_path):
    with pytest.raises(Exception, match="unknown label space 'cifar-77'"):
        catalog.get(f"folder:{tmp_path}#labels=cifar-77")
    with pytest.raises(InputError, match="give the folder"):
        catalog.get("folder:")
    with pytest.raises(catalog.UnknownDataset, match="folder:PATH"):
        catalog.get("no-such-dataset")


def test_the_listing_hint_is_one_line_naming_the_syntax():
    hint = catalog.folder_hint()
    assert hint == HINT and "\n" not in hint
    assert "folder:PATH" in hint and "#labels=" in hint and "current directory" in hint


PLUGIN = """
import torch
from biasbench.core.images import ImageSet
from biasbench.core import labels
from biasbench.harness.datasets.catalog import DatasetEntry

def load(data_root, pre, cache_dir):
    space = labels.get("demo-world")
    return ImageSet(
        name="{name}",
        images=torch.zeros((4, 3, 32, 32), dtype=torch.uint8),
        labels=torch.tensor([0, 0, 0, 1]),
        class_names=list(space.class_names),
        label_space="demo-world",
        item_ids=["a", "b", "c", "d"],
        manifest_hash="fixed",
    )

SET = DatasetEntry(
    name="{name}", description="four grey images", label_space="demo-world",
    manifest=lambda data_root, pre: "fixed", load=load,
)
"""


def test_biasbench_datasets_loads_a_plugin_that_is_not_installed(tmp_path, monkeypatch, one_thread):
    mod = f"tmp_sets_{os.getpid()}_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{mod}.py").write_text(PLUGIN.format(name="four-grey"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BIASBENCH_DATASETS", f"{mod}:SET")
    assert catalog.get("four-grey").description == "four grey images"
    provider = catalog.DATASETS.providers()["four-grey"]
    assert provider.provider == "$BIASBENCH_DATASETS" and provider.target == f"{mod}:SET"
    assert "four-grey" in catalog.families()

    res = biasbench.evaluate(
        AlwaysSays(0, n=10),
        labels="demo-world",
        preprocess=PRE_MAP,
        metrics=["accuracy"],
        params={"accuracy": {"dataset": "four-grey"}},
        cache_dir=tmp_path / "cache",
    )
    assert res.value("accuracy", "top1") == 0.75

    monkeypatch.setenv("BIASBENCH_DATASETS", f"{mod}:NOT_THERE")
    with pytest.raises(catalog.PluginError, match=r"\$BIASBENCH_DATASETS: cannot load"):
        catalog.get("four-grey")
    monkeypatch.setenv("BIASBENCH_DATASETS", f"{mod}:load")
    with pytest.raises(catalog.PluginError, match="not a DatasetEntry"):
        catalog.get("four-grey")
