"""The layers point down, and no two files import each other (round about or directly).

Floors, top to bottom (docs/architecture.md, "Layers"):

    gridpay                   the command: every group's wiring
    api                       the operations HTTP API (FastAPI): routers, problems, idempotency
    gateway | engines         the counter channel | the debit channel, notifier, scheduler
    ledger                    the database: schema, postings, reconciliation, key store
    runtime                   what every process shares: bootstrap, ops site, worker processes
    iso8583_specs             the wire
    config                    the configuration

Every import a module makes (at its top or inside a function) is read with ``ast``; imports under
``if TYPE_CHECKING:`` are left out (never run).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MAY_IMPORT: dict[str, set[str]] = {
    "config": set(),
    "iso8583_specs": {"config"},
    "runtime": {"config", "iso8583_specs"},
    "ledger": {"config", "iso8583_specs", "runtime"},
    "gateway": {"ledger", "config", "iso8583_specs", "runtime"},
    "engines": {"ledger", "config", "iso8583_specs", "runtime"},
    "api": {"engines", "ledger", "config", "iso8583_specs", "runtime"},
    "gridpay": {"api", "gateway", "engines", "ledger", "config", "iso8583_specs", "runtime"},
}
# Alembic's scripts: run by the migration tool, which `gridpay db` drives; the env imports every
# area's tables (gridpay.all_tables).
NOT_MODULES = ("ledger/migrations/",)


def module_files() -> dict[str, Path]:
    found = {}
    for package in MAY_IMPORT:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(NOT_MODULES):
                continue
            name = rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
            found[name] = path
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """Dotted names ``name`` imports; ``from a import b`` gives ``a.b`` (a module or not)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names |= {f"{base}.{alias.name}" for alias in node.names} | {base}
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (the longest dotted prefix that is a module)."""
    modules = module_files()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for dotted in imported_names(name, path):
            parts = dotted.split(".")
            for end in range(len(parts), 0, -1):
                if ".".join(parts[:end]) in modules:
                    targets.add(".".join(parts[:end]))
                    break
        targets.discard(name)
        graph[name] = {t for t in targets if not name.startswith(t + ".")}  # a module's own package
    return graph


def test_every_import_points_down():
    upward = []
    for name, targets in import_graph().items():
        floor = name.split(".")[0]
        for target in sorted(targets):
            top = target.split(".")[0]
            if top != floor and top not in MAY_IMPORT[floor]:
                upward.append(f"{name} imports {target}")
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]; counter[0] += 1
                    stack.append(child); on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop(); on_stack.discard(member); component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_between_files():
    found = cycles(import_graph())
    assert not found, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_nothing_imports_the_command():
    importers = [name for name, targets in import_graph().items()
                 if not name.startswith("gridpay") and any(t.startswith("gridpay") for t in targets)]
    assert not importers, f"the gridpay command is imported by {importers}"
