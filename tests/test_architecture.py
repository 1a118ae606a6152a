"""The pipeline runs one way (docs/architecture.md): a stage imports only the stages above it, and
nothing below the API imports hetagent.api. Checked on the source, so a lazy import inside a function
counts too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "hetagent"
# Top to bottom; a stage may import itself and anything earlier in this list.
STAGES = ["errors", "atomic", "guarded", "configs", "modelcards", "workflow", "ir", "passes", "costmodel", "placement",
          "simulator", "backends", "runtime", "deploy", "report"]
MAX_LINES = 900


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "hetagent" or m.startswith("hetagent.")}


def _stage(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _files():
    return sorted(p for p in PKG.rglob("*.py") if _stage(p) in STAGES)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PKG)))
def test_stage_imports_only_stages_above(path):
    mine = STAGES.index(_stage(path))
    for mod in _imports(path):
        parts = mod.split(".")
        if len(parts) < 2 or parts[1] not in STAGES:
            assert parts[:2] != ["hetagent", "api"] and parts[:2] != ["hetagent", "cli"], \
                f"{path.relative_to(PKG)} imports {mod}: only cli.py may use the API"
            continue
        assert STAGES.index(parts[1]) <= mine, \
            f"{path.relative_to(PKG)} ({STAGES[mine]}) imports {mod} ({parts[1]} is a later stage)"


def test_modules_stay_small_or_say_why():
    for path in PKG.rglob("*.py"):
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES:
            head = "\n".join(lines[:30]).lower()
            assert "over 900 lines" in head or "long because" in head, \
                f"{path.relative_to(PKG)} has {len(lines)} lines and no reason at its top"
