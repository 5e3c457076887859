"""The README's command-line drill, run verbatim: each ``$`` line in a shell, in an
empty folder holding the README's ``hvdr.toml``; what each prints must be what the
README shows, line for line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def fenced_after(text: str, marker: str) -> str:
    """The fenced block right after ``<!-- marker -->``."""
    found = re.search(
        rf"<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)\n```", text, re.DOTALL
    )
    assert found is not None, f"README.md has no block after <!-- {marker} -->"
    return found.group(1)


def steps(console: str) -> list[tuple[str, list[str]]]:
    """Each command of a console block and the lines it prints."""
    found: list[tuple[str, list[str]]] = []
    for line in console.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        else:
            assert found, f"output before any command: {line!r}"
            found[-1][1].append(line)
    return found


@pytest.mark.slow
def test_the_readme_cli_drill_runs_verbatim(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    (tmp_path / "hvdr.toml").write_text(
        fenced_after(text, "cli-drill:config") + "\n", encoding="utf-8"
    )
    drill = steps(fenced_after(text, "cli-drill:commands"))
    assert len(drill) >= 10
    # The README's `hvdr` is this checkout's (the venv's console script).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    environment = {**os.environ, "PATH": path, "COLUMNS": "80"}
    for command, expected in drill:
        ran = subprocess.run(  # stderr into stdout, in order, as a terminal shows
            ["bash", "-c", command],
            cwd=tmp_path, env=environment, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=120, check=False,
        )  # fmt: skip
        said = ran.stdout.splitlines()
        assert said == expected, f"$ {command}"
        if not command.endswith('echo "exit $?"'):
            assert ran.returncode == 0, f"$ {command}: exit {ran.returncode}"
