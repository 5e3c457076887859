"""The replica server's configuration: one TOML file, checked before anything listens.

``hvdr serve --config FILE`` reads it with :func:`load_server_config`::

    [server]
    listen = "127.0.0.1:8443"        # host:port; port 0 = any free port
    site = "secondary"               # the site whose replicas this server holds
    authentication = "certificate"   # or "kerberos"
    max_request_bytes = 67108864     # optional: 64 MiB; 1 MiB to 1 GiB
    request_timeout_seconds = 60     # optional: 60; more than 0, at most 3600 (arrival)

    [certificate]                    # iff authentication = "certificate"
    certificate = "replica.pem"
    private_key = "replica.key"
    ca = "ca.pem"

    [kerberos]                       # iff authentication = "kerberos"
    keytab = "replica.keytab"
    principal = "HTTP/replica.example@EXAMPLE.COM"   # optional
    krb5_config = "krb5.conf"                        # optional

    [authorization]
    mode = "listed"                  # or "any", with storage = "FOLDER" here
    [[authorization.primary]]
    name = "primary.example"         # a certificate's CN or DNS name, a principal
    storage = "/srv/hvdr/from-primary"

Relative paths are relative to the file's folder, so a folder of configuration,
certificates and keys can move as one. The result is frozen dataclasses
(:class:`ServerConfig`), the paths in it absolute and resolved.

**Every mistake is refused before the server starts**, as an
:class:`~engine.errors.InvalidConfiguration` whose message starts with the file and
the line (``engine.configuration_files``: TOML syntax errors carry tomllib's line and
column; other mistakes the line of the key, or of its table when the key is left
out), then names the key path (``authorization.primary[1].storage``), the value and
what is allowed. Validation is pydantic's, strict (``"60"`` is not 60, ``true`` is
not 1, an unknown key is refused with the known ones), then what only the whole file
tells: the table the authentication mode needs (and no other), a listen address
that parses, files that exist, storage folders that are not files, names listed
once, and storage folders that are each primary's own (never the same, never one
inside another: a primary could otherwise read or overwrite another's replicas).

**Authorization** maps an authenticated identity to the one storage folder it may
use (:meth:`ServerConfig.location_for`): with ``mode = "any"`` every authenticated
peer (any certificate the CA signed, any principal the keytab's realm vouches for)
shares ``authorization.storage``; with ``mode = "listed"`` only the names listed,
each its own folder. Names are compared exactly as written (case too): a
certificate's subject common name or one of its DNS names, or a Kerberos principal.
An identity whose names match two entries is refused, never given the first.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.configuration_files import (
    KeyPath,
    dotted,
    first_error,
    line_of,
    read_text,
    reason,
    toml_key_lines,
    toml_syntax_error,
    where,
)
from engine.errors import InvalidConfiguration
from engine.transport.http.hosts import ListenAddress, parse_listen_address

Site = Literal["primary", "secondary"]
SITE_NAMES: Final = get_args(Site)
"""The engine's sites (``engine.binding.sites.SITE_NAMES``, above this layer; a test
keeps the two equal)."""

Authentication = Literal["certificate", "kerberos"]
AuthorizationMode = Literal["any", "listed"]

MIB: Final = 1 << 20
MAX_REQUEST_BYTES_DEFAULT: Final = 64 * MIB
"""A shipped cycle's chunk: large enough to keep a link busy, small enough that a
request held in memory costs little."""
MAX_REQUEST_BYTES_MIN: Final = MIB
"""Below this, a cycle of a busy disk would take thousands of requests."""
MAX_REQUEST_BYTES_MAX: Final = 1 << 30
"""A request is held in memory: more than 1 GiB is a memory risk, not a speed-up."""
REQUEST_TIMEOUT_SECONDS_DEFAULT: Final = 60.0
REQUEST_TIMEOUT_SECONDS_MAX: Final = 3600.0
"""An hour: a largest request over a slow link (1 GiB at 0.3 MB/s) still fits."""
NAME_CHARACTERS_MAX: Final = 255
"""A DNS name (253) or a Kerberos principal of the usual lengths."""

_KIND = "a server configuration is a TOML file"


# -- what the file holds: frozen dataclasses -----------------------------------------


@dataclass(frozen=True)
class CertificateFiles:
    """The server's certificate and key, and the CA its clients' certificates need."""

    certificate: Path
    private_key: Path
    ca: Path


@dataclass(frozen=True)
class KerberosSettings:
    """The keytab the server accepts tickets with; the principal and krb5.conf to use
    (None: the keytab's and the system's)."""

    keytab: Path
    principal: str | None
    krb5_config: Path | None


@dataclass(frozen=True)
class AllowedPrimary:
    """A primary server allowed in, by name, and the storage folder it may use."""

    name: str
    storage: Path


@dataclass(frozen=True)
class Authorization:
    """Who may use which storage folder: ``any`` (one folder for every authenticated
    peer) or ``listed`` (only the primaries listed, each its own folder)."""

    mode: AuthorizationMode
    storage: Path | None
    """The one folder of mode ``any``; None in mode ``listed``."""
    primaries: tuple[AllowedPrimary, ...]
    """The primaries of mode ``listed``; empty in mode ``any``."""

    @classmethod
    def any_caller(cls, storage: Path) -> Authorization:
        """Mode ``any``: every authenticated caller, in ``storage``."""
        return cls("any", Path(storage).resolve(), ())

    @classmethod
    def only(cls, primaries: Mapping[str, Path]) -> Authorization:
        """Mode ``listed``: only the names given, each in its own folder."""
        listed = tuple(
            AllowedPrimary(name, Path(folder).resolve())
            for name, folder in primaries.items()
        )
        return cls("listed", None, listed)

    def locations(self) -> tuple[Path, ...]:
        """Every storage folder, each once (a server opens them all at start-up)."""
        if self.storage is not None:
            return (self.storage,)
        return tuple(dict.fromkeys(primary.storage for primary in self.primaries))

    def location_for(self, names: Iterable[str]) -> Path | None:
        """The storage folder of an authenticated identity with ``names`` (its
        ``CertificateIdentity.names``, or its Kerberos principal), or None: not
        allowed (no name, no listed name, or names matching two listed entries)."""
        if isinstance(names, str):
            msg = f"location_for() takes the identity's names, not one str ({names!r})"
            raise InvalidConfiguration(msg)
        given = {name for name in names if name}
        if not given:
            return None
        if self.mode == "any":
            assert self.storage is not None
            return self.storage
        matches = self.listed_matches(given)
        return matches[0].storage if len(matches) == 1 else None

    def listed_matches(self, names: Iterable[str]) -> list[AllowedPrimary]:
        """The listed primaries whose name is one of ``names`` (more than one: the
        identity is ambiguous and refused)."""
        given = set(names)
        return [primary for primary in self.primaries if primary.name in given]


@dataclass(frozen=True)
class ServerConfig:
    """A checked server configuration; every path absolute and resolved (but
    ``source``, as it was given)."""

    source: Path
    """The file it was read from, as given (messages name it so)."""
    listen: ListenAddress
    site: Site
    authentication: Authentication
    max_request_bytes: int
    request_timeout_seconds: float
    certificate: CertificateFiles | None
    """Present iff ``authentication == "certificate"``."""
    kerberos: KerberosSettings | None
    """Present iff ``authentication == "kerberos"``."""
    authorization: Authorization
    warnings: tuple[str, ...]
    """What is allowed but worth saying when the server starts (a listen address
    other machines can reach)."""

    def location_for(self, names: Iterable[str]) -> Path | None:
        """The storage folder an identity with ``names`` may use; None: refused."""
        return self.authorization.location_for(names)


# -- the schema (pydantic, strict) ---------------------------------------------------

_Text = Annotated[str, Field(min_length=1)]


class _Table(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Server(_Table):
    listen: str
    site: Site
    authentication: Authentication
    max_request_bytes: Annotated[
        int, Field(ge=MAX_REQUEST_BYTES_MIN, le=MAX_REQUEST_BYTES_MAX)
    ] = MAX_REQUEST_BYTES_DEFAULT
    request_timeout_seconds: Annotated[
        float, Field(gt=0, le=REQUEST_TIMEOUT_SECONDS_MAX)
    ] = REQUEST_TIMEOUT_SECONDS_DEFAULT


class _Certificate(_Table):
    certificate: _Text
    private_key: _Text
    ca: _Text


class _Kerberos(_Table):
    keytab: _Text
    principal: _Text | None = None
    krb5_config: _Text | None = None


class _Primary(_Table):
    name: Annotated[str, Field(min_length=1, max_length=NAME_CHARACTERS_MAX)]
    storage: _Text


class _Authorization(_Table):
    mode: AuthorizationMode
    storage: _Text | None = None
    primary: list[_Primary] = Field(default_factory=list)


class _Schema(_Table):
    server: _Server
    certificate: _Certificate | None = None
    kerberos: _Kerberos | None = None
    authorization: _Authorization


_TABLES: Final[dict[tuple[str, ...], type[_Table]]] = {
    (): _Schema,
    ("server",): _Server,
    ("certificate",): _Certificate,
    ("kerberos",): _Kerberos,
    ("authorization",): _Authorization,
    ("authorization", "primary"): _Primary,
}

_FILE = "a file path (relative to this file's folder)"
_FOLDER = "a folder path (relative to this file's folder; made if missing)"

#: What each key takes, for messages (list indices left out of the key path).
_EXPECTED: Final[dict[tuple[str, ...], str]] = {
    ("server",): "a table with listen, site and authentication",
    ("server", "listen"): "'host:port' (port 0: any free port; IPv6 as '[::1]:8443')",
    ("server", "site"): " or ".join(repr(site) for site in SITE_NAMES),
    ("server", "authentication"): "'certificate' or 'kerberos'",
    ("server", "max_request_bytes"): (
        f"an integer from {MAX_REQUEST_BYTES_MIN} (1 MiB) to {MAX_REQUEST_BYTES_MAX} "
        f"(1 GiB); default {MAX_REQUEST_BYTES_DEFAULT} (64 MiB)"
    ),
    ("server", "request_timeout_seconds"): (
        f"a number of seconds more than 0 and at most {REQUEST_TIMEOUT_SECONDS_MAX:g}; "
        f"default {REQUEST_TIMEOUT_SECONDS_DEFAULT:g}"
    ),
    ("certificate",): "a table with certificate, private_key and ca",
    ("certificate", "certificate"): f"{_FILE}: the server's certificate (PEM)",
    ("certificate", "private_key"): f"{_FILE}: the server's private key (PEM)",
    ("certificate", "ca"): f"{_FILE}: the CA certificate clients' certificates need",
    ("kerberos",): "a table with keytab, and optionally principal and krb5_config",
    ("kerberos", "keytab"): f"{_FILE}: the keytab the server accepts tickets with",
    ("kerberos", "principal"): "a principal of the keytab (default: any in it)",
    ("kerberos", "krb5_config"): f"{_FILE}: a krb5.conf (default: the system's)",
    ("authorization",): "a table with mode, and storage or [[authorization.primary]]",
    ("authorization", "mode"): (
        "'any' (every authenticated primary, one storage folder) or 'listed' (only "
        "the [[authorization.primary]] names, each its own storage)"
    ),
    ("authorization", "storage"): f"{_FOLDER}, with mode = 'any'",
    ("authorization", "primary"): (
        "[[authorization.primary]] tables (double brackets), each with name and "
        "storage, with mode = 'listed'"
    ),
    ("authorization", "primary", "name"): (
        f"1 to {NAME_CHARACTERS_MAX} characters, no spaces: a certificate's subject "
        "CN or DNS name, or a Kerberos principal"
    ),
    ("authorization", "primary", "storage"): f"{_FOLDER}, no other primary's",
}


class _Refusal(Exception):
    """A mistake at ``path`` in the file, before the file and line are known."""

    def __init__(self, message: str, path: KeyPath) -> None:
        super().__init__(message)
        self.path = path


# -- loading ---------------------------------------------------------------------------


def load_server_config(path: Path) -> ServerConfig:
    """Read and check the server configuration in TOML file ``path``.

    Raises InvalidConfiguration naming the file, the line, the key and what is
    allowed; nothing is created or changed.
    """
    path = Path(path)
    text = read_text(path, kind=_KIND)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidConfiguration(toml_syntax_error(path, error)) from None
    lines = toml_key_lines(text)
    try:
        try:
            schema = _Schema.model_validate(data)
        except ValidationError as error:
            raise _explain(error) from None
        return _build(schema, path, lines)
    except _Refusal as refusal:
        msg = f"{where(path, line_of(lines, refusal.path))}: {refusal}"
        raise InvalidConfiguration(msg) from None


def _generic(path: KeyPath) -> tuple[str, ...]:
    """The key path without list indices: the key of ``_EXPECTED`` and ``_TABLES``."""
    return tuple(part for part in path if isinstance(part, str))


def _explain(error: ValidationError) -> _Refusal:
    """The first of pydantic's errors, in the project's words."""
    details = first_error(error)
    path: KeyPath = tuple(details["loc"])
    generic = _generic(path)
    if details["type"] == "extra_forbidden":
        known = ", ".join(_TABLES[generic[:-1]].model_fields)
        table = f"[{dotted(generic[:-1])}]" if generic[:-1] else "the file"
        msg = f"key {dotted(path)!r} is unknown; {table} has the keys: {known}"
        return _Refusal(msg, path)
    expected = _EXPECTED[generic]
    if details["type"] == "missing":
        msg = f"{dotted(path)} is missing; it takes {expected}"
        return _Refusal(msg, path)
    cause = "must be a table" if details["type"] == "model_type" else reason(details)
    value = json.dumps(details.get("input"), default=str)
    msg = f"{dotted(path)}={value}: {cause}"
    if details["type"] != "literal_error":  # its reason lists the choices already
        msg += f"; it takes {expected}"
    return _Refusal(msg, path)


def _build(schema: _Schema, source: Path, lines: dict[KeyPath, int]) -> ServerConfig:
    """What only the whole file tells, then the frozen result."""
    folder = source.resolve().parent
    server = schema.server
    try:
        listen = parse_listen_address(server.listen, argument="listen")
    except InvalidConfiguration as error:
        msg = f"server.{error}"
        raise _Refusal(msg, ("server", "listen")) from None
    certificate, kerberos = _authentication(schema, folder)
    warnings: tuple[str, ...] = ()
    if not listen.is_loopback:
        warnings = (
            f"{where(source, line_of(lines, ('server', 'listen')))}: server.listen "
            f"{listen} is reachable from other machines"
            + ("; Kerberos mode sends the data unencrypted" if kerberos else ""),
        )
    return ServerConfig(
        source=source,
        listen=listen,
        site=server.site,
        authentication=server.authentication,
        max_request_bytes=server.max_request_bytes,
        request_timeout_seconds=server.request_timeout_seconds,
        certificate=certificate,
        kerberos=kerberos,
        authorization=_authorization(schema.authorization, folder, lines),
        warnings=warnings,
    )


def _authentication(
    schema: _Schema, folder: Path
) -> tuple[CertificateFiles | None, KerberosSettings | None]:
    """The table the authentication mode needs, present, and the other one absent."""
    mode = schema.server.authentication
    needed, other = ("certificate", "kerberos")
    if mode == "kerberos":
        needed, other = other, needed
    if getattr(schema, other) is not None:
        msg = f"[{other}] is given but server.authentication is {mode!r}: remove the "
        msg += f"table, or set authentication = {other!r}"
        raise _Refusal(msg, (other,))
    if getattr(schema, needed) is None:
        msg = f'server.authentication = "{mode}" needs a [{needed}] table: '
        msg += _EXPECTED[(needed,)]
        raise _Refusal(msg, ("server", "authentication"))
    if schema.certificate is not None:
        table = schema.certificate

        def file_of(name: str) -> Path:
            return _file(getattr(table, name), folder, ("certificate", name))

        files = CertificateFiles(
            file_of("certificate"), file_of("private_key"), file_of("ca")
        )
        return files, None
    assert schema.kerberos is not None
    settings = schema.kerberos
    krb5_config = None
    if settings.krb5_config is not None:
        krb5_config = _file(settings.krb5_config, folder, ("kerberos", "krb5_config"))
    keytab = _file(settings.keytab, folder, ("kerberos", "keytab"))
    return None, KerberosSettings(keytab, settings.principal, krb5_config)


def _authorization(
    table: _Authorization, folder: Path, lines: dict[KeyPath, int]
) -> Authorization:
    """Mode ``any`` with one storage folder, or ``listed`` with each primary's."""
    if table.mode == "any":
        if table.primary:
            msg = 'authorization.mode = "any" lets every authenticated primary in: '
            msg += 'remove the [[authorization.primary]] tables, or set mode = "listed"'
            raise _Refusal(msg, ("authorization", "primary", 0))
        if table.storage is None:
            msg = 'authorization.mode = "any" needs authorization.storage: '
            msg += _EXPECTED[("authorization", "storage")]
            raise _Refusal(msg, ("authorization", "mode"))
        storage = _folder(table.storage, folder, ("authorization", "storage"))
        return Authorization("any", storage, ())
    if table.storage is not None:
        msg = 'authorization.storage is for mode = "any"; with mode = "listed" each '
        msg += "[[authorization.primary]] names its own storage"
        raise _Refusal(msg, ("authorization", "storage"))
    if not table.primary:
        msg = 'authorization.mode = "listed" needs [[authorization.primary]] tables, '
        msg += 'each with name and storage (or mode = "any" lets every authenticated '
        msg += "primary in)"
        raise _Refusal(msg, ("authorization", "mode"))
    primaries: list[AllowedPrimary] = []
    for index, entry in enumerate(table.primary):
        key: KeyPath = ("authorization", "primary", index)
        primary = AllowedPrimary(
            _name(entry.name, (*key, "name")),
            _folder(entry.storage, folder, (*key, "storage")),
        )
        for earlier, other in enumerate(primaries):
            _check_distinct(primary, other, index, earlier, lines)
        primaries.append(primary)
    return Authorization("listed", None, tuple(primaries))


def _check_distinct(
    primary: AllowedPrimary,
    other: AllowedPrimary,
    index: int,
    earlier: int,
    lines: dict[KeyPath, int],
) -> None:
    """Refuse primary ``index`` when it repeats ``earlier``'s name or shares,
    contains or lies in its storage."""
    key: KeyPath = ("authorization", "primary", index)
    other_key: KeyPath = ("authorization", "primary", earlier)
    if primary.name == other.name:
        line = line_of(lines, (*other_key, "name"))
        msg = f"{dotted((*key, 'name'))}={json.dumps(primary.name)} is listed "
        msg += f"twice (also {dotted(other_key)}, line {line}); list each name once"
        raise _Refusal(msg, (*key, "name"))
    mine, theirs = primary.storage, other.storage
    if mine == theirs:
        relation = "is also"
    elif mine.is_relative_to(theirs):
        relation = "lies inside"
    elif theirs.is_relative_to(mine):
        relation = "contains"
    else:
        return
    line = line_of(lines, (*other_key, "storage"))
    msg = f"{dotted((*key, 'storage'))}: {str(mine)!r} {relation} "
    msg += f"{dotted(other_key)}.storage {str(theirs)!r} (line {line}); each "
    msg += "primary's storage must be its own folder, outside every other's"
    raise _Refusal(msg, (*key, "storage"))


def _name(name: str, key: KeyPath) -> str:
    if any(character.isspace() or not character.isprintable() for character in name):
        msg = f"{dotted(key)}={json.dumps(name)} holds a space or a control "
        msg += f"character; it takes {_EXPECTED[('authorization', 'primary', 'name')]}"
        raise _Refusal(msg, key)
    return name


def _path(value: str, folder: Path, key: KeyPath) -> Path:
    """``value`` as an absolute, resolved path (relative to ``folder``)."""
    if value.startswith("~"):
        msg = f"{dotted(key)}={json.dumps(value)}: '~' is not expanded here; write "
        msg += "the full path, or one relative to this file's folder"
        raise _Refusal(msg, key)
    try:
        return (folder / value).resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop
        msg = f"{dotted(key)}={json.dumps(value)} cannot be resolved: {error}"
        raise _Refusal(msg, key) from None


def _file(value: str, folder: Path, key: KeyPath) -> Path:
    path = _path(value, folder, key)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        msg = f"{dotted(key)}={json.dumps(value)}: {str(path)!r} {state}; it "
        msg += f"takes {_EXPECTED[_generic(key)]}"
        raise _Refusal(msg, key)
    return path


def _folder(value: str, folder: Path, key: KeyPath) -> Path:
    path = _path(value, folder, key)
    if path.exists() and not path.is_dir():
        msg = f"{dotted(key)}={json.dumps(value)}: {str(path)!r} is a file; "
        msg += "storage is a folder (made if missing)"
        raise _Refusal(msg, key)
    return path
