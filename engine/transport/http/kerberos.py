"""Kerberos for the network transport: SPNEGO ``Negotiate`` on both ends of HTTP.

In Kerberos mode (Hyper-V Replica's "HTTP, Kerberos" option) the primary proves who it
is with a ticket for the replica server's service principal ``HTTP/<replica-host>``,
and the server proves who *it* is in return (mutual authentication): only a holder of
the service key can answer the ticket. :class:`KerberosAcceptor` is the server's half,
:class:`NegotiateAuth` (an ``httpx.Auth``) the primary's. The data itself is **not**
encrypted, nor sealed against change in transit: Kerberos here authenticates who sent
each request and who answered, not the bytes of the bodies (use certificate mode,
HTTPS, where the network is not trusted).

**One round per request** (RFC 4559). Every request carries ``Authorization: Negotiate
<token>``, a SPNEGO token wrapping a fresh Kerberos AP-REQ; the server accepts it in one
step and answers ``WWW-Authenticate: Negotiate <token>`` (the AP-REP, its proof). No
state lives in the connection, so a request authenticates on its own whatever
connection carries it. What keeps a captured header from being sent again (plain HTTP
can be read on the wire) is the acceptor's replay cache: MIT krb5 accepts each
authenticator once, within the clock skew it tolerates. A reply without a valid proof
is refused by the client, whatever its status (401 excepted: that is the server's own
refusal, returned to the caller with its reason in the body), so an impostor cannot
answer in the server's name; the server must therefore send its token on every reply
to an authenticated request, errors included.

**Why gssapi rather than pyspnego.** The acceptor must read *its* keytab, given as a
path. pyspnego's server takes no credential for Kerberos and reads the process's
default keytab (``KRB5_KTNAME``), which is global. MIT krb5's own SPNEGO mechanism does
the wrapping, and ``gss_acquire_cred_from`` takes the keytab, the replay cache and the
client's credential cache as arguments: none of those is process-global here.

**What is process-global: the krb5.conf.** It says where each realm's KDCs are, and
MIT krb5 reads it from ``KRB5_CONFIG`` (else ``/etc/krb5.conf``) on each call; GSSAPI
has no per-call way to name another. Both classes therefore take ``krb5_config`` and
set ``KRB5_CONFIG`` (:func:`use_krb5_config`) before their first use; naming a
different file while the variable names another is refused, never silently switched,
since every Kerberos call in the process would follow. One file may list several realms.
``docs/network-kerberos.md`` lists the settings that matter and why.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
from gssapi.raw.creds import Creds, inquire_cred
from gssapi.raw.exceptions import ExpiredCredentialsError, MissingCredentialsError
from gssapi.raw.ext_cred_store import acquire_cred_from
from gssapi.raw.misc import GSSError
from gssapi.raw.names import Name, display_name, import_name
from gssapi.raw.oids import OID
from gssapi.raw.sec_contexts import (
    SecurityContext,
    accept_sec_context,
    init_sec_context,
)
from gssapi.raw.types import NameType, RequirementFlag

from engine.errors import AuthenticationFailed, InvalidConfiguration

#: The HTTP authentication scheme (RFC 4559), compared case-insensitively.
SCHEME: Final = "Negotiate"
#: SPNEGO's mechanism (RFC 4178); MIT krb5 implements it over its Kerberos mechanism.
SPNEGO: Final = OID.from_int_seq("1.3.6.1.5.5.2")
#: The environment variable MIT krb5 reads its configuration files from.
KRB5_CONFIG: Final = "KRB5_CONFIG"
#: Minor-status texts that say nothing (a status of another mechanism's table).
_UNINFORMATIVE: Final = frozenset({"", "Success", "Unknown error"})
#: Longest piece of a hostile header quoted back in a message.
_QUOTED_CHARACTERS_MAX: Final = 40


@dataclass(frozen=True)
class Accepted:
    """A request the acceptor authenticated.

    ``principal`` is the client's Kerberos principal (``primary@HVDR.TEST``): who to
    authorise. ``response_token`` is the base64 proof to send back as
    ``WWW-Authenticate: Negotiate <token>`` (mutual authentication), on every reply.
    """

    principal: str
    response_token: str | None


def use_krb5_config(krb5_config: Path | None) -> None:
    """Make MIT krb5 read ``krb5_config`` in this whole process (``KRB5_CONFIG``).

    ``None`` leaves MIT's choice (``KRB5_CONFIG`` if set, else ``/etc/krb5.conf``).
    Refused when the variable already names another file.
    """
    if krb5_config is None:
        return
    if not Path(krb5_config).is_file():
        msg = (
            f"krb5_config={str(krb5_config)!r} is not a file: give the krb5.conf "
            "that lists the realm and its KDCs"
        )
        raise InvalidConfiguration(msg)
    wanted = os.fspath(Path(krb5_config).absolute())
    current = os.environ.get(KRB5_CONFIG)
    if current not in {None, wanted}:
        msg = (
            f"krb5_config={wanted!r}, but this process already reads "
            f"{KRB5_CONFIG}={current!r}: MIT Kerberos reads one configuration per "
            "process; give every Kerberos object the same krb5.conf (it may list "
            f"several realms), or unset {KRB5_CONFIG}"
        )
        raise InvalidConfiguration(msg)
    os.environ[KRB5_CONFIG] = wanted


def gss_reason(error: GSSError) -> str:
    """What GSSAPI said: the Kerberos (minor) message when there is one (it says
    what went wrong), else the generic (major) one."""
    minor = (
        error.get_all_statuses(error.min_code, is_maj=False) if error.min_code else []
    )
    specific = [text for text in minor if text not in _UNINFORMATIVE]
    if specific:
        return "; ".join(specific)
    major = error.get_all_statuses(error.maj_code, is_maj=True)
    return "; ".join(major) or f"GSS major status {error.maj_code:#x}"


def _quoted(text: str) -> str:
    """``text`` for a message, cut short: it may come from a hostile peer."""
    if len(text) <= _QUOTED_CHARACTERS_MAX:
        return repr(text)
    return repr(text[:_QUOTED_CHARACTERS_MAX]) + "..."


def _encoded(store: dict[str, str]) -> dict[bytes | str, bytes | str]:
    """A credential store for the raw ``acquire_cred_from``, as bytes.

    Its stub allows ``str``, but given ``str`` the keytab was seen ignored (MIT read
    ``/etc/krb5.keytab`` instead) after other Kerberos work in the process; bytes,
    which gssapi's own ``Credentials`` passes, always worked.
    """
    return {key.encode(): value.encode() for key, value in store.items()}


def _decoded(token: str, header: str) -> bytes:
    """The bytes of a Negotiate token, refused when not strict base64."""
    try:
        return base64.b64decode(token, validate=True)
    except binascii.Error as error:
        msg = f"{header}: the Negotiate token is not valid base64 ({error})"
        raise AuthenticationFailed(msg) from None


class KerberosAcceptor:
    """The replica server's half: checks each request's ``Authorization`` header.

    ``keytab`` holds the service key (``HTTP/<replica-host>@REALM``). With
    ``service_principal`` only tickets for that principal are accepted; without it,
    any key of the keytab serves. ``replay_cache`` (a file) records the
    authenticators seen; without it MIT's default (``KRB5RCACHEDIR`` or
    ``/var/tmp``) is used. A keytab that cannot serve raises
    :class:`InvalidConfiguration` here, not at the first request.

    :meth:`accept` blocks briefly (it reads the keytab and writes the replay cache:
    some 0.1 ms here), so an event loop may call it inline. Which of the principals
    it authenticates may replicate is the server's to decide.
    """

    def __init__(
        self,
        keytab: Path,
        *,
        service_principal: str | None = None,
        replay_cache: Path | None = None,
        krb5_config: Path | None = None,
    ) -> None:
        use_krb5_config(krb5_config)
        if not Path(keytab).is_file():
            msg = (
                f"keytab={str(keytab)!r} does not exist: export the service key "
                "with kadmin's ktadd (or ktpass on Windows)"
            )
            raise InvalidConfiguration(msg)
        store = {"keytab": f"FILE:{Path(keytab).absolute()}"}
        if replay_cache is not None:
            store["rcache"] = f"file2:{Path(replay_cache).absolute()}"
        name: Name | None = None
        if service_principal is not None:
            name = import_name(service_principal.encode(), NameType.kerberos_principal)
        try:
            self._credentials: Creds = acquire_cred_from(
                _encoded(store), name=name, usage="accept"
            ).creds
        except GSSError as error:
            serves = service_principal or "any principal"
            msg = f"keytab={str(keytab)!r} cannot serve {serves}: {gss_reason(error)}"
            raise InvalidConfiguration(msg) from None

    def accept(self, authorization: str | None) -> Accepted:
        """Authenticate one request from its ``Authorization`` header (or ``None``).

        Raises :class:`AuthenticationFailed` naming what was wrong: no header, another
        scheme, a token that is not base64, or the reason Kerberos refused it.
        """
        token = _authorization_token(authorization)
        if token.startswith(b"NTLMSSP\x00"):
            msg = (
                "Authorization: the client sent an NTLM token, and this server "
                "accepts only Kerberos: the client has no ticket for this server's "
                "service principal (HTTP/<host>); check the name it connects to"
            )
            raise AuthenticationFailed(msg)
        try:
            result = accept_sec_context(token, acceptor_creds=self._credentials)
        except GSSError as error:
            msg = f"the Negotiate token was refused by Kerberos: {gss_reason(error)}"
            raise AuthenticationFailed(msg) from None
        if result.more_steps:
            msg = (
                "the Negotiate token needs another round trip (it carries no "
                "Kerberos ticket); this server authenticates each request in one "
                "round: send a Kerberos AP-REQ in the first token"
            )
            raise AuthenticationFailed(msg)
        principal = display_name(result.initiator_name, name_type=False).name.decode()
        proof = base64.b64encode(result.token).decode() if result.token else None
        return Accepted(principal=principal, response_token=proof)


def _authorization_token(authorization: str | None) -> bytes:
    """The token of an ``Authorization: Negotiate <base64>`` header."""
    if authorization is None:
        msg = (
            "no Authorization header: this server requires Kerberos "
            "(Authorization: Negotiate <token>)"
        )
        raise AuthenticationFailed(msg)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        msg = (
            f"Authorization uses the {_quoted(scheme)} scheme; this server "
            f"accepts only {SCHEME!r} (Kerberos)"
        )
        raise AuthenticationFailed(msg)
    if not token.strip():
        msg = "Authorization: Negotiate carries no token"
        raise AuthenticationFailed(msg)
    return _decoded(token.strip(), "Authorization")


def _challenge_token(response: httpx.Response) -> bytes | None:
    """The token of the reply's ``WWW-Authenticate: Negotiate <token>``, if any."""
    for value in response.headers.get_list("WWW-Authenticate"):
        for challenge in value.split(","):
            scheme, _, token = challenge.strip().partition(" ")
            if scheme.lower() == SCHEME.lower() and token.strip():
                return _decoded(token.strip(), "WWW-Authenticate")
    return None


class NegotiateAuth(httpx.Auth):
    """The primary's half: Kerberos on every request, and the server's proof checked.

    ``host`` is the replica server's name as its service principal spells it
    (``HTTP/<host>``), whatever address the URL uses. ``ccache`` names the credential
    cache (``FILE:/path``); without it, the default one (``KRB5CCNAME``). A fresh
    context is made for each request, so a renewed ticket is picked up at once.

    A 401 is returned as it is (the server's refusal; its body says why). Any other
    reply must prove the server's identity, else :class:`AuthenticationFailed`.
    """

    def __init__(
        self,
        host: str,
        *,
        ccache: str | None = None,
        krb5_config: Path | None = None,
        service: str = "HTTP",
    ) -> None:
        for argument, value in (("host", host), ("service", service)):
            if not value or "@" in value or "/" in value or value != value.strip():
                msg = (
                    f"{argument}={value!r} must be a bare name (the service principal "
                    f"is {service!r}/<host>), without '@', '/' or spaces"
                )
                raise InvalidConfiguration(msg)
        if ccache is not None and not ccache.strip():
            msg = f"ccache={ccache!r} must name a credential cache, e.g. FILE:/path"
            raise InvalidConfiguration(msg)
        use_krb5_config(krb5_config)
        self.target = f"{service}@{host}"
        self._name = import_name(self.target.encode(), NameType.hostbased_service)
        self._ccache = ccache

    def auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign ``request``, then check the server's proof on the reply (httpx's
        hook)."""
        context, token = self._initiate()
        request.headers["Authorization"] = (
            f"{SCHEME} {base64.b64encode(token).decode()}"
        )
        response = yield request
        if response.status_code != httpx.codes.UNAUTHORIZED:
            self._verify(context, response)

    def _cache(self) -> str:
        return self._ccache or "the default credential cache (KRB5CCNAME)"

    def _store(self) -> dict[bytes | str, bytes | str] | None:
        return None if self._ccache is None else _encoded({"ccache": self._ccache})

    def _initiate(self) -> tuple[SecurityContext, bytes]:
        """A new security context for the server and its first token."""
        try:
            credentials = None  # the default cache: MIT picks by the server's realm
            if self._ccache is not None:
                credentials = acquire_cred_from(self._store(), usage="initiate").creds
            result = init_sec_context(
                self._name,
                creds=credentials,
                mech=SPNEGO,
                flags=RequirementFlag.mutual_authentication,
            )
        except GSSError as error:
            raise AuthenticationFailed(self._refusal(error)) from None
        assert result.token is not None, "an initiator's first step makes a token"
        return result.context, result.token

    def _refusal(self, error: GSSError) -> str:
        """Why no token could be made, with what to do about it."""
        reason = gss_reason(error)
        if isinstance(error, MissingCredentialsError):
            return (
                f"no Kerberos ticket for {self.target} in {self._cache()} ({reason}): "
                "run kinit (or kinit -k -t <keytab> <principal>) first"
            )
        if self._expired():
            return (
                f"the Kerberos ticket in {self._cache()} has expired ({reason}): "
                f"run kinit again to authenticate to {self.target}"
            )
        return f"cannot get a Kerberos ticket for {self.target}: {reason}"

    def _expired(self) -> bool:
        """Whether the cache's ticket-granting ticket has expired.

        Asked after a failure, whose minor status cannot say it: MIT numbers those
        statuses as it meets them, so no code means "ticket expired" in advance.
        """
        try:
            credentials = acquire_cred_from(self._store(), usage="initiate").creds
            inquire_cred(credentials, name=False, usage=False, mechs=False)
        except ExpiredCredentialsError:
            return True
        except GSSError:
            return False
        return False

    def _verify(self, context: SecurityContext, response: httpx.Response) -> None:
        """Refuse ``response`` unless it carries the server's valid proof."""
        answered = (
            f"the reply {response.status_code} to {response.request.method} "
            f"{response.request.url.path}"
        )
        token = _challenge_token(response)
        if token is None:
            msg = (
                f"{answered} does not prove it comes from {self.target}: it has no "
                "'WWW-Authenticate: Negotiate <token>' (mutual authentication); "
                "the reply is refused"
            )
            raise AuthenticationFailed(msg)
        try:
            result = init_sec_context(
                self._name, context=context, mech=SPNEGO, input_token=token
            )
        except GSSError as error:
            msg = (
                f"mutual authentication of {self.target} failed ({gss_reason(error)}): "
                f"{answered} is refused"
            )
            raise AuthenticationFailed(msg) from None
        # int(): the flags are a set of RequirementFlag, whatever gssapi's stub says
        mutual = int(result.flags) & RequirementFlag.mutual_authentication
        if result.more_steps or not mutual:
            msg = f"{answered} left mutual authentication of {self.target} incomplete"
            raise AuthenticationFailed(msg)
