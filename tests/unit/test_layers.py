"""Layers point one way: flows -> tasks -> blocks -> rollbook, and product code never imports the sandbox.

Every module's imports are read with `ast` (top level, inside functions and under `if TYPE_CHECKING`), so a
lazy import counts as much as any other. The sandbox hands its binaries to product code through the variables
`rollbook sandbox env` exports (ROLLBOOK_COSIGN, ROLLBOOK_GRYPE, ...), never through an import.

One exception, by design: `rollbook.cli` is the application's entry point (the `rollbook` command), so it may
import flows and deployments, but only inside its subcommands (lazily), so `rollbook --help` and the
lower layers never load them. The sandbox's own commands reach the CLI as an entry point (`rollbook.commands`).

`python tests/unit/test_layers.py` prints which top-level package imports which.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("flows", "tasks", "blocks", "rollbook", "deployments")
PACKAGES = (*PRODUCT, "sandbox")

# package -> top-level packages it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "deployments": frozenset({"sandbox"}),
    "flows": frozenset({"sandbox", "deployments"}),
    "tasks": frozenset({"sandbox", "deployments", "flows"}),
    "blocks": frozenset({"sandbox", "deployments", "flows", "tasks"}),
    "rollbook": frozenset({"sandbox", "deployments", "flows", "tasks", "blocks"}),
}
# module -> packages it may import all the same, inside a function only
LAZY_ENTRY_POINTS: dict[str, frozenset[str]] = {"rollbook.cli": frozenset({"flows", "deployments"})}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. tasks.scanners
    target: str  # the imported module, absolute, e.g. sandbox.toolchain
    line: int
    lazy: bool  # inside a function body
    source: str  # the statement as written

    @property
    def package(self) -> str:
        return self.target.split(".")[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(module: str, source: str, *, is_package: bool = False) -> list[Import]:
    """Every import statement in `source`, relative ones resolved against `module`."""
    found: list[Import] = []

    def visit(node: ast.AST, *, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(_record(module, alias.name, child, source, lazy=lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.append(_record(module, _absolute(module, child, is_package=is_package), child, source, lazy=lazy))
            visit(child, lazy=lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(source), lazy=False)
    return found


def _absolute(module: str, node: ast.ImportFrom, *, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _record(module: str, target: str, node: ast.stmt, source: str, *, lazy: bool) -> Import:
    text = ast.get_source_segment(source, node) or target
    return Import(module=module, target=target, line=node.lineno, lazy=lazy, source=" ".join(text.split()))


def all_imports() -> Iterator[tuple[Path, Import]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for imp in imports_of(module_name(path), path.read_text(), is_package=path.name == "__init__.py"):
                yield path, imp


def violation(imp: Import) -> str | None:
    """Why this import breaks a layer rule, or None."""
    layer = imp.module.split(".")[0]
    if imp.package not in FORBIDDEN.get(layer, frozenset()):
        return None
    if imp.package in LAZY_ENTRY_POINTS.get(imp.module, frozenset()):
        return None if imp.lazy else f"{imp.module} is the entry point: import {imp.package} inside a function"
    if imp.package == "sandbox":
        return (
            f"{layer}/ is product code and never imports sandbox/ (read the variables `rollbook sandbox env` exports)"
        )
    return f"{layer}/ must not import {imp.package}/ (layers: flows -> tasks -> blocks -> rollbook)"


def test_no_layer_imports_upward_or_the_sandbox() -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{imp.line} ({imp.module}) `{imp.source}`: {why}"
        for path, imp in all_imports()
        if (why := violation(imp))
    ]
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_the_check_sees_lazy_relative_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from flows import FLOWS\n"
        "def scan():\n    from sandbox import toolchain\n"
        "from ..flows.demo import hello_cluster\n"
    )
    found = {imp.target: imp for imp in imports_of("tasks.scanners", source)}
    assert set(found) == {"typing", "flows", "sandbox", "flows.demo"}  # `..` from tasks.scanners is the top level
    assert found["sandbox"].lazy and not found["flows"].lazy
    assert violation(found["typing"]) is None
    assert violation(found["sandbox"]) and violation(found["flows"]) and violation(found["flows.demo"])


def test_the_entry_point_may_import_flows_only_lazily() -> None:
    eager, lazy = imports_of("rollbook.cli", "from flows import FLOWS\ndef run():\n    from flows import FLOWS\n")
    assert violation(eager) == "rollbook.cli is the entry point: import flows inside a function"
    assert violation(lazy) is None
    assert violation(imports_of("rollbook.paths", "def f():\n    import flows\n")[0]) is not None


def import_graph() -> dict[str, set[str]]:
    """Top-level package -> the other project packages it imports (any import, lazy or not)."""
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for _, imp in all_imports():
        layer = imp.module.split(".")[0]
        if imp.package in PACKAGES and imp.package != layer:
            graph[layer].add(imp.package)
    return graph


if __name__ == "__main__":
    for package, targets in import_graph().items():
        print(f"{package:<12} -> {', '.join(sorted(targets)) or '(none)'}")
    sys.exit(0)
