"""The ``hvdr`` command line: one subcommand per module under ``hvdr.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` to a function taking the parsed namespace and returning the exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hvdr.commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="hvdr",
        description="A formal, executable model of Hyper-V replication to a secondary "
        "site as Azure Site Recovery orchestrates it.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hvdr`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    status: int = handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
