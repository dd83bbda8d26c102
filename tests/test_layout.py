"""The package's layout: reports load no torch, and no module imports itself through others."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HISO = Path(__file__).resolve().parent.parent / "hiso"


def module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package)} of every module under ``root``."""
    out = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def imports_of(name: str, path: Path, is_pkg: bool, known) -> set[str]:
    """The modules of ``known`` that ``name`` imports, anywhere in it (in functions too: a lazy
    import is still a dependency)."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix
                       for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                deps.add(t)
    return deps


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1
                    stack.append(w); on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def import_graph(root: Path = HISO) -> dict[str, set[str]]:
    known = module_names(root)
    return {n: imports_of(n, f, pkg, known) for n, (f, pkg) in known.items()}


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (pkg / "c.py").write_text("from pkg import a\nx = 1\n")
    (pkg / "d.py").write_text("from . import c\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_hiso_has_no_import_cycle():
    graph = import_graph()
    assert "hiso.report.selection" in graph["hiso.cli"]  # the walker sees lazy imports
    assert cycles(graph) == []


def test_tasks_and_methods_do_not_import_the_runner_or_a_report():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith(("hiso.tasks", "hiso.optimizers", "hiso.baselines")):
            bad = {d for d in deps if d in ("hiso.runner", "hiso.cli") or d.startswith("hiso.report")}
            assert not bad, f"{name} imports {bad}"


def test_reports_do_not_import_the_engine():
    engine = ("hiso.runner", "hiso.protocol", "hiso.tasks", "hiso.optimizers", "hiso.baselines",
              "hiso.models", "hiso.module_zo", "hiso.zo", "hiso.deploy")
    for name, deps in import_graph().items():
        if name.startswith("hiso.report"):
            bad = {d for d in deps if d.startswith(engine)}
            assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("module", ["hiso.report", "hiso.report.convergence", "hiso.report.digits",
                                    "hiso.report.theory", "hiso.report.selection",
                                    "hiso.report.diagnostics", "hiso.report.manifest",
                                    "hiso.report.published"])
def test_importing_a_report_loads_no_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
