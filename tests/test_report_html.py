"""The HTML report is one self-contained file that a real browser renders completely: headless
Chromium opens it with no console message, every image decodes (naturalWidth > 0), the scatter grid
names every checkpoint on hover, the page fits a laptop screen, and a screenshot is taken. The same
check run on a page with a broken image fails, so the check can fail. Without Chromium the test skips,
except under ``CI=true``, where it fails (``.ci/run`` installs Chromium when absent)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biasbench.harness.store import JobKey, JobRecord, Store
from tests.harness_fixtures import bench

WIDTH, HEIGHT = 1366, 900  # a laptop screen
CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40));
  const svgs = [...document.querySelectorAll("svg")].filter(s => s.getBoundingClientRect().width > 0);
  const out = document.createElement("pre");
  out.id = "bb-check";
  out.textContent = JSON.stringify({
    images: imgs.length, broken, svgs: svgs.length,
    titles: [...document.querySelectorAll("svg title")].map(t => t.textContent),
    width: document.documentElement.scrollWidth,
    headings: [...document.querySelectorAll("h2")].map(h => h.textContent),
    tables: [...document.querySelectorAll("table")].filter(t => t.getBoundingClientRect().height > 0).length,
  });
  document.body.appendChild(out);
  console.log("bb-check-done");
});
</script>"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing outside the file can load
    f"--window-size={WIDTH},{HEIGHT}",
]


def _chromium() -> str:
    found = (
        os.environ.get("BIASBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _open(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    """Open a copy of ``page`` with the checking script in headless Chromium: what the script found,
    and every console message."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    r = subprocess.run(
        [
            _chromium(),
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r'<pre id="bb-check">(.*?)</pre>', r.stdout, flags=re.S)
    assert m, f"the page never finished loading: {r.stderr[-2000:]}"
    console = re.findall(r":CONSOLE[^\]]*\] (.*)", r.stderr)
    return json.loads(html.unescape(m.group(1))), console


def _db(path: Path) -> Path:
    """Nine checkpoints in two categories with a bias, two generalization aggregates, spectral
    curves and critical-band thresholds: every figure and table of the page has data (nine: the
    cross-validated prediction needs eight)."""
    with Store(path) as s:
        run = s.start_run(argv=["bench"], git_sha="0123abc", versions={"biasbench": "0.1.0"}, device="cpu")
        for i in range(9):
            c = f"ckpt-{i}"
            s.upsert_checkpoint({"id": c, "arch": "a", "tags": json.dumps({"category": "ab"[i % 2]})})
            jobs = {
                "shape_bias": {"shape_bias": 0.1 * i + 0.05 * (i % 2)},
                "ood": {"id": 0.9 - 0.01 * i, "robustness": 0.3 + 0.04 * i, "concepts": 0.5 + 0.02 * (i % 3)},
                "spectral": {
                    "LPP": 0.3 + 0.02 * i,
                    "HPP": 0.2 - 0.01 * i,
                    **{f"lowpass_ratio@{c_}": min(1.0, c_ * (1 + 0.1 * i)) for c_ in (0.1, 0.3, 0.5, 0.9)},
                    **{f"highpass_ratio@{c_}": c_**2 for c_ in (0.1, 0.3, 0.5, 0.9)},
                },
                "critical_band": {f"threshold_norm@f{f}": float((f + i) % 5) for f in range(7)},
            }
            for metric, scalars in jobs.items():
                s.write_job(
                    JobKey(c, metric, f"h{i}"),
                    JobRecord(
                        metric_version="1",
                        datasets={
                            "images": {"name": "demo-world/test", "manifest": "feedbeef", "preprocess": "x"}
                        },
                        scalars=scalars,
                        n=dict.fromkeys(scalars, 50),
                        run_id=run,
                    ),
                )
        s.finish_run(run, "ok")
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("html")
    db = _db(tmp / "r.duckdb")
    out = tmp / "report.html"
    args = [
        "--format",
        "html",
        "-o",
        str(out),
        "--resamples",
        "200",
        "--permutations",
        "200",
        "--by",
        "category",
    ]
    r = bench(["report", "--db", str(db), *args], tmp)
    assert r.returncode == 0, r.stderr
    return out


def test_the_page_is_one_self_contained_file(page):
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "<link" not in text and "@import" not in text
    sources = re.findall(r'\b(?:src|href)="([^"]*)"', text)
    outside = [s for s in sources if not s.startswith(("data:image/png;base64,", "#"))]  # inline, or in-page
    assert sources and not outside, outside[:3]
    for must in ("How to read this", "Provenance", "feedbeef", "0123abc", "ckpt-5", "Holm"):
        assert must in text, must


def test_chromium_renders_every_figure_without_console_messages_and_takes_a_screenshot(page, tmp_path):
    found, console = _open(page, tmp_path)
    assert len(console) == 1 and console[0].startswith('"bb-check-done"'), console  # nothing else logged
    # heat maps of the table, of bias × bias and of generalization × generalization; one study-style
    # scatter per bias (3); spectral curves; critical bands
    assert found["broken"] == [] and found["images"] == 3 + 3 + 2
    assert found["svgs"] == 1  # the scatter grid
    # one hover title per point: 9 checkpoints × 3 bias rows (shape bias, LPP, HPP) × 3 generalization columns
    assert len(found["titles"]) == 9 * 3 * 3
    for heading in (
        "Verdict",
        "Bias × generalization",
        "All biases together",
        "By group",
        "Bias × bias: every pair",
    ):
        assert heading in found["headings"], (heading, found["headings"])
    assert "Generalization × generalization" in found["headings"]
    # the main matrix, R², groups, both role matrices, all pairs, scores, provenance (metrics, runs)
    assert found["tables"] >= 9
    assert any(t.startswith("ckpt-3 (b): shape_bias.shape_bias = ") for t in found["titles"])
    assert found["width"] <= WIDTH  # no horizontal scrolling on a laptop screen
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            _chromium(),
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    with Image.open(shot) as im:
        assert im.size == (WIDTH, HEIGHT)
        assert len(np.unique(np.asarray(im.convert("L").resize((64, 64))))) > 10  # not a blank page


def test_the_browser_check_fails_on_a_broken_image(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><img alt="ok" src="data:image/png;base64,'
        + _tiny_png()
        + '"><img alt="broken" src="data:image/png;base64,iVBORw0KGgoAAAA"></body></html>'
    )
    found, _ = _open(bad, tmp_path)
    assert found["images"] == 2 and found["broken"] == ["broken"]


def _tiny_png() -> str:
    import base64
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_checkpoint_ids_tags_and_keys_that_look_like_markup_are_escaped_everywhere_on_the_page():
    import pandas as pd

    import biasbench

    hostile = "<script>alert(1)</script>"
    tag = '<img src=x onerror="alert(2)">'
    rows = []
    for i in range(9):
        cp = f"{hostile}{i}" if i % 2 else f"ok-{i}"
        rows += [
            (cp, "shape_bias", "shape_bias", 0.1 * i, 10),
            (cp, "ood", "robustness", 0.3 + 0.04 * i + 0.01 * (i % 3), 100),
            (cp, "ood", "id", 0.9 - 0.01 * i, 100),
            (cp, "imported", "<b>k</b>", 0.5 + 0.01 * i, 0),
        ]
    frame = pd.DataFrame(rows, columns=["checkpoint", "metric", "key", "value", "n"])
    tags = {c: {"category": tag if i % 3 else "plain"} for i, c in enumerate(dict.fromkeys(frame.checkpoint))}
    rep = biasbench.report(
        frame,
        tags=tags,
        resamples=100,
        permutations=100,
        generalization=["ood.robustness", "imported.<b>k</b>"],
    )
    page = rep.to_html()
    assert "<script" not in page and "<img src=x" not in page and "<b>k</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;1" in page  # the checkpoint id, shown as text
    assert "&lt;img src=x onerror=" in page  # the tag, shown as text
    assert "imported.&lt;b&gt;k&lt;/b&gt;" in page  # the key
