"""Refused TLS handshakes at a replica server: said to the client, logged once.

The TLS layer refuses a primary before any request is read (no client certificate,
one signed by another CA, one expired or not yet valid, plain HTTP on the HTTPS
port). Two things go wrong with asyncio's TLS transport there, and this module
mends both:

- **The client is not told.** asyncio closes a connection whose handshake failed
  without sending the alert OpenSSL wrote for the peer (CPython gh-98078; the fix
  is not in the 3.11 we run on), so the primary sees only "server disconnected
  without sending a response": a network fault it retries for seconds, then reports
  as an unreachable server. Sent, the alert ("certificate required", "unknown ca",
  "certificate expired") becomes :class:`~engine.errors.AuthenticationFailed` naming
  it at the client. A plain HTTP request has no TLS to carry an alert: it is answered
  with a plain 400 whose JSON body (the server's usual refusal) says to use https,
  as nginx does.
- **The server says nothing.** asyncio reports a failed handshake only in debug mode,
  which times every callback and keeps a traceback per handle, and then with a
  traceback of its own. Here each refusal is one JSON line on ``hvdr.serve``:
  ``{"event": "refused", "stage": "tls handshake", "peer": ..., "error": ...,
  "message": ...}``, the error being what the client is told (AuthenticationFailed,
  or InvalidConfiguration for plain HTTP) and the message OpenSSL's reason.

:func:`install` wraps ``asyncio.sslproto.SSLProtocol._on_handshake_complete`` once per
process, for server-side connections only (a client's own handshakes are left alone).
Flushing twice is harmless, so a Python with the upstream fix behaves the same.
"""

from __future__ import annotations

import asyncio.sslproto
import json
import logging
import ssl
from http import HTTPStatus
from typing import Any, Final

log = logging.getLogger("hvdr.serve")

_INSTALLED: Final = "_hvdr_handshake_refusals"
PLAIN_HTTP_REASON: Final = "HTTP_REQUEST"
"""OpenSSL's reason when the first bytes of a TLS connection are an HTTP request."""


def install() -> None:
    """Make refused handshakes reach the client and the log (idempotent)."""
    protocol: Any = asyncio.sslproto.SSLProtocol
    original = protocol._on_handshake_complete
    if getattr(original, _INSTALLED, False):
        return

    def on_handshake_complete(self: Any, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None and self._server_side:
            _refuse(self, handshake_exc)
        original(self, handshake_exc)

    setattr(on_handshake_complete, _INSTALLED, True)
    protocol._on_handshake_complete = on_handshake_complete


def plain_http_answer() -> bytes:
    """The whole HTTP/1.1 answer to a plain HTTP request on the HTTPS port."""
    message = "this replica server takes HTTPS with a client certificate (mutual TLS) "
    message += "on this port, not plain HTTP: use https:// with the same host and port"
    body = json.dumps({"error": "InvalidConfiguration", "message": message}).encode()
    status = HTTPStatus.BAD_REQUEST
    head = f"HTTP/1.1 {status.value} {status.phrase}\r\n"
    head += "Content-Type: application/json; charset=utf-8\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode("ascii") + body


def _refuse(protocol: Any, error: BaseException) -> None:
    """Log one refusal line, then tell the peer (the alert, or a plain 400): logged
    first, so the line is written by the time the client sees its refusal."""
    transport = protocol._transport
    peer = None if transport is None else transport.get_extra_info("peername")
    plain_http = isinstance(error, ssl.SSLError) and (error.reason == PLAIN_HTTP_REASON)
    log.warning(
        json.dumps(
            {
                "event": "refused",
                "stage": "tls handshake",
                "peer": None if peer is None else str(peer[0]),
                # what the client is told, as a refused request's line says
                "error": "InvalidConfiguration"
                if plain_http
                else "AuthenticationFailed",
                "message": str(error),
            }
        )
    )
    if transport is None:
        return
    if plain_http:
        transport.write(plain_http_answer())
    else:
        protocol._process_outgoing()  # the alert OpenSSL wrote for the peer
