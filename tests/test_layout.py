"""The package's modules import only downward: no module reaches itself through
the imports at the top of the files it imports (package __init__ files, which
only gather names, are left out)."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fastbn"


def _modules():
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _top_level_imports(name, path, mods, packages):
    package = name if name in packages else name.rsplit(".", 1)[0]
    deps = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            deps.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods)
            deps.add(mod)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
    return {d for d in deps if d in mods and d not in packages and d != name}


def _graph():
    mods = _modules()
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    return {m: _top_level_imports(m, p, mods, packages)
            for m, p in mods.items() if m not in packages}


def _cycle_from(start, graph):
    """A list of modules leading from start back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, trail = stack.pop()
        for dep in graph[node]:
            if dep == start:
                return trail + [start]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, trail + [dep]))
    return None


def test_graph_is_found():
    graph = _graph()
    assert "fastbn._ops" in graph["fastbn.nn.functional"]
    assert "fastbn.autograd" in graph["fastbn._ops"]


@pytest.mark.parametrize("module", sorted(_graph()))
def test_no_import_cycle(module):
    cycle = _cycle_from(module, _graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_detects_a_cycle(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle_from("a", graph) == ["a", "b", "c", "a"]
    assert _cycle_from("d", graph) is None
