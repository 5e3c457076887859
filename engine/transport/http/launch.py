"""A replica server from its configuration file: what ``hvdr serve`` starts.

:func:`open_server` reads and checks the TOML file (``server_config.py``), builds the
TLS context (certificate mode) or the Kerberos acceptor (Kerberos mode), and opens
the :class:`~engine.transport.http.server.ReplicaServer`, which locks every storage
location and finishes what a crash interrupted there. Nothing listens yet: the caller
runs :func:`engine.transport.http.server.run`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from engine.clock import Clock, SystemClock
from engine.transport.http import auth
from engine.transport.http.server import Authenticator, ReplicaServer
from engine.transport.http.server_config import ServerConfig, load_server_config
from engine.transport.http.tls import server_context


@dataclass(frozen=True)
class Launch:
    """A configured server, ready to listen."""

    config: ServerConfig
    server: ReplicaServer
    ssl_context: ssl.SSLContext | None
    warnings: tuple[str, ...]


def open_server(path: Path, clock: Clock | None = None) -> Launch:
    """Read ``path``, open the server it describes (InvalidConfiguration, SiteLocked
    or AuthenticationFailed naming what is wrong)."""
    return open_configured(load_server_config(Path(path)), clock)


def open_configured(config: ServerConfig, clock: Clock | None = None) -> Launch:
    """Open the server ``config`` describes (its configuration read already: a
    caller binds the port between the two, so that a port in use is refused before
    any storage location is created, locked or recovered)."""
    context: ssl.SSLContext | None = None
    authenticator: Authenticator
    if config.certificate is not None:
        files = config.certificate
        context = server_context(files.certificate, files.private_key, files.ca)
        authenticator = auth.CertificateAuthenticator()
    else:
        assert config.kerberos is not None  # the configuration checked it
        authenticator = auth.KerberosAuthenticator(config.kerberos)
    server = ReplicaServer(
        config.site,
        "secondary" if config.site == "primary" else "primary",
        config.authorization,
        authenticator,
        clock or SystemClock(),
        max_request_bytes=config.max_request_bytes,
        request_timeout_seconds=config.request_timeout_seconds,
    )
    return Launch(config, server, context, config.warnings)
