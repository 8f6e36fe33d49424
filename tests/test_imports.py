"""The package's imports form no circle, and its parts depend on each other as docs/index.md draws.

Every module of ``dcl_cluster`` is read with ``ast`` (nothing is imported): imports at module
level, inside functions, and lazy ones named by a string (``import_module`` tables such as the
package's ``_PUBLIC``) all count. ``python tests/test_imports.py --write`` redraws the picture
in docs/index.md from :data:`ALLOWED` after a deliberate change of the layers.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dcl_cluster"
DOCS = ROOT / "docs" / "index.md"

ALLOWED = {  # part -> the parts it may import (a part: a subpackage or a top-level module)
    "console": {"cli", "recluster"},
    "cli": {"callbacks", "data", "module", "recluster", "report", "run_folders"},
    "run_folders": {"callbacks"},
    "recluster": {"callbacks", "cluster"},
    "module": {"distributed", "frozen_encoder", "head_setup", "losses", "nn", "objectives", "optim", "presets"},
    "head_setup": {"cluster", "nn", "objectives"},
    "frozen_encoder": {"data"},
    "callbacks": {"cluster", "distributed", "metrics"},
    "report": {"cluster", "metrics"},
    "presets": {"objectives"},
    "objectives": {"distributed", "losses", "nn"},  # a term may own a head (MiniClusterSelfLabel)
    "nn": {"losses"},
    "losses": {"distributed"},
    "cluster": {"distributed"},
    "data": set(),
    "metrics": set(),
    "optim": set(),
    "distributed": set(),
}
"""The layers. ``dcl_cluster/__init__.py`` (public names, loaded lazily) may import every part."""


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package under ``root``."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module a dotted name lives in (``a.b.func`` -> ``a.b``), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its file."""
    modules = package_modules(root)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {_resolve(alias.name, modules) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else _resolve(base, modules))
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and re.fullmatch(rf"{PACKAGE}(\.\w+)+", node.value)):  # lazy: import_module("...")
                targets.add(_resolve(node.value, modules))
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def part(module: str) -> str:
    """``dcl_cluster.data.sources`` -> ``data``; the package itself -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Part -> the other parts its modules import (the package's ``__init__`` left out)."""
    layers: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if part(module):
            layers.setdefault(part(module), set()).update(
                part(t) for t in targets if part(t) != part(module))
    return layers


def draw(allowed: dict[str, set[str]]) -> list[str]:
    """The layers top-down: each part with the parts it imports, every arrow pointing further down."""
    level: dict[str, int] = {}

    def depth(p):
        if p not in level:
            level[p] = 1 + max((depth(q) for q in allowed[p]), default=-1)
        return level[p]

    order = sorted(allowed, key=lambda p: (-depth(p), p))
    width = max(map(len, order))
    lines = [f"{p:<{width}}  ->  {', '.join(sorted(allowed[p]))}" for p in order if allowed[p]]
    lines.append(f"{', '.join(p for p in order if not allowed[p])}: nothing else of {PACKAGE}")
    return lines


def _docs_block(text: str) -> re.Match:
    block = re.search(r"<!-- structure:start -->\n```text\n(.*?)```\n<!-- structure:end -->", text, re.S)
    assert block, f"{DOCS} has no <!-- structure:start --> ... <!-- structure:end --> block"
    return block


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_the_old_sources_folders_circle():
    """0.1's ``sources`` imported ``folders`` inside ``load_source``, ``folders`` imported ``sources``."""
    graph = {"d.sources": {"d.long_tail", "d.folders"}, "d.folders": {"d.sources"}, "d.long_tail": set()}
    assert find_cycle(graph) == ["d.folders", "d.sources", "d.folders"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_function_level_and_lazy_imports_count(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text('_PUBLIC = {"X": "dcl_cluster.data.sources"}\n')
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "sources.py").write_text("def load():\n    from dcl_cluster.data import folders\n")
    (pkg / "data" / "folders.py").write_text("from .sources import load\n")
    graph = import_graph(tmp_path)
    assert graph[f"{PACKAGE}.data.sources"] == {f"{PACKAGE}.data.folders"}
    assert graph[f"{PACKAGE}.data.folders"] == {f"{PACKAGE}.data.sources"}
    assert graph[PACKAGE] == {f"{PACKAGE}.data.sources"}
    assert find_cycle(graph) is not None


def test_parts_import_only_what_the_layers_allow():
    layers = layer_graph(import_graph())
    assert set(layers) == set(ALLOWED), (
        f"parts of the package changed: {sorted(set(layers) ^ set(ALLOWED))}; update ALLOWED in "
        f"{Path(__file__).name} and run `python tests/test_imports.py --write`")
    extra = {p: sorted(layers[p] - ALLOWED[p]) for p in layers if layers[p] - ALLOWED[p]}
    unused = {p: sorted(ALLOWED[p] - layers[p]) for p in layers if ALLOWED[p] - layers[p]}
    assert not extra, f"imports across layers that ALLOWED does not list: {extra}"
    assert not unused, (f"ALLOWED lists imports nothing makes any more: {unused}; update ALLOWED and "
                        f"run `python tests/test_imports.py --write`")
    assert find_cycle(ALLOWED) is None


def test_docs_draw_the_layers():
    drawn = _docs_block(DOCS.read_text()).group(1).splitlines()
    assert drawn == draw(ALLOWED), "docs/index.md's drawing is stale: run python tests/test_imports.py --write"


if __name__ == "__main__" and "--write" in sys.argv:
    text = DOCS.read_text()
    block = _docs_block(text)
    DOCS.write_text(text[:block.start(1)] + "\n".join(draw(ALLOWED)) + "\n" + text[block.end(1):])
    print(f"redrew the structure in {DOCS}")
