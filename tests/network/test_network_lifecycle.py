"""The engine's lifecycle with each site's replicas behind a real replica server.

Two replica servers on 127.0.0.1 (mutual TLS with throwaway certificates), one per
site, each serving the site's storage root; the engine reaches the replicas only
through ``HttpReplica``. The copies must end byte for byte where the in-process
transport puts them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import trustme
from server_thread import client_context, server_context, serving

from engine.clock import SystemClock
from engine.orchestration.engine import ReplicationEngine
from engine.transport.http.auth import CertificateAuthenticator
from engine.transport.http.client import HttpReplica
from engine.transport.http.server import ReplicaServer
from engine.transport.http.server_config import Authorization

BLOCK = 4096
DISKS = {"os": 64 * BLOCK, "data": 32 * BLOCK}


@pytest.fixture
def networked(tmp_path: Path) -> Iterator[tuple[ReplicationEngine, dict[str, Path]]]:
    ca = trustme.CA()
    roots = {"primary": tmp_path / "p", "secondary": tmp_path / "s"}
    with ExitStack() as stack:
        targets = {}
        for site, root in roots.items():
            other = "secondary" if site == "primary" else "primary"
            server = ReplicaServer(
                site, other, Authorization.any_caller(root),
                CertificateAuthenticator(), SystemClock(),
            )  # fmt: skip
            url = stack.enter_context(serving(server, server_context(ca, "localhost")))
            url = url.replace("127.0.0.1", "localhost")
            client = HttpReplica(
                url, site_name=site, ssl_context=client_context(ca, f"{other}-host")
            )
            stack.callback(client.close)
            targets[site] = client
        engine = ReplicationEngine.open(
            roots["primary"], roots["secondary"], replica_servers=targets
        )
        stack.callback(engine.close)
        yield engine, roots
        # Every replica call went to the servers: each answered many requests.
        assert all(target.requests > 10 for target in targets.values()), {
            site: target.requests for site, target in targets.items()
        }


def test_replication_drill_failover_and_failback_over_the_network(
    networked: tuple[ReplicationEngine, dict[str, Path]],
) -> None:
    engine, roots = networked
    engine.create_vm("web", DISKS)
    written = {}
    for version in range(1, 9):
        disk = "os" if version % 2 else "data"
        data = version.to_bytes(4, "little") * (BLOCK // 4)
        engine.write("web", disk, version * BLOCK, data)
        written[(disk, version * BLOCK)] = data
    engine.enable_protection("web")
    engine.write("web", "os", 40 * BLOCK, b"\x07" * BLOCK)
    report = engine.replicate("web")
    assert report is not None
    status = engine.status("web")
    assert status.recovery_points, status
    point = status.recovery_points[-1].recovery_point_id

    drill = engine.start_test_failover("web", point)
    assert drill.recovery_point_id == point
    test_vm = engine.test_vm("web")
    assert test_vm.read("os", 40 * BLOCK, BLOCK) == b"\x07" * BLOCK
    test_vm.write("os", 0, b"\xee" * BLOCK)
    engine.cleanup_test_failover("web")

    source = {d: engine.read("web", d, 0, size) for d, size in DISKS.items()}
    engine.planned_failover("web")
    engine.commit("web")
    replica = {d: (roots["secondary"] / "vms" / "web" / f"{d}.img").read_bytes()
               for d in DISKS}  # fmt: skip
    assert replica == source  # the drill's write never reached the replica
    engine.reverse_replication("web")
    engine.write("web", "data", 3 * BLOCK, b"\x09" * BLOCK)
    engine.replicate("web")
    engine.planned_failover("web")
    engine.commit("web")
    back = {d: (roots["primary"] / "vms" / "web" / f"{d}.img").read_bytes()
            for d in DISKS}  # fmt: skip
    assert back["data"][3 * BLOCK : 4 * BLOCK] == b"\x09" * BLOCK
    assert back["os"] == source["os"]
    # Every upload was taken or forgotten: the servers keep no part of one, and a
    # promoted or adopted VM no folder of them.
    leftovers = {
        site: sorted(str(path.relative_to(root)) for path in root.glob("uploads/**/*"))
        for site, root in roots.items()
    }
    assert leftovers == {"primary": [], "secondary": []}
