"""What a replica server refuses: the message on both sides, and nothing written.

One replica server on 127.0.0.1 (mutual TLS, throwaway certificates from trustme)
serves two listed primaries, each at its own storage location; primary A holds VM
``a-vm`` with one recovery point. Every case sends something the server must refuse,
over real sockets, and checks three things: the client's exception (or HTTP answer)
names what was wrong and what is allowed; the server logged one ``refused`` line
(``hvdr.serve``, captured by ``caplog``: the server runs in a thread of this
process) saying the same; and no file under either location changed
(:func:`tree_digest` before and after).
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import httpx
import pytest
import trustme
from server_thread import client_context, server_context, serving
from storage_digest import tree_digest

from engine.clock import SystemClock
from engine.errors import (
    AuthenticationFailed,
    CorruptRecord,
    InvalidConfiguration,
    LogMismatch,
    NotAuthorised,
)
from engine.testing import Cycle, CycleSource
from engine.transport.http import wire
from engine.transport.http.auth import CertificateAuthenticator
from engine.transport.http.client import HttpReplica
from engine.transport.http.server import ReplicaServer
from engine.transport.http.server_config import Authorization
from engine.transport.interface import CycleShipment

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 8 * BLOCK}
MAX_REQUEST_BYTES = 2 * 1024 * 1024  # above a JSON body's limit (1 MiB), cheap to pass
NAMES_ALLOWED = (
    "allowed: 1 to 64 characters of letters, digits, '.', '_' and '-', "
    "not starting with '.' and without '..'"
)


@dataclass
class Site:
    """The running server, its locations and the primaries' TLS contexts."""

    url: str  # https://localhost:PORT
    port: int
    ca: trustme.CA
    roots: dict[str, Path]  # listed primary -> its storage location
    contexts: dict[str, ssl.SSLContext]  # primary-a, primary-b, stranger
    source: CycleSource  # a-vm's disks at primary A (real change logs)
    point: Cycle  # the cycle a-vm's one recovery point holds

    def digest(self) -> dict[str, str]:
        return {name: tree_digest(root) for name, root in self.roots.items()}

    def replica(self, name: str, *, url: str | None = None) -> closing[HttpReplica]:
        """An HttpReplica for primary ``name`` (closed when the block ends)."""
        context = self.contexts[name]
        return closing(
            HttpReplica(url or self.url, site_name="secondary", ssl_context=context)
        )

    def raw(self, name: str = "primary-a") -> httpx.Client:
        """An httpx client that sends what HttpReplica would validate first."""
        context = self.contexts[name]
        return httpx.Client(base_url=self.url, verify=context, trust_env=False)


@contextmanager
def nothing_written(site: Site) -> Iterator[None]:
    """Assert that no file under any storage location changed inside the block."""
    before = site.digest()
    yield
    assert site.digest() == before


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("refusals")
    ca = trustme.CA()
    roots = {"primary-a": tmp / "a", "primary-b": tmp / "b"}
    contexts = {
        name: client_context(ca, ca.issue_cert(name))
        for name in ("primary-a", "primary-b", "stranger")
    }
    contexts["both"] = client_context(ca, ca.issue_cert("primary-a", "primary-b"))
    server = ReplicaServer(
        "secondary", "primary", Authorization.only(roots),
        CertificateAuthenticator(), SystemClock(), max_request_bytes=MAX_REQUEST_BYTES,
    )  # fmt: skip
    with ExitStack() as stack:
        url = stack.enter_context(serving(server, server_context(ca, "localhost")))
        port = int(url.rsplit(":", 1)[1])
        source = CycleSource(tmp / "source", DISKS)
        stack.callback(source.close)
        source.write("os", 3 * BLOCK, b"\x11" * BLOCK)
        source.write("data", 0, b"\x22" * 100)
        point = source.cut()
        found = Site(f"https://localhost:{port}", port, ca, roots, contexts, source,
                     point)  # fmt: skip
        with found.replica("primary-a") as primary:
            primary.create_replica("a-vm", DISKS, 3)
            primary.apply_cycle("a-vm", shipment(point))
        yield found


Refusals = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def refusals(caplog: pytest.LogCaptureFixture) -> Iterator[Refusals]:
    """The server's refusal lines so far in this test; ``at_least`` waits (5 s at
    most) for lines the server writes after the client has returned (a refusal the
    client made: its alert reaches the server after the client raised). After the
    test: nothing was logged with a traceback or at ERROR."""
    caplog.set_level(logging.INFO, logger="hvdr.serve")

    def lines(*, at_least: int = 0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while True:
            found = [
                line
                for record in caplog.records
                if record.name == "hvdr.serve"
                and (line := json.loads(record.getMessage()))["event"] == "refused"
            ]
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.01)  # the server thread logs on its own time

    yield lines
    loud = [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.get_records("call")
        if record.exc_info or record.levelno >= logging.ERROR
    ]
    assert loud == []


def shipment(cycle: Cycle, cycle_id: int | None = None) -> CycleShipment:
    return CycleShipment(
        cycle_id=cycle.cycle_id if cycle_id is None else cycle_id,
        epoch=cycle.epoch,
        app_consistent=False,
        logs=cycle.logs,
        last_sequences=cycle.last_sequences,
    )


def raw_exchange(
    site: Site, request: bytes, *, then: bytes = b"", name: str = "primary-a"
) -> bytes:
    """Send ``request`` as written over a TLS connection; the first answer, read to
    its Content-Length; then send ``then`` (the body the server did not wait for,
    which it reads and drops before the connection closes)."""
    context = site.contexts[name]
    with (
        socket.create_connection(("127.0.0.1", site.port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += tls.recv(65536)
        head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
        length = int(head.split("content-length:")[1].split("\r\n")[0])
        while len(answer.partition(b"\r\n\r\n")[2]) < length:
            answer += tls.recv(65536)
        tls.sendall(then)
    return answer


# -- 1-3: the TLS layer refuses the primary's certificate ------------------------------

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
Issue = Callable[[trustme.CA, trustme.CA], trustme.LeafCert | None]  # (ours, other)
CERTIFICATE_CASES: dict[str, tuple[Issue, list[str], str]] = {
    # case: (client certificate, the client's message, the server's line)
    "no certificate": (
        lambda ca, other: None,
        ["tlsv13 alert certificate required", "sent no client certificate"],
        "peer did not return a certificate",
    ),
    "another CA": (
        lambda ca, other: other.issue_cert("primary-a"),
        ["tlsv1 alert unknown ca", "does not trust the CA"],
        "certificate verify failed: unable to get local issuer certificate",
    ),
    "expired": (
        lambda ca, other: ca.issue_cert(
            "primary-a", not_before=NOW - 10 * DAY, not_after=NOW - DAY
        ),
        ["sslv3 alert certificate expired", "certificate expired: renew it"],
        "certificate verify failed: certificate has expired",
    ),
    "not yet valid": (
        lambda ca, other: ca.issue_cert(
            "primary-a", not_before=NOW + DAY, not_after=NOW + 10 * DAY
        ),
        ["sslv3 alert bad certificate", "not yet valid: check both clocks"],
        "certificate verify failed: certificate is not yet valid",
    ),
}


@pytest.mark.parametrize("case", sorted(CERTIFICATE_CASES))
def test_a_certificate_the_server_does_not_accept_is_refused_in_the_handshake(
    site: Site, refusals: Refusals, case: str
) -> None:
    """No certificate, another CA's, an expired or a not-yet-valid one: the client
    hears the server's alert (AuthenticationFailed, not retried), the server logs
    the handshake refusal with OpenSSL's reason."""
    issue, client_says, server_says = CERTIFICATE_CASES[case]
    certificate = issue(site.ca, trustme.CA())
    context = client_context(site.ca, certificate)
    with (
        nothing_written(site),
        closing(
            HttpReplica(site.url, site_name="secondary", ssl_context=context)
        ) as client,
    ):
        with pytest.raises(AuthenticationFailed) as refused:
            client.status("a-vm")
        assert client.retries == 0  # a refusal, not a network fault
    message = str(refused.value)
    assert message.startswith(f"replica server {site.url} refused this primary's ")
    assert all(part in message for part in client_says), message
    [line] = refusals()
    assert (line["stage"], line["peer"], line["error"]) == (
        "tls handshake", "127.0.0.1", "AuthenticationFailed",
    )  # fmt: skip
    assert server_says in line["message"], line


# -- 4: the primary refuses the server's certificate -----------------------------------


def test_a_server_certificate_for_another_host_is_refused_by_the_primary(
    site: Site, refusals: Refusals, tmp_path: Path
) -> None:
    """A server whose certificate names replica.example, reached as localhost (and
    the shared one, for localhost, reached as 127.0.0.1): AuthenticationFailed names
    the host; the server logs the primary's alert."""
    other_root = tmp_path / "other"
    server = ReplicaServer(
        "secondary", "primary", Authorization.any_caller(other_root),
        CertificateAuthenticator(), SystemClock(),
    )  # fmt: skip
    before = tree_digest(other_root)
    with (
        nothing_written(site),
        serving(server, server_context(site.ca, "replica.example")) as url,
    ):
        elsewhere = url.replace("127.0.0.1", "localhost")
        cases = {
            elsewhere: "Hostname mismatch, certificate is not valid for 'localhost'",
            site.url.replace("localhost", "127.0.0.1"): (
                "IP address mismatch, certificate is not valid for '127.0.0.1'"
            ),
        }
        for target, mismatch in cases.items():
            with site.replica("primary-a", url=target) as client:
                with pytest.raises(AuthenticationFailed) as refused:
                    client.status("a-vm")
                assert client.retries == 0
            message = str(refused.value)
            assert message.startswith(f"the certificate of replica server {target} ")
            assert mismatch in message, message
            assert "names the host" in message
    assert tree_digest(other_root) == before
    lines = refusals(at_least=2)
    assert [(line["stage"], line["message"].split("]")[0]) for line in lines] == [
        ("tls handshake", "[SSL: SSLV3_ALERT_BAD_CERTIFICATE"),
    ] * 2


# -- 5-6: authorised, and only to its own location -------------------------------------


def test_a_primary_not_listed_is_refused_naming_its_identity(
    site: Site, refusals: Refusals
) -> None:
    """A certificate from the right CA whose names are not listed: 403 NotAuthorised
    naming the identity, the site and what is served."""
    with nothing_written(site), site.replica("stranger") as client:
        with pytest.raises(NotAuthorised) as refused:
            client.status("a-vm")
        with site.raw("stranger") as raw:
            answer = raw.put("/v1/vms/a-vm", json={"disks": {}, "retention_count": 1})
    expected = (
        "certificate identity ['stranger'] is not a primary server this replica "
        "server (site 'secondary') accepts; it serves only the primaries listed in "
        "its configuration"
    )
    assert str(refused.value) == f"replica server {site.url}: {expected}"
    assert (answer.status_code, answer.json()) == (
        403, {"error": "NotAuthorised", "message": expected},
    )  # fmt: skip
    lines = refusals()
    assert [(line["caller"], line["status"], line["message"]) for line in lines] == [
        ("stranger", 403, expected),
    ] * 2


def test_an_identity_matching_two_listed_primaries_is_refused_as_ambiguous(
    site: Site, refusals: Refusals
) -> None:
    """A certificate naming both listed primaries: 403 saying so, not "not listed"
    (found by the outside review)."""
    with (
        nothing_written(site),
        site.replica("both") as client,
        pytest.raises(NotAuthorised) as refused,
    ):
        client.status("a-vm")
    expected = (
        "certificate identity ['primary-a', 'primary-b'] matches 2 listed primaries "
        "('primary-a', 'primary-b'), each with its own storage: refused rather than "
        "guess which; give each primary an identity that names one listed entry"
    )
    assert str(refused.value) == f"replica server {site.url}: {expected}"
    [line] = refusals()
    assert (line["status"], line["message"]) == (403, expected)


def test_a_primary_cannot_see_or_touch_another_primarys_vm(
    site: Site, refusals: Refusals
) -> None:
    """Primary B asks for primary A's VM: its own location has no such VM, so it
    sees none, cannot ship to it or drill it, and its remove touches nothing."""
    with nothing_written(site), site.replica("primary-b") as client:
        status = client.status("a-vm")
        assert (status.exists, status.points) == (False, ())
        with pytest.raises(InvalidConfiguration) as shipped:
            client.apply_cycle("a-vm", shipment(site.point, cycle_id=9))
        with pytest.raises(InvalidConfiguration) as drilled:
            client.start_test_failover("a-vm", 1)
        with site.raw("primary-b") as raw:
            applied = raw.post("/v1/vms/a-vm/cycles/9", json={
                "epoch": 1, "app_consistent": False, "last_sequences": {"os": 1},
                "sizes": {"os": 100},
            })  # fmt: skip
        client.remove_replica("a-vm")  # idempotent: B has no a-vm to remove
    no_replica = "VM 'a-vm' has no replica at site 'secondary'"
    assert (
        str(shipped.value)
        == f"replica server {site.url}: {no_replica}: create it first"
    )
    assert no_replica in str(drilled.value)
    # B's location (named in the server's line only), never A's.
    assert "('<storage location>/replicas/a-vm' is missing)" in str(drilled.value)
    assert str(site.roots["primary-a"]) not in str(drilled.value)
    [drill_line] = [line for line in refusals() if line["path"].endswith("/drill")]
    assert str(site.roots["primary-b"]) in drill_line["message"]
    assert (applied.status_code, applied.json()["message"]) == (
        400, f"{no_replica}: create it first",
    )  # fmt: skip
    lines = refusals()
    assert [(line["caller"], line["path"]) for line in lines] == [
        ("primary-b", "/v1/vms/a-vm/uploads/cycle-9.os"),
        ("primary-b", "/v1/vms/a-vm/drill"),
        ("primary-b", "/v1/vms/a-vm/cycles/9"),
    ]
    assert all(no_replica in line["message"] for line in lines)
    with site.replica("primary-a") as owner:  # A's VM is as it was
        assert [point.cycle_id for point in owner.status("a-vm").points] == [
            site.point.cycle_id
        ]


def not_a_name(argument: str, value: str) -> str:
    return f"{argument}={value!r} is not a valid name; {NAMES_ALLOWED}"


HOSTILE_PATHS = {
    # path as sent: (the error, what the message says)
    "/v1/vms/%2e%2e": ("InvalidName", not_a_name("vm_name", "..")),
    "/v1/vms/a%2Fb": ("InvalidName", not_a_name("vm_name", "a/b")),
    "/v1/vms/..%2F..%2Fetc": ("InvalidName", not_a_name("vm_name", "../../etc")),
    "/v1/vms/.hidden": ("InvalidName", not_a_name("vm_name", ".hidden")),
    "/v1/vms/" + "v" * 300: (
        "InvalidName",
        f"vm_name='{'v' * 300}' is 300 characters long; {NAMES_ALLOWED}",
    ),
    "/v1/vms/a-vm/drill/disks/..%2Fos": (
        "InvalidName",
        not_a_name("disk_name", "../os"),
    ),
    "/v1/vms/a-vm/uploads/cycle-1.%2e%2e": (
        "InvalidName",
        not_a_name("disk_name", ".."),
    ),
    "/v1/vms/a-vm/uploads/..%2F..%2Freplicas": (
        "InvalidConfiguration",
        "upload key '../../replicas' is not 'initial.<disk>' or 'cycle-<id>.<disk>'",
    ),
}


@pytest.mark.parametrize("path", sorted(HOSTILE_PATHS))
def test_a_hostile_name_in_the_url_is_refused_before_any_path_is_built(
    site: Site, refusals: Refusals, path: str
) -> None:
    """An encoded parent, a slash, a hidden or a 300-character name: 400 naming the
    value and the rule, for a read and for a write."""
    error, expected = HOSTILE_PATHS[path]
    with nothing_written(site), site.raw("primary-b") as raw:
        answers = [raw.get(path), raw.put(path, content=b"x", headers={
            wire.CRC_HEADER: f"{google_crc32c.value(b'x'):08x}"})]  # fmt: skip
    for answer in answers:
        assert (answer.status_code, answer.json()) == (
            400, {"error": error, "message": expected},
        )  # fmt: skip
    lines = refusals()
    assert [(line["method"], line["error"], line["message"]) for line in lines] == [
        ("GET", error, expected), ("PUT", error, expected),
    ]  # fmt: skip


def test_a_literal_parent_segment_and_an_overlong_request_line_are_refused(
    site: Site, refusals: Refusals
) -> None:
    """``..`` as written (httpx would remove it) is a VM name refused as such; a
    name longer than a request line may be is aiohttp's 400, logged as one refusal
    line (not a traceback)."""
    with nothing_written(site):
        parent = raw_exchange(
            site,
            b"PUT /v1/vms/.. HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
        )
        with site.raw("primary-b") as raw:
            overlong = raw.get("/v1/vms/" + "v" * 10_000)
    head, _, body = parent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request")
    expected = f"vm_name='..' is not a valid name; {NAMES_ALLOWED}"
    assert json.loads(body) == {"error": "InvalidName", "message": expected}
    assert overlong.status_code == 400
    assert "Got more than 8190 bytes when reading" in overlong.text
    lines = refusals()
    assert (lines[0]["path"], lines[0]["message"]) == ("/v1/vms/..", expected)
    assert (lines[1]["stage"], lines[1]["peer"], lines[1]["error"]) == (
        "http parse", "127.0.0.1", "LineTooLong",
    )  # fmt: skip
    assert "Got more than 8190 bytes when reading" in lines[1]["message"]
    assert len(lines) == 2


# -- 7: plain HTTP on the HTTPS port ---------------------------------------------------


def test_plain_http_to_the_https_port_is_told_to_use_https(
    site: Site, refusals: Refusals
) -> None:
    """http:// to the TLS port: a 400 saying to use https (InvalidConfiguration at
    the client, not "unreachable"); the server logs the handshake refusal."""
    plain_url = site.url.replace("https://", "http://")
    with (
        nothing_written(site),
        closing(HttpReplica(plain_url, site_name="secondary")) as client,
    ):
        with pytest.raises(InvalidConfiguration) as refused:
            client.status("a-vm")
        assert client.retries == 0
    expected = (
        "this replica server takes HTTPS with a client certificate (mutual TLS) on "
        "this port, not plain HTTP: use https:// with the same host and port"
    )
    assert str(refused.value) == f"replica server {plain_url}: {expected}"
    [line] = refusals()
    assert (line["stage"], line["peer"], line["error"]) == (
        "tls handshake", "127.0.0.1", "InvalidConfiguration",
    )  # fmt: skip
    assert "[SSL: HTTP_REQUEST] http request" in line["message"]


# -- 8: bodies over the limits, malformed bodies ---------------------------------------


def test_a_body_over_the_request_limit_is_refused_before_it_is_read(
    site: Site, refusals: Refusals
) -> None:
    """Content-Length above max_request_bytes: the 413 comes back before a byte of
    the body is sent (the server did not wait for it)."""
    length = MAX_REQUEST_BYTES + 1
    with nothing_written(site):
        answer = raw_exchange(site, (
            "PUT /v1/vms/a-vm/uploads/initial.os?offset=0 HTTP/1.1\r\n"
            f"Host: localhost\r\nContent-Length: {length}\r\n\r\n"
        ).encode(), then=bytes(length))  # fmt: skip
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 Request Entity Too Large")
    expected = (
        f"the request body is {length} bytes; this server takes at most "
        f"{MAX_REQUEST_BYTES} per request (max_request_bytes): send it in smaller parts"
    )
    assert json.loads(body) == {"error": "InvalidConfiguration", "message": expected}
    [line] = refusals()
    assert (line["status"], line["error"], line["message"]) == (
        413, "InvalidConfiguration", expected,
    )  # fmt: skip


def crc(data: bytes) -> dict[str, str]:
    return {wire.CRC_HEADER: f"{google_crc32c.value(data):08x}"}


BIG_JSON = b'{"disks": {"os": 4096}, "retention_count": 1, "pad": "' + b"p" * (
    wire.JSON_BYTES_MAX
) + b'"}'  # fmt: skip
FIELDS = "(the body takes ['disks', 'retention_count'])"
UPLOAD = "/v1/vms/a-vm/uploads/initial.os"


@dataclass(frozen=True)
class Malformed:
    """A request the server must refuse, and how."""

    method: str
    path: str
    options: dict[str, Any]  # httpx's: json=, content=, headers=
    status: int
    message: str
    error: str = "InvalidConfiguration"


TOO_BIG = (
    f"PUT /v1/vms/new-vm: the JSON body is {len(BIG_JSON)} bytes; a JSON body is at "
    f"most {wire.JSON_BYTES_MAX} bytes"
)
APPLY = {"epoch": 1, "app_consistent": False, "last_sequences": {"os": 1}}
MALFORMED = {
    "JSON over 1 MiB": Malformed(
        "PUT", "/v1/vms/new-vm", {"content": BIG_JSON}, 413, TOO_BIG
    ),
    "JSON over 1 MiB, chunked": Malformed(
        "PUT", "/v1/vms/new-vm", {"content": iter([BIG_JSON])}, 413, TOO_BIG
    ),
    "not JSON": Malformed(
        "PUT", "/v1/vms/new-vm", {"content": b"disks=os"}, 400,
        "the request body is not JSON (Expecting value: line 1 column 1 (char 0)); "
        "PUT /v1/vms/new-vm takes a JSON object with ['disks', 'retention_count']",
    ),
    "JSON nested too deeply": Malformed(
        "PUT", "/v1/vms/new-vm", {"content": b"[" * 200_000 + b"]" * 200_000}, 400,
        "the request body is JSON nested too deeply to read; PUT /v1/vms/new-vm "
        "takes a JSON object with ['disks', 'retention_count']",
    ),
    "an integer of 5,000 digits": Malformed(
        "PUT", "/v1/vms/new-vm",
        {"content": b'{"disks": {"os": 1' + b"0" * 5000 + b'}, "retention_count": 1}'},
        400,
        "the request body holds an integer of more than 4300 digits; PUT "
        "/v1/vms/new-vm takes a JSON object with ['disks', 'retention_count']",
    ),
    "a hostile disk name to adopt": Malformed(
        "POST", "/v1/vms/a-vm/adopt",
        {"json": {"disks": {"../../a/replicas/a-vm": 4096}, "retention_count": 1}},
        400, f"disk_name='../../a/replicas/a-vm' is not a valid name; {NAMES_ALLOWED}",
        "InvalidName",
    ),
    "a retention count of 0 to adopt": Malformed(
        "POST", "/v1/vms/a-vm/adopt",
        {"json": {"disks": {"os": 4096}, "retention_count": 0}}, 400,
        "retention_count=0 must be an int from 1 to 4096 (got int)",
    ),
    "adopting a copy that is not there": Malformed(
        "POST", "/v1/vms/new-vm/adopt",
        {"json": {"disks": {"os": 4096}, "retention_count": 1}}, 400,
        "VM 'new-vm' has no copy at site 'secondary' to adopt: neither a replica nor "
        "its disks ['os'] (a reverse adopts the disks the VM ran on at its old "
        "source)",
    ),
    "an empty chunk": Malformed(
        "PUT", UPLOAD + "?offset=0", {}, 400,
        "an upload chunk carries bytes, or a hole of hole=N zero bytes (N > 0); this "
        "one carries neither",
    ),
    "a query parameter given twice": Malformed(
        "PUT", UPLOAD + "?offset=0&offset=5", {"content": b"x", "headers": crc(b"x")},
        400, "query parameter offset is given 2 times; give it once",
    ),
    "a negative epoch": Malformed(
        "POST", "/v1/vms/a-vm/cycles/7",
        {"json": APPLY | {"epoch": -1, "sizes": {"os": 1}}}, 400,
        "POST /v1/vms/a-vm/cycles/7: epoch: Input should be greater than or equal "
        "to 0 (the body takes ['app_consistent', 'epoch', 'last_sequences', "
        "'resync', 'sizes'])",
    ),
    "a cycle id of 23 digits in an upload key": Malformed(
        "GET", "/v1/vms/a-vm/uploads/cycle-99999999999999999999999.os", {}, 400,
        "cycle id '99999999999999999999999' must be a whole number >= 0",
    ),
    "blocks and a part of the disk at once": Malformed(
        "POST", "/v1/vms/a-vm/digests",
        {"json": {"disk": "os", "block_bytes": 4096, "blocks": [0],
                  "start_block": 0, "block_count": 0}}, 400,
        "POST /v1/vms/a-vm/digests: blocks, or start_block and block_count, not both",
    ),
    "a list, not an object": Malformed(
        "PUT", "/v1/vms/new-vm", {"json": [1, 2]}, 400,
        "PUT /v1/vms/new-vm: body: Input should be a valid dictionary or instance of "
        f"_Create {FIELDS}",
    ),
    "wrong types": Malformed(
        "PUT", "/v1/vms/new-vm",
        {"json": {"disks": {"os": "4096"}, "retention_count": True}}, 400,
        "PUT /v1/vms/new-vm: disks.os: Input should be a valid integer; "
        f"retention_count: Input should be a valid integer {FIELDS}",
    ),
    "an extra key": Malformed(
        "PUT", "/v1/vms/new-vm",
        {"json": {"disks": {"os": 4096}, "retention_count": 1, "path": "/etc"}}, 400,
        f"PUT /v1/vms/new-vm: path: Extra inputs are not permitted {FIELDS}",
    ),
    "a missing key": Malformed(
        "PUT", "/v1/vms/new-vm", {"json": {"disks": {"os": 4096}}}, 400,
        f"PUT /v1/vms/new-vm: retention_count: Field required {FIELDS}",
    ),
    "a negative disk size": Malformed(
        "PUT", "/v1/vms/new-vm",
        {"json": {"disks": {"os": -4096}, "retention_count": 1}}, 400,
        "disks['os']=-4096 must be from 1 to 70368744177664 bytes",
    ),
    "a negative upload size": Malformed(
        "POST", "/v1/vms/a-vm/initial/os", {"json": {"size": -1}}, 400,
        "POST /v1/vms/a-vm/initial/os: size: Input should be greater than or equal "
        "to 0 (the body takes ['size'])",
    ),
    "a negative log size": Malformed(
        "POST", "/v1/vms/a-vm/cycles/7", {"json": APPLY | {"sizes": {"os": -1}}}, 400,
        "POST /v1/vms/a-vm/cycles/7: sizes.os: Input should be greater than or equal "
        "to 0 (the body takes ['app_consistent', 'epoch', 'last_sequences', "
        "'resync', 'sizes'])",
    ),
    "a negative offset": Malformed(
        "PUT", UPLOAD + "?offset=-1", {"content": b"x", "headers": crc(b"x")}, 400,
        "query parameter offset='-1' must be a whole number >= 0",
    ),
    "a chunk without its CRC": Malformed(
        "PUT", UPLOAD + "?offset=0", {"content": b"x"}, 400,
        "an upload chunk needs its CRC32C in the X-Hvdr-Crc32c header",
    ),
    "a CRC that is not hexadecimal": Malformed(
        "PUT", UPLOAD + "?offset=0",
        {"content": b"x", "headers": {wire.CRC_HEADER: "-1"}}, 400,
        "header X-Hvdr-Crc32c='-1' must be a CRC32C in hexadecimal",
    ),
    "a chunk not matching its CRC": Malformed(
        "PUT", UPLOAD + "?offset=0",
        {"content": b"x" * 100, "headers": crc(b"y" * 100)}, 400,
        "chunk at byte 0 of upload 'initial.os' of VM 'a-vm' does not match its "
        "CRC32C (damaged in transit): send it again",
    ),
    "a chunk at the wrong offset": Malformed(
        "PUT", UPLOAD + f"?offset={BLOCK}", {"content": b"x", "headers": crc(b"x")},
        409,
        "upload 'initial.os' of VM 'a-vm' stands at byte 0, not 4096: resume from "
        "byte 0",
    ),
    "a hole past the disk": Malformed(
        "PUT", UPLOAD + "?offset=0&hole=999999999999999999", {}, 400,
        "upload 'initial.os' of VM 'a-vm' would reach byte 999999999999999999: an "
        "upload for disk 'os' (65536 bytes) holds at most 65536 bytes",
    ),
    "a chunk for a disk the VM lacks": Malformed(
        "PUT", "/v1/vms/a-vm/uploads/initial.swap?offset=0",
        {"content": b"x", "headers": crc(b"x")}, 400,
        "upload 'initial.swap': VM 'a-vm' has no disk 'swap' at this site; its "
        "disks: ['data', 'os']",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_request_is_refused_naming_what_is_wrong(
    site: Site, refusals: Refusals, case: str
) -> None:
    """Each malformed body or upload chunk: its status, a message naming the field
    or value and what is allowed, the same in the server's line; no file written."""
    sent = MALFORMED[case]
    with nothing_written(site), site.raw() as raw:
        answer = raw.request(sent.method, sent.path, **sent.options)
    body = answer.json()
    expected = (sent.status, sent.error, sent.message)
    assert (answer.status_code, body["error"], body["message"]) == expected
    if sent.status == 409:  # the client resumes from the acknowledged length
        assert body["received"] == 0
    [line] = refusals()
    assert (line["status"], line["error"], line["message"]) == expected


# -- 9: damaged logs, shipped through HttpReplica --------------------------------------


def told(site: Site, line: dict[str, Any]) -> str:
    """A refusal's message as the client hears it: the server's line, the storage
    locations' paths read ``<storage location>``."""
    message = str(line["message"])
    for root in site.roots.values():
        message = message.replace(str(root), "<storage location>")
    return message


def assert_still_at_the_last_point(site: Site) -> None:
    """a-vm has its one point, and reading it gives the source's bytes at that cut."""
    with site.replica("primary-a") as client:
        points = client.status("a-vm").points
        assert [point.cycle_id for point in points] == [site.point.cycle_id]
        reader = client.point_reader("a-vm", points[-1].recovery_point_id)
        for disk, size in DISKS.items():
            assert reader.read(disk, 0, size) == site.point.snapshot[disk]


def test_a_log_with_a_bad_crc_is_refused_and_nothing_is_applied(
    site: Site, refusals: Refusals
) -> None:
    """A sealed log with one bit flipped in its last record: CorruptRecord at the
    client with the server's message; the replica stays at its last point."""
    site.source.write("os", 5 * BLOCK, b"\x33" * BLOCK)
    cycle = site.source.cut()
    damaged = bytearray(cycle.logs["os"].read_bytes())
    damaged[-10] ^= 0x01
    cycle.logs["os"].write_bytes(bytes(damaged))
    with (
        nothing_written(site),
        site.replica("primary-a") as client,
        pytest.raises(CorruptRecord) as refused,
    ):
        client.apply_cycle("a-vm", shipment(cycle))
    assert type(refused.value) is CorruptRecord
    [line] = refusals()
    assert (line["path"], line["status"], line["error"]) == (
        f"/v1/vms/a-vm/cycles/{cycle.cycle_id}", 422, "CorruptRecord",
    )  # fmt: skip
    assert "record checksum mismatch" in line["message"]
    assert str(refused.value) == f"replica server {site.url}: {told(site, line)}"
    assert_still_at_the_last_point(site)


def test_a_log_that_skips_a_cycle_is_refused_as_a_sequence_gap(
    site: Site, refusals: Refusals
) -> None:
    """A cycle cut after one never shipped: its logs start past the point's last
    sequence, LogMismatch at the client with the server's message naming both."""
    site.source.write("data", BLOCK, b"\x44" * BLOCK)
    site.source.cut()  # never shipped
    site.source.write("data", 2 * BLOCK, b"\x55" * BLOCK)
    cycle = site.source.cut()
    with (
        nothing_written(site),
        site.replica("primary-a") as client,
        pytest.raises(LogMismatch) as refused,
    ):
        client.apply_cycle("a-vm", shipment(cycle))
    [line] = refusals()
    assert (line["status"], line["error"]) == (422, "LogMismatch")
    expected = site.point.last_sequences["data"] + 1
    assert line["message"] == (
        f"log for disk 'data' starts at sequence {expected + 1}, expected {expected} "
        f"(the point 1 ends at {expected - 1}): records are missing or repeated; "
        "resynchronise"
    )
    assert str(refused.value) == f"replica server {site.url}: {told(site, line)}"
    assert_still_at_the_last_point(site)


@pytest.mark.parametrize("text", ["²", "１", "0x1"])
def test_a_number_in_the_path_or_query_must_be_ascii_digits(text: str) -> None:
    """Digits Python's isdigit takes but int refuses (or reads otherwise) are a 400
    naming the value, never a 500 (found by the outside review)."""
    from engine.transport.http.server import _whole_number

    assert not _whole_number(text)
    assert _whole_number("12")
