"""Exit statuses of ``hvdr``, and the one error every command raises for bad input.

Scripts and CI branch on the status, so each means one thing in every command:

* 0: every property held (``check``: on the whole bounded state space);
* 1: a property failed (the counterexample is printed and written), or a trace
  contradicts itself (a step refused that it does not mark as an expected refusal);
* 2: bad usage or input: one line on stderr names what was wrong and what is
  allowed, never a traceback;
* 3: the search is incomplete: a limit was hit before the end (the message names
  the flag that lifts it); nothing failed in the part searched;
* 130: interrupted (Ctrl-C, 128 + SIGINT as shells count it), after printing the
  statistics so far.
"""

from __future__ import annotations

import enum
import os
import tempfile
import textwrap
from pathlib import Path


class ExitStatus(enum.IntEnum):
    """What a run of ``hvdr`` ended with; see the module essay."""

    OK = 0
    FAILED = 1
    USAGE = 2
    INCOMPLETE = 3
    INTERRUPTED = 130


#: The exit statuses as ``hvdr --help`` prints them (argparse epilog).
EPILOG = """\
exit status:
  0    every property held (check: the whole bounded state space was searched)
  1    a property failed: the counterexample is printed and written as a trace;
       for replay also a step refused that the trace does not mark as expected
  2    bad usage or input: one line on stderr says what was wrong and what is
       allowed
  3    search incomplete: a limit was hit (the message names the flag that
       lifts it)
  130  interrupted (Ctrl-C): the statistics so far are printed
"""


def examples(*cases: tuple[str, str]) -> str:
    """A subcommand's epilog: each example command line with what it does."""
    lines = ["examples:"]
    indent = " " * 6
    for command, what in cases:
        wrapped = textwrap.fill(
            what, 78, initial_indent=indent, subsequent_indent=indent
        )
        lines += [f"  {command}", wrapped]
    return "\n".join(lines) + "\n"


class UsageError(Exception):
    """Bad usage or input found by a command (exit status 2).

    ``hvdr``'s ``main`` prints the message as one line on stderr, prefixed by the
    command; the message names what was wrong and what is allowed.
    """


def check_output_path(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output file that could not be written: ``path``
    (the value of ``flag``) is a folder, or its folder is missing or not writable."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        msg = f"{flag} {str(path)!r} is a folder; give a file name"
        raise UsageError(msg)
    if not folder.is_dir():
        msg = f"{flag} {str(path)!r}: its folder {str(folder)!r} does not exist"
        raise UsageError(msg)
    if not os.access(folder, os.W_OK):
        msg = f"{flag} {str(path)!r}: its folder {str(folder)!r} is not writable"
        raise UsageError(msg)
    if path.exists() and not os.access(path, os.W_OK):
        msg = f"{flag} {str(path)!r} exists and is not writable"
        raise UsageError(msg)
    try:  # what access() cannot tell (a read-only mount, /proc, root): try it
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        msg = f"{flag} {str(path)!r}: cannot write in {str(folder)!r}: "
        msg += f"{error.strerror or error}"
        raise UsageError(msg) from None


def check_outputs(*outputs: tuple[Path | None, str]) -> None:
    """``check_output_path`` for each (path, flag), and refuse one file given to
    two flags (the second write would overwrite the first)."""
    seen: dict[Path, str] = {}
    for path, flag in outputs:
        check_output_path(path, flag)
        if path is None:
            continue
        key = path.resolve()
        if key in seen:
            msg = f"{flag} and {seen[key]} name the same file {str(path)!r}; give "
            msg += "each output its own"
            raise UsageError(msg)
        seen[key] = flag
