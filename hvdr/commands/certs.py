"""``hvdr certs``: a small CA and a certificate for each host, for ``hvdr serve``."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.errors import InvalidConfiguration
from engine.transport.http import certificates
from hvdr.status import ExitStatus, UsageError, examples

DESCRIPTION = (
    "Write DIR/ca.pem and DIR/ca.key (a new CA, or the one already in DIR) and, for "
    "each HOST, DIR/HOST.pem and DIR/HOST.key: subject CN=HOST, alternative name "
    "DNS:HOST (and IP:HOST for an address), usable as a TLS server and as a client "
    "certificate (serverAuth and clientAuth). Private keys are written 0600. A "
    "host's existing files are replaced only with --force."
)


def register(subparsers: Any) -> None:
    """Add the ``certs`` subcommand."""
    parser = subparsers.add_parser(
        "certs",
        help="make a CA and host certificates for the network transport (mutual TLS)",
        description=textwrap.fill(DESCRIPTION, 79),
        epilog=examples(
            (
                (
                    "hvdr certs --out certs --ca-name 'hvdr lab CA' primary.example "
                    "replica.example"
                ),
                "a new CA in certs/ and a certificate for each of the two servers",
            ),
            (
                "hvdr certs --out certs --days 90 10.0.0.7",
                (
                    "one more host, by address, under the CA already in certs/, "
                    "valid 90 days"
                ),
            ),
            (
                "hvdr certs --out certs --force replica.example",
                "replace replica.example's certificate and key (a renewal)",
            ),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "hosts",
        nargs="+",
        metavar="HOST",
        help="a DNS name or IPv4 address each certificate is for",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder to write into"
    )
    parser.add_argument(
        "--ca-name",
        metavar="NAME",
        help="the CA's common name; needed to make a new CA, optional to reuse one",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=certificates.DAYS_DEFAULT,
        metavar="N",
        help=f"validity of the host certificates (default: "
        f"{certificates.DAYS_DEFAULT}; a new CA: {certificates.CA_DAYS})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the certificate and key of a host that has them",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Make the certificates and print a table of the files written."""
    try:
        made = certificates.make_certificates(
            args.out,
            args.hosts,
            ca_name=args.ca_name,
            days=args.days,
            force=args.force,
        )
    except InvalidConfiguration as error:
        raise UsageError(str(error)) from None
    table = Table(title=f"certificates in {made.folder}")
    table.add_column("file")
    table.add_column("holds")
    table.add_column("valid until")
    ca_state = "new" if made.ca_created else "reused"
    table.add_row(
        made.ca_certificate.name,
        f"CA {made.ca_name!r} ({ca_state})",
        f"{made.ca_not_valid_after:%Y-%m-%d}",
    )
    if made.ca_created:
        table.add_row(made.ca_key.name, "the CA's key (0600): never copied", "")
    for host in made.hosts:
        replaced = " (replaced)" if host.replaced else ""
        table.add_row(
            host.certificate.name,
            f"{', '.join(host.alternative_names)}{replaced}",
            f"{host.not_valid_after:%Y-%m-%d}",
        )
        table.add_row(host.private_key.name, "its key (0600)", "")
    console = Console()
    console.print(table)
    console.print(
        "Each host certificate serves as a TLS server and as a client certificate "
        f"(serverAuth, clientAuth). Copy {made.ca_certificate.name} and HOST.pem + "
        f"HOST.key to each host; {made.ca_key.name} stays here."
    )
    return ExitStatus.OK
