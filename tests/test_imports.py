"""The import graph of pktbench: no cycle, no module writing into another's
state, and the workload registry is explicit, read-only and complete."""
from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import click
import pytest

from pktbench import protocol
from pktbench.cli import main
from pktbench.workloads import WORKLOADS

PACKAGE = Path(__file__).resolve().parent.parent / "pktbench"

# Calls that change a dict, list or set in place.
MUTATORS = frozenset({"append", "extend", "insert", "update", "add", "setdefault", "pop",
                      "popitem", "remove", "discard", "clear", "__setitem__", "__delitem__"})


def load(root: Path) -> dict[str, ast.Module]:
    """Every module under the package directory `root`, by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return modules


def _base(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = name.split(".")
    if not is_package:
        parts.pop()
    parts = parts[:len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def imports(name: str, tree: ast.Module, modules: Mapping[str, ast.Module],
            packages: set[str]) -> Iterator[tuple[str, str | None, str]]:
    """(module imported, name taken from it or None, local alias) for every
    import statement anywhere in the module, function bodies included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, None, alias.asname or alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, name in packages, node)
            for alias in node.names:
                local = alias.asname or alias.name
                if f"{base}.{alias.name}" in modules:  # `from pkg import submodule`
                    yield f"{base}.{alias.name}", None, local
                elif base in modules:
                    yield base, alias.name, local


def graph(modules: Mapping[str, ast.Module], packages: set[str]) -> dict[str, set[str]]:
    return {name: {target for target, _, _ in imports(name, tree, modules, packages)
                   if target != name}
            for name, tree in modules.items()}


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def foreign_writes(modules: Mapping[str, ast.Module], packages: set[str]) -> list[str]:
    """Places where a module changes another module's state: assigns to or
    deletes an attribute of an imported module, stores into an item of one
    of its globals, or calls a mutating method on one."""
    found = []
    for name, tree in modules.items():
        # alias -> module for `import m` / `from pkg import m`; alias -> (module,
        # global) for `from m import NAME`
        as_module: dict[str, str] = {}
        as_global: dict[str, str] = {}
        for target, taken, local in imports(name, tree, modules, packages):
            if taken is None:
                as_module[local] = target
            else:
                as_global[local] = f"{target}.{taken}"

        def foreign(node: ast.expr) -> str | None:
            """The other module's global that `node` names, if it does."""
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in as_module):
                return f"{as_module[node.value.id]}.{node.attr}"
            if isinstance(node, ast.Name) and node.id in as_global:
                return as_global[node.id]
            return None

        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            elif isinstance(node, ast.Delete):
                targets = node.targets
            for target in targets:
                if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                        and target.value.id in as_module):
                    found.append(f"{name}:{target.lineno} sets "
                                 f"{as_module[target.value.id]}.{target.attr}")
                elif isinstance(target, ast.Subscript) and (owner := foreign(target.value)):
                    found.append(f"{name}:{target.lineno} stores into {owner}[...]")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in MUTATORS and (owner := foreign(node.func.value))):
                found.append(f"{name}:{node.lineno} calls {owner}.{node.func.attr}()")
    return found


def _checked(root: Path) -> tuple[dict[str, ast.Module], set[str]]:
    modules = load(root)
    packages = {name for name in modules
                if (root.parent / name.replace(".", "/") / "__init__.py").exists()}
    return modules, packages


def test_no_import_cycle_anywhere_in_pktbench() -> None:
    modules, packages = _checked(PACKAGE)
    assert "pktbench.workloads.resp" in modules  # the walk sees the subpackage
    assert cycles(graph(modules, packages)) == []


def test_no_module_writes_into_another_modules_state() -> None:
    modules, packages = _checked(PACKAGE)
    assert foreign_writes(modules, packages) == []


def test_the_checks_catch_a_cycle_and_a_foreign_registry(tmp_path: Path) -> None:
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text("HANDLERS = {}\nITEMS = []\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "plugin.py").write_text(
        "from fakepkg import core\n"
        "from fakepkg.core import ITEMS\n"
        "core.HANDLERS['x'] = 1\n"
        "def later():\n"
        "    from .. import core as c\n"
        "    c.HANDLERS.update(y=2)\n"
        "    ITEMS.append(3)\n"
        "    c.LIMIT = 4\n")
    (pkg / "a.py").write_text("def f():\n    from fakepkg import b\n")
    (pkg / "b.py").write_text("import fakepkg.a\n")
    modules, packages = _checked(pkg)
    assert cycles(graph(modules, packages)) == [["fakepkg.a", "fakepkg.b"]]
    writes = foreign_writes(modules, packages)
    assert writes == ["fakepkg.sub.plugin:3 stores into fakepkg.core.HANDLERS[...]",
                      "fakepkg.sub.plugin:8 sets fakepkg.core.LIMIT",
                      "fakepkg.sub.plugin:6 calls fakepkg.core.HANDLERS.update()",
                      "fakepkg.sub.plugin:7 calls fakepkg.core.ITEMS.append()"]


def test_the_session_reaches_workloads_only_through_the_registry() -> None:
    modules, packages = _checked(PACKAGE)
    edges = graph(modules, packages)
    assert {m for m in edges["pktbench.session"] if m.startswith("pktbench.workloads")} <= {
        "pktbench.workloads", "pktbench.workloads.base"}
    seen: set[str] = set()
    todo = [m for m in modules if m.startswith("pktbench.workloads")]
    while todo:  # nothing a workload imports leads back to the session
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(edges[module])
    assert "pktbench.session" not in seen


def _cli_workloads() -> set[str]:
    accepted: set[str] = set()
    assert isinstance(main, click.Group)
    for command in main.commands.values():
        for param in command.params:
            if param.name == "workload" and isinstance(param.type, click.Choice):
                accepted.update(str(choice) for choice in param.type.choices)
    return accepted


def test_the_registry_is_read_only_and_lists_every_workload_the_cli_accepts() -> None:
    assert isinstance(WORKLOADS, MappingProxyType)
    with pytest.raises(TypeError):
        WORKLOADS["extra"] = WORKLOADS["rr"]  # type: ignore[index]
    accepted = _cli_workloads()
    assert accepted == {"rr", "blast", "rr-tcp", "bulk"}
    assert set(WORKLOADS) == accepted == set(protocol.WORKLOADS)
    for name, workload in WORKLOADS.items():
        assert workload.name == name
        assert workload.transport in ("udp", "tcp")
        assert callable(workload.run_client_step) and callable(workload.server_handler)
    with pytest.raises(AttributeError):
        WORKLOADS["rr"].name = "other"  # type: ignore[misc]


def test_every_registered_workload_is_served() -> None:
    """The server arms each registered workload from the registry alone."""
    from pktbench.address import Target
    from pktbench.errors import ConfigError
    from pktbench.protocol import StepParams
    from pktbench.session import Client, ServerConfig
    from engine_support import serving

    with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
        assert server.workloads is WORKLOADS
        with Client(Target(*server.address)) as client:
            for name in ("rr", "blast"):
                result = client.run_step(StepParams(
                    workload=name, command="ping" if name == "rr" else "none",
                    rate_pps=500, duration_s=0.1, drain_s=0.1, timeout_s=0.2))
                assert result["sent_packets"] > 0
                assert result["received_packets"] > 0
            with pytest.raises(ConfigError, match="pktbench bulk"):
                client.run_step(StepParams(workload="bulk", command="none", duration_s=0.1))
