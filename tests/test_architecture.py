"""The layering of docs/architecture.md, kept by walking the package's imports.

cli → reports / harness → metrics / registry → core. A module may import its own top-level package
and the layers below it; peers of one layer never import each other; a plugin module (an entry-point
target of one of our groups) never imports another plugin module (shared helpers live in
non-plugin modules such as ``metrics/common.py``); there are no
import cycles. Every import counts, also those inside functions — except those under
``if TYPE_CHECKING:``, which never run (a type annotation is no dependency at run time).
"""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import biasbench

PACKAGE_DIR = Path(biasbench.__file__).resolve().parent
GROUPS = ("biasbench.metrics", "biasbench.datasets", "biasbench.sources", "biasbench.labels")

#: top-level package -> layer (higher may import lower; equal only within the same package)
LAYERS = {"core": 0, "metrics": 1, "registry": 1, "harness": 2, "reports": 2, "cli": 3}


def module_names(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import biasbench.x.y` of a non-module attribute
                t = t.rpartition(".")[0]
            if t and t != name and t != "biasbench":
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = module_names()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        if top(mod) not in LAYERS:
            continue
        for dep in deps:
            a, b = top(mod), top(dep)
            if b not in LAYERS or a == b:
                continue
            if LAYERS[b] >= LAYERS[a]:
                kind = "sideways" if LAYERS[b] == LAYERS[a] else "upward"
                bad.append(
                    f"{mod} imports {dep} ({kind}: {a} is layer {LAYERS[a]}, {b} is layer {LAYERS[b]})"
                )
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def plugin_modules() -> dict[str, set[str]]:
    """Entry-point group -> the package modules its in-tree plugins live in."""
    out: dict[str, set[str]] = {}
    for group in GROUPS:
        out[group] = {
            ep.value.partition(":")[0]
            for ep in entry_points(group=group)
            if ep.value.startswith("biasbench.")
        }
    return out


def plugin_cross_imports(graph: dict[str, set[str]], plugins: dict[str, set[str]]) -> list[str]:
    """A plugin module (of any group) importing another plugin module (of any group)."""
    group_of = {m: g for g, mods in plugins.items() for m in mods}
    bad = []
    for mod, group in group_of.items():
        for dep in graph.get(mod, ()):
            if dep in group_of and dep != mod:
                bad.append(f"{group} plugin {mod} imports the {group_of[dep]} plugin {dep}")
    return sorted(bad)


# ----------------------------------------------------------------------------------------------------


def test_the_checker_sees_the_whole_package():
    graph = import_graph()
    assert "biasbench.cli" in graph and "biasbench.core.labels" in graph
    assert "biasbench.metrics.base" in graph["biasbench.metrics.spectral"]
    assert "biasbench.core.plugins" in graph["biasbench.core.labels"]
    # relative and function-level imports count too
    assert "biasbench.registry.zoo" in graph["biasbench.registry.weight_sources.zoo"]


def test_no_module_imports_upward_or_sideways():
    assert layering_violations(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_plugin_imports_another_plugin():
    plugins = plugin_modules()
    assert {"biasbench.metrics.sis", "biasbench.metrics.spectral"} <= plugins["biasbench.metrics"]
    assert "biasbench.harness.datasets.stimuli" in plugins["biasbench.datasets"]
    assert len(plugins["biasbench.sources"]) >= 7 and len(plugins["biasbench.labels"]) >= 2
    assert plugin_cross_imports(import_graph(), plugins) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"biasbench.metrics.x": {"biasbench.harness.store"}}, "upward"),
        ({"biasbench.registry.x": {"biasbench.metrics.base"}}, "sideways"),
        ({"biasbench.core.x": {"biasbench.registry.spec"}}, "upward"),
        ({"biasbench.reports.x": {"biasbench.cli"}}, "upward"),
    ],
)
def test_the_layering_check_catches_a_wrong_import(graph, expected):
    (msg,) = layering_violations(graph)
    assert expected in msg


def test_the_checks_catch_a_cycle_and_a_plugin_importing_a_plugin():
    graph = {
        "biasbench.core.a": {"biasbench.core.b"},
        "biasbench.core.b": {"biasbench.core.c"},
        "biasbench.core.c": {"biasbench.core.a"},
        "biasbench.core.d": {"biasbench.core.a"},
    }
    assert cycles(graph) == [["biasbench.core.a", "biasbench.core.b", "biasbench.core.c"]]
    plugins = {"biasbench.metrics": {"biasbench.metrics.p", "biasbench.metrics.q"}}
    assert plugin_cross_imports({"biasbench.metrics.p": {"biasbench.metrics.q"}}, plugins) == [
        "biasbench.metrics plugin biasbench.metrics.p imports the biasbench.metrics plugin biasbench.metrics.q"
    ]
