"""pktbench/_engine.pyi names what the compiled module has, so mypy checks its callers."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

loops = pytest.importorskip("pktbench._engine", reason="the compiled engine is not built")

STUB = Path(__file__).resolve().parent.parent / "pktbench" / "_engine.pyi"


def _stub_names() -> tuple[set[str], dict[str, set[str]]]:
    tree = ast.parse(STUB.read_text())
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if isinstance(node, ast.ClassDef):
            members[node.name] = {item.name for item in node.body
                                  if isinstance(item, ast.FunctionDef)}
    return names, members


def _public(names: list[str]) -> set[str]:
    return {name for name in names if not name.startswith("_")}


def test_stub_names_every_public_name_of_the_module() -> None:
    names, members = _stub_names()
    module = _public([n for n in dir(loops) if getattr(getattr(loops, n), "__module__", None)
                      in (None, loops.__name__) or n.isupper()])
    module.discard("np")  # the module's own numpy import
    assert module == _public(list(names))
    for cls, stubbed in members.items():
        if cls.startswith("_"):
            continue
        assert _public(dir(getattr(loops, cls))) - _public(dir(object)) == _public(list(stubbed)), cls
