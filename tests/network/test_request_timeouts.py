"""A request must arrive within ``request_timeout_seconds``: headers sent slowly (or
never), and a body that stops arriving, do not hold a connection and a handler open
for ever (found by the outside review: the setting was read and never used)."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import trustme
from server_thread import client_context, server_context, serving
from storage_digest import tree_digest

from engine.testing import ManualClock
from engine.transport.http.auth import CertificateAuthenticator
from engine.transport.http.client import HttpReplica
from engine.transport.http.server import ReplicaServer
from engine.transport.http.server_config import Authorization

TIMEOUT = 1.0
BOUND = 10.0  # what the test waits at most: ten timeouts


class Served:
    def __init__(self, root: Path, port: int, context: ssl.SSLContext) -> None:
        self.root, self.port, self.context = root, port, context

    def connect(self) -> ssl.SSLSocket:
        plain = socket.create_connection(("127.0.0.1", self.port), timeout=BOUND)
        return self.context.wrap_socket(plain, server_hostname="localhost")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("timeouts")
    ca = trustme.CA()
    server = ReplicaServer(
        "secondary", "primary", Authorization.any_caller(root),
        CertificateAuthenticator(), ManualClock(), request_timeout_seconds=TIMEOUT,
    )  # fmt: skip
    with ExitStack() as stack:
        url = stack.enter_context(serving(server, server_context(ca)))
        context = client_context(ca, "primary-host")
        client = HttpReplica(
            url.replace("127.0.0.1", "localhost"), site_name="secondary",
            ssl_context=context,
        )  # fmt: skip
        stack.callback(client.close)
        client.create_replica("web", {"os": 1024 * 1024}, 2)
        yield Served(root, int(url.rsplit(":", 1)[1]), context)


def closed_within(tls: ssl.SSLSocket) -> float:
    """Seconds until the server closes ``tls`` without an answer (bounded)."""
    started = time.monotonic()
    assert tls.recv(65536) == b""
    return time.monotonic() - started


def test_headers_that_never_end_are_cut_off(served: Served) -> None:
    before = tree_digest(served.root)
    with served.connect() as tls:
        tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        assert closed_within(tls) < BOUND
    assert tree_digest(served.root) == before


def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    with served.connect() as tls:
        assert closed_within(tls) < BOUND


def test_a_body_that_stops_arriving_is_refused_with_408(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hvdr.serve")
    before = tree_digest(served.root)
    path = "/v1/vms/web/uploads/initial.os?offset=0"
    with served.connect() as tls:
        tls.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 65536\r\n"
            "X-Hvdr-Crc32c: 00000000\r\n\r\n".encode()
            + b"\x01" * 1000
        )
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            part = tls.recv(65536)
            assert part, answer
            answer += part
        assert time.monotonic() - started < BOUND
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert json.loads(body) == {
        "error": "TransportError",
        "message": "the request body did not arrive within 1 s "
        "(request_timeout_seconds): send it again, in smaller parts over a slow link",
    }
    assert tree_digest(served.root) == before  # not a byte of the chunk was kept
    refused = [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.name == "hvdr.serve" and '"refused"' in record.getMessage()
    ]
    assert [(line["status"], line["path"]) for line in refused] == [
        (408, "/v1/vms/web/uploads/initial.os")
    ]
