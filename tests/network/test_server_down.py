"""An engine and its replica server's storage: checked at open when the server
answers, else at first contact; an engine opens while its replica server is down
(found by the outside review: the open asked the server first and failed)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from server_thread import client_context, server_context, serving

from engine.errors import InvalidConfiguration, TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine
from engine.testing import ManualClock
from engine.transport.http.auth import CertificateAuthenticator
from engine.transport.http.client import HttpReplica, RetryPolicy
from engine.transport.http.server import ReplicaServer
from engine.transport.http.server_config import Authorization

DISKS = {"os": 64 * 4096}
QUICK = RetryPolicy(attempts=2, first_delay=0.01, max_delay=0.02)


def open_server(root: Path) -> ReplicaServer:
    return ReplicaServer(
        "secondary", "primary", Authorization.any_caller(root),
        CertificateAuthenticator(), ManualClock(),
    )  # fmt: skip


def client_for(ca: trustme.CA, port: int) -> HttpReplica:
    return HttpReplica(
        f"https://localhost:{port}", site_name="secondary",
        ssl_context=client_context(ca, "primary-host"), retry=QUICK,
    )  # fmt: skip


def port_left_free(root: Path, context: ssl.SSLContext) -> int:
    """A port a server for ``root`` listened on and no longer does (it stopped)."""
    with serving(open_server(root), context) as url:
        return int(url.rsplit(":", 1)[1])


def engine_through(tmp_path: Path, client: HttpReplica) -> ReplicationEngine:
    """An engine on ``tmp_path``'s two sites, the secondary's replicas at ``client``."""
    return ReplicationEngine.open(
        tmp_path / "p", tmp_path / "s", replica_servers={"secondary": client}
    )


def test_a_server_serving_another_folder_is_refused_at_open(tmp_path: Path) -> None:
    ca = trustme.CA()
    with serving(open_server(tmp_path / "elsewhere"), server_context(ca)) as url:
        client = client_for(ca, int(url.rsplit(":", 1)[1]))
        try:
            with pytest.raises(InvalidConfiguration) as refused:
                engine_through(tmp_path, client)
        finally:
            client.close()
    served = (tmp_path / "elsewhere").resolve()
    assert str(refused.value) == (
        f"the replica server {client.url} of site 'secondary' serves {str(served)!r}, "
        f"but the site's storage root is {str((tmp_path / 's').resolve())!r}: a "
        "site's replica server and its engine share one storage root "
        "(docs/network.md)"
    )


def test_an_engine_opens_while_its_replica_server_is_down(tmp_path: Path) -> None:
    ca = trustme.CA()
    context = server_context(ca)
    port = port_left_free(tmp_path / "s", context)
    client = client_for(ca, port)  # the server is gone; its port is free
    engine = engine_through(tmp_path, client)
    try:
        engine.create_vm("web", DISKS)
        # The server does not answer: the model sees the link down.
        with pytest.raises(TransitionNotAllowed, match="the link between the sites"):
            engine.enable_protection("web")
        with serving(open_server(tmp_path / "s"), context, port=port):
            engine.continue_initial_replication("web")
            engine.write("web", "os", 0, b"\x07" * 4096)
            engine.replicate("web")
            assert engine.status("web").recovery_points
    finally:
        engine.close()
        client.close()


def test_a_server_first_reached_after_open_is_checked_then(tmp_path: Path) -> None:
    ca = trustme.CA()
    context = server_context(ca)
    port = port_left_free(tmp_path / "elsewhere", context)
    client = client_for(ca, port)
    engine = engine_through(tmp_path, client)
    try:
        engine.create_vm("web", DISKS)
        with serving(open_server(tmp_path / "elsewhere"), context, port=port):
            for _ in range(2):  # refused every time, not only the first
                with pytest.raises(InvalidConfiguration, match="share one storage"):
                    client.status("web")
        assert not (tmp_path / "elsewhere" / "replicas" / "web").exists()
    finally:
        engine.close()
        client.close()


def test_the_vm_is_written_while_its_replica_server_is_gone(tmp_path: Path) -> None:
    """The VM's own I/O never waits on the other site: with its replica server gone
    (or the link cut) writes and status go on from the catalogue's mirror; the
    next cycle ships them once the server is back (found by the outside review: a
    write raised TransportError)."""
    ca = trustme.CA()
    context = server_context(ca)
    with serving(open_server(tmp_path / "s"), context) as url:
        port = int(url.rsplit(":", 1)[1])
        client = client_for(ca, port)
        engine = engine_through(tmp_path, client)
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        engine.write("web", "os", 0, b"\x01" * 4096)
        engine.replicate("web")
    try:
        engine.write("web", "os", 4096, b"\x02" * 4096)  # the server is gone
        assert engine.read("web", "os", 4096, 4096) == b"\x02" * 4096
        assert engine.status("web").recovery_points  # from the mirror
        engine.set_link(False)
        engine.write("web", "os", 8192, b"\x03" * 4096)
        engine.set_link(True)
        with serving(open_server(tmp_path / "s"), context, port=port):
            engine.replicate("web")
            newest = engine.status("web").recovery_points[-1].recovery_point_id
            reader = client.point_reader("web", newest)
            assert reader.read("os", 4096, 8192) == b"\x02" * 4096 + b"\x03" * 4096
    finally:
        engine.close()
        client.close()
