"""hvdr's replication engine: VM disk images replicated to a second site on real files.

The public surface an embedder needs is re-exported here (and from ``hvdr``)::

    from engine import ReplicationEngine
    with ReplicationEngine.open("/srv/primary", "/srv/secondary") as engine:
        engine.create_vm("web", {"os": 1 << 30})
        engine.enable_protection("web")
        engine.write("web", "os", 0, b"...")
        engine.replicate("web")

Packages by role (imports point one way, checked by ``tests/test_layers.py``):
``storage`` (disks, durable files, sparse copies, the file-operation seam), ``log``
(change-log format, writer, reader, tracked disk), ``source`` (the active site's
disks, outbox, cycles, resynchronisation's source half), ``replica`` (the target's
store, apply, undo images, recovery points), ``control`` (the per-site SQLite state
and the site that owns its paths), ``transport`` (the replica interface and its
in-process implementation), ``binding`` (each VM behind the model's state machine; the
only package importing ``model``) and ``orchestration`` (the engine's front). Public
fakes for tests live in ``engine.testing``.
"""

from engine.binding.protected_vm import CycleReport, VmStatistics, VmStatus
from engine.clock import Clock, SystemClock
from engine.errors import (
    CorruptRecord,
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    InvalidName,
    LogMismatch,
    RecoveryPointNotFound,
    ReplicationError,
    SiteLocked,
    StorageFull,
    TransitionNotAllowed,
    TransportError,
)
from engine.orchestration.engine import EngineStatistics, ReplicationEngine
from engine.replica.recovery_point import RecoveryPoint
from engine.source.resync import ResyncReport
from engine.transport.in_process import InProcessReplica
from engine.transport.interface import CycleShipment, ReplicaStatus, ReplicaTarget

__all__ = [
    "Clock",
    "CorruptRecord",
    "CycleReport",
    "CycleShipment",
    "DamagedState",
    "DiskRangeError",
    "EngineStatistics",
    "InProcessReplica",
    "InvalidConfiguration",
    "InvalidName",
    "LogMismatch",
    "RecoveryPoint",
    "RecoveryPointNotFound",
    "ReplicaStatus",
    "ReplicaTarget",
    "ReplicationEngine",
    "ReplicationError",
    "ResyncReport",
    "SiteLocked",
    "StorageFull",
    "SystemClock",
    "TransitionNotAllowed",
    "TransportError",
    "VmStatistics",
    "VmStatus",
]
