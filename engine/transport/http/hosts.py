"""Host names and listen addresses: what ``hvdr certs`` and ``hvdr serve`` accept.

A host is named by an operator twice: as a ``HOST`` of ``hvdr certs``, which becomes
the certificate's subject and the stem of its file names, and in the ``listen`` key
of the server's configuration. Both are caller input, validated here with
:class:`~engine.errors.InvalidConfiguration`.

A host is an IP address or a DNS host name: labels of 1 to 63 letters, digits and
``-`` (never first or last in a label), joined by ``.``, 253 characters at most
(RFC 1123). Nothing else passes, so a valid host never holds ``/``, ``\\``, ``..``,
spaces or a leading ``-`` (which a command line would read as an option). A name whose
last label is all digits must be an IPv4 address (``010.0.0.1`` and ``1.2.3.999``
are not: resolvers read such names in different ways).

A listen address is ``host:port``, an IPv6 address in brackets (``[::1]:8443``); port
0 asks the operating system for a free port.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from engine.errors import InvalidConfiguration

HOST_CHARACTERS_MAX: Final = 253
"""Longest DNS name (RFC 1035: 255 octets on the wire, 253 characters written)."""

PORT_MAX: Final = 65535

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

HOST_ALLOWED: Final = (
    "an IP address, or a DNS name: labels of letters, digits and '-' (not first or "
    f"last in a label) joined by '.', at most {HOST_CHARACTERS_MAX} characters"
)


def validate_host(value: object, *, argument: str) -> str:
    """Return ``value`` if it is an IP address or a DNS host name, else raise
    InvalidConfiguration naming ``argument``, the value and what is allowed."""
    if not isinstance(value, str):
        msg = f"{argument}={value!r} must be a str (got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    if ip_address(value) is not None:
        return value
    if (
        len(value) > HOST_CHARACTERS_MAX
        or _HOST_NAME.fullmatch(value) is None
        or value.rsplit(".", 1)[-1].isdigit()
    ):
        msg = f"{argument}={value!r} is not a host name; allowed: {HOST_ALLOWED}"
        raise InvalidConfiguration(msg)
    return value


def ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``value`` writes, or None if it is not one."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class ListenAddress:
    """Where a server listens: a host (name or address) and a TCP port (0: any)."""

    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can connect (``127.0.0.0/8``, ``::1``,
        ``localhost``)."""
        address = ip_address(self.host)
        if address is None:
            return self.host.lower() == "localhost"
        return address.is_loopback

    def __str__(self) -> str:
        if isinstance(ip_address(self.host), ipaddress.IPv6Address):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_listen_address(value: str, *, argument: str) -> ListenAddress:
    """The address ``host:port`` (``[v6]:port``) names; InvalidConfiguration names
    ``argument``, the value and what is allowed."""
    allowed = (
        "'host:port' with a port from 0 (any free port) to 65535, an IPv6 "
        "address in brackets ('[::1]:8443')"
    )
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or not port.isascii():
        msg = f"{argument}={value!r} is not host:port; allowed: {allowed}"
        raise InvalidConfiguration(msg)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not isinstance(ip_address(host), ipaddress.IPv6Address):
            msg = f"{argument}={value!r}: {host!r} in brackets is not an IPv6 address"
            raise InvalidConfiguration(msg)
    elif isinstance(ip_address(host), ipaddress.IPv6Address) or ":" in host:
        msg = f"{argument}={value!r}: write an IPv6 address in brackets "
        msg += f"('[{host}]:{port}')"
        raise InvalidConfiguration(msg)
    else:
        validate_host(host, argument=f"{argument} host")
    if int(port) > PORT_MAX:
        msg = f"{argument}={value!r}: port {int(port)} is past {PORT_MAX}; "
        msg += f"allowed: {allowed}"
        raise InvalidConfiguration(msg)
    return ListenAddress(host, int(port))
