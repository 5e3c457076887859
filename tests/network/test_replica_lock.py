"""One owner of a root's replica stores: a replica server, or an engine in process.

Opening replica stores finishes or undoes an apply that a crash interrupted, deleting
the apply's temporary files. An engine that opened, in process, the stores a running
replica server serves would undo the server's apply in progress; a server opened on
the stores an engine applies to would do the same to the engine. Each takes
``replica.lock`` first, so the second is refused naming the first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InvalidConfiguration, SiteLocked
from engine.orchestration.engine import ReplicationEngine
from engine.storage.owner_lock import REPLICA_LOCK_FILE
from engine.testing import ManualClock
from engine.transport.http.auth import CertificateAuthenticator
from engine.transport.http.server import ReplicaServer
from engine.transport.http.server_config import Authorization


def open_server(root: Path) -> ReplicaServer:
    return ReplicaServer(
        "secondary", "primary", Authorization.any_caller(root),
        CertificateAuthenticator(), ManualClock(),
    )  # fmt: skip


def test_an_engine_is_refused_the_stores_a_replica_server_serves(
    tmp_path: Path,
) -> None:
    server = open_server(tmp_path / "s")
    try:
        with pytest.raises(SiteLocked) as refused:
            ReplicationEngine.open(tmp_path / "p", tmp_path / "s", clock=ManualClock())
        message = str(refused.value)
        assert REPLICA_LOCK_FILE in message
        assert "stop that process (an engine or a replica server) first" in message
        # Refused whole: the primary's site is free again for an engine.
        with ReplicationEngine.open(
            tmp_path / "p", tmp_path / "other", clock=ManualClock()
        ):
            pass
    finally:
        server.close()
    with ReplicationEngine.open(tmp_path / "p", tmp_path / "s", clock=ManualClock()):
        pass  # once the server stopped, the engine may apply there itself


def test_a_replica_server_is_refused_the_stores_an_engine_applies_to(
    tmp_path: Path,
) -> None:
    engine = ReplicationEngine.open(tmp_path / "p", tmp_path / "s", clock=ManualClock())
    try:
        with pytest.raises(SiteLocked, match=REPLICA_LOCK_FILE):
            open_server(tmp_path / "s")
        engine.crash_site("secondary")  # its stores close, and their lock goes
        open_server(tmp_path / "s").close()
        engine.recover_site("secondary")
        with pytest.raises(SiteLocked, match=REPLICA_LOCK_FILE):
            open_server(tmp_path / "s")
    finally:
        engine.close()
    open_server(tmp_path / "s").close()


def test_storage_locations_one_inside_the_other_are_refused(tmp_path: Path) -> None:
    """Two servers whose storage folders nest would delete each other's files (a VM
    named ``uploads`` of the outer one is the inner one's stores): the second to
    start is refused, in either order (found by the outside review)."""
    outer, inner = tmp_path / "site", tmp_path / "site" / "uploads"
    for first, second in ((outer, inner), (inner, outer)):
        server = open_server(first)
        try:
            with pytest.raises(InvalidConfiguration, match="lie one inside the other"):
                open_server(second)
        finally:
            server.close()
        open_server(second).close()  # alone, it may have the folder
