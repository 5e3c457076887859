"""``hvdr certs``: the CA and host certificates it writes, run in-process, and each
mistake refused with one line and status 2 before anything is written."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hvdr.cli import main


def certs(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    """``hvdr certs ARGUMENTS`` in-process: (status, stdout, stderr)."""
    status = main(["certs", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def refused(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    """The one line ``hvdr certs`` refuses ``arguments`` with (status 2)."""
    status, out, err = certs(capsys, *arguments)
    assert status == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    return lines[0]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: whatever the keys' modes are, the umask did not make them."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_certs_writes_a_ca_and_a_certificate_per_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CA, and per host CN=HOST, DNS (and IP) names, both EKUs, keys 0600."""
    out = tmp_path / "certs"
    status, stdout, _ = certs(
        capsys, "--out", str(out), "--ca-name", "lab CA", "--days", "30",
        "replica.example", "10.0.0.7",
    )  # fmt: skip
    assert status == 0
    expected_files = [
        "10.0.0.7.key", "10.0.0.7.pem", "ca.key", "ca.pem",
        "replica.example.key", "replica.example.pem",
    ]  # fmt: skip
    assert expected_files == sorted(path.name for path in out.iterdir())
    expected_modes = {"key": 0o600, "pem": 0o644}
    assert {path.name: expected_modes[path.suffix[1:]] for path in out.iterdir()} == {
        path.name: mode(path) for path in out.iterdir()
    }
    assert mode(out) == 0o700
    ca = load(out / "ca.pem")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    basic = constraints.value
    assert (constraints.critical, basic.ca, basic.path_length) == (True, True, 0)
    assert ca.subject.rfc4514_string() == "CN=lab CA"
    for host, names in [
        ("replica.example", ["DNS:replica.example"]),
        ("10.0.0.7", ["DNS:10.0.0.7", "IP:10.0.0.7"]),
    ]:
        certificate = load(out / f"{host}.pem")
        certificate.verify_directly_issued_by(ca)
        alternative = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        usages = certificate.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        ).value
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        key = serialization.load_pem_private_key(
            (out / f"{host}.key").read_bytes(), None
        )
        assert certificate.subject.rfc4514_string() == f"CN={host}"
        dns_names = alternative.get_values_for_type(x509.DNSName)
        addresses = alternative.get_values_for_type(x509.IPAddress)
        assert [f"DNS:{name}" for name in dns_names] + [
            f"IP:{address}" for address in addresses
        ] == names
        assert list(usages) == [
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ]
        assert lifetime == timedelta(days=30, minutes=5)
        assert key.public_key() == certificate.public_key()
    assert "CA 'lab CA' (new)" in stdout
    assert "DNS:10.0.0.7, IP:10.0.0.7" in stdout


def test_a_second_run_adds_hosts_under_the_same_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CA in the folder is reused (not rewritten); --ca-name may be left out."""
    out = tmp_path / "certs"
    assert certs(capsys, "--out", str(out), "--ca-name", "lab CA", "a.example")[0] == 0
    ca_bytes = (out / "ca.pem").read_bytes(), (out / "ca.key").read_bytes()
    status, stdout, _ = certs(capsys, "--out", str(out), "b.example")
    assert status == 0
    assert ca_bytes == ((out / "ca.pem").read_bytes(), (out / "ca.key").read_bytes())
    load(out / "b.example.pem").verify_directly_issued_by(load(out / "ca.pem"))
    assert "CA 'lab CA' (reused)" in stdout


def test_an_existing_host_is_kept_without_force_and_replaced_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --force: status 2, one line, nothing written; --force: a new key, 0600."""
    out = tmp_path / "certs"
    certs(capsys, "--out", str(out), "--ca-name", "lab CA", "a.example")
    before = (out / "a.example.key").read_bytes()
    line = refused(capsys, "--out", str(out), "b.example", "a.example")
    assert line == (
        f"hvdr certs: error: '{out}/a.example.pem' exists; give --force to replace "
        "a.example's certificate and key"
    )
    assert (out / "a.example.key").read_bytes() == before
    assert not (out / "b.example.pem").exists()
    status, stdout, _ = certs(capsys, "--out", str(out), "--force", "a.example")
    assert status == 0
    assert (out / "a.example.key").read_bytes() != before
    assert mode(out / "a.example.key") == 0o600
    assert "DNS:a.example (replaced)" in stdout
    assert sorted(path.name for path in out.iterdir()) == [
        "a.example.key", "a.example.pem", "ca.key", "ca.pem",
    ]  # fmt: skip


HOST_ALLOWED = (
    "allowed: an IP address, or a DNS name: labels of letters, digits and '-' (not "
    "first or last in a label) joined by '.', at most 253 characters"
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("../x", f"HOST='../x' is not a host name; {HOST_ALLOWED}"),
        ("", f"HOST='' is not a host name; {HOST_ALLOWED}"),
        ("a/b", f"HOST='a/b' is not a host name; {HOST_ALLOWED}"),
        ("-x", f"HOST='-x' is not a host name; {HOST_ALLOWED}"),
        ("a..b", f"HOST='a..b' is not a host name; {HOST_ALLOWED}"),
        ("a_b.example", f"HOST='a_b.example' is not a host name; {HOST_ALLOWED}"),
        ("1.2.3.999", f"HOST='1.2.3.999' is not a host name; {HOST_ALLOWED}"),
        ("x" * 64, f"HOST='{'x' * 64}' is not a host name; {HOST_ALLOWED}"),
        (
            "ca",
            (
                "HOST='ca' would overwrite the CA's files (ca.pem, ca.key); name the "
                "host by its full DNS name"
            ),
        ),
        (
            "CON.example",
            (
                "HOST='CON.example' names a device on Windows (CON, with any "
                "extension); choose another"
            ),
        ),
        (
            "::1",
            (
                "HOST='::1': an IPv6 address cannot name a certificate file on every "
                "system; name the host by its DNS name"
            ),
        ),
    ],
)
def test_a_hostile_or_unusable_host_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str, expected: str
) -> None:
    """Each bad HOST: one line naming it and what is allowed; no folder made."""
    out = tmp_path / "certs"
    line = refused(capsys, "--out", str(out), "--ca-name", "lab CA", "--", host)
    assert line == f"hvdr certs: error: {expected}"
    assert not out.exists()


def write_short_lived_ca(out: Path, days: int) -> None:
    """Replace the CA's certificate by one for the same key that expires sooner."""
    key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(3)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    (out / "ca.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        ("no ca name", "'{out}' holds no CA: give --ca-name to make one"),
        (
            "another ca name",
            (
                "--ca-name 'other CA': the CA in '{out}' is named 'lab CA'; give that "
                "name (or none) to add hosts to it, or another folder"
            ),
        ),
        (
            "half a ca",
            (
                "'{out}' holds ca.pem but not ca.key: put the CA's other file back, or "
                "use another folder for a new CA"
            ),
        ),
        ("no days", "--days 0 must be a whole number of days from 1 to 3650"),
        ("too many days", "--days 3651 must be a whole number of days from 1 to 3650"),
        (
            "past the ca",
            (
                "--days 30: the CA in '{out}' expires on {expiry}, in 9 days; give "
                "--days 9 at most, or make a new CA in another folder"
            ),
        ),
        ("out is a file", "--out '{tmp}/file' is a file; give a folder"),
        (
            "out has no parent",
            "--out '{tmp}/missing/certs': its folder '{tmp}/missing' does not exist",
        ),
        (
            "host twice",
            (
                "HOST='A.example' is given twice (as 'a.example': names that differ in "
                "case only are one file on some systems)"
            ),
        ),
        (
            "bad ca name",
            "--ca-name 'lab\\nCA' must be 1 to 64 printable characters",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mistake: str, expected: str
) -> None:
    """The CA, --days and --out mistakes: status 2, one line, the exact words."""
    out = tmp_path / "made"
    (tmp_path / "file").write_text("", "utf-8")
    if mistake in {"another ca name", "half a ca", "past the ca"}:
        assert (
            certs(capsys, "--out", str(out), "--ca-name", "lab CA", "a.example")[0] == 0
        )
    if mistake == "half a ca":
        (out / "ca.key").unlink()
    if mistake == "past the ca":
        write_short_lived_ca(out, days=10)
    arguments = {
        "no ca name": ["--out", str(out), "b.example"],
        "another ca name": ["--out", str(out), "--ca-name", "other CA", "b.example"],
        "half a ca": ["--out", str(out), "b.example"],
        "no days": ["--out", str(out), "--ca-name", "x", "--days", "0", "b.example"],
        "too many days": ["--out", str(out), "--ca-name", "x", "--days", "3651", "b"],
        "past the ca": ["--out", str(out), "--days", "30", "b.example"],
        "out is a file": ["--out", str(tmp_path / "file"), "--ca-name", "x", "b"],
        "out has no parent": ["--out", str(tmp_path / "missing" / "certs"), "b"],
        "host twice": ["--out", str(out), "--ca-name", "x", "a.example", "A.example"],
        "bad ca name": ["--out", str(out), "--ca-name", "lab\nCA", "b.example"],
    }[mistake]
    before = sorted(out.iterdir()) if out.exists() else []
    line = refused(capsys, *arguments)
    expiry = ""
    if mistake == "past the ca":
        expiry = f"{load(out / 'ca.pem').not_valid_after_utc:%Y-%m-%d}"
    assert line == "hvdr certs: error: " + expected.format(
        out=out, tmp=tmp_path, expiry=expiry
    )
    assert before == (sorted(out.iterdir()) if out.exists() else [])
