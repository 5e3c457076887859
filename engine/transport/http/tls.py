"""Mutual TLS between the primary and the replica server: contexts and identities.

In certificate mode both ends prove who they are, as Hyper-V Replica's certificate
authentication does: the replica server presents its certificate and *requires* one
from the client (:func:`server_context`), the primary verifies the server's
certificate and its host name and presents its own (:func:`client_context`). Both
trust one CA (``hvdr certs`` makes it, ``certificates.py``); TLS 1.2 is the oldest
version either end speaks.

**Files are checked before OpenSSL sees them.** OpenSSL's refusals name neither the
file nor the mistake (``[SSL] PEM lib (_ssl.c:3900)``), and a CA file holding a host
certificate only shows up as a failed handshake, much later and on the other machine.
Each file is therefore read and parsed here first, and every mistake is an
:class:`~engine.errors.InvalidConfiguration` naming the file and what is wrong:
missing or unreadable, not a PEM certificate (saying what it does hold: a private key
given as the certificate is the usual swap), an encrypted private key (a server has
nobody to ask for the passphrase), a key that does not match the certificate, a
certificate outside its validity period, a CA file holding no CA certificate. The
server's certificate need not come from the CA it trusts for clients, so that is not
required.

**The peer's identity comes from its certificate as DER, parsed with cryptography**
(:func:`peer_identity`), rather than from the dictionary ``getpeercert()`` (and
aiohttp's ``get_extra_info("peercert")``) returns. That dictionary is CPython's own
rendering of a few fields as nested tuples, with no stated form for a repeated
common name or an unusual attribute, and it is silently empty when the context did
not verify the certificate, so a server built with the wrong context would see an
identity with no names rather than an error. The DER is the certificate itself, read
by the library that wrote it into typed fields; :func:`peer_identity` takes the
connection's ``ssl`` object and checks first that its context required and verified
the peer's certificate, so it never names a peer nobody verified.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from engine.errors import InvalidConfiguration, TransportError

TLS_VERSION_MIN: Final = ssl.TLSVersion.TLSv1_2
"""The oldest TLS either end accepts: 1.0 and 1.1 are deprecated (RFC 8996)."""

_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


@dataclass(frozen=True)
class CertificateIdentity:
    """Who a verified certificate names: its subject's common name and DNS names.

    ``subject_cn`` is None when the subject has no common name or several (an
    ambiguous subject names nobody); ``dns_names`` are the subject alternative
    names of type DNS, in the certificate's order.
    """

    subject_cn: str | None
    dns_names: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Every name: the common name first, then the DNS names, each once."""
        first = () if self.subject_cn is None else (self.subject_cn,)
        return tuple(dict.fromkeys((*first, *self.dns_names)))


def server_context(certificate: Path, private_key: Path, ca: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``certificate`` that requires every
    client to present a certificate signed by a CA of ``ca`` (``CERT_REQUIRED``).

    Raises InvalidConfiguration naming the file and what is wrong with it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSION_MIN
    context.verify_mode = ssl.CERT_REQUIRED
    _load(context, certificate, private_key, ca)
    return context


def client_context(certificate: Path, private_key: Path, ca: Path) -> ssl.SSLContext:
    """A TLS 1.2+ client context that verifies the server against ``ca``, checks
    its host name, and presents ``certificate`` to it.

    Raises InvalidConfiguration naming the file and what is wrong with it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = TLS_VERSION_MIN
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    _load(context, certificate, private_key, ca)
    return context


def peer_identity(
    connection: ssl.SSLObject | ssl.SSLSocket | None,
) -> CertificateIdentity:
    """The names in the certificate the peer of ``connection`` presented.

    ``connection`` is the connection's ``ssl`` object: in an aiohttp handler
    ``request.transport.get_extra_info("ssl_object")``. Raises InvalidConfiguration
    when there is none (plain HTTP) or its context did not require the peer's
    certificate (it would be unverified), TransportError when the peer sent none.
    """
    if not isinstance(connection, ssl.SSLObject | ssl.SSLSocket):
        msg = (
            f"peer_identity() needs the connection's ssl object (got "
            f"{type(connection).__name__}): is the connection plain HTTP? aiohttp "
            "gives it as request.transport.get_extra_info('ssl_object')"
        )
        raise InvalidConfiguration(msg)
    verify_mode = connection.context.verify_mode
    if verify_mode != ssl.CERT_REQUIRED:
        msg = (
            f"the connection's TLS context has verify_mode={verify_mode.name}, so the "
            "peer's certificate is not verified; build it with server_context() or "
            "client_context() (CERT_REQUIRED)"
        )
        raise InvalidConfiguration(msg)
    try:
        der = connection.getpeercert(binary_form=True)
    except ValueError:  # the ssl module's word for "no handshake yet"
        der = None
    if der is None:
        msg = "the peer presented no certificate (has the TLS handshake completed?)"
        raise TransportError(msg)
    try:
        return certificate_identity(x509.load_der_x509_certificate(der))
    except ValueError as error:
        msg = f"the peer's certificate cannot be read: {error}"
        raise TransportError(msg) from None


def certificate_identity(certificate: x509.Certificate) -> CertificateIdentity:
    """The common name and DNS names of ``certificate``.

    Raises ValueError for a certificate whose extensions cannot be parsed.
    """
    common_names = [
        attribute.value
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    subject_cn = None
    if len(common_names) == 1 and isinstance(common_names[0], str):
        subject_cn = common_names[0]
    try:
        alternative_names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        return CertificateIdentity(subject_cn, ())
    return CertificateIdentity(
        subject_cn, tuple(alternative_names.get_values_for_type(x509.DNSName))
    )


# -- reading and checking the files --------------------------------------------------


def read_certificates(path: Path, *, argument: str) -> tuple[x509.Certificate, ...]:
    """The PEM certificates in file ``path`` (given as ``argument``), at least one.

    Raises InvalidConfiguration naming the file: missing, unreadable, or holding no
    PEM certificate (the message says what it holds instead).
    """
    data = _read(path, argument)
    labels = _pem_labels(data)
    if "CERTIFICATE" not in labels:
        found = f"it holds a {' and a '.join(labels)}" if labels else ""
        if any("PRIVATE KEY" in label for label in labels):
            found += ": are the certificate and the private key swapped?"
        msg = f"{argument} {str(path)!r} is not a PEM certificate"
        msg += f" ({found})" if found else " (no '-----BEGIN CERTIFICATE-----' line)"
        raise InvalidConfiguration(msg)
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as error:
        msg = f"{argument} {str(path)!r} is not a PEM certificate: {error}"
        raise InvalidConfiguration(msg) from None


def read_private_key(path: Path, *, argument: str) -> PrivateKeyTypes:
    """The unencrypted PEM private key in file ``path`` (given as ``argument``).

    Raises InvalidConfiguration naming the file: missing, unreadable, encrypted, or
    holding no PEM private key.
    """
    data = _read(path, argument)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's word for "encrypted, and no password given"
        msg = (
            f"{argument} {str(path)!r} is encrypted; a server has nobody to ask for "
            "its passphrase: give an unencrypted key, readable by its owner only"
        )
        raise InvalidConfiguration(msg) from None
    except ValueError:
        labels = _pem_labels(data)
        found = f" (it holds a {' and a '.join(labels)})" if labels else ""
        msg = f"{argument} {str(path)!r} is not a PEM private key{found}"
        raise InvalidConfiguration(msg) from None


def check_key_matches(
    certificate: x509.Certificate,
    certificate_path: Path,
    key: PrivateKeyTypes,
    key_path: Path,
) -> None:
    """Raise InvalidConfiguration unless ``key`` is the private half of the public
    key ``certificate`` holds."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(
        der, spki
    ) != certificate.public_key().public_bytes(der, spki):
        msg = (
            f"private key {str(key_path)!r} does not match certificate "
            f"{str(certificate_path)!r}: give the key made with that certificate"
        )
        raise InvalidConfiguration(msg)


def check_valid_now(
    certificate: x509.Certificate, path: Path, *, argument: str
) -> None:
    """Raise InvalidConfiguration when ``certificate`` (in file ``path``, given as
    ``argument``) is not yet valid or has expired."""
    now = datetime.now(UTC)
    if now < certificate.not_valid_before_utc:
        msg = (
            f"{argument} {str(path)!r} is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: is this "
            "machine's clock behind?"
        )
        raise InvalidConfiguration(msg)
    if now > certificate.not_valid_after_utc:
        msg = (
            f"{argument} {str(path)!r} expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: make a new one "
            "(hvdr certs --force)"
        )
        raise InvalidConfiguration(msg)


def is_ca(certificate: x509.Certificate) -> bool:
    """Whether ``certificate`` may sign others (basic constraints say ``CA:TRUE``)."""
    try:
        constraints = certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _load(
    context: ssl.SSLContext, certificate: Path, private_key: Path, ca: Path
) -> None:
    """Check the three files, then load them into ``context``."""
    own = read_certificates(certificate, argument="certificate")[0]
    check_valid_now(own, certificate, argument="certificate")
    key = read_private_key(private_key, argument="private key")
    check_key_matches(own, certificate, key, private_key)
    authorities = read_certificates(ca, argument="CA certificate")
    for authority in authorities:
        if not is_ca(authority):
            msg = (
                f"CA certificate {str(ca)!r} holds a certificate that is not a CA "
                f"({authority.subject.rfc4514_string()}): give the CA's own "
                "certificate (hvdr certs writes it as ca.pem)"
            )
            raise InvalidConfiguration(msg)
        check_valid_now(authority, ca, argument="CA certificate")
    try:
        context.load_cert_chain(certificate, private_key)
        context.load_verify_locations(
            cadata=b"".join(
                authority.public_bytes(serialization.Encoding.PEM)
                for authority in authorities
            ).decode("ascii")
        )
    except (ssl.SSLError, OSError) as error:
        msg = f"certificate {str(certificate)!r} with private key "
        msg += f"{str(private_key)!r}, CA {str(ca)!r}: OpenSSL refused them: {error}"
        raise InvalidConfiguration(msg) from None


def _pem_labels(data: bytes) -> list[str]:
    """What the PEM blocks of ``data`` say they hold (``CERTIFICATE``, ...), sorted."""
    return sorted({label.decode() for label in _PEM_LABEL.findall(data)})


def _read(path: Path, argument: str) -> bytes:
    """The bytes of ``path``, or InvalidConfiguration saying why they cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        msg = f"{argument} {str(path)!r} does not exist"
        raise InvalidConfiguration(msg) from None
    except IsADirectoryError:
        msg = f"{argument} {str(path)!r} is a folder; give the file"
        raise InvalidConfiguration(msg) from None
    except OSError as error:
        msg = f"{argument} {str(path)!r} cannot be read: {error.strerror or error}"
        raise InvalidConfiguration(msg) from None
