"""Unit tests for engine.transport.in_process: the replica interface on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from small_filesystem import mounted

from engine.errors import (
    DiskRangeError,
    InvalidConfiguration,
    StorageFull,
    TransportError,
)
from engine.testing import CycleSource, LossyTransport, ManualClock
from engine.transport.in_process import InProcessReplica
from engine.transport.interface import CycleShipment, ReplicaTarget

BLOCK = 4096
DISKS = {"os": 8 * BLOCK, "data": 8 * BLOCK}


@pytest.fixture
def replica(tmp_path: Path) -> InProcessReplica:
    root = tmp_path / "secondary"
    root.mkdir()
    return InProcessReplica.open("primary", "secondary", root, ManualClock())


def shipment(source: CycleSource) -> CycleShipment:
    """The next cycle of ``source`` as the source side hands it over."""
    cycle = source.cut()
    return CycleShipment(
        cycle_id=cycle.cycle_id,
        epoch=cycle.epoch,
        app_consistent=False,
        logs=cycle.logs,
        last_sequences=cycle.last_sequences,
    )


def test_it_is_a_replica_target(replica: InProcessReplica) -> None:
    """InProcessReplica satisfies the ReplicaTarget protocol."""
    target: ReplicaTarget = replica
    assert target.reachable()
    assert target.site_name == "secondary"


def test_a_cycle_applies_and_the_status_lists_its_point(
    replica: InProcessReplica, tmp_path: Path
) -> None:
    """apply_cycle returns the point; status lists it; the inbox is left empty."""
    replica.create_replica("vm-1", DISKS, 4)
    source = CycleSource(tmp_path / "source", DISKS)
    source.write("os", 0, b"x" * BLOCK)
    point = replica.apply_cycle("vm-1", shipment(source))
    status = replica.status("vm-1")
    assert status.exists
    assert [p.recovery_point_id for p in status.points] == [point.recovery_point_id]
    assert status.last_cycle_id == 1
    assert list((tmp_path / "secondary" / "inbox" / "vm-1").iterdir()) == []
    assert replica.store("vm-1").read("os", 0, BLOCK) == b"x" * BLOCK


def test_the_link_down_refuses_naming_both_sites(
    replica: InProcessReplica, tmp_path: Path
) -> None:
    """Link down: TransportError naming both sites, nothing delivered, counted."""
    replica.create_replica("vm-1", DISKS, 4)
    source = CycleSource(tmp_path / "source", DISKS)
    source.write("os", 0, b"x" * BLOCK)
    replica.link_up = False
    assert not replica.reachable()
    with pytest.raises(TransportError, match="'primary' to site 'secondary' is down"):
        replica.apply_cycle("vm-1", shipment(source))
    assert not (tmp_path / "secondary" / "inbox" / "vm-1").exists()
    assert replica.statistics().transfers_refused == 1
    assert replica.status("vm-1").points == ()


def test_block_digests_differ_where_blocks_differ(
    replica: InProcessReplica, tmp_path: Path
) -> None:
    """One digest per block; a written block's digest changes, the others do not."""
    replica.create_replica("vm-1", DISKS, 4)
    before = replica.block_digests("vm-1", "os", BLOCK)
    source = CycleSource(tmp_path / "source", DISKS)
    source.write("os", 3 * BLOCK, b"y" * BLOCK)
    replica.apply_cycle("vm-1", shipment(source))
    after = replica.block_digests("vm-1", "os", BLOCK)
    assert len(before) == len(after) == 8
    assert [i for i in range(8) if before[i] != after[i]] == [3]


def test_digests_of_listed_blocks_only(
    replica: InProcessReplica, tmp_path: Path
) -> None:
    """blocks=[...] gives one digest per listed block, in order, through the
    interface and through LossyTransport; the link down refuses it too."""
    replica.create_replica("vm-1", DISKS, 4)
    source = CycleSource(tmp_path / "source", DISKS)
    source.write("os", 3 * BLOCK, b"y" * BLOCK)
    replica.apply_cycle("vm-1", shipment(source))
    every = replica.block_digests("vm-1", "os", BLOCK)
    lossy: ReplicaTarget = LossyTransport(replica)
    expected = [every[5], every[3], every[0]]
    assert expected == replica.block_digests("vm-1", "os", BLOCK, blocks=[5, 3, 0])
    assert expected == lossy.block_digests("vm-1", "os", BLOCK, blocks=[5, 3, 0])
    assert every == lossy.block_digests("vm-1", "os", BLOCK)
    with pytest.raises(DiskRangeError, match="disk 'os' must lie within its 8"):
        replica.block_digests("vm-1", "os", BLOCK, blocks=[8])
    replica.link_up = False
    with pytest.raises(TransportError, match="digests of disk 'os'"):
        replica.block_digests("vm-1", "os", BLOCK, blocks=[0])


def test_status_of_a_vm_without_replica_says_so(replica: InProcessReplica) -> None:
    """No replica store: exists is False (no error, no side effect)."""
    status = replica.status("vm-2")
    assert (status.exists, status.points) == (False, ())


def test_a_vm_without_replica_cannot_receive(replica: InProcessReplica) -> None:
    """Sending to a VM that has no replica is refused, naming what to do."""
    with pytest.raises(InvalidConfiguration, match="enable protection first"):
        replica.install_initial_copy("vm-2")


def test_remove_replica_leaves_nothing(
    replica: InProcessReplica, tmp_path: Path
) -> None:
    """remove_replica deletes the store and the VM's inbox."""
    replica.create_replica("vm-1", DISKS, 4)
    replica.remove_replica("vm-1")
    assert not (tmp_path / "secondary" / "replicas" / "vm-1").exists()
    assert not replica.status("vm-1").exists


def test_the_same_site_twice_is_refused(tmp_path: Path) -> None:
    """Replication needs two different sites."""
    with pytest.raises(InvalidConfiguration, match="two different sites"):
        InProcessReplica("primary", "primary", tmp_path, ManualClock())


def test_a_drill_is_cleaned_up_on_a_full_disk(tmp_path: Path) -> None:
    """Cleaning up frees the overlay's space, so it must not first flush it: on a
    really full disk (a tmpfs) the cleanup succeeds at the first try (found by the
    outside review: it answered 'no room left' flushing the overlay it was about to
    delete)."""
    with mounted(tmp_path / "small", size="8m") as small:
        root = small.root / "secondary"
        root.mkdir()
        replica = InProcessReplica.open("primary", "secondary", root, ManualClock())
        disks = {"os": 4 * 1024 * 1024}
        source = CycleSource(tmp_path / "source", disks)
        try:
            replica.create_replica("web", disks, 2)
            source.write("os", 0, b"\x01" * BLOCK)
            point = replica.apply_cycle("web", shipment(source))
        finally:
            source.close()
        replica.start_test_failover("web", point.recovery_point_id)
        test_vm = replica.test_vm("web")
        test_vm.write("os", 0, b"\x02" * BLOCK)
        test_vm.flush()
        small.fill()

        def write_until_full() -> None:
            for block in range(1, 1024):
                test_vm.write("os", block * BLOCK, b"\x03" * BLOCK)

        with pytest.raises(StorageFull):  # the overlay cannot grow: really full
            write_until_full()
        replica.cleanup_test_failover("web")
        assert not (root / "drills" / "web").exists()
        assert replica.status("web").points == (point,)
