"""``hvdr --version``, and each subcommand's help ending with examples that parse."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from hvdr.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers, by name."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("hvdr has no subcommands")


def examples(help_text: str) -> list[str]:
    """The example command lines of an epilog (the lines after 'examples:' that
    start with 'hvdr')."""
    _, found, tail = help_text.partition("\nexamples:\n")
    assert found, help_text
    return [line.strip() for line in tail.splitlines() if line.startswith("  hvdr ")]


def test_version_names_the_installed_package() -> None:
    """hvdr --version prints the version the package metadata holds; exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "hvdr", "--version"],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stdout.strip()) == (0, f"hvdr {version('hvdr')}")


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_each_subcommand_help_ends_with_examples_that_parse(name: str) -> None:
    """Every subcommand's help has examples; each is that subcommand and parses."""
    lines = examples(subcommands()[name].format_help())
    assert lines, name
    parser = build_parser()
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["hvdr", name], line
        args = parser.parse_args(words[1:])
        assert args.command == name
