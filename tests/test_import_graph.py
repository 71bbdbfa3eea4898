"""The layering DESIGN.md promises, checked on the source: who may import whom.

- The role families (``producers``, ``processors``, ``consumers``) stand side
  by side on the core: none imports another.
- The core (``sfsync``) imports no role, except through the one composition
  module ``sfsync/roles.py`` that ``sfsync run`` uses.
- The operations layer (``sfsync/operations/``: status, control, DLQ, alerts) is what the CLI and a
  dashboard call; roles use only the narrow names of ``sfsync.operations.ROLE_API``.
- The emulator is a product of its own: it imports nothing of the rest of the
  core but itself (so ``pip install 'sfsync[emulator]'`` is all it needs), and
  test harnesses live in the dev stack, not in it.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("producers", "processors", "consumers")
COMPOSITION = {"sfsync/roles.py"}
#: what the emulator may use of the core: nothing but itself and the dependency-free helpers below
EMULATOR_MAY_USE = ("sfsync.emulator",)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _sources(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def _edges(top: str) -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), m) for p in _sources(top) for m in sorted(_imports(p))]


def test_the_tree_has_sources() -> None:
    for top in ("sfsync", *FAMILIES):
        assert _sources(top), f"no Python files under {top}/"


@pytest.mark.parametrize("family", FAMILIES)
def test_no_role_family_imports_another(family: str) -> None:
    others = [f for f in FAMILIES if f != family]
    bad = [(src, mod) for src, mod in _edges(family) if mod.split(".")[0] in others]
    assert bad == [], f"{family}/ imports another role family: {bad}"


def test_the_core_imports_no_role_outside_the_composition_module() -> None:
    bad = [(src, mod) for src, mod in _edges("sfsync")
           if mod.split(".")[0] in FAMILIES and src not in COMPOSITION]
    assert bad == [], f"the core imports a role: {bad}"


def test_the_emulator_imports_only_itself_from_the_core() -> None:
    bad = [(src, mod) for src, mod in _edges("sfsync/emulator")
           if mod.split(".")[0] in ("sfsync", *FAMILIES) and not mod.startswith(EMULATOR_MAY_USE)]
    assert bad == [], f"the emulator imports the rest of sfsync: {bad}"


def _from_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from module import name`` in ``path`` (lazy ones too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 for alias in node.names]


@pytest.mark.parametrize("family", FAMILIES)
def test_roles_use_only_the_narrow_api_of_the_operations_layer(family: str) -> None:
    """The operations layer (``sfsync/operations/``) is what the CLI and a dashboard call; a role may use only
    the few names listed in ``sfsync.operations.ROLE_API`` (the sinks follow the control topic and count
    failures), never a use case, and never the package as a whole."""
    from sfsync.operations import ROLE_API

    bad = []
    for path in _sources(family):
        src = str(path.relative_to(ROOT))
        bad += [(src, m) for m in _imports(path) if m == "sfsync.operations" or
                (m.startswith("sfsync.operations.") and m not in ROLE_API)]
        bad += [(src, f"{m}.{name}") for m, name in _from_imports(path)
                if m in ROLE_API and name not in ROLE_API[m]]
    assert bad == [], f"{family}/ reaches into the operations layer: {bad}"


def test_the_operations_layer_imports_no_role() -> None:
    bad = [(src, mod) for src, mod in _edges("sfsync/operations") if mod.split(".")[0] in FAMILIES]
    assert bad == [], f"the operations layer imports a role: {bad}"


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os\n\ndef f():\n    from processors.app import run\n    from . import x\n")
    assert _imports(sample) == {"os", "processors.app"}
