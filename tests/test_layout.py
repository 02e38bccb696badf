"""The tree shows the architecture: the project's modules import each other without a cycle (imports inside
functions counted too), each package says what its parts are, and the README's Layout names every package."""

from __future__ import annotations

import ast
from collections import defaultdict

from tests.support.paths import ROOT

PACKAGES = ("optimizers", "study", "workers", "dashboard")


def _modules() -> dict[str, ast.Module]:
    found = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:  # alembic loads these by path; they are not imported
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = ast.parse(path.read_text(), str(path))
    return found


def _resolve(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module → the project modules it imports, at module level or inside a function (``from a import b``
    counts ``a.b`` where that is a module, else ``a``)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, tree in modules.items():
        is_package = name in PACKAGES or any(other.startswith(name + ".") for other in modules)
        base_package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = base_package.split(".")[: len(base_package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                found = _resolve(target, modules)
                if found and found != name and not (found in name.split(".") or name.startswith(found + ".")):
                    graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import():
    modules = {
        "pkg": ast.parse(""),
        "pkg.a": ast.parse("from pkg import b\n"),
        "pkg.b": ast.parse("def f():\n    from pkg.a import thing\n"),
        "pkg.c": ast.parse("import pkg.a\n"),
    }
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_among_the_projects_modules():
    modules = _modules()
    graph = import_graph(modules)
    assert graph["study.cli.running"] >= {"study.driver.runner", "workers.pool"}  # the walk sees lazy imports
    assert cycles(graph) == []


def test_every_package_says_what_its_modules_are_and_the_readme_names_every_package():
    readme = (ROOT / "README.md").read_text()
    for package in sorted(p for p in _modules() if (ROOT / p.replace(".", "/") / "__init__.py").exists()):
        path = ROOT / package.replace(".", "/")
        doc = ast.get_docstring(ast.parse((path / "__init__.py").read_text())) or ""
        if package in PACKAGES:
            assert f"{package}/" in readme, f"README's Layout does not name {package}/"
            continue
        assert f"{package.replace('.', '/')}/" in readme, f"README's Layout does not name {package}/"
        for module in sorted(m.stem for m in path.glob("*.py") if m.stem != "__init__"):
            assert module in doc, f"{package}'s docstring does not say what {module} is"
