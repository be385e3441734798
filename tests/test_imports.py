"""The package's import graph: no cycles between its modules, and no import inside a function without
a comment saying why it is there."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cnnzoo"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.ImportFrom | ast.Import, module: str, is_package: bool) -> list[str]:
    """The cnnzoo modules an import statement names (``from . import x`` names the module ``x`` if there is one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("cnnzoo")]
    if node.level == 0:
        base = node.module or ""
        if not base.startswith("cnnzoo"):
            return []
    else:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    names = [f"{base}.{alias.name}" for alias in node.names]
    return [name for name in names if name in MODULES] or [base]


def module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    module = module_name(path)
    found = set()
    for node in tree.body:  # module level only; `if TYPE_CHECKING:` blocks are not run
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(imported(node, module, path.name == "__init__.py"))
    return {name for name in found if name != module}


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def test_the_package_has_no_import_cycles():
    graph = {module_name(p): module_level_imports(p) & MODULES for p in PACKAGE.rglob("*.py")}
    for module, targets in graph.items():  # importing a.b runs a first
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            assert state.get(target) != "open", "import cycle: " + " -> ".join([*path, node, target])
            if target not in state:
                visit(target, [*path, node])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_every_import_inside_a_function_says_why():
    unexplained = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        # the comment on the line, or on one of the three above (a group of imports)
                        if not any("#" in line for line in lines[max(0, inner.lineno - 4) : inner.lineno]):
                            unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}")
    assert not unexplained, "imports inside functions without a comment: " + ", ".join(sorted(set(unexplained)))
