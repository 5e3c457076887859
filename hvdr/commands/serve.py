"""``hvdr serve --config FILE.toml``: a replica server for one site.

Reads the server configuration (``engine.transport.http.server_config``: where to
listen, which site, certificate or Kerberos, who may use which storage location),
opens and locks every storage location (finishing or undoing an apply a crash
interrupted there), then serves the replica interface over HTTPS with mutual TLS or
over HTTP with Kerberos (``docs/network.md``). It prints one line when it listens::

    hvdr serve: site 'secondary' listening on https://127.0.0.1:8443 (SIGTERM stops)

and one JSON line per request and per refusal on stderr. SIGTERM or SIGINT stops it
after the requests in progress finished (exit 0, ``hvdr serve: stopped``). Exit 2:
the configuration is bad, a certificate or keytab cannot be used, the address cannot
be listened on, or another server holds a storage location (one line naming it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from hvdr.status import ExitStatus, UsageError, examples

DESCRIPTION = """\
Serve the replica stores of one site to the primaries its configuration allows:
HTTPS with mutual TLS (certificate mode) or HTTP with Kerberos (Kerberos mode, data
unencrypted on the wire). docs/network.md describes the file, the protocol and the
limits."""

KERBEROS_WARNING = (
    "hvdr serve: warning: Kerberos mode authenticates every request but sends the "
    "replication data unencrypted over HTTP; use certificate mode (HTTPS) on a "
    "network you do not trust"
)


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="run a replica server for one site (HTTPS or Kerberos)",
        description=DESCRIPTION,
        epilog=examples(
            ("hvdr serve --config replica.toml", "serve until SIGTERM or Ctrl-C"),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        help="the server's TOML configuration (docs/network.md)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve until a signal; 0 when stopped, 2 (UsageError) when it cannot start."""
    # The web stack is imported here, not at start-up: other commands must not load
    # it (it changes what their seeded runs do, see hvdr/commands/explore.py).
    from engine.errors import ReplicationError  # noqa: PLC0415
    from engine.transport.http.launch import open_configured  # noqa: PLC0415
    from engine.transport.http.server import run as serve  # noqa: PLC0415
    from engine.transport.http.server_config import (  # noqa: PLC0415
        load_server_config,
    )

    _log_to_stderr()
    try:
        config = load_server_config(Path(args.config))
    except ReplicationError as error:
        raise UsageError(str(error)) from None
    listen = config.listen
    try:  # the port first: in use, nothing of the storage is touched
        listening = socket.create_server(
            (listen.host, listen.port),
            family=socket.AF_INET6 if ":" in listen.host else socket.AF_INET,
        )
    except OSError as error:
        msg = f"cannot listen on {listen}: {error.strerror or error}; give another "
        msg += f"[server] listen in {args.config}"
        raise UsageError(msg) from None
    try:
        launch = open_configured(config)
    except ReplicationError as error:
        listening.close()
        raise UsageError(str(error)) from None
    for warning in launch.warnings:
        print(f"hvdr serve: warning: {warning}", file=sys.stderr, flush=True)
    if launch.config.authentication == "kerberos":
        print(KERBEROS_WARNING, file=sys.stderr, flush=True)

    def ready(url: str) -> None:
        site = launch.server.site
        line = f"hvdr serve: site {site!r} listening on {url} (SIGTERM stops)"
        print(line, flush=True)

    try:
        asyncio.run(
            serve(
                launch.server,
                listen.host,
                listen.port,
                ssl_context=launch.ssl_context,
                ready=ready,
                sock=listening,
            )
        )
    finally:
        listening.close()
        launch.server.close()
    print("hvdr serve: stopped", file=sys.stderr, flush=True)
    return ExitStatus.OK


def _log_to_stderr() -> None:
    log = logging.getLogger("hvdr.serve")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
