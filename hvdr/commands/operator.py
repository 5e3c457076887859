"""What the operator commands share: the configuration, the orchestrator, the exits.

``hvdr vm``, ``hvdr plan`` and ``hvdr jobs`` each open the orchestrator a
configuration file names (``--config``, default ``hvdr.toml`` in the working folder;
``engine/orchestration/site_config.py``), do one thing, and close it. Their exit
statuses follow the checker's convention (``hvdr.status``):

* 0: done;
* 1: the operation ran and failed (a transfer cut, a full disk, a plan whose VM
  failed): the job records it, and it can be resumed (``hvdr jobs resume N``);
* 2: refused before anything changed: bad usage, a configuration mistake, a name
  the sites do not have, a recovery point not kept, a range outside a disk, damaged
  state found (named, left as it is), or an operation the model does not allow in
  the VM's phase (the model's message, naming what is allowed);
* 130: interrupted (Ctrl-C): the job is left interrupted, to resume or abandon.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import (
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    JobNotFound,
    JobTransitionNotAllowed,
    RecoveryPointNotFound,
    ReplicationError,
    SiteLocked,
    TransitionNotAllowed,
)
from engine.orchestration.orchestrator import Orchestrator
from engine.orchestration.site_config import (
    CONFIG_FILE_DEFAULT,
    load_orchestrator_config,
)
from hvdr.status import ExitStatus

EXITS = """\
exit status:
  0    done
  1    the operation ran and failed: its job records why (resume it once fixed)
  2    refused before anything changed: bad usage or configuration, an unknown
       name, a damaged file, or an operation the model does not allow now (its
       message says what is allowed)
  130  interrupted (Ctrl-C): the job is left interrupted (resume or abandon it)
"""

#: Errors that mean "refused before anything changed": exit 2.
REFUSALS: tuple[type[ReplicationError], ...] = (
    TransitionNotAllowed,
    InvalidConfiguration,
    JobNotFound,
    JobTransitionNotAllowed,
    SiteLocked,
    RecoveryPointNotFound,
    DiskRangeError,
    DamagedState,
)


def add_config(parser: argparse.ArgumentParser) -> None:
    """The ``--config FILE`` option every operator command takes."""
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG_FILE_DEFAULT,
        metavar="FILE",
        help=f"the orchestrator's configuration (TOML; default: {CONFIG_FILE_DEFAULT})",
    )


def with_orchestrator(
    args: argparse.Namespace, work: Callable[[Orchestrator], int]
) -> int:
    """Open the configuration's orchestrator, run ``work``, close it; an engine
    error is one line on stderr and its exit status (module essay)."""
    prog = f"hvdr {args.command}"
    try:
        config = load_orchestrator_config(args.config)
        with Orchestrator.open(config) as orchestrator:
            return work(orchestrator)
    except ReplicationError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return ExitStatus.USAGE if isinstance(error, REFUSALS) else ExitStatus.FAILED
    except BrokenPipeError:
        raise  # the reader of stdout went away (``| head``): not the file system
    except OSError as error:
        # The file system failed under the operation (an I/O error, a disk gone):
        # what was durable stays; the next open recovers the rest.
        print(f"{prog}: error: the file system failed: {error}", file=sys.stderr)
        return ExitStatus.FAILED


def one_line(error: BaseException) -> str:
    """An error and its notes, on one line."""
    notes: list[str] = list(getattr(error, "__notes__", ()))
    return " ".join([str(error), *(f"({note})" for note in notes)])


def register_group(
    subparsers: Any, name: str, help_text: str, description: str, epilog: str
) -> Any:
    """A command with subcommands of its own (``hvdr vm enable ...``)."""
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=epilog + "\n" + EXITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)
