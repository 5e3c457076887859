"""A TCP proxy on 127.0.0.1 between a primary and its replica server: a real link a
test can cut or slow down.

Every connection is forwarded byte for byte (TLS passes through untouched). The test
arms it to **cut** every connection once ``cut_after`` more bytes went from the client
to the server (the server sees a connection reset mid-request, the client a broken
connection), or to **slow** it: each forwarded piece waits ``delay_seconds``. Counters
say how many bytes crossed in each direction and how many connections were cut.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class LinkCounters:
    upstream_bytes: int = 0  # client -> server
    downstream_bytes: int = 0
    connections: int = 0
    cuts: int = 0


class LinkProxy:
    """Forwards 127.0.0.1:<port> to ``target`` until :meth:`close`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.counters = LinkCounters()
        self._lock = threading.Lock()
        self._cut_at: int | None = None  # upstream byte count at which to cut
        self.delay_seconds = 0.0
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut_after(self, upstream_bytes: int) -> None:
        """Cut every connection once ``upstream_bytes`` more went to the server; one
        cut only (the next connections pass)."""
        with self._lock:
            self._cut_at = self.counters.upstream_bytes + upstream_bytes

    def close(self) -> None:
        self._closed = True
        # Wakes the accepting thread (closing a listener does not).
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self._listener.close()
        with self._lock:
            for found in list(self._sockets):
                _close(found)
        self._thread.join(5)

    # -- internals ---------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target, timeout=10)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self.counters.connections += 1
                self._sockets.update((client, server))
            for source, sink, upstream in (
                (client, server, True),
                (server, client, False),
            ):
                threading.Thread(
                    target=self._pump, args=(source, sink, upstream), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.delay_seconds:
                    time.sleep(self.delay_seconds)  # the slow link itself
                if upstream and self._cut_due(len(data)):
                    break
                sink.sendall(data)
                with self._lock:
                    if upstream:
                        self.counters.upstream_bytes += len(data)
                    else:
                        self.counters.downstream_bytes += len(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)

    def _cut_due(self, more: int) -> bool:
        with self._lock:
            if (
                self._cut_at is None
                or self.counters.upstream_bytes + more < self._cut_at
            ):
                return False
            self._cut_at = None
            self.counters.cuts += 1
            for found in list(self._sockets):
                _close(found)
            return True


def _close(found: socket.socket) -> None:
    with contextlib.suppress(OSError):
        found.shutdown(socket.SHUT_RDWR)
    found.close()
