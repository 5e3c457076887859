"""``ReplicationEngine.unshipped_log_bytes``: what the next successful cycle ships.

``statistics().pending_log_bytes`` counts the current logs only, so a cycle that
failed in transit (its sealed logs waiting in the outbox) drops it to zero although
nothing reached the target; the accessor counts those waiting logs too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import TransportError
from engine.orchestration.engine import ReplicationEngine
from engine.testing import LossyTransport, ManualClock
from engine.transport.interface import ReplicaTarget

BLOCK = 4096
DISKS = {"os": 4 * BLOCK, "data": 4 * BLOCK}
#: A log's header: 28 fixed bytes, the disk's name, a 4-byte CRC
#: (docs/change-log-format.md); a record: 24 bytes of framing and its payload.
HEADERS = sum(28 + len(disk) + 4 for disk in DISKS)
RECORD = 24 + BLOCK


def test_unshipped_bytes_count_waiting_cycles_and_match_what_ships(
    tmp_path: Path,
) -> None:
    """Zero when all is shipped; after a cycle lost in transit the waiting logs
    still count; the next cycle ships exactly the bytes reported before it."""
    lossy: dict[str, LossyTransport] = {}

    def wrap(inner: ReplicaTarget) -> ReplicaTarget:
        lossy[inner.site_name] = LossyTransport(inner)
        return lossy[inner.site_name]

    with ReplicationEngine.open(
        tmp_path / "p", tmp_path / "s", clock=ManualClock(), block_bytes=BLOCK,
        wrap_transport=wrap,
    ) as engine:  # fmt: skip
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        assert engine.unshipped_log_bytes("web") == 0
        engine.write("web", "os", 0, b"a" * BLOCK)
        one_write = engine.unshipped_log_bytes("web")
        # A cut seals both disks' logs: each header ships, the empty log's too.
        assert one_write == HEADERS + RECORD
        lossy["secondary"].drops = 1
        with pytest.raises(TransportError):
            engine.replicate("web")
        statistics = engine.statistics().vms["web"]
        assert (statistics.pending_log_bytes, statistics.cycles_waiting) == (0, 1)
        assert engine.unshipped_log_bytes("web") == one_write
        engine.write("web", "data", BLOCK, b"b" * BLOCK)
        before = engine.unshipped_log_bytes("web")
        assert before == 2 * (HEADERS + RECORD)
        shipped_before = engine.statistics().vms["web"].bytes_shipped
        engine.replicate("web")
        shipped = engine.statistics().vms["web"].bytes_shipped - shipped_before
        assert before == shipped
        assert engine.unshipped_log_bytes("web") == 0


def test_unshipped_bytes_are_unknown_while_the_active_site_is_down(
    tmp_path: Path,
) -> None:
    """The primary's hosts are down: its logs cannot be read, so None, not 0."""
    with ReplicationEngine.open(
        tmp_path / "p", tmp_path / "s", clock=ManualClock(), block_bytes=BLOCK
    ) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        engine.write("web", "os", 0, b"a" * BLOCK)
        engine.crash_site("primary")
        assert engine.unshipped_log_bytes("web") is None
