"""The two small documents of a replica store: its manifest and its apply intent.

``store.json`` (:class:`StoreManifest`) says what the store is (the VM, its disks and
their sizes, the retention count) and holds the recovery-point catalogue and, while a
drill reads one, the pinned point (``pinned_recovery_point_id``, written only when set,
so a store without a pin writes exactly what it did before the field existed, and a
file without it loads as unpinned). It is the store's commit record: rewritten whole
(temporary file, fsync, rename) at every commit, so it always describes a committed
state.

``intent.json`` (:class:`ApplyIntent`) exists only while a cycle is being applied. It
names the cycle, its epoch, the absolute paths of its sealed logs, the undo image
written for it, and the recovery point the apply will commit, so that the store's
owner can finish the apply (roll forward) or undo it (roll back) after a crash.

Both are JSON: a human diagnosing a site can read them with any tool, and they are tiny.
Both come from disk and may be damaged, so loading validates every field and raises
:class:`DamagedState` naming the file and the field; a manifest from a newer format
version is refused rather than half understood. Not :class:`CorruptRecord`: that one
means a change log failed its checks, and the binding answers it by distrusting the
source's logs, which a damaged catalogue must not be mistaken for.

**Paths in an intent are not trusted.** Recovery reads the logs an intent names and,
once their cycle is committed, deletes them without reading them. A damaged or hostile
intent could name any file, so :func:`log_path_problem` admits only an absolute path
whose real location (``os.path.realpath``, symlinks followed) lies under the trusted
root (the site root, which holds the inbox) and outside the replicas directory (which
holds every VM's store: no log ever lives there). The store applies the same rule to
the logs it is given, so it never writes an intent its recovery would refuse.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.errors import DamagedState, InvalidConfiguration
from engine.names import validate_disk_name
from engine.replica.recovery_point import (
    RecoveryPoint,
    RecoveryPointCatalogue,
    validate_retention_count,
)

STORE_FORMAT_VERSION: Final = 1
"""Bumped on any incompatible change to ``store.json``; newer versions are refused."""

DISK_BYTES_MAX: Final = 64 * 1024**4
"""A VHDX holds at most 64 TiB: a larger size is a typo, refused before any write."""

DOCUMENT_BYTES_MAX: Final = 16 * 1024 * 1024
"""Largest ``store.json`` or ``intent.json`` read: a full catalogue (4096 points) is
about 1 MiB, so a bigger file is damage, refused before it is held in memory."""

PINNED_FIELD: Final = "pinned_recovery_point_id"
"""The optional ``store.json`` field naming the pinned point (absent: no pin)."""

ORIGIN_UNDO: Final = "origin"
"""Name of the undo image of a cycle applied when the catalogue has no point."""

_UNDO_NAME: Final = re.compile(r"origin|[1-9][0-9]{0,18}")
"""An undo image's name: ``origin`` or a recovery point id (ASCII digits only)."""


@dataclass(frozen=True, slots=True)
class StoreManifest:
    """What ``store.json`` holds: the store's identity and its committed catalogue."""

    vm_name: str
    disks: dict[str, int]
    retention_count: int
    catalogue: RecoveryPointCatalogue
    pinned: int | None = None  # the point a drill reads (ReplicaStore.pin), if any

    def __post_init__(self) -> None:
        ids = self.catalogue.recovery_point_ids
        assert self.pinned is None or self.pinned in ids, (self.pinned, ids)

    def to_bytes(self) -> bytes:
        """Return the manifest as the JSON bytes written to ``store.json``."""
        document: dict[str, object] = {
            "format_version": STORE_FORMAT_VERSION,
            "vm_name": self.vm_name,
            "disks": self.disks,
            "retention_count": self.retention_count,
            "catalogue": self.catalogue.to_json(),
        }
        if self.pinned is not None:
            document[PINNED_FIELD] = self.pinned
        return json.dumps(document, indent=1).encode()

    @classmethod
    def load(cls, path: Path, vm_name: str) -> StoreManifest:
        """Read and validate ``store.json`` of ``vm_name``; raise DamagedState."""
        document = load_json(path)
        version = document.get("format_version")
        if version != STORE_FORMAT_VERSION:
            msg = f"{str(path)!r} has format_version={version!r}; this engine reads "
            msg += f"{STORE_FORMAT_VERSION} (a newer hvdr wrote it, or it is damaged)"
            raise DamagedState(msg)
        if document.get("vm_name") != vm_name:
            msg = f"{str(path)!r} is damaged: vm_name={document.get('vm_name')!r}, "
            msg += f"expected {vm_name!r} (the store's directory name)"
            raise DamagedState(msg)
        disks = document.get("disks")
        if not isinstance(disks, dict):
            msg = f"{str(path)!r} is damaged: disks={disks!r} must be an object of "
            msg += "disk name -> size in bytes"
            raise DamagedState(msg)
        try:
            sizes = validate_disks(disks)
            retention_count = validate_retention_count(document.get("retention_count"))
            catalogue = RecoveryPointCatalogue.from_json(document.get("catalogue"))
        except (InvalidConfiguration, DamagedState) as error:
            msg = f"{str(path)!r} is damaged: {error}"
            raise DamagedState(msg) from error
        for point in catalogue.points:
            _check_point_disks(path, point, sizes)
        pinned = _load_pin(path, document, catalogue)
        return cls(vm_name, sizes, retention_count, catalogue, pinned)


@dataclass(frozen=True, slots=True)
class ApplyIntent:
    """What ``intent.json`` holds: the apply in progress, how to finish or undo it."""

    cycle_id: int
    epoch: int
    logs: dict[str, str]  # disk -> absolute path of its sealed log
    undo: str  # name of the undo image under undo/ (a point id, or "origin")
    point: RecoveryPoint  # the point the apply commits

    def to_bytes(self) -> bytes:
        """Return the intent as the JSON bytes written to ``intent.json``."""
        document = {
            "cycle_id": self.cycle_id,
            "epoch": self.epoch,
            "logs": self.logs,
            "undo": self.undo,
            "point": self.point.to_json(),
        }
        return json.dumps(document, indent=1).encode()

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        disks: Collection[str],
        trusted_root: Path,
        replicas_root: Path,
    ) -> ApplyIntent:
        """Read and validate ``intent.json`` of a store with ``disks``.

        Every log path must pass :func:`log_path_problem` (``trusted_root`` and
        ``replicas_root`` already resolved); anything else raises DamagedState naming
        the file and the field or path.
        """
        document = load_json(path)
        cycle_id = _count(path, document, "cycle_id")
        epoch = _count(path, document, "epoch")
        logs, undo = document.get("logs"), document.get("undo")
        if (
            not isinstance(logs, dict)
            or set(logs) != set(disks)
            or not all(isinstance(name, str) for name in logs.values())
        ):
            msg = f"{str(path)!r} is damaged: logs={logs!r} must map each disk of "
            msg += f"the store {sorted(disks)} to the path of its sealed log"
            raise DamagedState(msg)
        for disk in sorted(logs):
            problem = log_path_problem(
                logs[disk],
                disk=disk,
                trusted_root=trusted_root,
                replicas_root=replicas_root,
            )
            if problem is not None:
                msg = f"{str(path)!r} is damaged or not ours: logs[{disk!r}]="
                msg += f"{logs[disk]!r} {problem}; nothing was read or deleted"
                raise DamagedState(msg)
        if not isinstance(undo, str) or _UNDO_NAME.fullmatch(undo) is None:
            msg = f"{str(path)!r} is damaged: undo={undo!r} must be {ORIGIN_UNDO!r} "
            msg += "or a recovery point id (the undo image's name under undo/)"
            raise DamagedState(msg)
        try:
            point = RecoveryPoint.from_json(document.get("point"))
        except DamagedState as error:
            msg = f"{str(path)!r} is damaged: point: {error}"
            raise DamagedState(msg) from error
        if (point.cycle_id, point.epoch) != (cycle_id, epoch):
            msg = f"{str(path)!r} is damaged: its point is of cycle {point.cycle_id} "
            msg += f"epoch {point.epoch}, the intent of cycle {cycle_id} epoch {epoch}"
            raise DamagedState(msg)
        _check_point_disks(path, point, disks)
        return cls(cycle_id, epoch, dict(logs), undo, point)


def log_path_problem(
    name: str | os.PathLike[str],
    *,
    disk: str,
    trusted_root: Path,
    replicas_root: Path,
) -> str | None:
    """Say why ``name`` may not be the path of ``disk``'s log (None when it may).

    It must be absolute, be named ``<disk>.hrl`` and, symlinks resolved, lie under
    ``trusted_root`` and not under ``replicas_root`` (both given resolved).
    """
    if not os.path.isabs(name):
        return "is not an absolute path"
    if Path(name).name != f"{disk}.hrl":
        return f"is not named {disk + '.hrl'!r}, as disk {disk!r}'s log is"
    real = Path(os.path.realpath(name))
    if real == trusted_root or not real.is_relative_to(trusted_root):
        return (
            f"resolves to {str(real)!r}, outside the trusted root {str(trusted_root)!r}"
        )
    if real.is_relative_to(replicas_root):
        return (
            f"resolves to {str(real)!r}, inside the replicas directory "
            f"{str(replicas_root)!r}, where no log ever lives"
        )
    return None


def validate_disks(disks: Mapping[str, object]) -> dict[str, int]:
    """Return ``disks`` (name -> size in bytes) as a dict, or raise naming the entry."""
    if not disks:
        msg = "disks={} must name at least one disk with its size in bytes"
        raise InvalidConfiguration(msg)
    sizes = {}
    for disk, size in disks.items():
        validate_disk_name(disk)
        if isinstance(size, bool) or not isinstance(size, int):
            msg = f"disks[{disk!r}]={size!r} must be an int size in bytes "
            msg += f"(got {type(size).__name__})"
            raise InvalidConfiguration(msg)
        if not 0 < size <= DISK_BYTES_MAX:
            msg = f"disks[{disk!r}]={size} must be from 1 to {DISK_BYTES_MAX} bytes"
            raise InvalidConfiguration(msg)
        sizes[disk] = size
    return sizes


def load_json(path: Path) -> dict[str, object]:
    """Return the JSON object in ``path``; raise DamagedState when it is not one."""
    try:
        with path.open("rb") as source:
            data = source.read(DOCUMENT_BYTES_MAX + 1)
    except OSError as error:
        msg = f"{str(path)!r} cannot be read ({error.strerror or error}); the "
        msg += "store is damaged"
        raise DamagedState(msg) from error
    if len(data) > DOCUMENT_BYTES_MAX:
        msg = f"{str(path)!r} is larger than {DOCUMENT_BYTES_MAX} bytes; the store "
        msg += "is damaged"
        raise DamagedState(msg)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UTF-8, digits
        msg = f"{str(path)!r} is not valid JSON ({error}); the store is damaged"
        raise DamagedState(msg) from error
    if not isinstance(document, dict):
        msg = f"{str(path)!r} must hold a JSON object, got {type(document).__name__}; "
        msg += "the store is damaged"
        raise DamagedState(msg)
    return document


def _count(path: Path, document: Mapping[str, object], name: str) -> int:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{str(path)!r} is damaged: {name}={value!r} must be an int >= 0"
        raise DamagedState(msg)
    return value


def _load_pin(
    path: Path, document: Mapping[str, object], catalogue: RecoveryPointCatalogue
) -> int | None:
    """The pinned point of ``document`` (None when absent or null); DamagedState
    unless it names a point of ``catalogue``."""
    pinned = document.get(PINNED_FIELD)
    if pinned is None:
        return None
    ids = list(catalogue.recovery_point_ids)
    if isinstance(pinned, bool) or not isinstance(pinned, int) or pinned not in ids:
        msg = f"{str(path)!r} is damaged: {PINNED_FIELD}={pinned!r} must name a "
        msg += f"recovery point of the catalogue {ids} (or be absent: no drill)"
        raise DamagedState(msg)
    return pinned


def _check_point_disks(
    path: Path, point: RecoveryPoint, disks: Collection[str]
) -> None:
    found = [disk for disk, _ in point.last_sequences]
    if found != sorted(disks):
        msg = f"{str(path)!r} is damaged: recovery point {point.recovery_point_id} "
        msg += f"has last_sequences for {found}, the store's disks are {sorted(disks)}"
        raise DamagedState(msg)
