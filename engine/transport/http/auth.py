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

from typing import Final

from aiohttp import web

from engine.errors import AuthenticationFailed, ReplicationError
from engine.transport.http.kerberos import KerberosAcceptor
from engine.transport.http.server import Caller
from engine.transport.http.server_config import KerberosSettings
from engine.transport.http.tls import peer_identity

CERTIFICATE: Final = "certificate"
KERBEROS: Final = "kerberos"


class CertificateAuthenticator:
    """Names from the client certificate the TLS handshake verified."""

    scheme = CERTIFICATE

    def identify(self, request: web.Request) -> Caller:
        """The caller's certificate names, or :class:`AuthenticationFailed`."""
        transport = request.transport
        connection = (
            None if transport is None else transport.get_extra_info("ssl_object")
        )
        if connection is None:
            msg = "no TLS connection: this replica server takes HTTPS with a client "
            msg += "certificate signed by its CA (certificate mode)"
            raise AuthenticationFailed(msg)
        try:
            names = peer_identity(connection).names
        except ReplicationError as error:
            raise AuthenticationFailed(str(error)) from error
        if not names:
            msg = "the client certificate names no host (no subject common name and "
            msg += "no DNS subject alternative name)"
            raise AuthenticationFailed(msg)
        return Caller(names)


class KerberosAuthenticator:
    """The client principal of the Kerberos ticket each request carries."""

    scheme = KERBEROS

    def __init__(self, settings: KerberosSettings) -> None:
        """Load the keytab of ``settings`` (InvalidConfiguration if it cannot serve)."""
        self._acceptor = KerberosAcceptor(
            settings.keytab,
            service_principal=settings.principal,
            krb5_config=settings.krb5_config,
        )

    def identify(self, request: web.Request) -> Caller:
        """The caller's principal, or :class:`AuthenticationFailed`."""
        accepted = self._acceptor.accept(request.headers.get("Authorization"))
        proof = (
            None
            if accepted.response_token is None
            else f"Negotiate {accepted.response_token}"
        )
        return Caller((accepted.principal,), proof)
