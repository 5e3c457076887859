"""Mutual TLS (engine.transport.http.tls): real handshakes with the certificates
``hvdr certs`` makes, the identity each end reads, and each file mistake's message."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from engine.errors import InvalidConfiguration, TransportError
from engine.transport.http.tls import (
    TLS_VERSION_MIN,
    CertificateIdentity,
    certificate_identity,
    client_context,
    peer_identity,
    server_context,
)
from hvdr.cli import main

TIMEOUT_SECONDS = 10


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and three hosts, made by ``hvdr certs`` itself."""
    folder = tmp_path_factory.mktemp("tls") / "certs"
    hosts = ["127.0.0.1", "replica.example", "primary.example"]
    status = main(["certs", "--out", str(folder), "--ca-name", "test CA", *hosts])
    assert status == 0
    return folder


def files(folder: Path, host: str) -> tuple[Path, Path, Path]:
    """(certificate, private key, CA) of ``host``, as the contexts take them."""
    return folder / f"{host}.pem", folder / f"{host}.key", folder / "ca.pem"


Outcome = CertificateIdentity | Exception


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str
) -> tuple[Outcome, Outcome]:
    """A TLS connection on 127.0.0.1: what each end read of the other (or why it
    failed). The server sends a byte after its handshake, so a client refused by
    the server fails too (with TLS 1.3 the client finishes its handshake first)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT_SECONDS)
        port = listener.getsockname()[1]
        outcomes: dict[str, Outcome] = {}

        def serve() -> None:
            try:
                connection, _ = listener.accept()
                connection.settimeout(TIMEOUT_SECONDS)
                with server.wrap_socket(connection, server_side=True) as tls:
                    outcomes["server"] = peer_identity(tls)
                    tls.sendall(b"!")
            except (OSError, TransportError) as error:
                outcomes["server"] = error

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), TIMEOUT_SECONDS) as raw,
                client.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                identity = peer_identity(tls)
                if tls.recv(1) != b"!":
                    raise ConnectionError("the server closed the connection")
                outcomes["client"] = identity
        except OSError as error:
            outcomes["client"] = error
        thread.join(TIMEOUT_SECONDS)
    return outcomes["server"], outcomes["client"]


# -- handshakes ---------------------------------------------------------------------


def test_a_handshake_with_hvdr_certs_gives_each_end_the_others_name(
    certs: Path,
) -> None:
    """Server 127.0.0.1 and client primary.example, one CA: each reads the other."""
    server, client = handshake(
        server_context(*files(certs, "127.0.0.1")),
        client_context(*files(certs, "primary.example")),
        "127.0.0.1",
    )
    assert server == CertificateIdentity("primary.example", ("primary.example",))
    assert client == CertificateIdentity("127.0.0.1", ("127.0.0.1",))
    assert server.names == ("primary.example",)


def test_the_client_refuses_a_server_certificate_for_another_host(
    certs: Path,
) -> None:
    """Connecting to 127.0.0.1, the client refuses replica.example's certificate."""
    _, client = handshake(
        server_context(*files(certs, "replica.example")),
        client_context(*files(certs, "primary.example")),
        "127.0.0.1",
    )
    assert isinstance(client, ssl.SSLCertVerificationError)
    assert "IP address mismatch" in str(client)


def test_the_server_refuses_a_client_of_another_ca(certs: Path, tmp_path: Path) -> None:
    """A client whose certificate another CA signed never gets an identity."""
    stranger = trustme.CA().issue_cert("primary.example")
    stranger.cert_chain_pems[0].write_to_path(str(tmp_path / "stranger.pem"))
    stranger.private_key_pem.write_to_path(str(tmp_path / "stranger.key"))
    server, client = handshake(
        server_context(*files(certs, "127.0.0.1")),
        client_context(
            tmp_path / "stranger.pem", tmp_path / "stranger.key", certs / "ca.pem"
        ),
        "127.0.0.1",
    )
    assert isinstance(server, ssl.SSLCertVerificationError)
    assert "unable to get local issuer certificate" in str(server)
    assert isinstance(client, OSError)


def test_the_server_refuses_a_client_without_a_certificate(certs: Path) -> None:
    """CERT_REQUIRED: a client that presents nothing is refused in the handshake."""
    anonymous = ssl.create_default_context(cafile=certs / "ca.pem")
    server, client = handshake(
        server_context(*files(certs, "127.0.0.1")), anonymous, "127.0.0.1"
    )
    assert isinstance(server, ssl.SSLError)
    assert "peer did not return a certificate" in str(server)
    assert isinstance(client, OSError)


def test_both_contexts_are_tls_1_2_or_later_and_verify_the_peer(certs: Path) -> None:
    """The settings the module promises, read back from the contexts."""
    server = server_context(*files(certs, "127.0.0.1"))
    client = client_context(*files(certs, "primary.example"))
    expected = [(TLS_VERSION_MIN, ssl.CERT_REQUIRED, False)]
    expected += [(ssl.TLSVersion.TLSv1_2, ssl.CERT_REQUIRED, True)]
    actual = [
        (context.minimum_version, context.verify_mode, context.check_hostname)
        for context in (server, client)
    ]
    assert expected == actual


def test_an_aiohttp_handler_reads_the_client_name_httpx_presents(
    certs: Path,
) -> None:
    """The way hvdr serve reads it: aiohttp's ssl_object, an httpx client."""

    async def whoami(request: web.Request) -> web.Response:
        assert request.transport is not None
        identity = peer_identity(request.transport.get_extra_info("ssl_object"))
        return web.Response(text=" ".join(identity.names))

    async def round_trip() -> str:
        application = web.Application()
        application.router.add_get("/whoami", whoami)
        runner = web.AppRunner(application)
        await runner.setup()
        site = web.TCPSite(
            runner,
            "127.0.0.1",
            0,
            ssl_context=server_context(*files(certs, "127.0.0.1")),
        )
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with httpx.AsyncClient(
                verify=client_context(*files(certs, "primary.example")),
                timeout=TIMEOUT_SECONDS,
            ) as client:
                response = await client.get(f"https://127.0.0.1:{port}/whoami")
        finally:
            await runner.cleanup()
        return f"{response.status_code} {response.text}"

    assert asyncio.run(round_trip()) == "200 primary.example"


# -- identities ----------------------------------------------------------------------


def test_peer_identity_refuses_a_plain_connection() -> None:
    """No ssl object (plain HTTP): an error that says so, not an empty identity."""
    with pytest.raises(InvalidConfiguration, match="is the connection plain HTTP"):
        peer_identity(None)


def test_peer_identity_refuses_a_context_that_verifies_nothing() -> None:
    """A CERT_NONE context would hand over a certificate nobody verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    with pytest.raises(InvalidConfiguration) as error:
        peer_identity(connection)
    assert str(error.value) == (
        "the connection's TLS context has verify_mode=CERT_NONE, so the peer's "
        "certificate is not verified; build it with server_context() or "
        "client_context() (CERT_REQUIRED)"
    )


def test_peer_identity_before_the_handshake_is_a_transport_error(
    certs: Path,
) -> None:
    """No handshake yet, no certificate: TransportError, not the ssl ValueError."""
    context = client_context(*files(certs, "primary.example"))
    connection = context.wrap_bio(
        ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="127.0.0.1"
    )
    with pytest.raises(TransportError, match="the peer presented no certificate"):
        peer_identity(connection)


def test_a_subject_with_two_common_names_names_nobody_by_it() -> None:
    """Two CNs are ambiguous: subject_cn is None, the DNS names still count."""
    ca = trustme.CA()
    leaf = ca.issue_cert("b.example")
    certificate = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "a.example"),
            x509.NameAttribute(NameOID.COMMON_NAME, "c.example"),
        ]
    )
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    rebuilt = (
        x509.CertificateBuilder(
            subject_name=subject,
            issuer_name=subject,
            public_key=certificate.public_key(),
            serial_number=1,
            not_valid_before=certificate.not_valid_before_utc,
            not_valid_after=certificate.not_valid_after_utc,
            extensions=list(certificate.extensions),
        )
    ).sign(key, certificate.signature_hash_algorithm)  # type: ignore[arg-type]
    assert certificate_identity(rebuilt) == CertificateIdentity(None, ("b.example",))


# -- file mistakes -------------------------------------------------------------------


def write_expired(certs: Path, folder: Path) -> Path:
    """A certificate for primary.example's key, signed by the CA, expired."""
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key(
        (certs / "primary.example.key").read_bytes(), None
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(2)
        .not_valid_before(datetime(2024, 4, 1, 12, 0, tzinfo=UTC))
        .not_valid_after(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
        .sign(ca_key, ca.signature_hash_algorithm)  # type: ignore[arg-type]
    )
    path = folder / "expired.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        ("missing certificate", "certificate '{d}/nothing.pem' does not exist"),
        ("certificate is a folder", "certificate '{d}' is a folder; give the file"),
        (
            "garbage certificate",
            (
                "certificate '{d}/garbage' is not a PEM certificate "
                "(no '-----BEGIN CERTIFICATE-----' line)"
            ),
        ),
        (
            "swapped",
            (
                "certificate '{c}/primary.example.key' is not a PEM certificate (it "
                "holds a PRIVATE KEY: are the certificate and the private key swapped?)"
            ),
        ),
        (
            "key of another host",
            (
                "private key '{c}/replica.example.key' does not match certificate "
                "'{c}/primary.example.pem': give the key made with that certificate"
            ),
        ),
        (
            "key is a certificate",
            (
                "private key '{c}/ca.pem' is not a PEM private key (it holds a "
                "CERTIFICATE)"
            ),
        ),
        (
            "encrypted key",
            (
                "private key '{d}/encrypted.key' is encrypted; a server has nobody "
                "to ask for its passphrase: give an unencrypted key, readable by its "
                "owner only"
            ),
        ),
        (
            "ca is a host certificate",
            (
                "CA certificate '{c}/replica.example.pem' holds a certificate that is "
                "not a CA (CN=replica.example): give the CA's own certificate (hvdr "
                "certs writes it as ca.pem)"
            ),
        ),
        (
            "expired",
            (
                "certificate '{d}/expired.pem' expired on 2024-05-01 12:00 UTC: make a "
                "new one (hvdr certs --force)"
            ),
        ),
    ],
)
def test_each_file_mistake_names_the_file_and_what_is_wrong(
    certs: Path, tmp_path: Path, mistake: str, expected: str
) -> None:
    """Each refusal is InvalidConfiguration with the file and the mistake."""
    certificate, key, ca = files(certs, "primary.example")
    (tmp_path / "garbage").write_text("not a certificate\n", "utf-8")
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    (tmp_path / "encrypted.key").write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    arguments = {
        "missing certificate": (tmp_path / "nothing.pem", key, ca),
        "certificate is a folder": (tmp_path, key, ca),
        "garbage certificate": (tmp_path / "garbage", key, ca),
        "swapped": (key, certificate, ca),
        "key of another host": (certificate, certs / "replica.example.key", ca),
        "key is a certificate": (certificate, ca, ca),
        "encrypted key": (certificate, tmp_path / "encrypted.key", ca),
        "ca is a host certificate": (certificate, key, certs / "replica.example.pem"),
        "expired": (write_expired(certs, tmp_path), key, ca),
    }[mistake]
    for make in (server_context, client_context):
        with pytest.raises(InvalidConfiguration) as error:
            make(*arguments)
        assert str(error.value) == expected.format(d=tmp_path, c=certs)
