"""The replica server in Kerberos mode, against a real MIT KDC (``tests/kdc.py``).

The ReplicaServer authenticates each request's ``Authorization: Negotiate`` with the
keytab of ``HTTP/localhost``; the primary is an ``HttpReplica`` over plain HTTP whose
requests ``NegotiateAuth`` signs from a credential cache. A listed principal
replicates; a principal not listed is refused (403) and a primary without a ticket
never reaches the server, nothing written either way.
"""

from __future__ import annotations

from pathlib import Path

import kdc
import pytest
from server_thread import serving
from storage_digest import tree_digest

from engine.clock import SystemClock
from engine.errors import AuthenticationFailed, NotAuthorised
from engine.orchestration.engine import ReplicationEngine
from engine.transport.http.auth import KerberosAuthenticator
from engine.transport.http.client import HttpReplica, RetryPolicy
from engine.transport.http.kerberos import NegotiateAuth
from engine.transport.http.server import ReplicaServer
from engine.transport.http.server_config import Authorization, KerberosSettings

BLOCK = 4096
DISKS = {"os": 64 * BLOCK}


def server(kdc_realm: kdc.KdcRealm, authorization: Authorization) -> ReplicaServer:
    settings = KerberosSettings(
        keytab=kdc_realm.keytab("HTTP/localhost"),
        principal=None,
        krb5_config=kdc_realm.krb5_conf,
    )
    return ReplicaServer(
        "secondary", "primary", authorization, KerberosAuthenticator(settings),
        SystemClock(),
    )  # fmt: skip


def client(kdc_realm: kdc.KdcRealm, url: str, ccache: str) -> HttpReplica:
    auth = NegotiateAuth("localhost", ccache=ccache, krb5_config=kdc_realm.krb5_conf)
    return HttpReplica(
        url, site_name="secondary", auth=auth,
        retry=RetryPolicy(attempts=2, first_delay=0.05),
    )  # fmt: skip


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    return {"primary": tmp_path / "p", "secondary": tmp_path / "s"}


def test_a_listed_principal_replicates_over_kerberos(
    kdc_realm: kdc.KdcRealm, roots: dict[str, Path]
) -> None:
    listed = Authorization.only({kdc_realm.principal("primary"): roots["secondary"]})
    with serving(server(kdc_realm, listed)) as url:
        replica = client(kdc_realm, url, kdc_realm.ticket("primary"))
        assert replica.health().caller == kdc_realm.principal("primary")
        with ReplicationEngine.open(
            roots["primary"], roots["secondary"], replica_servers={"secondary": replica}
        ) as engine:
            engine.create_vm("web", DISKS)
            engine.write("web", "os", 0, b"\x05" * BLOCK)
            engine.enable_protection("web")
            engine.write("web", "os", BLOCK, b"\x06" * BLOCK)
            assert engine.replicate("web") is not None
            point = engine.status("web").recovery_points[-1].recovery_point_id
            reader = replica.point_reader("web", point)
            assert reader.read("os", 0, 2 * BLOCK) == b"\x05" * BLOCK + b"\x06" * BLOCK
        assert replica.requests > 10
        replica.close()


def test_a_principal_not_listed_is_refused_and_nothing_is_written(
    kdc_realm: kdc.KdcRealm, roots: dict[str, Path]
) -> None:
    roots["secondary"].mkdir(parents=True)
    listed = Authorization.only({"someone-else@HVDR.TEST": roots["secondary"]})
    with serving(server(kdc_realm, listed)) as url:
        before = tree_digest(roots["secondary"])
        replica = client(kdc_realm, url, kdc_realm.ticket("primary"))
        with pytest.raises(NotAuthorised, match=r"\['primary@HVDR.TEST'\] is not a "):
            replica.create_replica("web", DISKS, 4)
        assert tree_digest(roots["secondary"]) == before
        replica.close()


def test_a_primary_without_a_ticket_is_refused_before_sending(
    kdc_realm: kdc.KdcRealm, roots: dict[str, Path], tmp_path: Path
) -> None:
    roots["secondary"].mkdir(parents=True)
    anyone = Authorization.any_caller(roots["secondary"])
    with serving(server(kdc_realm, anyone)) as url:
        before = tree_digest(roots["secondary"])
        replica = client(kdc_realm, url, f"FILE:{tmp_path / 'no-such-cache'}")
        with pytest.raises(AuthenticationFailed, match="no Kerberos ticket"):
            replica.create_replica("web", DISKS, 4)
        assert replica.requests == 0
        assert tree_digest(roots["secondary"]) == before
        replica.close()
