"""Docs that cannot go stale: docs/ARCHITECTURE.md's layer table is the package (every module in exactly one layer,
every listed module real) and imports only go down its layers; every repo path the docs name exists; no issue
numbers in code or docs."""
import glob
import os
import re

import pytest

from tests.helpers import ROOT
from tests.structure.test_structure import import_graph

ARCH = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
REPO_DIRS = ("higgs_ds/", "tests/", "bench/", "docs/", "configs/", "ds_configs/", "scripts/", "launch/", "requirements/", ".ci/")


def layer_table(text):
    """[(layer name, {unit: listed modules or None})] from the '## Layers' table; a unit is `x.py` or `dir/`."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("layer", "") or set(cells[0]) <= set("-"):
            continue
        units = {}
        for m in re.finditer(r"`([\w/.]+)`(?:\s*\(([^)]*)\))?", cells[1]):
            units[m.group(1)] = {s.strip() for s in m.group(2).split(",")} if m.group(2) else None
        rows.append((cells[0], units))
    return rows


def package_units():
    """{unit: modules in it}: top-level modules `x.py` -> {x}; (sub)package dirs `a/b/` -> their module names."""
    out = {}
    for path in glob.glob(os.path.join(ROOT, "higgs_ds", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, os.path.join(ROOT, "higgs_ds"))
        d, name = os.path.split(rel)
        if not d:
            out.setdefault(name, set()).add(name[:-3])
        elif name != "__init__.py":
            out.setdefault(d + "/", set()).add(name[:-3])
        else:
            out.setdefault(d + "/", set())
    return out


def unit_of(module):
    """The table unit of a dotted module name (higgs_ds.data.sources.base -> data/sources/)."""
    parts = module.split(".")[1:]
    pkg = os.path.join(ROOT, "higgs_ds", *parts)
    if os.path.isdir(pkg):
        return "/".join(parts) + "/"
    return "/".join(parts[:-1]) + "/" if len(parts) > 1 else parts[0] + ".py"


def test_layer_table_lists_every_module_once_and_nothing_else():
    with open(ARCH) as f:
        rows = layer_table(f.read())
    assert len(rows) >= 5, "no layer table found under '## Layers'"
    listed = [u for _, units in rows for u in units]
    actual = package_units()
    assert sorted(set(listed)) == sorted(listed), "a unit is in two layers"
    assert set(listed) == set(actual), (f"in the package, not the table: {sorted(set(actual) - set(listed))}; "
                                        f"in the table, not the package: {sorted(set(listed) - set(actual))}")
    for _, units in rows:
        for unit, modules in units.items():
            if modules is not None:
                assert modules == actual[unit], (unit, "missing:", actual[unit] - modules, "extra:",
                                                 modules - actual[unit])


def layer_violations(rows, graph):
    """Import edges from a module to a module of a higher layer (rows are listed top to bottom)."""
    rank = {u: i for i, (_, units) in enumerate(rows) for u in units}
    return sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                  if rank[unit_of(b)] < rank[unit_of(a)])


def test_imports_only_go_down_the_layers():
    with open(ARCH) as f:
        rows = layer_table(f.read())
    assert layer_violations(rows, import_graph()) == []


def test_layer_checker_sees_an_upward_import():
    rows = [("top", {"train.py": None}), ("low", {"config.py": None})]
    assert layer_violations(rows, {"higgs_ds.config": {"higgs_ds.train"}, "higgs_ds.train": {"higgs_ds.config"}}) \
        == ["higgs_ds.config -> higgs_ds.train"]


def named_paths(path, text):
    """(line, path) for every repo path the markdown text names: links, and code spans that start at a repo dir or
    name a .py file (tried at the root, under higgs_ds/ and under tests/)."""
    for m in re.finditer(r"`([^`\s]+)`|\]\(([^)\s#]+)", text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group(2):
            if not m.group(2).startswith(("http://", "https://", "mailto:")):
                yield line, [os.path.normpath(os.path.join(os.path.dirname(path), m.group(2)))]
            continue
        p = m.group(1).split(":")[0]
        if p.startswith(REPO_DIRS):
            yield line, [os.path.join(ROOT, p)]
        elif re.fullmatch(r"[\w./-]+/[\w.-]+\.py", p):
            yield line, [os.path.join(ROOT, d, p) for d in ("", "higgs_ds", "tests")]


def missing_paths(files):
    out = []
    for path in files:
        with open(path) as f:
            text = f.read()
        for line, candidates in named_paths(path, text):
            if not any(glob.glob(c.rstrip("/")) for c in candidates):
                out.append(f"{os.path.relpath(path, ROOT)}:{line}: {os.path.relpath(candidates[0], ROOT)}")
    return out


def doc_files():
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + \
        sorted(glob.glob(os.path.join(ROOT, "*", "README.md")))


def test_every_path_the_docs_name_exists():
    assert missing_paths(doc_files()) == []


def test_path_checker_sees_a_stale_path(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("see `higgs_ds/nowhere.py`, [here](missing.md) and `engine/checkpoint.py`\n")
    assert len(missing_paths([str(doc)])) == 2


ISSUE_REF = re.compile(r"\b[Ii]ssues? #?\d+|\(#\d+\)|for #\d+")


@pytest.mark.parametrize("tree", ["higgs_ds", "tests", "bench", "docs", "scripts", "launch", "README.md"])
def test_no_issue_numbers_in_code_or_docs(tree):
    paths = [os.path.join(ROOT, tree)] if tree.endswith(".md") else \
        glob.glob(os.path.join(ROOT, tree, "**", "*.*"), recursive=True)
    hits = []
    for path in paths:
        if path.endswith((".py", ".md", ".sh", ".json")):
            with open(path, errors="replace") as f:
                for i, line in enumerate(f, 1):
                    if ISSUE_REF.search(line) and "boson-ai/higgs-audio" not in line:
                        hits.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()[:100]}")
    assert hits == []
