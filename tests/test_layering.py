"""The layering of docs/architecture.md holds: import-linter's contracts (pyproject.toml), no import circle
between modules, ext/ imports nothing from sensor/, only the selector loads the compiled module, and every
compiled name has its reference twin."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys

import grimp
import pytest

from conftest import ROOT
from sensor import loop


def test_import_contracts_hold():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    process = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-2000:]
    assert "0 broken" in process.stdout


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm over the module graph: every group of modules that import each other in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def test_no_import_circle_between_modules():
    """Function-level imports count too: an import done late is still a circle in the design."""
    assert strongly_connected(grimp.build_graph("sensor")) == []


def test_ext_imports_nothing_from_sensor():
    for path in sorted((ROOT / "ext").glob("*.p[yx][xid]")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.match(r"\s*(from|c?import)\s+sensor\b", line), f"{path.name}:{number}: {line.strip()}"


def test_only_the_selector_loads_the_compiled_module():
    for path in sorted((ROOT / "sensor").rglob("*.py")):
        if path == ROOT / "sensor" / "loop.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            assert not any(name == "sensor._loop" for name in names), f"{path.relative_to(ROOT)} imports sensor._loop"


@pytest.mark.parametrize("name", sorted(loop.TWINS))
def test_every_compiled_name_has_its_reference_twin(name):
    module, attribute = loop.TWINS[name].split(":")
    assert hasattr(importlib.import_module(module), attribute)
    if loop.compiled is not None:
        assert hasattr(loop.compiled, name)


def test_the_pure_switch_reaches_every_twin(monkeypatch):
    """TRUESOURCE_PURE=1 picks the reference twin of the loop, the flow table and the query-log decoder."""
    from sensor.decode.loop import ReferenceLoop
    from sensor.flows.reference import ReferenceFlowTable
    from sensor.flows.settings import FlowSettings

    monkeypatch.setenv("TRUESOURCE_PURE", "1")
    assert not loop.use_compiled()
    assert isinstance(loop.make_loop(1, (53,), {}), ReferenceLoop)
    assert isinstance(loop.make_flow_table(FlowSettings()), ReferenceFlowTable)
    assert loop.decode_query_log(b"") == []
    if loop.compiled is not None:
        monkeypatch.delenv("TRUESOURCE_PURE")
        assert loop.use_compiled()
        assert type(loop.make_loop(1, (53,), {})).__name__ == "FastLoop"
        assert type(loop.make_flow_table(FlowSettings())).__name__ == "FlowTable"
