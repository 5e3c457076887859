"""The log limit, end to end: a log past half its disk resynchronises, by file size."""

from __future__ import annotations

from pathlib import Path

from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore
from engine.testing import ManualClock

KIB = 1024
DISKS = {"os": 64 * KIB}


def test_many_tiny_writes_resynchronise_instead_of_shipping_the_log(
    tmp_path: Path,
) -> None:
    """2,800 one-byte writes to a 64 KiB disk: their log (~70 KB) is past half the
    disk, so replicate() ships nothing, returns None and the VM resynchronises; the
    resynchronisation then brings the replica to the source. Fails while the limit
    counts payload bytes (2,800) instead of the log's size."""
    roots = (tmp_path / "primary", tmp_path / "secondary")
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        for offset in range(2800):
            engine.write("web", "os", offset * 16, bytes([offset % 255 + 1]))
        assert engine.replicate("web") is None
        assert engine.status("web").phase == "resynchronizing"
        engine.resynchronize("web")
        assert engine.status("web").phase == "protected"
        store = ReplicaStore.open(engine.secondary.replicas, "web", ManualClock())
        size = DISKS["os"]
        assert store.read("os", 0, size) == engine.read("web", "os", 0, size)


def test_a_few_large_writes_under_half_the_disk_ship_as_a_cycle(
    tmp_path: Path,
) -> None:
    """Three 8 KiB writes (24 KiB of a 64 KiB disk, plus framing) are a normal
    cycle: replicate() ships them and the VM stays protected."""
    roots = (tmp_path / "primary", tmp_path / "secondary")
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        for index in range(3):
            engine.write("web", "os", index * 8 * KIB, bytes([index + 1]) * 8 * KIB)
        assert engine.replicate("web") is not None
        assert engine.status("web").phase == "protected"
