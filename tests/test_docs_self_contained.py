"""The repository explains itself: its docs and comments cite only what it holds.

The behaviour the model follows is written in ``docs/behaviour.md``. Every Markdown
document a doc or a comment names must be a file of the repository, and nothing cites
a tracker's issue number or "the reference" the project started from: a reader would
find neither here.
"""

from __future__ import annotations

import os
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
#: A Markdown document named in a line (a bare name, or a path).
DOCUMENT = re.compile(r"[\w./-]*[\w-]+\.md\b")
#: What points outside the repository without naming a file.
OUTSIDE = re.compile(r"\b[Ii]ssue \d+|decisions? \d+ of the reference")


def _documents() -> frozenset[str]:
    """The names of the repository's Markdown files (virtual environments aside)."""
    names: set[str] = set()
    for _, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        names.update(name for name in files if name.endswith(".md"))
    return frozenset(names)


DOCUMENTS = _documents()


def _missing_documents(path: Path, line: str) -> list[str]:
    """The Markdown documents ``line`` of ``path`` names that the repository lacks."""
    missing = []
    for cited in DOCUMENT.findall(line):
        if "/" in cited:
            relative = cited.removeprefix("./")
            if not ((ROOT / relative).is_file() or (path.parent / cited).is_file()):
                missing.append(cited)
        elif cited not in DOCUMENTS:
            missing.append(cited)
    return missing


def test_the_sources_are_found() -> None:
    assert ROOT / "docs" / "behaviour.md" in SOURCES
    assert len(SOURCES) > 100


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_cites_a_file_outside_the_repository(path: Path) -> None:
    found = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line) or _missing_documents(path, line)
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
