"""``hvdr explore``: walk the model's states in a browser, one step at a time.

Serves the page of ``hvdr.explore`` on 127.0.0.1 (never another address: the
server has no authentication) with uvicorn, on ``--port`` (0: a free port), and
prints the one line a person or a script needs, the URL::

    hvdr explore: serving http://127.0.0.1:8765/ (Ctrl-C stops)

The model is chosen as for ``hvdr check`` (``--config FILE`` and the same flags,
``hvdr.model_options``); a trace loaded in the page brings its own configuration
in its header. A configuration over the explorer's caps
(``hvdr.explore.view.BOUNDS_MAX``: at most 4 VMs, 8 disks, lag, points and faults,
8 plans of 8 groups) is refused, here as in the page. Exit status: 0 stopped with
Ctrl-C or SIGTERM (``hvdr explore: stopped`` on stderr); 2 bad usage (a
configuration over the caps or otherwise bad, a port that cannot be listened on),
one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from hvdr.model_options import add_model_arguments, config_from_args, whole_number
from hvdr.status import ExitStatus, UsageError

if TYPE_CHECKING:
    import uvicorn

#: The only address the explorer listens on.
HOST = "127.0.0.1"
PORT_DEFAULT = 8765
PORT_MAX = 65535

DESCRIPTION = """\
Serve a page on 127.0.0.1 that starts at the initial state, lists the enabled
actions with their arguments and the refused ones with the model's reason, takes
a step, goes back, shows the full state and the lifecycle with the current phase
highlighted, and loads and saves traces (docs/trace-format.md)."""

EXAMPLE = """\
examples:
  hvdr explore
  hvdr explore --port 0 --config small.json
  hvdr explore --vms 2 --mutant commit_keeps_recovery_points

It prints the page's address, e.g. "hvdr explore: serving
http://127.0.0.1:40461/ (Ctrl-C stops)"; Ctrl-C or SIGTERM stops the server
("hvdr explore: stopped", exit 0). It caps the configuration (at most 4 VMs; 8
disks, lag, points, faults, plans and groups) and answers only its own page:
Host 127.0.0.1:PORT or localhost:PORT, POSTs of Content-Type application/json.
"""


def register(subparsers: Any) -> None:
    """Add the ``explore`` subcommand."""
    parser = subparsers.add_parser(
        "explore",
        help="explore the model's states step by step in a browser (local page)",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--port",
        type=whole_number(0),
        default=PORT_DEFAULT,
        help=f"port on {HOST} (default {PORT_DEFAULT}; 0 picks a free one)",
    )
    parser.set_defaults(handler=run)


def listen(port: int) -> socket.socket:
    """A socket listening on ``HOST``:``port``; UsageError when it cannot."""
    if port > PORT_MAX:
        msg = f"--port {port} is not a port; give 0..{PORT_MAX} (0: a free one)"
        raise UsageError(msg)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen()
    except OSError as error:
        sock.close()
        msg = f"--port {port}: cannot listen on {HOST}:{port}: {error.strerror}; "
        msg += "give another port, or 0 for a free one"
        raise UsageError(msg) from None
    return sock


def run(args: argparse.Namespace) -> int:
    """Serve the explorer until Ctrl-C."""
    # Imported here, not at the top: the web stack is needed only by this command,
    # and importing it at start-up changed the runs of every other one (the engine
    # conformance fuzzer took other paths at the same seed: MUTANT_SEEDS in
    # tests/conformance/test_conformance.py stopped catching loss_bound_always_zero).
    import uvicorn  # noqa: PLC0415

    from hvdr.explore.app import make_app  # noqa: PLC0415
    from hvdr.explore.view import over_caps  # noqa: PLC0415

    config = config_from_args(args)
    over = over_caps(config)
    if over is not None:
        raise UsageError(over)
    app = make_app(config, args.mutant)
    sock = listen(args.port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    try:
        with _stopping_signals(server):
            line = f"hvdr explore: serving http://{HOST}:{port}/ (Ctrl-C stops)"
            print(line, flush=True)
            server.run(sockets=[sock])
    finally:
        sock.close()
    print("hvdr explore: stopped", file=sys.stderr)
    return ExitStatus.OK


@contextlib.contextmanager
def _stopping_signals(server: uvicorn.Server) -> Iterator[None]:
    """SIGINT and SIGTERM stop ``server`` (a ``uvicorn.Server``) and nothing else.

    uvicorn catches both to shut down gracefully, then restores the handlers it
    found and raises the signal again, so that the default handlers end the
    process: a KeyboardInterrupt (exit 130, "interrupted") for SIGINT, death by
    SIGTERM. The handlers it finds are these, which ignore the raised signal: the
    shutdown was the answer to it, and ``run`` returns 0 as documented. They are in
    place before the start-up line is printed: a signal that comes before
    uvicorn's own handlers asks the server to stop, as uvicorn's would.
    """
    stopping = (signal.SIGINT, signal.SIGTERM)

    def stopped(number: int, frame: FrameType | None) -> None:
        del number, frame
        server.should_exit = True

    found = {number: signal.signal(number, stopped) for number in stopping}
    try:
        yield
    finally:
        for number, handler in found.items():
            signal.signal(number, handler)
