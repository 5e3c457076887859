"""hvdr: a formal, executable model of Hyper-V replication to a secondary site.

The command line is ``hvdr`` (``hvdr.cli``). Embedders import the engine from here::

    from hvdr import ReplicationEngine

This is the engine's public surface (``engine.__all__``), re-exported; the model
(``model``) and the invariants (``invariants``) are imported from their own packages.
"""

from engine import (
    Clock,
    CommitReport,
    CorruptRecord,
    CycleReport,
    CycleShipment,
    DamagedState,
    DiskRangeError,
    DrillReport,
    EngineStatistics,
    FailoverReport,
    InProcessReplica,
    InvalidConfiguration,
    InvalidName,
    LogMismatch,
    LossReport,
    RecoveryPoint,
    RecoveryPointNotFound,
    ReplicaStatus,
    ReplicaTarget,
    ReplicationEngine,
    ReplicationError,
    ResyncReport,
    ReverseReport,
    ShutdownRefused,
    SiteLocked,
    SiteUnreachable,
    StorageFull,
    SystemClock,
    TransitionNotAllowed,
    TransportError,
    VmStatistics,
    VmStatus,
)

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
