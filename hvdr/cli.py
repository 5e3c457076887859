"""The ``hvdr`` command line: one subcommand per module under ``hvdr.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` to a function taking the parsed namespace and returning the exit status
(``hvdr.status``). Bad usage, from argparse or from a command (``UsageError``), is
one line on stderr and status 2, never a traceback; Ctrl-C that a command does not
handle itself is status 130; a reader of stdout that went away (``| head``) ends it
quietly with 141, as SIGPIPE would.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from hvdr.commands import COMMANDS
from hvdr.status import EPILOG, ExitStatus, UsageError
from hvdr.version import hvdr_version


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line: the command, what was wrong, and
    where to read what is allowed (the usage text is ``--help``'s)."""

    def error(self, message: str) -> NoReturn:
        """Print one line on stderr and exit with status 2."""
        self.exit(
            ExitStatus.USAGE,
            f"{self.prog}: error: {message} (see '{self.prog} --help')\n",
        )


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    parser = Parser(
        prog="hvdr",
        description="A formal, executable model of Hyper-V replication to a secondary "
        "site as Azure Site Recovery orchestrates it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hvdr {hvdr_version()}")
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
        return ExitStatus.USAGE
    prog = f"hvdr {args.command}"
    try:
        status: int = handler(args)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return ExitStatus.USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (``hvdr status --json | head``): stop
        # quietly, as a command killed by SIGPIPE would (the shell's 128 + 13),
        # and point stdout at /dev/null so the exit's flush fails no more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
