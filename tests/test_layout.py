"""The layout of the library: imports go one way, and every file stays one readable job.

* **No runtime import cycle** among the modules of actors/, protocols/ and training/: an
  import graph is built from the source (module-level and function-level imports alike, a
  lazy ``import`` inside a function is a runtime import too; only imports under ``if
  TYPE_CHECKING:`` are left out, they never run), and any strongly connected component of
  more than one module fails, named.
* **No library file over** :data:`MAX_LINES` lines, except the files in
  :data:`NOT_YET_SPLIT`, which must still be over it (so the list shrinks as they are
  split: a file that got under the limit must be taken off the list).
* **The design draws the house as it is**: docs/design.md's module map has a line for
  every library module and script, and the design names no file that does not exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "protocols", "training")
MAX_LINES = 450

NOT_YET_SPLIT = {
    # the communication-cost report's measurements are reworked separately.
}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement except those in the body of ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the library modules it imports at runtime. Package ``__init__`` modules
    are left out (importing ``training.x`` runs ``training/__init__`` first, an edge every
    submodule has; the packages' own imports are checked as the modules they name)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            graph[name] |= {t for t in targets if t in mods and t != name}
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    return {m: deps - packages for m, deps in graph.items() if m not in packages}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check can fail: a two-module and a three-module cycle are found, a chain not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b"], ["c", "d", "e"]]
    src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\ndef f():\n    import y\n"
    names = [a.name for n in _runtime_imports(ast.parse(src)) for a in n.names]
    assert names == ["TYPE_CHECKING", "y"]


def test_no_runtime_import_cycle() -> None:
    graph = import_graph()
    assert "training.tensor" in graph and graph["training.dispatch"]  # the graph is real
    assert cycles(graph) == [], "runtime import cycles (break them; see docs/design.md)"


def _line_counts() -> dict[str, int]:
    return {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
    }


def test_no_library_file_over_the_limit() -> None:
    counts = _line_counts()
    over = {f: n for f, n in counts.items() if n > MAX_LINES and f not in NOT_YET_SPLIT}
    assert over == {}, f"split these along their jobs (<= {MAX_LINES} lines each): {over}"


def test_the_allow_list_only_names_files_still_over_the_limit() -> None:
    counts = _line_counts()
    stale = {f: counts.get(f) for f in NOT_YET_SPLIT if counts.get(f, 0) <= MAX_LINES}
    assert stale == {}, f"take these off NOT_YET_SPLIT (split or gone): {stale}"


DESIGN = ROOT / "docs" / "design.md"


def _design_paths() -> set[str]:
    """Every repository path docs/design.md names: ``pkg/x.py`` in backticks, and the
    files of its module-map tables (``| `a.py`, `b.py` | job |`` under a ``**`pkg/`**``
    heading)."""

    text = DESIGN.read_text()
    named = set(
        re.findall(r"`((?:actors|protocols|training|scripts|tests|docs)/[\w/]+\.\w+)`", text)
    )
    package = None
    for line in text.splitlines():
        head = re.match(r"\*\*`([\w/]+/)`\*\*", line)
        if head:
            package = head.group(1)
        elif not line.startswith("|"):
            if line.strip():
                package = None if line.startswith("#") else package
        elif package is not None:
            first = line.split("|")[1]
            named |= {package + f for f in re.findall(r"`([\w.]+\.(?:py|sh))`", first)}
    return named


def test_the_design_names_only_files_that_exist() -> None:
    missing = sorted(p for p in _design_paths() if not (ROOT / p).exists())
    assert missing == [], f"docs/design.md names files that do not exist: {missing}"


def test_the_design_maps_every_module() -> None:
    """The module map of docs/design.md has a line for every library module and script
    (the packages' thin ``__init__`` files aside)."""
    named = _design_paths()
    assert "protocols/fss.py" in named and "actors/tls.py" in named  # the parser reads it
    files = [p for pkg in (*PACKAGES, "scripts") for p in sorted((ROOT / pkg).rglob("*.py"))]
    unmapped = sorted(
        str(p.relative_to(ROOT))
        for p in files
        if str(p.relative_to(ROOT)) not in named and p.name != "__init__.py"
    )
    assert unmapped == [], f"add these to the module map of docs/design.md: {unmapped}"
