"""Every model element the traceability table names exists."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest

from invariants.catalogue import INVARIANTS
from model import ACTIONS, LIFECYCLE, Phase, SystemState, VmState
from model.lifecycle_guards import GUARDS
from model.state import SiteState

ROOT = Path(__file__).resolve().parent.parent
TABLE = (ROOT / "docs" / "traceability.md").read_text(encoding="utf-8")
REFERENCES = re.findall(
    r"`(edge|guard|action|phase|field|invariant|test):([^`\s]+)`", TABLE
)


def _action_guards() -> set[str]:
    return {guard.name for spec in ACTIONS.values() for guard in spec.guards}


def _fields() -> set[str]:
    return {f.name for cls in (VmState, SystemState, SiteState) for f in fields(cls)}


def _test_exists(reference: str) -> bool:
    path, _, name = reference.partition("::")
    source = (ROOT / path).read_text(encoding="utf-8")
    tree = ast.parse(source)
    return any(
        isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body
    )


def test_the_table_covers_every_seed_sentence_and_decision() -> None:
    """S1..S17 and D1..D11 are all there."""
    rows = set(re.findall(r"^\| ([SD]\d+) \|", TABLE, flags=re.MULTILINE))
    assert rows == {f"S{i}" for i in range(1, 18)} | {f"D{i}" for i in range(1, 12)}


@pytest.mark.parametrize(
    ("kind", "name"),
    [ref for ref in dict.fromkeys(REFERENCES) if ref[0] != "invariant"],
    ids=[f"{k}:{n}" for k, n in dict.fromkeys(REFERENCES) if k != "invariant"],
)
def test_every_named_element_exists(kind: str, name: str) -> None:
    """edge, guard, action, phase, field and test references resolve."""
    exists = {
        "edge": lambda: any(edge.trigger == name for edge in LIFECYCLE),
        "guard": lambda: name in GUARDS or name in _action_guards(),
        "action": lambda: name in ACTIONS,
        "phase": lambda: name in {phase.value for phase in Phase},
        "field": lambda: name in _fields(),
        "test": lambda: _test_exists(name),
    }[kind]()
    assert exists, f"{kind}:{name} named in docs/traceability.md does not exist"


def test_named_invariants_exist_in_the_catalogue() -> None:
    """Invariants named in the table are in the catalogue (a catalogue that fails to
    import fails this test: it is no reason to skip)."""
    names = {invariant.name for invariant in INVARIANTS}
    named = [name for kind, name in REFERENCES if kind == "invariant"]
    assert named != [], "docs/traceability.md names no invariant: is its format new?"
    assert [name for name in named if name not in names] == []
