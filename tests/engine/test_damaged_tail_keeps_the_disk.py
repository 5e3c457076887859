"""A damaged last record never rolls the source disk back to an older write.

Two writes to one block, flushed, then one byte of the last record flipped on disk
(a disk fault): reopening cuts that record and distrusts the logs, and the disk
keeps the newer bytes. Replaying the older record over them, as the engine once did,
silently lost a flushed, acknowledged write (and a resynchronisation would then
have spread the older bytes to the replica).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.orchestration.engine import ReplicationEngine
from engine.testing import ManualClock

BLOCK = 4096


@pytest.mark.parametrize("durable", [False, True])
def test_a_damaged_last_record_keeps_the_newer_write(
    tmp_path: Path, *, durable: bool
) -> None:
    def open_engine() -> ReplicationEngine:
        return ReplicationEngine.open(
            tmp_path / "p", tmp_path / "s", clock=ManualClock(), durable_writes=durable
        )

    with open_engine() as engine:
        engine.create_vm("vm", {"os": 16 * BLOCK})
        engine.enable_protection("vm")
        engine.write("vm", "os", 0, b"A" * BLOCK)
        engine.write("vm", "os", 0, b"B" * BLOCK)
        engine.flush("vm")
    log = tmp_path / "p" / "vms" / "vm" / "os.img.hrl"
    data = bytearray(log.read_bytes())
    data[-100] ^= 0xFF
    log.write_bytes(bytes(data))
    with open_engine() as engine:
        assert engine.read("vm", "os", 0, BLOCK) == b"B" * BLOCK
        status = engine.status("vm")
        assert status.log_problem is not None
        engine.resynchronize("vm")
        replica = engine.transport_towards("secondary")
        newest = replica.status("vm").points[-1].recovery_point_id
        assert replica.point_reader("vm", newest).read("os", 0, BLOCK) == b"B" * BLOCK
    image = tmp_path / "p" / "vms" / "vm" / "os.img"
    assert image.read_bytes()[:BLOCK] == b"B" * BLOCK
