"""hvdr's replication engine: VM disk images replicated to a second site on real files.

The public surface an embedder needs is re-exported here (and from ``hvdr``)::

    from engine import ReplicationEngine
    with ReplicationEngine.open("/srv/primary", "/srv/secondary") as engine:
        engine.create_vm("web", {"os": 1 << 30})
        engine.enable_protection("web")
        engine.write("web", "os", 0, b"...")
        engine.replicate("web")
        engine.planned_failover("web")      # zero loss, the replica VM runs
        engine.commit("web")                # every recovery point deleted
        engine.reverse_replication("web")   # protected again, towards the primary

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

from engine.binding.failover import CommitReport, DrillReport, FailoverReport
from engine.binding.loss_report import LossReport
from engine.binding.protected_vm import CycleReport, VmStatistics, VmStatus
from engine.binding.reverse import ReverseReport
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
    ShutdownRefused,
    SiteLocked,
    SiteUnreachable,
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
    "CommitReport",
    "CorruptRecord",
    "CycleReport",
    "CycleShipment",
    "DamagedState",
    "DiskRangeError",
    "DrillReport",
    "EngineStatistics",
    "FailoverReport",
    "InProcessReplica",
    "InvalidConfiguration",
    "InvalidName",
    "LogMismatch",
    "LossReport",
    "RecoveryPoint",
    "RecoveryPointNotFound",
    "ReplicaStatus",
    "ReplicaTarget",
    "ReplicationEngine",
    "ReplicationError",
    "ResyncReport",
    "ReverseReport",
    "ShutdownRefused",
    "SiteLocked",
    "SiteUnreachable",
    "StorageFull",
    "SystemClock",
    "TransitionNotAllowed",
    "TransportError",
    "VmStatistics",
    "VmStatus",
]
