"""The repository explains itself: its docs and comments cite only what it holds.

The behaviour the model follows is written in ``docs/behaviour.md``; a citation of a
file outside the repository (the design notes, the behaviour reference the project
started from, a tracker's issue number) would send a reader nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [
        *ROOT.glob("*.md"),
        *(ROOT / "docs").glob("*.md"),
        *(
            path
            for package in (
                "model",
                "invariants",
                "engine",
                "hvdr",
                "tests",
                "benchmarks",
            )
            for path in (ROOT / package).rglob("*.py")
        ),
    ]
)
#: What points outside the repository: the shared design notes and reference, a path
#: above the repository, an issue of the tracker.
OUTSIDE = re.compile(
    r"asr-behaviour|DESIGN\.md|STYLE\.md|\.\./shared|\b[Ii]ssue \d+|"
    r"decisions? \d+ of the reference"
)


def test_the_sources_are_found() -> None:
    assert ROOT / "docs" / "behaviour.md" in SOURCES
    assert len(SOURCES) > 100


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_cites_a_file_outside_the_repository(path: Path) -> None:
    if path == Path(__file__):
        return
    found = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_every_decision_cited_is_written_down() -> None:
    """'decision N' anywhere names one of docs/behaviour.md's numbered decisions."""
    text = (ROOT / "docs" / "behaviour.md").read_text()
    written = {int(n) for n in re.findall(r"^(\d+)\. \*\*", text, re.MULTILINE)}
    assert written == set(range(1, 17))
    cited = {
        int(number)
        for path in SOURCES
        for number in re.findall(r"\b[Dd]ecisions? (\d+)", path.read_text())
    }
    assert cited <= written, sorted(cited - written)
