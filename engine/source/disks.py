"""The disks of one VM at its active site: the workload's writes, and change tracking.

What it owns: one :class:`~engine.storage.disk.VirtualDisk` per disk, wrapped in a
:class:`~engine.log.tracked_disk.TrackedDisk` while the VM is protected, and the VM-wide
lock that makes a cycle's cut consistent across disks: every write takes the lock, and
:meth:`SourceDisks.seal` seals every disk's log under it, so the cut falls between two
writes for all disks at once.

It also keeps what it learnt about the logs' trustworthiness: a torn tail cut on
reopen, a header from another epoch, a missing log, tracking lost on a full disk, a cut
that failed half-way, a log past half its disk. :attr:`SourceDisks.log_state` says
which; the binding maps it to the model's log health. The verdict "untrusted" is
durable (a marker file beside the disks, ``UNTRUSTED_MARKER``) until the next fresh
start of tracking, so a restart cannot forget that only a resynchronisation can vouch
for the replica. It never imports ``model``.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import CorruptRecord, InvalidConfiguration, ReplicationError
from engine.log.tracked_disk import TrackedDisk
from engine.log.writer import SealedLog, log_path_for
from engine.storage import durable_file, files
from engine.storage.disk import VirtualDisk

UNTRUSTED_MARKER = "logs-untrusted.txt"
"""Beside the disks while the logs cannot be trusted; holds the reason."""


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
        if not self.paths:
            msg = "paths={}: a VM needs at least one disk (disk name -> image path)"
            raise InvalidConfiguration(msg)
        self._block_bytes = block_bytes
        self._durable = durable
        self.lock = threading.RLock()
        self._plain = {
            disk: VirtualDisk.open(path, block_bytes=block_bytes)
            for disk, path in self.paths.items()
        }
        self._tracked: dict[str, TrackedDisk] = {}
        directory = next(iter(self.paths.values())).parent
        self._marker = directory / UNTRUSTED_MARKER
        self._problem: str | None = None
        if self._marker.exists():
            self._problem = self._marker.read_text(encoding="utf-8")

    @property
    def problem(self) -> str | None:
        """Why the logs cannot be trusted, in words (None: they can)."""
        return self._problem

    def distrust(self, reason: str) -> None:
        """Record, durably, that only a resynchronisation can vouch for the replica."""
        self._problem = reason
        durable_file.write_file_atomically(self._marker, reason.encode("utf-8"))

    # -- the workload ------------------------------------------------------------------

    def write(self, disk: str, offset: int, data: bytes) -> None:
        """Write through the tracker when tracking, under the VM-wide lock."""
        with self.lock:
            tracked = self._tracked.get(disk)
            if tracked is None:
                self._image(disk).write(offset, data)
                return
            try:
                tracked.write(offset, data)
            finally:
                if tracked.tracking_lost and self._problem is None:
                    self.distrust(
                        f"disk {disk!r}: a write failed half-way and could not be "
                        "recorded; resynchronisation needed"
                    )

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
        """Start fresh logs at ``epoch`` (a previous protection's logs are removed);
        the logs are trusted again."""
        with self.lock:
            self.stop_tracking()
            for disk, path in self.paths.items():
                files.current().unlink(log_path_for(path), missing_ok=True)
                self._track(disk, TrackedDisk.start, epoch, first_sequences[disk])
            self._problem = None
            durable_file.remove_durably([self._marker])

    def resume_tracking(self, epoch: int) -> None:
        """Reopen the logs after a restart; note anything a reopen had to cut.

        A seal a crash interrupted is finished by the log itself; a log missing
        altogether, or one that cannot be opened, is replaced by a fresh one and the
        logs are marked untrusted (only a resynchronisation can vouch now).
        """
        with self.lock:
            for disk, path in self.paths.items():
                log = log_path_for(path)
                fresh = log.with_name(log.name + ".new")  # a seal's fresh log
                if not log.exists() and not fresh.exists():
                    self.distrust(f"disk {disk!r}: its change log is missing")
                    self._track(disk, TrackedDisk.start, epoch, 0)
                    continue
                try:
                    tracked = self._track(disk, TrackedDisk.resume, epoch, None)
                except CorruptRecord as error:
                    # Another epoch (a crash mid-resynchronisation) or a damaged
                    # header: start afresh; only a resynchronisation can vouch now.
                    self.distrust(f"disk {disk!r}: {error}")
                    files.current().unlink(log, missing_ok=True)
                    self._track(disk, TrackedDisk.start, epoch, 0)
                    continue
                report = tracked.log.tail_report
                if report is not None:
                    self.distrust(
                        f"disk {disk!r}: change log tail cut on reopen "
                        f"({report.bytes_dropped} bytes dropped: {report.reason}); "
                        "resynchronisation needed"
                    )

    def _track(
        self,
        disk: str,
        opener: Callable[..., TrackedDisk],
        epoch: int,
        first_sequence: int | None,
    ) -> TrackedDisk:
        """Wrap disk ``disk`` in a tracked disk; on failure it stays plain and open."""
        image = self._plain[disk]
        options: dict[str, int | bool | str] = {
            "disk_id": disk, "epoch": epoch, "durable": self._durable,
        }  # fmt: skip
        if first_sequence is not None:
            options["first_sequence"] = first_sequence
        tracked = opener(image, **options)
        del self._plain[disk]
        self._tracked[disk] = tracked
        return tracked

    def stop_tracking(self) -> None:
        """Close and delete the logs; the disks stay open, untracked."""
        with self.lock:
            for disk, tracked in list(self._tracked.items()):
                tracked.close()
                files.current().unlink(log_path_for(self.paths[disk]), missing_ok=True)
                del self._tracked[disk]
                self._plain[disk] = VirtualDisk.open(
                    self.paths[disk], block_bytes=self._block_bytes
                )

    def seal(
        self, outbox: Path, disks: Iterable[str] | None = None
    ) -> dict[str, SealedLog]:
        """Cut the logs of ``disks`` (default: all) into ``outbox``, at one point.

        The cut is all or nothing in effect: if one disk's seal fails after others
        succeeded, the logs are marked untrusted (the next cycle resynchronises) and
        the error is raised; the caller drops the partial cycle.
        """
        with self.lock:
            files.make_directory_durably(outbox)
            chosen = sorted(self._tracked) if disks is None else sorted(disks)
            sealed: dict[str, SealedLog] = {}
            for disk in chosen:
                try:
                    sealed[disk] = self._tracked[disk].seal_log(outbox / f"{disk}.hrl")
                except (ReplicationError, OSError) as error:
                    if sealed:
                        self.distrust(
                            f"the cut failed at disk {disk!r} after {sorted(sealed)} "
                            f"were sealed ({error}); resynchronisation needed"
                        )
                    raise
            return sealed

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
            if self._problem is not None or any(t.tracking_lost for t in tracked):
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
