"""``hvdr demo --network``: one replica server per site, each in its own process.

:class:`NetworkSites` makes a small CA and certificates (``hvdr certs``' code) under
the drill's folder, writes one server configuration per site (mutual TLS, only the
drill's engine listed, its storage location the site's root), starts
``hvdr serve --config`` for each as a subprocess, and hands the drill one
:class:`~engine.transport.http.client.HttpReplica` per site: every replica call of the
drill then crosses a real TLS connection on 127.0.0.1. When the drill crashes a site,
its server is SIGKILLed (it dies with its hosts) and started again on the same port
when the site recovers; at the end every server gets SIGTERM and must exit 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Final

from engine.transport.http.certificates import make_certificates
from engine.transport.http.client import HttpReplica
from engine.transport.http.tls import client_context
from engine.transport.interface import ReplicaTarget

SITES: Final = ("primary", "secondary")
SERVER_HOST: Final = "localhost"
ENGINE_NAME: Final = "hvdr-drill-engine"
START_SECONDS: Final = 60.0
STOP_SECONDS: Final = 60.0
LISTENING: Final = " listening on "


class ServerFailed(RuntimeError):
    """A replica server did not start, or did not stop cleanly."""


class NetworkSites:
    """The drill's replica servers (one process per site) and their clients."""

    def __init__(self) -> None:
        self._root = Path()
        self._configs: dict[str, Path] = {}
        self._ports: dict[str, int] = {}
        self._processes: dict[str, subprocess.Popen[str]] = {}
        self._clients: dict[str, HttpReplica] = {}
        self._logs: dict[str, list[str]] = {site: [] for site in SITES}

    def start(self, root: Path) -> Mapping[str, ReplicaTarget]:
        """Certificates, configurations, servers; one client per site."""
        self._root = root
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
            self._configs[site] = root / f"{site}-server.toml"
            self._write_config(site, 0, server.certificate, server.private_key,
                               made.ca_certificate)  # fmt: skip
            self._launch(site)
            self._write_config(site, self._ports[site], server.certificate,
                               server.private_key, made.ca_certificate)  # fmt: skip
            self._clients[site] = HttpReplica(
                f"https://{SERVER_HOST}:{self._ports[site]}",
                site_name=site,
                ssl_context=context,
            )
        return dict(self._clients)

    def crash(self, site: str) -> None:
        """SIGKILL the site's server (its hosts went down)."""
        process = self._processes.pop(site)
        process.kill()
        process.wait(STOP_SECONDS)

    def recover(self, site: str) -> None:
        """Start the site's server again, on the same port."""
        self._launch(site)

    def stop(self) -> None:
        """SIGTERM every server; each must finish and exit 0."""
        failures = []
        for site, process in list(self._processes.items()):
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            if code != 0:
                failures.append(f"{site}: exit {code}: {self._tail(site)}")
        self._processes.clear()
        for client in self._clients.values():
            client.close()
        if failures:
            raise ServerFailed("; ".join(failures))

    def requests(self) -> dict[str, int]:
        """How many requests each server answered (the clients count them)."""
        return {site: client.requests for site, client in self._clients.items()}

    # -- internals ---------------------------------------------------------------------

    def _write_config(
        self, site: str, port: int, certificate: Path, key: Path, ca: Path
    ) -> None:
        text = f"""\
[server]
listen = "127.0.0.1:{port}"
site = "{site}"
authentication = "certificate"

[certificate]
certificate = "{certificate}"
private_key = "{key}"
ca = "{ca}"

[authorization]
mode = "listed"

[[authorization.primary]]
name = "{ENGINE_NAME}"
storage = "{self._root / site}"
"""
        self._configs[site].write_text(text, encoding="utf-8")

    def _launch(self, site: str) -> None:
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "hvdr", "serve"]
        process = subprocess.Popen(
            [*command, "--config", str(self._configs[site])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )  # fmt: skip
        assert process.stdout is not None
        assert process.stderr is not None
        self._drain(site, process.stderr)
        line = _first_line(process.stdout, START_SECONDS)
        if line is None or LISTENING not in line:
            process.kill()
            process.wait()
            msg = f"the {site} replica server did not start: {line or 'no output'}; "
            raise ServerFailed(msg + self._tail(site))
        self._ports[site] = int(
            line.split(LISTENING, 1)[1].split()[0].rsplit(":", 1)[1]
        )
        self._drain(site, process.stdout)
        self._processes[site] = process

    def _drain(self, site: str, stream: IO[str]) -> None:
        """Keep reading a server's output (so a full pipe never blocks it)."""

        def read() -> None:
            for line in stream:
                self._logs[site].append(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()

    def _tail(self, site: str) -> str:
        return " | ".join(self._logs[site][-3:])


def _first_line(stream: IO[str], seconds: float) -> str | None:
    """The first line of ``stream`` within ``seconds`` (None: nothing in time)."""
    found: list[str] = []
    done = threading.Event()

    def read() -> None:
        found.append(stream.readline())
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(seconds):
        return None
    return found[0].rstrip("\n") or None
