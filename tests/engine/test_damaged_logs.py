"""Damaged change logs are detected, never applied, and lead to resynchronisation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engine.errors import CorruptRecord, TransportError
from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore
from engine.testing import LossyTransport, ManualClock

BLOCK = 4096
DISKS = {"os": 32 * BLOCK, "data": 32 * BLOCK}


def digest(store: ReplicaStore) -> str:
    """A hash of every replica disk, to prove nothing changed."""
    hasher = hashlib.sha256()
    for disk, size in sorted(DISKS.items()):
        hasher.update(store.read(disk, 0, size))
    return hasher.hexdigest()


def open_engine(tmp_path: Path, clock: ManualClock | None = None) -> ReplicationEngine:
    """The engine on the two roots under ``tmp_path``."""
    return ReplicationEngine.open(
        tmp_path / "primary", tmp_path / "secondary", clock=clock or ManualClock()
    )


def replica(engine: ReplicationEngine) -> ReplicaStore:
    """The replica store of ``web``."""
    return ReplicaStore.open(engine.secondary.replicas, "web", ManualClock())


def test_a_torn_log_tail_is_cut_reported_and_resynchronised(tmp_path: Path) -> None:
    """Reopen after a torn tail: reported, health critical, the cycle resyncs."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        engine.write("web", "data", 0, b"a" * BLOCK)
        engine.write("web", "data", BLOCK, b"b" * BLOCK)
        log = engine.primary.vm_directory("web") / "data.img.hrl"
    with log.open("r+b") as handle:  # tear the last record in half
        handle.truncate(log.stat().st_size - BLOCK // 2)
    with open_engine(tmp_path) as engine:
        status = engine.status("web")
        assert status.log_problem is not None
        assert "bytes dropped" in status.log_problem
        assert (status.health, status.phase) == ("critical", "protected")
        before = digest(replica(engine))
        assert engine.replicate("web") is None  # the model turns it into a resync
        assert digest(replica(engine)) == before  # nothing applied from the log
        assert engine.status("web").phase == "resynchronizing"
        report = engine.resynchronize("web")
        assert report.blocks_sent == 2
        store = replica(engine)
        for disk, size in DISKS.items():
            assert store.read(disk, 0, size) == engine.read("web", disk, 0, size)
        assert engine.status("web").log_problem is None


def lossy_engine(tmp_path: Path) -> tuple[ReplicationEngine, LossyTransport]:
    """An engine whose transport can lose shipments mid-way."""
    engine = ReplicationEngine.open(
        tmp_path / "primary",
        tmp_path / "secondary",
        wrap_transport=LossyTransport,
        clock=ManualClock(),
    )
    assert isinstance(engine.transport, LossyTransport)
    return engine, engine.transport


def test_a_cycle_lost_in_transit_waits_and_ships_first_next_time(
    tmp_path: Path,
) -> None:
    """Link lost mid-cycle: phase unchanged, nothing lost, order kept."""
    engine, lossy = lossy_engine(tmp_path)
    with engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        engine.write("web", "os", 0, b"1" * BLOCK)
        lossy.drops = 1
        with pytest.raises(TransportError, match="link lost"):
            engine.replicate("web")
        assert engine.status("web").phase == "protected"
        assert engine.statistics().vms["web"].cycles_waiting == 1
        engine.write("web", "os", 0, b"2" * BLOCK)  # overwrites the waiting write
        engine.replicate("web")
        points = replica(engine).catalogue.points
        assert [p.cycle_id for p in points] == [1, 2, 3]  # the waiting cycle first
        assert replica(engine).read("os", 0, BLOCK) == b"2" * BLOCK


def test_a_bit_flip_in_a_sealed_log_is_never_applied(tmp_path: Path) -> None:
    """A sealed cycle damaged while waiting is refused whole; resync repairs."""
    engine, lossy = lossy_engine(tmp_path)
    with engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        engine.write("web", "os", 0, b"c" * BLOCK)
        lossy.drops = 1
        with pytest.raises(TransportError):
            engine.replicate("web")
        sealed = engine.primary.outbox("web", 2) / "os.hrl"
        data = bytearray(sealed.read_bytes())
        data[-10] ^= 0x01
        sealed.write_bytes(bytes(data))
        before = digest(replica(engine))
        with pytest.raises(CorruptRecord, match="record checksum mismatch"):
            engine.replicate("web")
        assert digest(replica(engine)) == before
        assert engine.status("web").health == "critical"
        assert engine.replicate("web") is None  # the model: resynchronise
        assert engine.resynchronize("web").blocks_sent == 1
        store = replica(engine)
        for disk, size in DISKS.items():
            assert store.read(disk, 0, size) == engine.read("web", disk, 0, size)


def test_statistics_report_lag_and_pending_bytes(tmp_path: Path) -> None:
    """Lag grows with the clock; pending bytes count what is logged, not shipped."""
    clock = ManualClock(1000.0)
    with open_engine(tmp_path, clock) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        engine.write("web", "os", 0, b"d" * BLOCK)
        clock.advance(30.0)
        stats = engine.statistics().vms["web"]
        assert (stats.pending_log_records, stats.pending_log_bytes) == (1, BLOCK)
        assert stats.lag_seconds == 30.0
        report = engine.replicate("web")
        stats = engine.statistics().vms["web"]
        assert (stats.pending_log_records, stats.lag_seconds) == (0, 0.0)
        assert stats.last_cycle == report
        assert stats.bytes_shipped > BLOCK
