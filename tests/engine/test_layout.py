"""The engine's modules: each one listed in the package docstring, imports only going up it."""

from __future__ import annotations

import ast
from pathlib import Path

import conversations.engine as engine

ENGINE = Path(engine.__file__).parent


def _listed() -> list[str]:
    """Module names in the order of the package docstring's table."""
    doc = engine.__doc__ or ""
    table = doc.split("\n\n")[1]
    return [line.split()[0] for line in table.splitlines() if not line.startswith(" ")]


def _imports(module: str) -> tuple[set[str], set[str]]:
    """What `module` imports: engine siblings by bare name, anything else by top-level name
    (kept apart: the standard library has a `types` module too)."""
    tree = ast.parse((ENGINE / f"{module}.py").read_text())
    siblings: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            siblings.update({node.module} if node.module else {a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("conversations.engine."):
                siblings.add(node.module.split(".")[2])
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            others.update(alias.name.split(".")[0] for alias in node.names)
    return siblings, others


def test_it_lists_every_module_of_the_engine_once() -> None:
    listed = _listed()
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(p.stem for p in ENGINE.glob("*.py") if p.stem != "__init__")


def test_it_imports_only_modules_listed_above_each_module() -> None:
    listed = _listed()
    for position, module in enumerate(listed):
        siblings, others = _imports(module)
        below = siblings - set(listed[:position])
        assert not below, f"{module} imports {sorted(below)}, listed below it"
        assert "django" not in others, f"{module} imports Django"
