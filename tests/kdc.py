"""A real MIT KDC for the Kerberos tests: a throwaway realm on 127.0.0.1.

:func:`running_kdc` makes a temporary directory, writes a ``kdc.conf`` (the database,
its stash, TCP only on a free port of 127.0.0.1) and a ``krb5.conf`` (the realm, its KDC
and nothing looked up in DNS), creates the database with ``kdb5_util`` (a random master
password), adds principals with random keys and exports each one's key to its own
keytab with ``kadmin.local``, then runs ``krb5kdc -n`` in the foreground and waits until
it logs that it serves and its port accepts a connection (another port is tried when
something took the first). Closing it stops the KDC and removes the directory. Every
tool runs with an environment of its own (``KRB5_CONFIG``, ``KRB5_KDC_PROFILE``): the
test process's environment is left alone.

:meth:`KdcRealm.ticket` runs ``kinit`` with a principal's keytab (and ``kvno`` for the
services asked for, so their tickets are in the cache and no KDC is needed to use them)
and returns the credential cache's name.

Expired tickets. A client refuses its own expired ticket (MIT checks the end time with
no tolerance), so the server's refusal is seen only from a client that believes its
cache: :func:`with_end_times_moved` copies a cache with the plain-text end times (the
cache's copy, which the client trusts) moved, the encrypted ones (which the server
reads) untouched. :func:`wait_until_expired` is the one wait on the clock. The realm's
``krb5.conf`` sets ``clockskew = 2``: a server accepts a ticket for that long past its
end, and MIT's default of five minutes would make the expiry test wait that long.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

#: The MIT tools a realm needs, and the Debian packages that install them.
TOOLS: Final = {
    "krb5kdc": "krb5-kdc",
    "kdb5_util": "krb5-kdc",
    "kadmin.local": "krb5-kdc",
    "kinit": "krb5-user",
    "kvno": "krb5-user",
}
#: Where Debian puts the KDC's tools (often not on a user's PATH).
_SBIN: Final = ("/usr/sbin", "/usr/local/sbin", "/sbin")
#: Tolerated clock difference (seconds) in the realm's krb5.conf; see the module doc.
CLOCK_SKEW_SECONDS: Final = 2
#: Bounds on waiting for the KDC to listen: it takes some 50 ms on an idle machine.
_LISTEN_SECONDS_MAX: Final = 10.0
_LISTEN_ATTEMPTS_MAX: Final = 1000
#: Ports tried when another process takes the free port first.
_PORT_ATTEMPTS_MAX: Final = 3
#: A credential cache file's format (MIT's "FILE" cache, version 4).
_CCACHE_VERSION: Final = 0x0504
#: Longest wait for a ticket to expire: the tests' tickets live two seconds.
_EXPIRY_WAIT_SECONDS_MAX: Final = 15


#: The session realm: the replica server's service principal, a service it holds
#: no key for, and the primary.
SESSION_REALM: Final = "HVDR.TEST"
SESSION_PRINCIPALS: Final = ("HTTP/localhost", "HTTP/elsewhere", "primary")
#: What MIT krb5 reads its configuration from; the code under test sets it.
_KRB5_CONFIG: Final = "KRB5_CONFIG"


def session_realm() -> Iterator[KdcRealm]:
    """The ``kdc_realm`` fixture (``tests/conftest.py``): HVDR.TEST for the session.

    Fails, naming the packages, where MIT's KDC is not installed: the Kerberos tests
    are part of the suite and CI installs it (``.ci/run``). The Kerberos classes set
    ``KRB5_CONFIG`` for the whole process, as they must; any inherited value is
    cleared first and the environment put back at the end.
    """
    missing = missing_tools()
    if missing:
        pytest.fail(
            "MIT Kerberos is not installed, and the Kerberos tests run a real KDC: "
            f"install {' '.join(missing)} (apt-get install {' '.join(missing)}; "
            ".ci/run does)"
        )
    inherited = os.environ.pop(_KRB5_CONFIG, None)
    try:
        with running_kdc(SESSION_REALM, SESSION_PRINCIPALS) as realm:
            yield realm
    finally:
        os.environ.pop(_KRB5_CONFIG, None)
        if inherited is not None:
            os.environ[_KRB5_CONFIG] = inherited


def missing_tools() -> list[str]:
    """The Debian packages to install for :func:`running_kdc` (empty when none)."""
    return sorted({package for tool, package in TOOLS.items() if _tool(tool) is None})


def _tool(name: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which(name, path=search)


def _free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class KdcRealm:
    """A running realm: its name, files and KDC process."""

    realm: str
    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    keytabs: dict[str, Path] = field(default_factory=dict)
    _caches: int = 0

    @property
    def krb5_conf(self) -> Path:
        """The realm's krb5.conf, for its clients and servers."""
        return self.directory / "krb5.conf"

    def principal(self, name: str) -> str:
        """``name`` qualified with the realm (``primary`` -> ``primary@HVDR.TEST``)."""
        return f"{name}@{self.realm}"

    def keytab(self, name: str) -> Path:
        """The keytab holding the key of principal ``name`` (added at the start)."""
        return self.keytabs[name]

    def ticket(
        self, name: str, *, lifetime_seconds: int = 600, services: Sequence[str] = ()
    ) -> str:
        """A new credential cache holding a ticket for principal ``name``, and one
        for each of ``services``; its name, ``FILE:<path>``."""
        self._caches += 1
        cache = f"FILE:{self.directory / f'ccache-{self._caches}'}"
        kinit = [_required("kinit"), "-k", "-t", str(self.keytab(name))]
        lifetime = ["-l", f"{lifetime_seconds}s", "-c", cache, self.principal(name)]
        self.run([*kinit, *lifetime])
        for service in services:
            self.run([_required("kvno"), "-c", cache, self.principal(service)])
        return cache

    def run(self, command: list[str], stdin: str = "") -> str:
        """Run an MIT tool against this realm; its output (it must succeed)."""
        return _run(self.directory, command, stdin)

    def stop(self) -> None:
        """Stop the KDC and remove the realm's directory."""
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _required(tool: str) -> str:
    found = _tool(tool)
    assert found is not None, f"{tool} is not installed: install {TOOLS[tool]}"
    return found


def _environment(directory: Path) -> dict[str, str]:
    """What the MIT tools of the realm in ``directory`` run with (nothing inherited
    but ``PATH``: no stray ``KRB5CCNAME`` or ``KRB5_KTNAME``)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KRB5_CONFIG": str(directory / "krb5.conf"),
        "KRB5_KDC_PROFILE": str(directory / "kdc.conf"),
        "LC_ALL": "C",
    }


def _run(directory: Path, command: list[str], stdin: str = "") -> str:
    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, check=False,
        env=_environment(directory), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"{command} failed: {done.stdout}{done.stderr}"
    return done.stdout


def krb5_conf_text(realm: str, port: int) -> str:
    """A client's krb5.conf for ``realm``: its KDC by address, no DNS, TCP only."""
    return f"""\
[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    clockskew = {CLOCK_SKEW_SECONDS}
[realms]
    {realm} = {{
        kdc = 127.0.0.1:{port}
    }}
"""


def kdc_conf_text(realm: str, port: int, directory: Path) -> str:
    """The KDC's kdc.conf: its database in ``directory``, TCP on 127.0.0.1 only."""
    return f"""\
[kdcdefaults]
    kdc_listen = ""
    kdc_tcp_listen = 127.0.0.1:{port}
[realms]
    {realm} = {{
        database_name = {directory / "principal"}
        key_stash_file = {directory / "stash"}
        acl_file = {directory / "kadm5.acl"}
        max_life = 1h
        supported_enctypes = aes256-cts-hmac-sha1-96:normal
    }}
[logging]
    kdc = FILE:{directory / f"kdc-{port}.log"}
    default = FILE:{directory / "admin.log"}
"""


@contextlib.contextmanager
def running_kdc(realm: str, principals: Sequence[str]) -> Iterator[KdcRealm]:
    """A KDC of ``realm`` (on 127.0.0.1) whose ``principals`` each have a keytab,
    while the context is open; stopped and removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix=f"kdc-{realm.lower()}-"))
    try:
        kdc = _serving(realm, directory)
        try:
            _add_principals(kdc, principals)
            yield kdc
        finally:
            kdc.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _serving(realm: str, directory: Path) -> KdcRealm:
    """A KDC of ``realm`` serving on a free port (a few tried, should one be taken
    between choosing and binding it)."""
    logs = []
    for _ in range(_PORT_ATTEMPTS_MAX):
        kdc = _start(realm, directory, _free_port())
        if _listening(kdc):
            return kdc
        kdc.process.wait(timeout=10)
        logs.append(_log(directory, kdc.port))
    msg = f"krb5kdc for {realm} never served; its logs:\n{''.join(logs)}"
    raise AssertionError(msg)


def _start(realm: str, directory: Path, port: int) -> KdcRealm:
    """Write the configuration for ``port``, create the database, start krb5kdc."""
    (directory / "krb5.conf").write_text(krb5_conf_text(realm, port))
    (directory / "kdc.conf").write_text(kdc_conf_text(realm, port, directory))
    (directory / "kadm5.acl").write_text("")
    if not (directory / "principal").exists():
        master = secrets.token_urlsafe(24)
        command = [_required("kdb5_util"), "create", "-s", "-r", realm, "-P", master]
        _run(directory, command)
    process = subprocess.Popen(
        [_required("krb5kdc"), "-n", "-r", realm],
        env=_environment(directory),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return KdcRealm(realm=realm, directory=directory, port=port, process=process)


def _listening(kdc: KdcRealm) -> bool:
    """Wait until the KDC serves: True, or False if it exited (its port was taken).

    Its log's "commencing operation" comes after its sockets are bound, so the
    connection then made is to it, not to whatever else took the port.
    """
    deadline = time.monotonic() + _LISTEN_SECONDS_MAX
    for _ in range(_LISTEN_ATTEMPTS_MAX):
        if "commencing operation" in _log(kdc.directory, kdc.port):
            with socket.create_connection(("127.0.0.1", kdc.port), timeout=1):
                return True
        if time.monotonic() > deadline:
            break
        try:  # the pause between looks ends early if the KDC exits
            kdc.process.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            continue
        return False
    kdc.process.terminate()
    return False


def _log(directory: Path, port: int) -> str:
    """What the KDC started on ``port`` has logged so far."""
    try:
        return (directory / f"kdc-{port}.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _add_principals(kdc: KdcRealm, principals: Sequence[str]) -> None:
    """Each principal with a random key, exported to ``<directory>/<name>.keytab``."""
    commands = []
    for name in principals:
        keytab = kdc.directory / f"{name.replace('/', '_')}.keytab"
        commands += [f"addprinc -randkey {name}", f"ktadd -k {keytab} {name}"]
        kdc.keytabs[name] = keytab
    output = kdc.run([_required("kadmin.local"), "-r", kdc.realm], "\n".join(commands))
    for name, keytab in kdc.keytabs.items():
        assert keytab.is_file(), f"kadmin.local made no keytab for {name}: {output}"


def end_times(cache: str) -> list[float]:
    """The plain-text end times (Unix seconds) of the tickets in ``cache``."""
    data = bytearray(Path(cache.removeprefix("FILE:")).read_bytes())
    return [float(struct.unpack_from(">I", data, at + 8)[0]) for at in _times(data)]


def wait_until_expired(cache: str, beyond_seconds: float = 0) -> None:
    """Wait until every ticket in ``cache`` has been expired ``beyond_seconds``.

    The one wait of these tests that is not on an event: the subject is the clock.
    Bounded, because the tickets it is for live seconds.
    """
    wait_seconds = max(end_times(cache)) + 1 + beyond_seconds - time.time()
    assert wait_seconds < _EXPIRY_WAIT_SECONDS_MAX, f"{cache} lives {wait_seconds} s"
    if wait_seconds > 0:  # end times are whole seconds: the +1 covers the fraction
        time.sleep(wait_seconds)


def with_end_times_moved(cache: str, seconds: int) -> str:
    """A copy of FILE cache ``cache`` whose tickets' plain-text end times are
    ``seconds`` later; its name. The encrypted end times cannot be moved."""
    source = Path(cache.removeprefix("FILE:"))
    data = bytearray(source.read_bytes())
    for at in list(_times(data)):
        (end,) = struct.unpack_from(">I", data, at + 8)
        struct.pack_into(">I", data, at + 8, end + seconds)
    target = source.with_name(source.name + "-moved")
    target.write_bytes(bytes(data))
    return f"FILE:{target}"


def _times(data: bytearray) -> Iterator[int]:
    """Where each credential's four times start, in a FILE cache's bytes.

    MIT's FILE format, version 4: a header, the default principal, then credentials
    to the end (client, server, key, authtime, starttime, endtime and renew-till as
    32-bit seconds, is-session-key, flags, addresses, authorisation data, ticket,
    second ticket). MIT keeps configuration entries as credentials too.
    """
    version, header_bytes = struct.unpack_from(">HH", data, 0)
    assert version == _CCACHE_VERSION, f"ccache version {version:#x}, not 0x504"
    at = _skip_principal(data, 4 + header_bytes)
    while at < len(data):
        at = _skip_principal(data, _skip_principal(data, at))  # client, server
        at = _skip_octets(data, at + 2)  # key: its type, then its bytes
        yield at
        at += 16 + 1 + 4  # the four times, is-session-key, flags
        for _ in range(2):  # addresses, then authorisation data: (type, bytes) each
            (count,) = struct.unpack_from(">I", data, at)
            at += 4
            for _ in range(count):
                at = _skip_octets(data, at + 2)
        at = _skip_octets(data, _skip_octets(data, at))  # ticket, second ticket


def _skip_octets(data: bytearray, at: int) -> int:
    length: int = struct.unpack_from(">I", data, at)[0]
    return at + 4 + length


def _skip_principal(data: bytearray, at: int) -> int:
    _name_type, components = struct.unpack_from(">II", data, at)
    at = _skip_octets(data, at + 8)  # the realm
    for _ in range(components):
        at = _skip_octets(data, at)
    return at
