"""The two small documents of a replica store: its manifest and its apply intent.

``store.json`` (:class:`StoreManifest`) says what the store is (the VM, its disks and
their sizes, the retention count) and holds the recovery-point catalogue. It is the
store's commit record: rewritten whole (temporary file, fsync, rename) at every commit,
so it always describes a committed state.

``intent.json`` (:class:`ApplyIntent`) exists only while a cycle is being applied. It
names the cycle, its epoch, the absolute paths of its sealed logs, the undo image
written for it, and the recovery point the apply will commit, so that a restarted store
can finish the apply (roll forward) or undo it (roll back) without the caller.

Both are JSON: a human diagnosing a site can read them with any tool, and they are tiny.
Both come from disk and may be damaged, so loading validates every field and raises
:class:`CorruptRecord` naming the file and the field; a manifest from a newer format
version is refused rather than half understood.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.errors import CorruptRecord, InvalidConfiguration
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


@dataclass(frozen=True, slots=True)
class StoreManifest:
    """What ``store.json`` holds: the store's identity and its committed catalogue."""

    vm_name: str
    disks: dict[str, int]
    retention_count: int
    catalogue: RecoveryPointCatalogue

    def to_bytes(self) -> bytes:
        """Return the manifest as the JSON bytes written to ``store.json``."""
        document = {
            "format_version": STORE_FORMAT_VERSION,
            "vm_name": self.vm_name,
            "disks": self.disks,
            "retention_count": self.retention_count,
            "catalogue": self.catalogue.to_json(),
        }
        return json.dumps(document, indent=1).encode()

    @classmethod
    def load(cls, path: Path, vm_name: str) -> StoreManifest:
        """Read and validate ``store.json`` of ``vm_name``."""
        document = load_json(path)
        version = document.get("format_version")
        if version != STORE_FORMAT_VERSION:
            msg = f"{str(path)!r} has format_version={version!r}; this engine reads "
            msg += f"{STORE_FORMAT_VERSION} (a newer hvdr wrote it, or it is damaged)"
            raise CorruptRecord(msg)
        disks = document.get("disks")
        if not isinstance(disks, dict) or document.get("vm_name") != vm_name:
            msg = f"{str(path)!r} does not describe vm_name={vm_name!r} and its disks"
            raise CorruptRecord(msg)
        try:
            sizes = validate_disks(disks)
            retention_count = validate_retention_count(document.get("retention_count"))
        except InvalidConfiguration as error:
            msg = f"{str(path)!r} is damaged: {error}"
            raise CorruptRecord(msg) from error
        catalogue = RecoveryPointCatalogue.from_json(document.get("catalogue"))
        return cls(vm_name, sizes, retention_count, catalogue)


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
    def load(cls, path: Path) -> ApplyIntent:
        """Read and validate ``intent.json``."""
        document = load_json(path)
        cycle_id, epoch = document.get("cycle_id"), document.get("epoch")
        logs, undo = document.get("logs"), document.get("undo")
        if (
            not isinstance(cycle_id, int)
            or not isinstance(epoch, int)
            or not isinstance(logs, dict)
            or not all(isinstance(name, str) for name in logs.values())
            or not isinstance(undo, str)
        ):
            msg = f"{str(path)!r} is malformed: {document!r}"
            raise CorruptRecord(msg)
        point = RecoveryPoint.from_json(document.get("point"))
        return cls(cycle_id, epoch, dict(logs), undo, point)


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
    """Return the JSON object in ``path``; raise CorruptRecord when it is not one."""
    try:
        document = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        msg = f"{str(path)!r} is not valid JSON ({error}); the store is damaged"
        raise CorruptRecord(msg) from error
    if not isinstance(document, dict):
        msg = f"{str(path)!r} must hold a JSON object, got {type(document).__name__}"
        raise CorruptRecord(msg)
    return document
