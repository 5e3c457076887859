"""The disks of one VM at its active site: the workload's writes, and change tracking.

What it owns: one :class:`~engine.disk.VirtualDisk` per disk, wrapped in a
:class:`~engine.tracked_disk.TrackedDisk` while the VM is protected, and the VM-wide
lock that makes a cycle's cut consistent across disks: every write takes the lock, and
:meth:`SourceDisks.seal` seals every disk's log under it, so the cut falls between two
writes for all disks at once.

It also keeps what it learnt about the logs' trustworthiness: a torn tail cut on
reopen, a header from another epoch, tracking lost on a full disk, a log past half its
disk. :attr:`SourceDisks.log_state` says which; the binding maps it to the model's log
health. It never imports ``model``.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.change_log import SealedLog, log_path_for
from engine.disk import VirtualDisk
from engine.errors import CorruptRecord, InvalidConfiguration
from engine.tracked_disk import TrackedDisk


class LogState(enum.Enum):
    """Whether the change logs can carry the next cycle."""

    USABLE = "usable"
    OVER_LIMIT = "over_limit"  # past half a disk: resynchronise
    UNTRUSTED = "untrusted"  # torn, damaged, other epoch, tracking lost: resynchronise


@dataclass(frozen=True)
class PendingChanges:
    """What the current logs hold, not yet sealed into a cycle."""

    records: int
    payload_bytes: int


class SourceDisks:
    """The VM's disk images at its active site, tracked while protected."""

    def __init__(
        self, paths: Mapping[str, Path], *, block_bytes: int, durable: bool
    ) -> None:
        """Open the images (untracked); call :meth:`resume_tracking` if protected."""
        self.paths = dict(sorted(paths.items()))
        self._block_bytes = block_bytes
        self._durable = durable
        self.lock = threading.RLock()
        self._plain = {
            disk: VirtualDisk.open(path, block_bytes=block_bytes)
            for disk, path in self.paths.items()
        }
        self._tracked: dict[str, TrackedDisk] = {}
        self.problem: str | None = None  # why the logs are untrusted, in words

    # -- the workload ------------------------------------------------------------------

    def write(self, disk: str, offset: int, data: bytes) -> None:
        """Write through the tracker when tracking, under the VM-wide lock."""
        with self.lock:
            tracked = self._tracked.get(disk)
            if tracked is not None:
                tracked.write(offset, data)
            else:
                self._image(disk).write(offset, data)

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """Read the active copy."""
        with self.lock:
            tracked = self._tracked.get(disk)
            if tracked is not None:
                return tracked.read(offset, length)
            return self._image(disk).read(offset, length)

    def flush(self) -> None:
        """Make every write so far durable (logs first, then disks)."""
        with self.lock:
            for tracked in self._tracked.values():
                tracked.flush()
            for plain in self._plain.values():
                plain.flush()

    def images(self) -> dict[str, VirtualDisk]:
        """Every disk's image (tracked or not), for reading whole disks."""
        with self.lock:
            found = {disk: tracked.disk for disk, tracked in self._tracked.items()}
            return {**self._plain, **found}

    # -- tracking ----------------------------------------------------------------------

    @property
    def tracking(self) -> bool:
        """Whether writes are being logged."""
        return bool(self._tracked)

    def start_tracking(self, epoch: int, first_sequences: Mapping[str, int]) -> None:
        """Start fresh logs at ``epoch`` (a previous protection's logs are removed)."""
        with self.lock:
            self.stop_tracking()
            for disk, path in self.paths.items():
                log_path_for(path).unlink(missing_ok=True)
                self._tracked[disk] = TrackedDisk.start(
                    self._plain.pop(disk),
                    disk_id=disk,
                    epoch=epoch,
                    first_sequence=first_sequences[disk],
                    durable=self._durable,
                )
            self.problem = None

    def resume_tracking(self, epoch: int) -> None:
        """Reopen the logs after a restart; note anything a reopen had to cut."""
        with self.lock:
            for disk, path in self.paths.items():
                if not log_path_for(path).exists():
                    continue
                image = self._plain.pop(disk)
                try:
                    tracked = TrackedDisk.resume(
                        image, disk_id=disk, epoch=epoch, durable=self._durable
                    )
                except CorruptRecord as error:
                    # Another epoch (a crash mid-resynchronisation) or a damaged
                    # header: start afresh; only a resynchronisation can vouch now.
                    self.problem = f"disk {disk!r}: {error}"
                    log_path_for(path).unlink()
                    tracked = TrackedDisk.start(
                        image, disk_id=disk, epoch=epoch, durable=self._durable
                    )
                report = tracked.log.tail_report
                if report is not None:
                    self.problem = (
                        f"disk {disk!r}: change log tail cut on reopen "
                        f"({report.bytes_dropped} bytes dropped: {report.reason}); "
                        "resynchronisation needed"
                    )
                self._tracked[disk] = tracked

    def stop_tracking(self) -> None:
        """Close and delete the logs; the disks stay open, untracked."""
        with self.lock:
            for disk, tracked in list(self._tracked.items()):
                tracked.close()
                log_path_for(self.paths[disk]).unlink(missing_ok=True)
                del self._tracked[disk]
                self._plain[disk] = VirtualDisk.open(
                    self.paths[disk], block_bytes=self._block_bytes
                )

    def seal(
        self, outbox: Path, disks: Iterable[str] | None = None
    ) -> dict[str, SealedLog]:
        """Cut the logs of ``disks`` (default: all) into ``outbox``, at one point."""
        with self.lock:
            outbox.mkdir(parents=True, exist_ok=True)
            chosen = sorted(self._tracked) if disks is None else sorted(disks)
            return {
                disk: self._tracked[disk].seal_log(outbox / f"{disk}.hrl")
                for disk in chosen
            }

    def pending(self) -> PendingChanges:
        """Records and payload bytes logged since the last cut."""
        with self.lock:
            stats = [tracked.statistics() for tracked in self._tracked.values()]
            return PendingChanges(
                records=sum(s.log_records for s in stats),
                payload_bytes=sum(s.log_payload_bytes for s in stats),
            )

    @property
    def log_state(self) -> LogState:
        """Whether the logs can carry the next cycle."""
        with self.lock:
            tracked = self._tracked.values()
            if self.problem is not None or any(t.tracking_lost for t in tracked):
                return LogState.UNTRUSTED
            if any(t.log_over_limit for t in tracked):
                return LogState.OVER_LIMIT
            return LogState.USABLE

    def close(self) -> None:
        """Close every log and image."""
        with self.lock:
            for tracked in self._tracked.values():
                tracked.close()
            for plain in self._plain.values():
                plain.close()
            self._tracked.clear()
            self._plain.clear()

    def _image(self, disk: str) -> VirtualDisk:
        try:
            return self._plain[disk]
        except KeyError:
            msg = f"disk={disk!r} is not a disk of this VM; its disks: "
            msg += f"{sorted(self.paths)}"
            raise InvalidConfiguration(msg) from None
