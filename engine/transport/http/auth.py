"""Who is calling a replica server: the two authentication modes.

- **Certificate** (:class:`CertificateAuthenticator`): the connection is HTTPS with
  mutual TLS, and the TLS layer has already refused a client without a certificate
  signed by the server's CA, or outside its validity (``tls.server_context``). What
  is left is to read the names the certificate proves: its subject's common name and
  its DNS subject alternative names.
- **Kerberos** (:class:`KerberosAuthenticator`): the connection is plain HTTP and
  every request carries ``Authorization: Negotiate <token>``, a Kerberos ticket for
  the server's service principal wrapped in SPNEGO; the caller's name is the ticket's
  client principal. The server answers with its own token (mutual authentication).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from engine.errors import AuthenticationFailed
from engine.transport.http.server import Caller

CERTIFICATE: Final = "certificate"
KERBEROS: Final = "kerberos"


class CertificateAuthenticator:
    """Names from the client certificate the TLS handshake verified."""

    scheme = CERTIFICATE

    def identify(self, request: web.Request) -> Caller:
        """The caller's certificate names, or :class:`AuthenticationFailed`."""
        transport = request.transport
        peercert = None if transport is None else transport.get_extra_info("peercert")
        if not peercert:
            msg = "no client certificate: this replica server takes HTTPS with a "
            msg += "client certificate signed by its CA (certificate mode)"
            raise AuthenticationFailed(msg)
        names = certificate_names(peercert)
        if not names:
            msg = "the client certificate names no host (no subject common name and "
            msg += "no DNS subject alternative name)"
            raise AuthenticationFailed(msg)
        return Caller(names)


def certificate_names(peercert: Mapping[str, Any]) -> tuple[str, ...]:
    """The subject common name, then the DNS SAN names, of a verified certificate
    (``ssl.SSLSocket.getpeercert()``'s form), without repeats."""
    names: list[str] = []
    subject: Sequence[Sequence[tuple[str, str]]] = peercert.get("subject", ())
    for part in subject:
        for key, value in part:
            if key == "commonName":
                names.append(value)
    for kind, value in peercert.get("subjectAltName", ()):
        if kind in {"DNS", "IP Address"}:
            names.append(value)
    return tuple(dict.fromkeys(names))
