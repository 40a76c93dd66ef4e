"""Imports flow one way: no module of llm_forget imports, directly or through others, a module that
imports it back. Every import counts, at module level or inside a function."""

import ast
from pathlib import Path

import llm_forget

PKG = Path(llm_forget.__file__).resolve().parent


def module_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """{module: modules of the package it imports}, from the source (nothing is imported)."""
    root = pkg.parent
    files = {}
    for f in pkg.rglob("*.py"):
        parts = list(f.relative_to(root).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {m: set() for m in files}
    for m, f in files.items():
        here = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` names module x when x is one, else the package itself
                targets = [f"{name}.{a.name}" if f"{name}.{a.name}" in files else name for a in node.names]
            else:
                continue
            graph[m] |= {t for t in targets if t in files and t != m}
    return graph


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), set()

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                out.add(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_on_a_known_graph():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert cycles(g) == {("a", "b", "c"), ("e", "f")}


def test_graph_sees_lazy_and_relative_imports():
    g = module_graph()
    assert "llm_forget.evaluation.scoring" in g["llm_forget.evaluation.consistency"]  # inside a function
    assert "llm_forget.evaluation.token_metrics" in g["llm_forget.evaluation.scoring"]
    assert "llm_forget.io" in g["llm_forget.evaluation.suite"]  # `from .. import io`


def test_evaluation_imports_flow_one_way():
    found = cycles(module_graph())
    assert not [c for c in found if any(m.startswith("llm_forget.evaluation") for m in c)]


def test_package_has_no_import_cycle():
    # models loads folders and Hub ids; zoo names are resolved one layer up (zoo.resolve_model_path),
    # and the zoo builds its tiny models with sft.train, not through finetune's name resolution
    assert cycles(module_graph()) == set()
