"""hvdr: a formal, executable model of Hyper-V replication to a secondary site.

The command line is ``hvdr`` (``hvdr.cli``). Embedders import the engine from here::

    from hvdr import ReplicationEngine

This is the engine's public surface (``engine.__all__``), re-exported; the model
(``model``) and the invariants (``invariants``) are imported from their own packages.
"""

from engine import (
    Clock,
    CorruptRecord,
    CycleReport,
    CycleShipment,
    DamagedState,
    DiskRangeError,
    EngineStatistics,
    InProcessReplica,
    InvalidConfiguration,
    InvalidName,
    LogMismatch,
    RecoveryPoint,
    RecoveryPointNotFound,
    ReplicaStatus,
    ReplicaTarget,
    ReplicationEngine,
    ReplicationError,
    ResyncReport,
    SiteLocked,
    StorageFull,
    SystemClock,
    TransitionNotAllowed,
    TransportError,
    VmStatistics,
    VmStatus,
)

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
