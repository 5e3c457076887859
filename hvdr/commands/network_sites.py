"""``hvdr demo --network``: one replica server per site, each in its own process.

:class:`NetworkSites` makes a small CA and certificates (``hvdr certs``' code) under
the drill's folder, writes one server configuration per site (mutual TLS, only the
drill's engine listed, its storage location the site's root), starts
``hvdr serve --config`` for each as a subprocess (:mod:`hvdr.commands.serve_process`),
and hands the drill one :class:`~engine.transport.http.client.HttpReplica` per site:
every replica call of the drill then crosses a real TLS connection on 127.0.0.1. When
the drill crashes a site, its server is SIGKILLed (it dies with its hosts) and started
again on the same port when the site recovers; at the end every server gets SIGTERM
and must exit 0.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from engine.transport.http.certificates import make_certificates
from engine.transport.http.client import HttpReplica
from engine.transport.http.tls import client_context
from engine.transport.interface import ReplicaTarget
from hvdr.commands.serve_process import ServeProcess, ServerFailed, certificate_config

SITES: Final = ("primary", "secondary")
SERVER_HOST: Final = "localhost"
ENGINE_NAME: Final = "hvdr-drill-engine"

__all__ = ["ENGINE_NAME", "SERVER_HOST", "SITES", "NetworkSites", "ServerFailed"]


class NetworkSites:
    """The drill's replica servers (one process per site) and their clients."""

    def __init__(self) -> None:
        self._servers: dict[str, ServeProcess] = {}
        self._clients: dict[str, HttpReplica] = {}

    def start(self, root: Path) -> Mapping[str, ReplicaTarget]:
        """Certificates, configurations, servers; one client per site."""
        root.mkdir(parents=True, exist_ok=True)
        certs = root / "certs"
        made = make_certificates(
            certs, [SERVER_HOST, ENGINE_NAME], ca_name="hvdr drill CA"
        )
        by_host = {host.host: host for host in made.hosts}
        server, engine = by_host[SERVER_HOST], by_host[ENGINE_NAME]
        context = client_context(
            engine.certificate, engine.private_key, made.ca_certificate
        )
        for site in SITES:
            site_root = root / site
            site_root.mkdir(parents=True, exist_ok=True)
            config = root / f"{site}-server.toml"

            def write(port: int, site: str = site, config: Path = config) -> None:
                config.write_text(
                    certificate_config(
                        site=site, port=port, certificate=server.certificate,
                        private_key=server.private_key, ca=made.ca_certificate,
                        primary=ENGINE_NAME, storage=root / site,
                    ),
                    encoding="utf-8",
                )  # fmt: skip

            write(0)
            self._servers[site] = ServeProcess(config)
            port = self._start(site)
            write(port)  # a restart keeps the port
            self._clients[site] = HttpReplica(
                f"https://{SERVER_HOST}:{port}", site_name=site, ssl_context=context
            )
        return dict(self._clients)

    def crash(self, site: str) -> None:
        """SIGKILL the site's server (its hosts went down)."""
        self._servers[site].stop(signal.SIGKILL)

    def recover(self, site: str) -> None:
        """Start the site's server again, on the same port."""
        self._start(site)

    def stop(self) -> None:
        """SIGTERM every server; each must finish and exit 0."""
        failures = []
        for site, served in self._servers.items():
            if served.process is None or served.process.poll() is not None:
                served.close()
                continue
            try:
                code = served.stop(signal.SIGTERM)
            except ServerFailed as error:
                failures.append(f"{site}: {error}")
                continue
            finally:
                served.close()
            if code != 0:
                failures.append(f"{site}: exit {code}: {served.tail()}")
        for client in self._clients.values():
            client.close()
        if failures:
            raise ServerFailed("; ".join(failures))

    def requests(self) -> dict[str, int]:
        """How many requests each server answered (the clients count them)."""
        return {site: client.requests for site, client in self._clients.items()}

    def _start(self, site: str) -> int:
        try:
            return self._servers[site].start()
        except ServerFailed as error:
            msg = f"the {site} replica server: {error}"
            raise ServerFailed(msg) from None
