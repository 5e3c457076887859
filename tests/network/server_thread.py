"""A replica server on 127.0.0.1 in a thread of the test process (real sockets).

For tests that need the server to die for real (SIGKILL, SIGTERM), ``hvdr serve`` runs
it as a subprocess instead (``tests/network/test_serve_process.py``).
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import trustme

from engine.transport.http import server as replica_server


def server_context(ca: trustme.CA, host: str = "localhost") -> ssl.SSLContext:
    """A replica server's TLS: a certificate for ``host`` from ``ca``, and client
    certificates required and checked against ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    trusted: trustme.CA, certificate: trustme.LeafCert | str | None
) -> ssl.SSLContext:
    """A primary's TLS: trusts ``trusted``; presents ``certificate`` (a host name
    gets one issued by ``trusted``; None: no client certificate)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trusted.configure_trust(context)
    if isinstance(certificate, str):
        certificate = trusted.issue_cert(certificate)
    if certificate is not None:
        certificate.configure_cert(context)
    return context


@contextmanager
def serving(
    server: replica_server.ReplicaServer,
    ssl_context: ssl.SSLContext | None = None,
    port: int = 0,
) -> Iterator[str]:
    """Serve ``server`` on ``port`` (0: any free one) until the block ends; yields
    its URL."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    urls: list[str] = []
    failures: list[BaseException] = []

    def ready(url: str) -> None:
        urls.append(url)
        started.set()

    async def main() -> None:
        await replica_server.run(
            server, "127.0.0.1", port, ssl_context=ssl_context, ready=ready, stop=stop,
            handle_signals=False,
        )  # fmt: skip
        # Connections still in their TLS handshake when the server stopped (a link
        # the proxy cut): their tasks end here, closing them, before the loop goes.
        pending = [
            task for task in asyncio.all_tasks() if task is not asyncio.current_task()
        ]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def thread_main() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:  # reported to the test below
            failures.append(error)
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=thread_main, name="replica-server", daemon=True)
    thread.start()
    if not started.wait(30):
        raise TimeoutError("the replica server did not start listening within 30 s")
    if failures:
        raise failures[0]
    try:
        yield urls[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        server.close()
        # A connection still in its TLS handshake when the loop stopped (the proxy
        # cut it) belongs to no task and no handler: asyncio 3.11 cannot close it
        # (Server.close_clients came in 3.13), so its transport is dropped with the
        # loop. Collected here, with the loop, rather than in a later test's setup.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
