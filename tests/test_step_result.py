"""The step result's schema lives in code; its document and its builder follow it."""
from __future__ import annotations

import ast
from pathlib import Path

from pktbench import step
from pktbench.address import Target
from pktbench.protocol import StepParams
from pktbench.session import Client, ServerConfig
from pktbench.step import STEP_FIELDS, SenderFigures, StepResult
from engine_support import serving

ROOT = Path(__file__).resolve().parent.parent


def test_every_key_of_the_type_is_documented_and_nothing_else():
    assert set(STEP_FIELDS) == set(StepResult.__annotations__)


def test_the_document_is_rendered_from_the_code():
    doc = (ROOT / "docs" / "step-result.md").read_text()
    assert doc == step.render_doc(), "run `python -m pktbench.step > docs/step-result.md`"


def test_a_measured_step_has_exactly_the_schemas_keys():
    with serving(ServerConfig(bind="127.0.0.1", port=0)) as server:
        with Client(Target(*server.address)) as client:
            result = client.run_step(StepParams(workload="rr", command="ping", rate_pps=1000,
                                                duration_s=0.2, drain_s=0.1, timeout_s=0.2))
    required = StepResult.__required_keys__
    assert required <= set(result) <= set(StepResult.__annotations__)
    assert set(result["sender"]) <= set(SenderFigures.__annotations__)
    assert {"interface", "nic", "cpu_percent"} <= set(result["sender"])


def test_no_module_writes_into_a_step_after_it_is_built():
    """step.py builds the result; elsewhere a step's keys are only read."""
    offenders = []
    def is_step(node: ast.AST) -> bool:
        while isinstance(node, ast.Subscript):
            node = node.value
        return isinstance(node, ast.Name) and node.id == "step"

    for path in sorted((ROOT / "pktbench").rglob("*.py")):
        if path.name == "step.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("update", "setdefault", "pop", "clear")
                    and is_step(node.func.value)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AugAssign) else [])
            for target in targets:
                base = target
                while isinstance(base, ast.Subscript):
                    base = base.value  # type: ignore[assignment]
                if (isinstance(target, ast.Subscript) and isinstance(base, ast.Name)
                        and base.id == "step"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
