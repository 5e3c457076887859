"""Diagrams come from the model, and the committed ones are not stale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvdr import diagrams
from model import Phase

ROOT = Path(__file__).resolve().parent.parent
HVDR = Path(sys.executable).parent / "hvdr"


def test_committed_dot_and_mermaid_are_current() -> None:
    """Regenerating from the model gives the committed text (run `make diagrams`)."""
    texts = diagrams.generate()
    committed_dot = (ROOT / "diagrams" / "lifecycle.dot").read_text(encoding="utf-8")
    committed_mmd = (ROOT / "diagrams" / "lifecycle.mmd").read_text(encoding="utf-8")
    assert texts.dot == committed_dot, "diagrams/lifecycle.dot is stale: make diagrams"
    assert texts.mermaid == committed_mmd, "lifecycle.mmd is stale: make diagrams"
    committed_md = (ROOT / "diagrams" / "lifecycle.md").read_text(encoding="utf-8")
    assert diagrams.markdown() == committed_md, "lifecycle.md is stale: make diagrams"


def test_readme_embeds_the_current_mermaid() -> None:
    """README.md shows the same Mermaid text, so it renders on a code host."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert diagrams.generate().mermaid in readme


def test_every_phase_and_trigger_is_drawn() -> None:
    """Every phase is a node and every trigger labels some edge."""
    texts = diagrams.generate()
    for phase in Phase:
        assert f'state "{phase.name}" as {phase.name}' in texts.mermaid
        assert phase.name in texts.dot
    from model.lifecycle import TRIGGERS

    for trigger in TRIGGERS:
        assert trigger in texts.mermaid


def test_status_and_happy_path_are_computed_from_the_model() -> None:
    """Statuses follow decision 2; the happy path runs protect -> failback."""
    statuses = diagrams.phase_statuses()
    assert statuses[Phase.PROTECTED] == "protected"
    assert statuses[Phase.RESYNCHRONIZING] == "unprotected"
    assert statuses[Phase.COMMITTED] == "depends"
    happy = diagrams.happy_path_edges()
    assert ("COMMITTED", "REVERSE_REPLICATING") in happy
    assert ("COMMITTED", "PROTECTED") in happy
    assert ("PROTECTED", "FAILOVER_PREPARED") in happy


def test_without_dot_the_cli_writes_text_and_says_how_to_get_svg(
    tmp_path: Path,
) -> None:
    """No Graphviz on PATH: DOT and Mermaid are written, and the fix is named."""
    env = {**os.environ, "PATH": str(HVDR.parent)}
    result = subprocess.run(
        [str(HVDR), "diagram", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert "apt-get install graphviz" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lifecycle.dot",
        "lifecycle.md",
        "lifecycle.mmd",
    ]


@pytest.mark.skipif(not diagrams.dot_available(), reason="Graphviz 'dot' not installed")
def test_with_dot_the_cli_renders_svg(tmp_path: Path) -> None:
    """With Graphviz, the SVG is rendered from the generated DOT."""
    subprocess.run(
        [str(HVDR), "diagram", "--format", "svg", "--out", str(tmp_path)], check=True
    )
    svg = (tmp_path / "lifecycle.svg").read_text(encoding="utf-8")
    assert "<svg" in svg
    assert "FAILED_OVER" in svg
