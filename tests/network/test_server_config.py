"""The replica server's TOML configuration (engine.transport.http.server_config): the
valid examples, what an identity may use, and each mistake's exact message, with the
file, the line and the key (real files in tmp_path, no mocks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.binding import sites
from engine.configuration_files import toml_key_lines
from engine.errors import InvalidConfiguration
from engine.transport.http import server_config
from engine.transport.http.hosts import ListenAddress
from engine.transport.http.server_config import (
    AllowedPrimary,
    Authorization,
    CertificateFiles,
    KerberosSettings,
    ServerConfig,
    load_server_config,
)

CERTIFICATE_ANY = """\
[server]
listen = "127.0.0.1:8443"
site = "secondary"
authentication = "certificate"

[certificate]
certificate = "replica.pem"
private_key = "replica.key"
ca = "ca.pem"

[authorization]
mode = "any"
storage = "/srv/hvdr/replicas"
"""

KERBEROS_LISTED = """\
# The replica server of the branch office.
[server]
listen = "[::1]:0"
site = "primary"
authentication = "kerberos"
max_request_bytes = 1048576
request_timeout_seconds = 2.5

[kerberos]
keytab = "replica.keytab"
principal = "HTTP/replica.example@EXAMPLE.COM"
krb5_config = "conf/krb5.conf"

[authorization]
mode = "listed"

[[authorization.primary]]
name = "host/primary.example@EXAMPLE.COM"
storage = "from-primary"

[[authorization.primary]]
name = "branch.example"
storage = "/srv/hvdr/from-branch"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with the files the examples name (their content is tls.py's
    business; the configuration checks they are files)."""
    for name in ["replica.pem", "replica.key", "ca.pem", "replica.keytab", "afile"]:
        (tmp_path / name).write_text("", "utf-8")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "krb5.conf").write_text("", "utf-8")
    return tmp_path


def load(folder: Path, text: str) -> ServerConfig:
    (folder / "server.toml").write_text(text, "utf-8")
    return load_server_config(folder / "server.toml")


# -- valid files ----------------------------------------------------------------------


def test_a_certificate_server_for_any_primary(folder: Path) -> None:
    """Every key read; defaults where left out; paths relative to the file."""
    expected = ServerConfig(
        source=folder / "server.toml",
        listen=ListenAddress("127.0.0.1", 8443),
        site="secondary",
        authentication="certificate",
        max_request_bytes=64 * 1024 * 1024,
        request_timeout_seconds=60.0,
        certificate=CertificateFiles(
            folder / "replica.pem", folder / "replica.key", folder / "ca.pem"
        ),
        kerberos=None,
        authorization=Authorization("any", Path("/srv/hvdr/replicas"), ()),
        warnings=(),
    )
    assert expected == load(folder, CERTIFICATE_ANY)


def test_a_kerberos_server_for_listed_primaries(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optional keys given; relative paths against the file's folder, not the
    working directory; an IPv6 listen address with port 0."""
    monkeypatch.chdir("/")
    config = load(folder, KERBEROS_LISTED)
    expected = (
        ListenAddress("::1", 0),
        "primary",
        1048576,
        2.5,
        None,
        KerberosSettings(
            folder / "replica.keytab",
            "HTTP/replica.example@EXAMPLE.COM",
            folder / "conf" / "krb5.conf",
        ),
        Authorization("listed", None, (
            AllowedPrimary("host/primary.example@EXAMPLE.COM", folder / "from-primary"),
            AllowedPrimary("branch.example", Path("/srv/hvdr/from-branch")),
        )),
        (),
    )  # fmt: skip
    actual = (
        config.listen,
        config.site,
        config.max_request_bytes,
        config.request_timeout_seconds,
        config.certificate,
        config.kerberos,
        config.authorization,
        config.warnings,
    )
    assert expected == actual
    assert str(config.listen) == "[::1]:0"


def test_location_for_gives_each_listed_name_its_own_folder(folder: Path) -> None:
    """A listed name gets its folder; no name, an unlisted one, or names matching
    two entries get None (refused)."""
    config = load(folder, KERBEROS_LISTED)
    expected = [
        folder / "from-primary",
        Path("/srv/hvdr/from-branch"),
        Path("/srv/hvdr/from-branch"),
        None,
        None,
        None,
        None,
    ]
    actual = [
        config.location_for(["host/primary.example@EXAMPLE.COM"]),
        config.location_for(["branch.example"]),
        config.location_for(("branch.example", "unlisted.example")),
        config.location_for(["Branch.Example"]),
        config.location_for([]),
        config.location_for([""]),
        config.location_for(["branch.example", "host/primary.example@EXAMPLE.COM"]),
    ]
    assert expected == actual


def test_location_for_in_mode_any_gives_every_named_identity_the_one_folder(
    folder: Path,
) -> None:
    """Mode any: every authenticated name the one folder; an identity without a
    name none."""
    config = load(folder, CERTIFICATE_ANY)
    expected = [Path("/srv/hvdr/replicas"), None]
    assert expected == [
        config.location_for(["anyone.example"]),
        config.location_for([]),
    ]


def test_location_for_refuses_one_string_for_the_names(folder: Path) -> None:
    """A str is an iterable of characters: refused, never matched letter by letter."""
    config = load(folder, CERTIFICATE_ANY)
    with pytest.raises(InvalidConfiguration, match="not one str"):
        config.location_for("primary.example")


def test_a_listen_address_other_machines_reach_is_allowed_with_a_warning(
    folder: Path,
) -> None:
    """0.0.0.0 is allowed; the configuration says what it means, with its line."""
    config = load(folder, CERTIFICATE_ANY.replace("127.0.0.1:8443", "0.0.0.0:8443"))
    expected = f"{folder}/server.toml, line 2: server.listen 0.0.0.0:8443 is "
    expected += "reachable from other machines"
    assert (expected,) == config.warnings


def test_the_site_names_are_the_engines() -> None:
    """This layer may not import the binding's SITE_NAMES; the two stay equal."""
    assert server_config.SITE_NAMES == sites.SITE_NAMES


def test_toml_key_lines_follows_tomls_own_rules() -> None:
    """Quoted and dotted keys, multi-line strings and arrays, arrays of tables."""
    text = (
        '[server]\n"site" = "x"\na."b.c" = 1\nlist = [\n  1,\n]\n'
        's = """\n[not_a_table]\nk = 1\n"""\nafter = 2\n'
        "[[p]]\nname = 'a'\n[[p]]\nname = 'b'\n"
    )
    expected = {
        ("server",): 1, ("server", "site"): 2, ("server", "a"): 3,
        ("server", "a", "b.c"): 3, ("server", "list"): 4, ("server", "s"): 7,
        ("server", "after"): 11, ("p",): 12, ("p", 0): 12, ("p", 0, "name"): 13,
        ("p", 1): 14, ("p", 1, "name"): 15,
    }  # fmt: skip
    assert expected == toml_key_lines(text)


# -- mistakes -------------------------------------------------------------------------

HOST_ALLOWED = (
    "allowed: an IP address, or a DNS name: labels of letters, digits and '-' (not "
    "first or last in a label) joined by '.', at most 253 characters"
)
LISTEN_ALLOWED = (
    "allowed: 'host:port' with a port from 0 (any free port) to 65535, an IPv6 "
    "address in brackets ('[::1]:8443')"
)
BYTES = (
    "it takes an integer from 1048576 (1 MiB) to 1073741824 (1 GiB); default "
    "67108864 (64 MiB)"
)
TIMEOUT = "it takes a number of seconds more than 0 and at most 3600; default 60"
NAME = (
    "it takes 1 to 255 characters, no spaces: a certificate's subject CN or DNS "
    "name, or a Kerberos principal"
)
SHARED = "each primary's storage must be its own folder, outside every other's"
CERTIFICATE_TABLE = (
    '[certificate]\ncertificate = "replica.pem"\nprivate_key = "replica.key"\n'
    'ca = "ca.pem"\n'
)
FIRST_PRIMARY = (
    '[[authorization.primary]]\nname = "host/primary.example@EXAMPLE.COM"\n'
    'storage = "from-primary"\n'
)
PRIMARIES = FIRST_PRIMARY + (
    '\n[[authorization.primary]]\nname = "branch.example"\n'
    'storage = "/srv/hvdr/from-branch"\n'
)
TIMEOUT_LINE = "request_timeout_seconds = 2.5"

SERVER_TABLE = (
    '[server]\nlisten = "127.0.0.1:8443"\nsite = "secondary"\n'
    'authentication = "certificate"\n'
)
KERBEROS_TABLE = (
    '[kerberos]\nkeytab = "replica.keytab"\n'
    'principal = "HTTP/replica.example@EXAMPLE.COM"\nkrb5_config = "conf/krb5.conf"\n'
)


@dataclass(frozen=True)
class Mistake:
    """An example with ``old`` replaced by ``new``, and the message after FILE."""

    example: str
    old: str
    new: str
    expected: str


MISTAKES = {
    "a string left open": Mistake(
        CERTIFICATE_ANY,
        'site = "secondary"',
        'site = "secondary',
        ", line 3, column 18: not valid TOML: Illegal character '\\n'",
    ),
    "a key given twice": Mistake(
        CERTIFICATE_ANY,
        'site = "secondary"',
        'site = "secondary"\nsite = "primary"',
        ", line 4, column 17: not valid TOML: Cannot overwrite a value",
    ),
    "a misspelt key": Mistake(
        CERTIFICATE_ANY,
        "listen =",
        "lisen =",
        ", line 2: key 'server.lisen' is unknown; [server] has the keys: listen, "
        "site, authentication, max_request_bytes, request_timeout_seconds",
    ),
    "a misspelt table": Mistake(
        CERTIFICATE_ANY,
        "[certificate]",
        "[certificates]",
        ", line 6: key 'certificates' is unknown; the file has the keys: server, "
        "certificate, kerberos, authorization",
    ),
    "a key left out": Mistake(
        CERTIFICATE_ANY,
        'site = "secondary"\n',
        "",
        ", line 1: server.site is missing; it takes 'primary' or 'secondary'",
    ),
    "a table left out": Mistake(
        CERTIFICATE_ANY,
        '[authorization]\nmode = "any"\nstorage = "/srv/hvdr/replicas"\n',
        "",
        ": authorization is missing; it takes a table with mode, and storage or "
        "[[authorization.primary]]",
    ),
    "a value where a table goes": Mistake(
        CERTIFICATE_ANY,
        SERVER_TABLE,
        "server = 3\n",
        ", line 1: server=3: must be a table; it takes a table with listen, site "
        "and authentication",
    ),
    "an unknown site": Mistake(
        CERTIFICATE_ANY,
        '"secondary"',
        '"tertiary"',
        ", line 3: server.site=\"tertiary\": input should be 'primary' or 'secondary'",
    ),
    "an unknown authentication": Mistake(
        CERTIFICATE_ANY,
        '"certificate"',
        '"password"',
        ', line 4: server.authentication="password": input should be '
        "'certificate' or 'kerberos'",
    ),
    "max_request_bytes below 1 MiB": Mistake(
        KERBEROS_LISTED,
        "1048576",
        "1048575",
        ", line 6: server.max_request_bytes=1048575: input should be greater than "
        f"or equal to 1048576; {BYTES}",
    ),
    "max_request_bytes above 1 GiB": Mistake(
        KERBEROS_LISTED,
        "1048576",
        "1073741825",
        ", line 6: server.max_request_bytes=1073741825: input should be less than "
        f"or equal to 1073741824; {BYTES}",
    ),
    "max_request_bytes as a string": Mistake(
        KERBEROS_LISTED,
        "1048576",
        '"1048576"',
        ', line 6: server.max_request_bytes="1048576": input should be a valid '
        f"integer; {BYTES}",
    ),
    "max_request_bytes as a float": Mistake(
        KERBEROS_LISTED,
        "1048576",
        "1048576.0",
        ", line 6: server.max_request_bytes=1048576.0: input should be a valid "
        f"integer; {BYTES}",
    ),
    "a timeout of 0": Mistake(
        KERBEROS_LISTED,
        TIMEOUT_LINE,
        "request_timeout_seconds = 0",
        ", line 7: server.request_timeout_seconds=0: input should be greater than "
        f"0; {TIMEOUT}",
    ),
    "a timeout of true": Mistake(
        KERBEROS_LISTED,
        TIMEOUT_LINE,
        "request_timeout_seconds = true",
        ", line 7: server.request_timeout_seconds=true: input should be a valid "
        f"number; {TIMEOUT}",
    ),
    "a listen address without a port": Mistake(
        CERTIFICATE_ANY,
        '"127.0.0.1:8443"',
        '"localhost"',
        f", line 2: server.listen='localhost' is not host:port; {LISTEN_ALLOWED}",
    ),
    "a port past 65535": Mistake(
        CERTIFICATE_ANY,
        "127.0.0.1:8443",
        "127.0.0.1:70000",
        ", line 2: server.listen='127.0.0.1:70000': port 70000 is past 65535; "
        f"{LISTEN_ALLOWED}",
    ),
    "an IPv6 address without brackets": Mistake(
        CERTIFICATE_ANY,
        "127.0.0.1:8443",
        "::1:8443",
        ", line 2: server.listen='::1:8443': write an IPv6 address in brackets "
        "('[::1]:8443')",
    ),
    "a listen host that is no host name": Mistake(
        CERTIFICATE_ANY,
        "127.0.0.1:8443",
        "a/b:8443",
        f", line 2: server.listen host='a/b' is not a host name; {HOST_ALLOWED}",
    ),
    "certificate mode without its table": Mistake(
        CERTIFICATE_ANY,
        CERTIFICATE_TABLE,
        "",
        ', line 4: server.authentication = "certificate" needs a [certificate] '
        "table: a table with certificate, private_key and ca",
    ),
    "kerberos mode without its table": Mistake(
        KERBEROS_LISTED,
        KERBEROS_TABLE,
        "",
        ', line 5: server.authentication = "kerberos" needs a [kerberos] table: a '
        "table with keytab, and optionally principal and krb5_config",
    ),
    "the other mode's table too": Mistake(
        KERBEROS_LISTED,
        "[authorization]",
        CERTIFICATE_TABLE + "\n[authorization]",
        ", line 14: [certificate] is given but server.authentication is "
        "'kerberos': remove the table, or set authentication = 'certificate'",
    ),
    "a certificate file that does not exist": Mistake(
        CERTIFICATE_ANY,
        '"replica.pem"',
        '"nothing.pem"',
        ", line 7: certificate.certificate=\"nothing.pem\": '{d}/nothing.pem' "
        "does not exist; it takes a file path (relative to this file's folder): "
        "the server's certificate (PEM)",
    ),
    "a CA that is a folder": Mistake(
        CERTIFICATE_ANY,
        '"ca.pem"',
        '"conf"',
        ", line 9: certificate.ca=\"conf\": '{d}/conf' is a folder; it takes a "
        "file path (relative to this file's folder): the CA certificate clients' "
        "certificates need",
    ),
    "a keytab that does not exist": Mistake(
        KERBEROS_LISTED,
        '"replica.keytab"',
        '"nothing.keytab"',
        ", line 10: kerberos.keytab=\"nothing.keytab\": '{d}/nothing.keytab' "
        "does not exist; it takes a file path (relative to this file's folder): "
        "the keytab the server accepts tickets with",
    ),
    "mode any with primaries listed": Mistake(
        CERTIFICATE_ANY,
        'storage = "/srv/hvdr/replicas"\n',
        'storage = "/srv/hvdr/replicas"\n\n' + FIRST_PRIMARY,
        ', line 15: authorization.mode = "any" lets every authenticated primary '
        'in: remove the [[authorization.primary]] tables, or set mode = "listed"',
    ),
    "mode any without storage": Mistake(
        CERTIFICATE_ANY,
        'storage = "/srv/hvdr/replicas"\n',
        "",
        ', line 12: authorization.mode = "any" needs authorization.storage: a '
        "folder path (relative to this file's folder; made if missing), with "
        "mode = 'any'",
    ),
    "mode listed without primaries": Mistake(
        KERBEROS_LISTED,
        PRIMARIES,
        "",
        ', line 15: authorization.mode = "listed" needs [[authorization.primary]] '
        'tables, each with name and storage (or mode = "any" lets every '
        "authenticated primary in)",
    ),
    "mode listed with one storage": Mistake(
        KERBEROS_LISTED,
        'mode = "listed"',
        'mode = "listed"\nstorage = "all"',
        ', line 16: authorization.storage is for mode = "any"; with mode = '
        '"listed" each [[authorization.primary]] names its own storage',
    ),
    "single brackets for a primary": Mistake(
        KERBEROS_LISTED,
        PRIMARIES,
        FIRST_PRIMARY.replace("[[authorization.primary]]", "[authorization.primary]"),
        ', line 17: authorization.primary={{"name": '
        '"host/primary.example@EXAMPLE.COM", "storage": "from-primary"}}: input '
        "should be a valid list; it takes [[authorization.primary]] tables (double "
        "brackets), each with name and storage, with mode = 'listed'",
    ),
    "a primary without storage": Mistake(
        KERBEROS_LISTED,
        'storage = "from-primary"\n',
        "",
        ", line 17: authorization.primary[0].storage is missing; it takes a folder "
        "path (relative to this file's folder; made if missing), no other "
        "primary's",
    ),
    "a name listed twice": Mistake(
        KERBEROS_LISTED,
        '"branch.example"',
        '"host/primary.example@EXAMPLE.COM"',
        ", line 22: authorization.primary[1].name="
        '"host/primary.example@EXAMPLE.COM" is listed twice (also '
        "authorization.primary[0], line 18); list each name once",
    ),
    "an empty name": Mistake(
        KERBEROS_LISTED,
        '"branch.example"',
        '""',
        ', line 22: authorization.primary[1].name="": string should have at least '
        f"1 character; {NAME}",
    ),
    "a name with a space": Mistake(
        KERBEROS_LISTED,
        '"branch.example"',
        '"branch example"',
        ', line 22: authorization.primary[1].name="branch example" holds a space '
        f"or a control character; {NAME}",
    ),
    "two primaries, one storage": Mistake(
        KERBEROS_LISTED,
        '"/srv/hvdr/from-branch"',
        '"from-primary"',
        ", line 23: authorization.primary[1].storage: '{d}/from-primary' is also "
        f"authorization.primary[0].storage '{{d}}/from-primary' (line 19); {SHARED}",
    ),
    "a storage inside another's": Mistake(
        KERBEROS_LISTED,
        '"/srv/hvdr/from-branch"',
        '"from-primary/../from-primary/b"',
        ", line 23: authorization.primary[1].storage: '{d}/from-primary/b' lies "
        "inside authorization.primary[0].storage '{d}/from-primary' (line 19); "
        f"{SHARED}",
    ),
    "a storage holding another's": Mistake(
        KERBEROS_LISTED,
        '"/srv/hvdr/from-branch"',
        '"."',
        ", line 23: authorization.primary[1].storage: '{d}' contains "
        f"authorization.primary[0].storage '{{d}}/from-primary' (line 19); {SHARED}",
    ),
    "a storage that is a file": Mistake(
        CERTIFICATE_ANY,
        '"/srv/hvdr/replicas"',
        '"afile"',
        ", line 13: authorization.storage=\"afile\": '{d}/afile' is a file; "
        "storage is a folder (made if missing)",
    ),
    "a storage under ~": Mistake(
        CERTIFICATE_ANY,
        '"/srv/hvdr/replicas"',
        '"~/replicas"',
        ", line 13: authorization.storage=\"~/replicas\": '~' is not expanded "
        "here; write the full path, or one relative to this file's folder",
    ),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_each_mistake_names_the_file_the_line_and_the_key(
    folder: Path, name: str
) -> None:
    """The exact message: FILE, line N: the key, its value, what is allowed."""
    mistake = MISTAKES[name]
    assert mistake.old in mistake.example, name
    with pytest.raises(InvalidConfiguration) as error:
        load(folder, mistake.example.replace(mistake.old, mistake.new, 1))
    expected = f"{folder}/server.toml" + mistake.expected.format(d=folder)
    assert expected == str(error.value)


def test_a_missing_file_and_a_file_that_is_not_text_are_refused(tmp_path: Path) -> None:
    """What read_text says for both, naming the file."""
    (tmp_path / "binary.toml").write_bytes(b"\xff[server]")
    missing = f"{tmp_path}/none.toml: cannot read the configuration file: "
    missing += "No such file or directory"
    binary = f"{tmp_path}/binary.toml: not UTF-8 text (byte 0); a server "
    binary += "configuration is a TOML file"
    expected = [missing, binary]
    actual = []
    for name in ["none.toml", "binary.toml"]:
        with pytest.raises(InvalidConfiguration) as error:
            load_server_config(tmp_path / name)
        actual.append(str(error.value))
    assert expected == actual
