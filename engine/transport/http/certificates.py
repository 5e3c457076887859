"""A small CA and host certificates for both ends: what ``hvdr certs`` makes.

Certificate mode needs one thing trusted by both machines and one certificate for
each. :func:`make_certificates` writes, into one folder:

- ``ca.pem`` and ``ca.key``: a CA of its own (``CA:TRUE``, path length 0: it signs
  host certificates and nothing that could sign more), valid :data:`CA_DAYS` days.
  An existing CA in the folder is reused, so hosts added later chain to the CA the
  others already trust. ``ca.key`` never leaves the machine that made it;
- for each host, ``HOST.pem`` and ``HOST.key``: subject ``CN=HOST``, the alternative
  name ``DNS:HOST`` (and ``IP:HOST`` when the host is an IP address, which is what
  TLS checks a connection to an address against), and both extended key usages,
  ``serverAuth`` and ``clientAuth``: OpenSSL checks the first on a server's
  certificate and the second on a client's, and Hyper-V Replica's replica servers
  are primaries too after a failover, so one certificate serves a host either way.

Keys are ECDSA on P-256: small, quick to make, and spoken by every TLS 1.2 stack.
Certificates start :data:`BACKDATE` before now, so a machine whose clock is a little
behind accepts them at once. Private keys are written readable by their owner only
(0600) and the folder, when made here, is 0700.

Nothing is overwritten by mistake: every host is validated (``hosts.py``) and every
file checked before the first is written; a host's existing files are replaced only
with ``force``, and then atomically (a temporary file renamed over the old one); a
host's file is written with ``O_EXCL`` otherwise, so a file that appears meanwhile
is not overwritten either. A half CA (one of its two files) is refused, never
completed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.errors import InvalidConfiguration
from engine.names import validate_name
from engine.storage import files
from engine.storage.durable_file import temporary_path
from engine.transport.http import hosts, tls

CA_CERTIFICATE_FILE: Final = "ca.pem"
CA_KEY_FILE: Final = "ca.key"
CERTIFICATE_SUFFIX: Final = ".pem"
KEY_SUFFIX: Final = ".key"

DAYS_DEFAULT: Final = 365
"""A host certificate's validity unless told: a yearly renewal, as is usual."""

CA_DAYS: Final = 3650
"""A new CA's validity: ten years, so host certificates are renewed many times
under one CA that both machines already trust."""

DAYS_MAX: Final = CA_DAYS
"""No host certificate outlives a new CA."""

BACKDATE: Final = timedelta(minutes=5)
"""How long before now a certificate starts: room for clocks a little apart."""

CA_NAME_CHARACTERS_MAX: Final = 64
"""RFC 5280's upper bound for a common name."""

KEY_MODE: Final = 0o600
CERTIFICATE_MODE: Final = 0o644
FOLDER_MODE: Final = 0o700


@dataclass(frozen=True)
class HostCertificate:
    """One host's certificate as written."""

    host: str
    certificate: Path
    private_key: Path
    alternative_names: tuple[str, ...]
    """As OpenSSL prints them: ``DNS:replica.example``, ``IP:10.0.0.5``."""
    not_valid_after: datetime
    replaced: bool
    """Whether it replaced an earlier certificate of that host (``force``)."""


@dataclass(frozen=True)
class CertificateSet:
    """What :func:`make_certificates` wrote (or reused) in one folder."""

    folder: Path
    ca_name: str
    ca_certificate: Path
    ca_key: Path
    ca_created: bool
    ca_not_valid_after: datetime
    hosts: tuple[HostCertificate, ...]


@dataclass(frozen=True)
class _Authority:
    name: str
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    created: bool


def make_certificates(
    folder: Path,
    hosts_named: Sequence[str],
    *,
    ca_name: str | None,
    days: int = DAYS_DEFAULT,
    force: bool = False,
) -> CertificateSet:
    """Write a certificate and key for each host of ``hosts_named`` into ``folder``,
    signed by the CA there (made first, named ``ca_name``, when there is none).

    ``ca_name`` may be None when the folder holds a CA already; given, it must be
    that CA's name. A host's existing files are replaced only with ``force``.
    Raises InvalidConfiguration, before writing anything, for a bad host, name,
    day count or folder, an existing host file without ``force``, or a CA that is
    damaged, not a CA, or expires before the certificates asked for.
    """
    checked_days = _validate_days(days)
    checked_hosts = _validate_hosts(hosts_named)
    folder = Path(folder)
    _check_folder(folder)
    now = datetime.now(UTC)
    authority = _authority(folder, ca_name, now)
    not_valid_after = now + timedelta(days=checked_days)
    if not_valid_after > authority.certificate.not_valid_after_utc:
        left = (authority.certificate.not_valid_after_utc - now).days
        msg = (
            f"--days {checked_days}: the CA in {str(folder)!r} expires on "
            f"{authority.certificate.not_valid_after_utc:%Y-%m-%d}, in {left} days; "
            f"give --days {left} at most, or make a new CA in another folder"
        )
        raise InvalidConfiguration(msg)
    existing = _existing_host_files(folder, checked_hosts, force=force)
    issued = [
        (host, *_issue(authority, host, now, not_valid_after)) for host in checked_hosts
    ]
    _make_folder(folder)
    ca_certificate = folder / CA_CERTIFICATE_FILE
    ca_key = folder / CA_KEY_FILE
    if authority.created:
        _write(ca_key, _key_pem(authority.key), KEY_MODE, replace=False)
        _write(
            ca_certificate, _pem(authority.certificate), CERTIFICATE_MODE, replace=False
        )
    written = tuple(
        _write_host(folder, host, certificate, key, replace=host in existing)
        for host, certificate, key in issued
    )
    files.fsync_directory(folder)
    return CertificateSet(
        folder=folder,
        ca_name=authority.name,
        ca_certificate=ca_certificate,
        ca_key=ca_key,
        ca_created=authority.created,
        ca_not_valid_after=authority.certificate.not_valid_after_utc,
        hosts=written,
    )


# -- checks, before anything is written ----------------------------------------------


def validate_certificate_host(value: object) -> str:
    """A ``HOST`` of ``hvdr certs``: a host name or IPv4 address that is also a
    portable file name (not a Windows device name, not the CA's ``ca``)."""
    host = hosts.validate_host(value, argument="HOST")
    if ":" in host:
        msg = (
            f"HOST={host!r}: an IPv6 address cannot name a certificate file on every "
            "system; name the host by its DNS name"
        )
        raise InvalidConfiguration(msg)
    if host.lower() == Path(CA_CERTIFICATE_FILE).stem:
        msg = f"HOST={host!r} would overwrite the CA's files ({CA_CERTIFICATE_FILE}, "
        msg += f"{CA_KEY_FILE}); name the host by its full DNS name"
        raise InvalidConfiguration(msg)
    validate_name(host, argument="HOST", characters_max=hosts.HOST_CHARACTERS_MAX)
    return host


def _validate_hosts(hosts_named: Sequence[str]) -> list[str]:
    if not hosts_named:
        msg = "give at least one HOST to make a certificate for"
        raise InvalidConfiguration(msg)
    seen: dict[str, str] = {}
    for value in hosts_named:
        host = validate_certificate_host(value)
        if host.lower() in seen:
            msg = f"HOST={host!r} is given twice (as {seen[host.lower()]!r}: names "
            msg += "that differ in case only are one file on some systems)"
            raise InvalidConfiguration(msg)
        seen[host.lower()] = host
    return list(seen.values())


def _validate_days(days: object) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= DAYS_MAX:
        msg = f"--days {days!r} must be a whole number of days from 1 to {DAYS_MAX}"
        raise InvalidConfiguration(msg)
    return days


def _validate_ca_name(name: str) -> str:
    if not 1 <= len(name) <= CA_NAME_CHARACTERS_MAX or not name.isprintable():
        msg = f"--ca-name {name!r} must be 1 to {CA_NAME_CHARACTERS_MAX} printable "
        msg += "characters"
        raise InvalidConfiguration(msg)
    return name


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        msg = f"--out {str(folder)!r} is a file; give a folder"
        raise InvalidConfiguration(msg)
    parent = folder.parent if str(folder.parent) else Path(".")
    if not folder.exists() and not parent.is_dir():
        msg = f"--out {str(folder)!r}: its folder {str(parent)!r} does not exist"
        raise InvalidConfiguration(msg)


def _authority(folder: Path, ca_name: str | None, now: datetime) -> _Authority:
    """The CA in ``folder``, or a new one named ``ca_name`` (not yet written)."""
    certificate_path = folder / CA_CERTIFICATE_FILE
    key_path = folder / CA_KEY_FILE
    present = [path for path in (certificate_path, key_path) if path.exists()]
    if len(present) == 1:
        missing = key_path if present[0] == certificate_path else certificate_path
        msg = f"{str(folder)!r} holds {present[0].name} but not {missing.name}: put "
        msg += "the CA's other file back, or use another folder for a new CA"
        raise InvalidConfiguration(msg)
    if not present:
        if ca_name is None:
            msg = f"{str(folder)!r} holds no CA: give --ca-name to make one"
            raise InvalidConfiguration(msg)
        return _new_authority(_validate_ca_name(ca_name), now)
    certificate = tls.read_certificates(certificate_path, argument="CA certificate")[0]
    key = tls.read_private_key(key_path, argument="CA private key")
    tls.check_key_matches(certificate, certificate_path, key, key_path)
    if not tls.is_ca(certificate) or not isinstance(key, _ISSUER_KEY_TYPES):
        msg = f"CA certificate {str(certificate_path)!r} is not a CA certificate "
        msg += "(no CA:TRUE basic constraint, or a key that cannot sign)"
        raise InvalidConfiguration(msg)
    tls.check_valid_now(certificate, certificate_path, argument="CA certificate")
    name = tls.certificate_identity(certificate).subject_cn or ""
    if ca_name is not None and ca_name != name:
        msg = f"--ca-name {ca_name!r}: the CA in {str(folder)!r} is named {name!r}; "
        msg += "give that name (or none) to add hosts to it, or another folder"
        raise InvalidConfiguration(msg)
    return _Authority(name, certificate, key, created=False)


def _existing_host_files(
    folder: Path, host_names: Sequence[str], *, force: bool
) -> set[str]:
    """The hosts whose files exist; refused without ``force``."""
    existing = set()
    for host in host_names:
        for path in _host_paths(folder, host):
            if path.is_dir():
                msg = f"{str(path)!r} is a folder; remove it or choose another --out"
                raise InvalidConfiguration(msg)
            if os.path.lexists(path):
                if not force:
                    msg = f"{str(path)!r} exists; give --force to replace {host}'s "
                    msg += "certificate and key"
                    raise InvalidConfiguration(msg)
                existing.add(host)
    return existing


# -- making them ----------------------------------------------------------------------

_ISSUER_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
"""The keys a reused CA may sign with (DSA is no TLS key any more)."""


def _new_authority(name: str, now: datetime) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(certificate_signer=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return _Authority(name, certificate, key, created=True)


def _issue(
    authority: _Authority, host: str, now: datetime, not_valid_after: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key for ``host`` and its certificate, signed by ``authority``."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    address = hosts.ip_address(host)
    if address is not None:
        names.append(x509.IPAddress(address))
    issuer_key_identifier = x509.AuthorityKeyIdentifier.from_issuer_public_key(
        authority.key.public_key()
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_valid_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(certificate_signer=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(issuer_key_identifier, critical=False)
        .sign(authority.key, _signature_hash(authority.key))
    )
    return certificate, key


def _key_usage(*, certificate_signer: bool) -> x509.KeyUsage:
    """A CA signs certificates (and revocation lists); a host signs handshakes."""
    return x509.KeyUsage(
        digital_signature=not certificate_signer,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certificate_signer,
        crl_sign=certificate_signer,
        encipher_only=False,
        decipher_only=False,
    )


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    """Ed25519 and Ed448 sign without a separate hash; every other key with SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _alternative_names(host: str) -> tuple[str, ...]:
    address = hosts.ip_address(host)
    return (f"DNS:{host}",) if address is None else (f"DNS:{host}", f"IP:{address}")


# -- writing them ----------------------------------------------------------------------


def _host_paths(folder: Path, host: str) -> tuple[Path, Path]:
    return folder / f"{host}{CERTIFICATE_SUFFIX}", folder / f"{host}{KEY_SUFFIX}"


def _write_host(
    folder: Path,
    host: str,
    certificate: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    *,
    replace: bool,
) -> HostCertificate:
    """Write one host's key, then its certificate (a certificate is never there
    without the key it holds)."""
    certificate_path, key_path = _host_paths(folder, host)
    _write(key_path, _key_pem(key), KEY_MODE, replace=replace)
    _write(certificate_path, _pem(certificate), CERTIFICATE_MODE, replace=replace)
    return HostCertificate(
        host=host,
        certificate=certificate_path,
        private_key=key_path,
        alternative_names=_alternative_names(host),
        not_valid_after=certificate.not_valid_after_utc,
        replaced=replace,
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_folder(folder: Path) -> None:
    if not folder.exists():
        files.current().make_directory(folder)
        os.chmod(folder, FOLDER_MODE)
        files.fsync_directory(folder.parent if str(folder.parent) else Path("."))


def _write(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``data`` as ``path`` with permissions ``mode``, fsynced: a new file
    (``O_EXCL``), or with ``replace`` a temporary renamed over the old one."""
    fs = files.current()
    target = temporary_path(path) if replace else path
    if replace:
        fs.unlink(target, missing_ok=True)  # debris of an interrupted run
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        descriptor = fs.open(target, flags, mode)
        try:
            os.fchmod(descriptor, mode)  # whatever the umask
            written = 0
            while written < len(data):
                written += fs.pwrite(descriptor, data[written:], written)
            fs.fsync(descriptor)
        finally:
            os.close(descriptor)
        if replace:
            fs.rename(target, path)
    except FileExistsError:
        msg = f"{str(path)!r} appeared while it was being written; nothing replaced it"
        raise InvalidConfiguration(msg) from None
    except OSError as error:
        msg = f"cannot write {str(target)!r}: {error.strerror or error}"
        raise InvalidConfiguration(msg) from None
