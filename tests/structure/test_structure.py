"""The package's shape: no import cycle among modules or subpackages (lazy imports included), short functions."""
import ast
import os

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "higgs_ds")


def _modules():
    """{dotted module name: parsed AST} for every .py file under higgs_ds/."""
    out = {}
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                name = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
                with open(path) as fh:
                    out[name] = (ast.parse(fh.read(), path), f == "__init__.py")
    return out


def _resolve(module, is_pkg, node):
    """Absolute higgs_ds module names one import statement refers to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("higgs_ds")]
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".") if is_pkg else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    if not base.startswith("higgs_ds"):
        return []
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph():
    """{module: set of higgs_ds modules it imports anywhere in its body (top level or inside functions)}."""
    mods = _modules()
    graph = {}
    for name, (tree, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(d for d in _resolve(name, is_pkg, node) if d in mods and d != name)
        graph[name] = deps
    return graph


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def subpackage_graph(graph):
    """The module graph collapsed to top-level units: higgs_ds.data.x -> higgs_ds.data; a package's own
    __init__ re-exports are edges of the package itself."""
    def unit(m):
        return ".".join(m.split(".")[:2])

    g = {}
    for m, deps in graph.items():
        g.setdefault(unit(m), set()).update(unit(d) for d in deps if unit(d) != unit(m))
    return g


def test_checker_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_cycles():
    assert cycles(import_graph()) == []


def test_no_subpackage_cycles():
    assert cycles(subpackage_graph(import_graph())) == []


def _long_functions(limit, only=None):
    out = []
    for name, (tree, _) in _modules().items():
        if only and name != only:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{name}.{node.name}: {n} lines")
    return out


def test_train_functions_at_most_80_lines():
    assert _long_functions(80, only="higgs_ds.train") == []


def test_package_functions_at_most_100_lines():
    assert _long_functions(100) == []


@pytest.mark.parametrize("limit", [5])
def test_length_checker_sees_long_functions(limit):
    assert _long_functions(limit), "the checker found no function over 5 lines: it is not looking"
