"""Faults on a real network link: cut connections, a slow link, a full target.

The secondary's replica server runs on 127.0.0.1 behind a TCP proxy
(``link_proxy.py``) that cuts or slows the real connections; the primary replicates to
it through ``HttpReplica``. A cut upload resumes from the server's last durable
acknowledgement (so far fewer bytes cross than twice the data), and the replica is at
a valid recovery point throughout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from link_proxy import LinkProxy
from server_thread import client_context, server_context, serving
from small_filesystem import SmallFilesystem, mounted

from engine.clock import SystemClock
from engine.errors import StorageFull, TransportError
from engine.orchestration.engine import ReplicationEngine
from engine.transport.http.auth import CertificateAuthenticator
from engine.transport.http.client import HttpReplica, RetryPolicy
from engine.transport.http.server import ReplicaServer
from engine.transport.http.server_config import Authorization

MIB = 1024 * 1024
BLOCK = 4096
DISKS = {"os": 8 * MIB}


@dataclass
class Link:
    engine: ReplicationEngine
    client: HttpReplica
    proxy: LinkProxy
    secondary: Path


def open_link(
    stack: ExitStack, primary: Path, secondary: Path, **client_options: object
) -> Link:
    ca = trustme.CA()
    server = ReplicaServer(
        "secondary", "primary", Authorization.any_caller(secondary),
        CertificateAuthenticator(), SystemClock(), low_space_bytes=64 * 1024,
    )  # fmt: skip
    url = stack.enter_context(serving(server, server_context(ca)))
    proxy = LinkProxy("127.0.0.1", int(url.rsplit(":", 1)[1]))
    stack.callback(proxy.close)
    options: dict[str, object] = {
        "chunk_bytes": MIB,
        "retry": RetryPolicy(attempts=6, first_delay=0.05, max_delay=0.2),
    }
    options.update(client_options)
    client = HttpReplica(
        f"https://localhost:{proxy.port}", site_name="secondary",
        ssl_context=client_context(ca, "primary-host"),
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    stack.callback(client.close)
    engine = ReplicationEngine.open(
        primary, secondary, replica_servers={"secondary": client}
    )
    stack.callback(engine.close)
    return Link(engine, client, proxy, secondary)


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Link]:
    with ExitStack() as stack:
        yield open_link(stack, tmp_path / "p", tmp_path / "s")


def fill(engine: ReplicationEngine, first_block: int, count: int, seed: int) -> None:
    """Write ``count`` distinct 64 KiB pieces from ``first_block`` (no holes)."""
    for index in range(count):
        data = bytes([(seed + index) % 251 + 1]) * (16 * BLOCK)
        engine.write("web", "os", (first_block + index * 16) * BLOCK, data)


def replica_matches_source(link: Link) -> None:
    status = link.engine.status("web")
    point = status.recovery_points[-1].recovery_point_id
    reader = link.client.point_reader("web", point)
    assert reader.read("os", 0, DISKS["os"]) == link.engine.read(
        "web", "os", 0, DISKS["os"]
    )


def test_a_cut_initial_copy_resumes_from_the_last_acknowledged_chunk(
    link: Link,
) -> None:
    link.engine.create_vm("web", DISKS)
    fill(link.engine, 0, 96, seed=1)  # 6 MiB of data in an 8 MiB sparse disk
    link.proxy.cut_after(3 * MIB)
    link.engine.enable_protection("web")
    assert link.proxy.counters.cuts == 1
    assert link.client.retries >= 1
    # Resumed, not restarted: well under twice the 6 MiB of data crossed.
    assert link.proxy.counters.upstream_bytes < 8 * MIB, link.proxy.counters
    replica_matches_source(link)


def test_a_cut_log_shipment_resumes_and_applies_once(link: Link) -> None:
    link.engine.create_vm("web", DISKS)
    link.engine.enable_protection("web")
    before = len(link.engine.status("web").recovery_points)
    fill(link.engine, 0, 48, seed=7)  # a 3 MiB cycle
    link.proxy.cut_after(MIB + MIB // 2)
    report = link.engine.replicate("web")
    assert report is not None
    assert link.proxy.counters.cuts == 1
    assert link.client.retries >= 1
    assert len(link.engine.status("web").recovery_points) == before + 1
    replica_matches_source(link)


def test_a_cut_resynchronisation_resumes(link: Link) -> None:
    link.engine.create_vm("web", DISKS)
    fill(link.engine, 0, 64, seed=3)
    link.engine.enable_protection("web")
    fill(link.engine, 0, 32, seed=90)
    link.engine.pause("web")
    link.proxy.cut_after(256 * 1024)
    link.engine.resynchronize("web")
    assert link.proxy.counters.cuts == 1
    replica_matches_source(link)


def test_a_slow_link_still_delivers(link: Link) -> None:
    link.engine.create_vm("web", DISKS)
    link.engine.enable_protection("web")
    fill(link.engine, 0, 8, seed=5)
    link.proxy.delay_seconds = 0.01
    assert link.engine.replicate("web") is not None
    replica_matches_source(link)


def test_a_link_slower_than_the_timeout_fails_clearly_and_bounded(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        link = open_link(
            stack, tmp_path / "p", tmp_path / "s",
            timeout=0.3, retry=RetryPolicy(attempts=3, first_delay=0.05, max_delay=0.1),
        )  # fmt: skip
        link.engine.create_vm("web", DISKS)
        link.engine.enable_protection("web")
        points = len(link.engine.status("web").recovery_points)
        fill(link.engine, 0, 4, seed=9)
        link.proxy.delay_seconds = 1.0
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"unreachable: .* failed 3 time\(s\)"):
            link.client.status("web")
        assert time.monotonic() - started < 10
        link.proxy.delay_seconds = 0.0
        assert len(link.engine.status("web").recovery_points) == points


def test_a_full_target_is_reported_then_replication_resumes(tmp_path: Path) -> None:
    with ExitStack() as stack:
        small: SmallFilesystem = stack.enter_context(
            mounted(tmp_path / "small", size="24m")
        )
        link = open_link(stack, tmp_path / "p", small.root / "s")
        link.engine.create_vm("web", DISKS)
        link.engine.enable_protection("web")
        assert link.client.health().status == "ready"
        small.fill()
        small.free_some(512 * 1024)  # room above the engine's reserve, not for 3 MiB
        fill(link.engine, 0, 48, seed=11)
        with pytest.raises(StorageFull, match="storage is full"):
            link.engine.replicate("web")
        health = link.client.health()
        assert health.status == "warning"
        assert any("storage full" in reason for reason in health.reasons), health
        small.free()
        assert link.engine.replicate("web") is not None
        assert link.client.health().status == "ready"
        replica_matches_source(link)


def test_finishing_an_image_again_after_a_lost_answer_is_accepted(
    link: Link, tmp_path: Path
) -> None:
    """The answer to "image complete" lost (or the server killed after moving the
    image into its inbox): the primary sends it again and it is accepted, the image
    whole in the inbox, nothing to send again."""
    image = tmp_path / "os.img"
    image.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    link.client.create_replica("web", {"os": image.stat().st_size}, 4)
    link.client.send_disk_image("web", "os", image)
    again = link.client._send(  # the primary's retry of the same request
        "POST", "/v1/vms/web/initial/os", json={"size": image.stat().st_size}
    )
    assert again.status_code == 200
    inbox = link.secondary / "inbox" / "web" / "initial" / "os.img"
    assert inbox.read_bytes() == image.read_bytes()
    assert not list((link.secondary / "uploads").rglob("*.part"))
