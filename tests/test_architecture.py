"""docs/architecture.md's floors hold in the code: every import (function-local ones included) goes to the
same floor or a lower one, the named boundaries hold, no modules of the package import each other in a loop, and
every import inside a function says why it is there."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lh2face_plugin"
DOC = ROOT / "docs" / "architecture.md"
# arcface_torch's top-level modules and packages (train_v2.py, partial_fc_v2.py, backbones/, ...)
HOST = {"train_v2", "partial_fc_v2", "losses", "lr_scheduler", "dataset", "backbones", "configs", "utils", "eval",
        "eval_ijbc", "flops", "inference", "onnx_helper", "onnx_ijbc", "torch2onnx"}


def _modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> List[ast.AST]:
    return [n for n in ast.walk(ast.parse(MODULES[name].read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _targets(name: str, node: ast.AST) -> List[str]:
    """The modules an import names, absolute (``from .x import y`` gives ``pkg.x.y`` where that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]


def _own(target: str) -> str:
    """The package module an import reaches (the longest known prefix), or ''."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target


def _graph() -> Dict[str, Set[str]]:
    return {m: {t for n in _imports(m) for t in map(_own, _targets(m, n)) if t and t != m} for m in MODULES}


GRAPH = _graph()


def _where(module: str) -> str:
    return MODULES[module].relative_to(ROOT).as_posix()


def _floors() -> Dict[str, int]:
    """The floor of each module, from the table under ``## Floors`` in docs/architecture.md."""
    text = DOC.read_text().split("## Floors", 1)[1].split("\n## ", 1)[0]
    places = {}
    for row in re.findall(r"^\| *(\d+) *\|[^|]*\|([^|]*)\|", text, flags=re.M):
        for place in re.findall(r"`([^`]+)`", row[1]):
            places[place] = int(row[0])
    assert places, "docs/architecture.md has no floor table under '## Floors'"
    floors = {}
    for module, path in MODULES.items():
        rel = path.relative_to(PACKAGE).as_posix()
        owners = [p for p in places if rel == p or (p.endswith("/") and rel.startswith(p))]
        if owners:
            floors[module] = places[max(owners, key=len)]
    return floors


FLOORS = _floors()


def test_every_module_stands_on_a_floor():
    unplaced = sorted(_where(m) for m in MODULES if m not in FLOORS)
    assert not unplaced, f"not on any floor of docs/architecture.md's table (add them to a row): {unplaced}"


# Upward imports known and to be removed (not to be added to): none left.
KNOWN_UPWARD: Set[Tuple[str, str]] = set()


def _upward():
    return {(a, b) for a, targets in GRAPH.items() if a in FLOORS for b in targets
            if b in FLOORS and FLOORS[b] > FLOORS[a]}


def test_no_module_imports_a_higher_floor():
    upward = [f"{_where(a)} (floor {FLOORS[a]}) imports {_where(b)} (floor {FLOORS[b]})"
              for a, b in sorted(_upward() - KNOWN_UPWARD)]
    assert not upward, "imports that run up the floors of docs/architecture.md:\n" + "\n".join(upward)


def test_known_upward_imports_are_still_there():
    """Remove an entry of KNOWN_UPWARD once its import is gone."""
    assert KNOWN_UPWARD <= _upward(), sorted(KNOWN_UPWARD - _upward())


def _imports_of(prefix: str) -> Set[str]:
    return {b for a, targets in GRAPH.items() if a == prefix or a.startswith(prefix + ".") for b in targets}


@pytest.mark.parametrize("below, above", [
    ("lh2face_plugin.layers", ("lh2face_plugin.heads", "lh2face_plugin.bench", "lh2face_plugin.cli",
                               "lh2face_plugin.arcface_torch")),
    ("lh2face_plugin.heads", ("lh2face_plugin.bench", "lh2face_plugin.cli", "lh2face_plugin.arcface_torch",
                              "lh2face_plugin.training", "lh2face_plugin.quickstart")),
])
def test_the_engine_knows_nothing_above_it(below, above):
    bad = sorted(b for b in _imports_of(below) if b.startswith(above))
    assert not bad, f"{below} imports {bad}"


def test_the_contract_is_the_bottom_of_the_engine():
    """Heads and layers both import the contract; it imports neither."""
    contract = "lh2face_plugin.layers.contract"
    bad = sorted(b for b in GRAPH[contract] if b.startswith(("lh2face_plugin.layers", "lh2face_plugin.heads")))
    assert not bad, f"{contract} imports {bad}"


def test_only_the_command_line_imports_the_command_line():
    allowed = ("lh2face_plugin.cli", "lh2face_plugin.train", "lh2face_plugin.__main__")
    bad = sorted(a for a, targets in GRAPH.items() if not a.startswith(allowed)
                 and any(b == "lh2face_plugin.cli" or b.startswith("lh2face_plugin.cli.") for b in targets))
    assert not bad, f"modules outside cli/ import it: {bad}"


def _host_imports(module: str) -> List[str]:
    found = [t for n in _imports(module) if getattr(n, "level", 0) == 0
             for t in _targets(module, n) if t.split(".")[0] in HOST]
    tree = ast.parse(MODULES[module].read_text())
    for call in ast.walk(tree):  # importlib.import_module("train_v2")
        if (isinstance(call, ast.Call) and getattr(call.func, "attr", getattr(call.func, "id", "")) == "import_module"
                and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)
                and call.args[0].value.split(".")[0] in HOST):
            found.append(call.args[0].value)
    return found


def test_only_arcface_torch_imports_the_host():
    bad = {_where(m): found for m in MODULES if not m.startswith("lh2face_plugin.arcface_torch")
           for found in [_host_imports(m)] if found}
    assert not bad, f"modules outside lh2face_plugin/arcface_torch/ import arcface_torch's own modules: {bad}"


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Groups of modules that import each other in a loop (strongly connected, 2 or more)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# An import inside a function ends its first or last line with one of docs/architecture.md's reasons.
LOCAL_IMPORT_REASON = re.compile(r"#\s*(optional|lazy|host):")


def _untagged_local_imports(source: str, where: str) -> List[str]:
    """``where:line: source`` of every import inside a function whose first and last lines carry no reason comment
    (comments only: a string that holds ``# lazy:`` does not count)."""
    lines = source.splitlines()
    comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    found: Dict[int, str] = {}
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not any(
                        LOCAL_IMPORT_REASON.search(comments.get(n, "")) for n in (node.lineno, node.end_lineno)):
                    found[node.lineno] = f"{where}:{node.lineno}: {lines[node.lineno - 1].strip()}"
    return [found[n] for n in sorted(found)]


def test_every_local_import_says_why():
    bad = [line for m in MODULES for line in _untagged_local_imports(MODULES[m].read_text(), _where(m))]
    assert not bad, ("imports inside functions without a reason: move them to the top of the module, or end the line "
                     "with '# optional: heavy', '# lazy: start-up', '# lazy: cycle (X imports this module)' or "
                     "'# host: ...' (docs/architecture.md, Floors):\n" + "\n".join(bad))


def test_the_local_import_check_finds_an_untagged_import():
    code = ("import os\n"                                     # 1: module level, needs no reason
            "\n"
            "def f():\n"
            "    import json\n"                              # 4: flagged
            "    from typing import (Any,\n"                  # 5: reason on its last line
            "                        List)  # lazy: start-up\n"
            "    import onnx  # optional: heavy\n"
            "    import re; s = '# lazy: a string'\n"         # 8: flagged, a string is no comment
            "    import backbones  # noqa: F401  # host: the checkout's\n"
            "\n"
            "class C:\n"
            "    async def g(self):\n"
            "        def h():\n"
            "            import csv\n"                       # 14: flagged once, nested
            "        import sys  # lazy: cycle (x imports this module)\n")
    assert _untagged_local_imports(code, "x.py") == ["x.py:4: import json", "x.py:8: import re; s = '# lazy: a string'",
                                                     "x.py:14: import csv"]
    assert _untagged_local_imports("def f():\n    import json  # lazy: start-up\n", "x.py") == []
