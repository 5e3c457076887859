"""A cycle the target committed whose reply never came back (the link cut after it).

The source cannot tell such a cycle from one that never arrived until it asks: it
asks the target which points it holds before it reports a failure, and when the
target cannot even say, the cycle stays waiting and is shipped again later, which
the target answers with the point it already committed (applying is idempotent).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import TransportError
from engine.orchestration.engine import ReplicationEngine
from engine.replica.recovery_point import RecoveryPoint
from engine.testing import LossyTransport, ManualClock
from engine.transport.interface import CycleShipment, ReplicaStatus, ReplicaTarget

BLOCK = 4096
DISKS = {"os": 8 * BLOCK, "data": 8 * BLOCK}


class MuteStatus(LossyTransport):
    """Loses every cycle's reply; with ``mute`` set, the link stays down for the
    status query that follows a lost reply too."""

    def __init__(self, inner: ReplicaTarget) -> None:
        super().__init__(inner, lose_reply=self._always)
        self.mute = False
        self._down = False

    @staticmethod
    def _always(shipment: CycleShipment) -> bool:
        del shipment
        return True

    def apply_cycle(self, vm_name: str, shipment: CycleShipment) -> RecoveryPoint:
        try:
            return super().apply_cycle(vm_name, shipment)
        except TransportError:
            self._down = self.mute
            raise

    def status(self, vm_name: str, *, quick: bool = False) -> ReplicaStatus:
        if self._down:
            self._down = False
            msg = f"link lost while asking for the status of VM {vm_name!r}"
            raise TransportError(msg)
        return super().status(vm_name, quick=quick)


def _open(tmp_path: Path, found: list[MuteStatus]) -> ReplicationEngine:
    def wrap(inner: ReplicaTarget) -> ReplicaTarget:
        found.append(MuteStatus(inner))
        return found[-1]

    return ReplicationEngine.open(
        tmp_path / "p", tmp_path / "s", clock=ManualClock(), wrap_transport=wrap
    )


def _towards_secondary(found: list[MuteStatus]) -> MuteStatus:
    return next(t for t in found if t.site_name == "secondary")


def test_a_lost_reply_is_found_out_and_the_cycle_counts(tmp_path: Path) -> None:
    found: list[MuteStatus] = []
    with _open(tmp_path, found) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        engine.write("web", "os", 0, b"\x01" * BLOCK)
        report = engine.replicate("web")
        transport = _towards_secondary(found)
        assert transport.replies_lost >= 2  # the first point's cycle and this one
        assert report is not None
        status = engine.status("web")
        assert (status.phase, status.health) == ("protected", "normal")
        assert status.recovery_points[-1].recovery_point_id == report.recovery_point_id
        held = transport.point_reader("web", report.recovery_point_id)
        assert held.read("os", 0, BLOCK) == b"\x01" * BLOCK


def test_a_reply_lost_with_no_answer_is_shipped_again_once(tmp_path: Path) -> None:
    found: list[MuteStatus] = []
    with _open(tmp_path, found) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        transport = _towards_secondary(found)
        engine.write("web", "os", 0, b"\x02" * BLOCK)
        transport.mute = True
        with pytest.raises(TransportError, match="reply lost"):
            engine.replicate("web")
        transport.mute = False
        before = [p.recovery_point_id for p in engine.status("web").recovery_points]
        engine.write("web", "data", 0, b"\x03" * BLOCK)
        engine.replicate("web")  # the cycle in doubt first, then the new one
        points = transport.status("web").points
        assert [p.recovery_point_id for p in points][: len(before)] == before
        cycles = [p.cycle_id for p in points]
        assert len(cycles) == len(set(cycles))  # no cycle applied twice
        newest = transport.point_reader("web", points[-1].recovery_point_id)
        assert newest.read("os", 0, BLOCK) == b"\x02" * BLOCK
        assert newest.read("data", 0, BLOCK) == b"\x03" * BLOCK
        assert engine.status("web").health == "normal"
