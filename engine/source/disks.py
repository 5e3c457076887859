"""The disks of one VM at its active site: the workload's writes, and change tracking.

What it owns: one :class:`~engine.storage.disk.VirtualDisk` per disk, wrapped in a
:class:`~engine.log.tracked_disk.TrackedDisk` while the VM is protected, and the VM-wide
lock that makes a cycle's cut consistent across disks: every write takes the lock, and
:meth:`SourceDisks.seal` seals every disk's log under it, so the cut falls between two
writes for all disks at once.

It also keeps what it learnt about the logs' trustworthiness: a torn tail cut on
reopen, a header from another epoch, a missing log, tracking lost on a full disk, a cut
that failed half-way, a log past half its disk, an unclean shutdown.
:attr:`SourceDisks.log_state` says which; the binding maps it to the model's log health.
The verdict "untrusted" is durable (a marker file beside the disks,
``UNTRUSTED_MARKER``, written atomically and durably, and written *before* the evidence
is destroyed: a torn tail is noted before it is cut) until the next fresh start of
tracking, so a restart cannot forget that only a resynchronisation can vouch for the
replica.

Unclean shutdowns, as Hyper-V Replica detects them after a host crash: while the disks
are tracked, a second marker (``TRACKING_MARKER``) sits beside them, holding the boot id
of the machine (``files.current().boot_id()``), whether writes are made durable, the
process id and the time. It is
written durably when tracking starts or resumes and removed durably by a clean
:meth:`SourceDisks.close`, after every log and disk was flushed. Finding it when
tracking resumes means the previous run ended without closing:

- the logs are replayed onto the disks (``TrackedDisk.resume``: a record whose disk
  write was lost or never made is written again), except a log whose tail had to be
  cut: replaying its older records could roll back the disk's newer bytes, so the disk
  stays as it is and the logs are distrusted;
- when that run made its writes durable, that is enough: every disk write was preceded
  by a durable record;
- when it did not, a power loss may have kept a disk write and dropped its record (both
  were only in the page cache): when the boot id differs from the one in the marker, or
  either is unknown, the logs are distrusted. The same boot id means a process kill:
  the page cache survived, the logs are whole, nothing is distrusted.

Both markers live in the VM's folder and are not ``*.img`` files, so whatever lists the
folder's disks skips them. It never imports ``model``.
"""

from __future__ import annotations

import enum
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from engine.errors import (
    CorruptRecord,
    InvalidConfiguration,
    ReplicationError,
    TransitionNotAllowed,
)
from engine.log.tracked_disk import TrackedDisk
from engine.log.writer import (
    ChangeLog,
    PreparedLog,
    PreparedSeal,
    SealedLog,
    TailReport,
    log_path_for,
)
from engine.storage import durable_file, files
from engine.storage.disk import VirtualDisk

UNTRUSTED_MARKER = "logs-untrusted.txt"
"""Beside the disks while the logs cannot be trusted; holds the reason."""

TRACKING_MARKER = "tracking-open.json"
"""Beside the disks while tracked and not cleanly closed: boot id, durability, pid,
time."""

UNCLEAN_SHUTDOWN = (
    "unclean shutdown (the host restarted while the VM was tracked; writes not made "
    "durable may be missing from the change log): resynchronisation needed"
)
UNCLEAN_SHUTDOWN_UNKNOWN_BOOT = (
    "unclean shutdown (the VM was tracked when its previous run ended, and whether the "
    "host restarted since cannot be told: a boot id is unknown; writes not made "
    "durable may be missing from the change log): resynchronisation needed"
)


class LogState(enum.Enum):
    """Whether the change logs can carry the next cycle."""

    USABLE = "usable"
    OVER_LIMIT = "over_limit"  # past half a disk: resynchronise
    UNTRUSTED = "untrusted"  # torn, damaged, other epoch, tracking lost: resynchronise


@dataclass(frozen=True)
class RetiredLogs:
    """The logs a restart of tracking replaced, handed over before they are deleted.

    ``paths`` maps each disk that had a current log to it; ``trusted`` says whether
    they held every write up to the switch (every disk tracked, the logs trusted, no
    tracking lost), which only the lock can tell.
    """

    paths: Mapping[str, Path]
    trusted: bool


@dataclass(frozen=True)
class PendingChanges:
    """What the current logs hold, not yet sealed into a cycle."""

    records: int
    payload_bytes: int
    file_bytes: int  # every current log's file, header and record framing included


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
        self.cut_seconds_max = 0.0  # longest hold of the cut lock by a seal
        self._tracked: dict[str, TrackedDisk] = {}
        directory = next(iter(self.paths.values())).parent
        self._marker = directory / UNTRUSTED_MARKER
        self._tracking_marker = directory / TRACKING_MARKER
        self._problem: str | None = None
        self._halted: str | None = None  # why the VM takes no writes (shut down)
        if self._marker.exists():
            self._problem = self._marker.read_text(encoding="utf-8", errors="replace")

    @property
    def problem(self) -> str | None:
        """Why the logs cannot be trusted, in words (None: they can)."""
        return self._problem

    def distrust(self, reason: str) -> None:
        """Record, durably, that only a resynchronisation can vouch for the replica.

        The verdict holds in memory only once it is durable: a caller that must not
        drop data before the verdict survives a crash sees the write fail first.
        """
        durable_file.write_file_atomically(self._marker, reason.encode("utf-8"))
        self._problem = reason

    def forget_problem(self) -> None:
        """Protection ended (disable): no replica is left for the logs to vouch for,
        so their distrust goes too (durably); the next enable tracks afresh."""
        durable_file.remove_durably([self._marker])
        self._problem = None

    # -- the workload ------------------------------------------------------------------

    def halt(self, reason: str) -> None:
        """The VM shut down: every later write is refused with ``reason``.

        Taken under the cut lock, so a write either completed before (and is in the
        log the final sync seals) or is refused: none slips in between.
        """
        with self.lock:
            self._halted = reason

    def restart(self) -> None:
        """The VM runs again (a failover that shut it down was cancelled or failed)."""
        with self.lock:
            self._halted = None

    @property
    def halted(self) -> str | None:
        """Why the VM takes no writes here (None: it runs)."""
        return self._halted

    def write(self, disk: str, offset: int, data: bytes) -> None:
        """Write through the tracker when tracking, under the VM-wide lock."""
        with self.lock:
            if self._halted is not None:
                raise TransitionNotAllowed(self._halted)
            tracked = self._tracked.get(disk)
            if tracked is None:
                image = self._image(disk)
                image.write(offset, data)
                if self._durable:  # durable means durable, tracked or not
                    image.sync_data()
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

    def start_tracking(
        self,
        epoch: int,
        first_sequences: Mapping[str, int],
        *,
        on_retired: Callable[[RetiredLogs], None] | None = None,
    ) -> None:
        """Start fresh logs at ``epoch`` (a previous protection's logs are replaced);
        the logs are trusted again.

        The slow part happens before the cut lock is taken: the tracking marker is
        written (replaced, never removed first: writes this run made before may still
        be only in the page cache, and a power cut must still show) and every fresh
        log is written aside, durably. Under the lock the logs are only switched by
        renames (made durable there when writes are durable; right after otherwise).

        ``on_retired``, when given, is called after the lock is released and before
        the replaced logs are deleted, with those logs (:class:`RetiredLogs`): every
        write before the switch is in them, every write after it in the fresh ones.
        """
        self._mark_tracking_open()  # durable before the first tracked write
        prepared: dict[str, PreparedLog] = {}
        try:
            for disk, path in self.paths.items():
                prepared[disk] = ChangeLog.prepare(
                    log_path_for(path),
                    disk_id=disk,
                    epoch=epoch,
                    first_sequence=first_sequences[disk],
                )
            with self.lock:
                trusted = self._logs_hold_every_write()
                replaced: dict[str, Path] = {}
                self._close_logs()
                for disk, path in self.paths.items():
                    # Renamed aside, not replaced: freeing a large log's pages is
                    # slow, and happens below, after the writers were let go.
                    current = log_path_for(path)
                    if current.exists():
                        files.current().rename(current, _retired(current))
                        replaced[disk] = _retired(current)
                    log = ChangeLog.adopt(
                        prepared.pop(disk), sync_directory=self._durable
                    )
                    self._track(
                        disk, partial(TrackedDisk, log=log, durable=self._durable)
                    )
                self._problem = None
        finally:
            for left in prepared.values():
                left.drop()
        if not self._durable:
            for directory in {path.parent for path in self.paths.values()}:
                files.fsync_directory(directory)
        retired = [_retired(log_path_for(path)) for path in self.paths.values()]
        try:
            if on_retired is not None:
                on_retired(RetiredLogs(replaced, trusted=trusted))
        finally:
            durable_file.remove_durably([*retired, self._marker])

    def _logs_hold_every_write(self) -> bool:
        """Whether every disk is tracked by a log that holds every write (under the
        lock: no write can change it)."""
        return (
            self._problem is None
            and set(self._tracked) == set(self.paths)
            and not any(tracked.tracking_lost for tracked in self._tracked.values())
        )

    def resume_tracking(self, epoch: int) -> None:
        """Reopen the logs after a restart; note anything a reopen had to cut.

        Each log is replayed onto its disk (``TrackedDisk.resume``). An unclean
        shutdown that may have lost records (see the module's docstring) marks the
        logs untrusted. A seal a crash interrupted is finished by the log itself; a
        torn tail is noted as untrusted before it is cut; a log missing altogether, or
        one that cannot be opened, is replaced by a fresh one and the logs are marked
        untrusted (only a resynchronisation can vouch now).
        """
        with self.lock:
            reason = self._unclean_shutdown()
            if reason is not None:
                self.distrust(reason)
            self._mark_tracking_open()
            for disk, path in self.paths.items():
                log = log_path_for(path)
                fresh = log.with_name(log.name + ".new")  # a seal's fresh log
                if not log.exists() and not fresh.exists():
                    self.distrust(f"disk {disk!r}: its change log is missing")
                    self._start(disk, epoch, 0)
                    continue
                try:
                    self._track(
                        disk,
                        partial(
                            TrackedDisk.resume,
                            disk_id=disk,
                            epoch=epoch,
                            durable=self._durable,
                            before_cut=partial(self._distrust_tail, disk),
                        ),
                    )
                except CorruptRecord as error:
                    # Another epoch (a crash mid-resynchronisation), a damaged header
                    # or a record past the disk's end: start afresh; only a
                    # resynchronisation can vouch now.
                    self.distrust(f"disk {disk!r}: {error}")
                    files.current().unlink(log, missing_ok=True)
                    self._start(disk, epoch, 0)

    def _distrust_tail(self, disk: str, report: TailReport) -> None:
        """Called before a reopen cuts a damaged tail, so the verdict survives it."""
        self.distrust(
            f"disk {disk!r}: change log tail cut on reopen "
            f"({report.bytes_dropped} bytes dropped: {report.reason}); "
            "resynchronisation needed"
        )

    def _unclean_shutdown(self) -> str | None:
        """Why the previous run's end makes the logs untrustworthy (None: it does not).

        Only a run without durable writes can have lost records (the marker says how
        that run wrote), and only when the host restarted since (the page cache was
        lost) or that cannot be told.
        """
        marker = self._read_tracking_marker()
        if marker is None:
            return None  # closed cleanly, or never tracked
        boot_id, durable = marker
        if durable:
            return None
        current = files.current().boot_id()
        if not boot_id or not current:
            return UNCLEAN_SHUTDOWN_UNKNOWN_BOOT
        if boot_id != current:
            return UNCLEAN_SHUTDOWN
        return None  # a process kill: the page cache kept every record

    def _read_tracking_marker(self) -> tuple[str, bool] | None:
        """(boot id, durable writes) from the tracking marker; None if it is absent.

        A marker that cannot be read has an unknown boot id ('') and the durability
        this object writes with.
        """
        try:
            raw = self._tracking_marker.read_bytes()
            content = json.loads(raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return "", self._durable
        if not isinstance(content, dict):
            return "", self._durable
        boot_id = content.get("boot_id")
        durable = content.get("durable")
        return (
            boot_id if isinstance(boot_id, str) else "",
            durable if isinstance(durable, bool) else self._durable,
        )

    def _mark_tracking_open(self) -> None:
        """Write the tracking marker, durably (see the module's docstring)."""
        content = {
            "boot_id": files.current().boot_id(),
            "durable": self._durable,
            "pid": os.getpid(),
            "opened_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        raw = json.dumps(content, sort_keys=True).encode("utf-8") + b"\n"
        durable_file.write_file_atomically(self._tracking_marker, raw)

    def _start(self, disk: str, epoch: int, first_sequence: int) -> TrackedDisk:
        """Track disk ``disk`` in a new log."""
        return self._track(
            disk,
            partial(
                TrackedDisk.start,
                disk_id=disk,
                epoch=epoch,
                first_sequence=first_sequence,
                durable=self._durable,
            ),
        )

    def _track(
        self, disk: str, opener: Callable[[VirtualDisk], TrackedDisk]
    ) -> TrackedDisk:
        """Wrap disk ``disk`` in a tracked disk; on failure it stays plain and open."""
        tracked = opener(self._plain[disk])
        del self._plain[disk]
        self._tracked[disk] = tracked
        return tracked

    def stop_tracking(self) -> None:
        """Close and delete the logs (every disk's); the disks stay open, untracked.

        The tracking marker goes too, durably, after the logs: the disks are no longer
        tracked, so no shutdown can cost them records.
        """
        with self.lock:
            self._close_logs()
            logs = [log_path_for(path) for path in self.paths.values()]
            retired = [_retired(log) for log in logs]
            durable_file.remove_durably([*logs, *retired, self._tracking_marker])

    def _close_logs(self) -> None:
        """Close every tracked disk's log; the disks stay open, untracked."""
        for disk, tracked in list(self._tracked.items()):
            tracked.close()
            del self._tracked[disk]
            self._plain[disk] = VirtualDisk.open(
                self.paths[disk], block_bytes=self._block_bytes
            )

    def seal(
        self,
        outbox: Path,
        disks: Iterable[str] | None = None,
        *,
        sequences_skipped: Mapping[str, int] | None = None,
    ) -> dict[str, SealedLog]:
        """Cut the logs of ``disks`` (default: all) into ``outbox``, at one point.

        Two phases under the cut lock: every disk's fresh log is written first (the
        only step that needs space, so a full disk refuses the cut before any log
        moved, and the next cycle simply tries again); then every log is renamed into
        the outbox. If a rename fails after others succeeded (rare: renames need no
        data space), the logs are marked untrusted (the next cycle asks for
        resynchronization) and the error is raised.
        """
        files.make_directory_durably(outbox)
        chosen = sorted(self._tracked) if disks is None else sorted(disks)
        # Most of a log is written long before the cut: make it durable while writes
        # go on, so that the seal, under the cut lock, syncs only the last records.
        for disk in chosen:
            tracked = self._tracked.get(disk)
            if tracked is not None:
                tracked.sync_log()
        with self.lock:
            held_since = time.perf_counter()
            prepared: dict[str, PreparedSeal] = {}
            try:
                for disk in chosen:
                    prepared[disk] = self._tracked[disk].prepare_seal(
                        outbox / f"{disk}.hrl",
                        defer_sync=not self._durable,
                        sequences_skipped=(sequences_skipped or {}).get(disk, 0),
                    )
            except BaseException:
                for disk, seal in prepared.items():
                    self._tracked[disk].abort_seal(seal)
                raise
            sealed: dict[str, SealedLog] = {}
            for disk in chosen:
                try:
                    sealed[disk] = self._tracked[disk].commit_seal(prepared[disk])
                    del prepared[disk]
                except (ReplicationError, OSError) as error:
                    for rest, seal in prepared.items():
                        self._tracked[rest].abort_seal(seal)
                    if sealed:
                        self.distrust(
                            f"the cut failed at disk {disk!r} after {sorted(sealed)} "
                            f"were sealed ({error}); resynchronisation needed"
                        )
                    raise
            sealers = {disk: self._tracked[disk] for disk in sealed}
            held = time.perf_counter() - held_since
            self.cut_seconds_max = max(self.cut_seconds_max, held)
        # Without durable writes, nothing acknowledged after the cut relies on the
        # renames being durable yet (a power loss sends the VM to resynchronisation
        # anyway): the fsyncs happen here, after writers were let go, and before the
        # caller records the cut.
        for disk, log in sealed.items():
            sealers[disk].make_seal_durable(log)
        return sealed

    def verify_logs(self) -> str | None:
        """Read back every record logged since the last cut and check it; on damage,
        distrust the logs (only a resynchronisation vouches for the replica then) and
        return why. None: every record is whole."""
        with self.lock:
            for disk, tracked in sorted(self._tracked.items()):
                try:
                    for _ in tracked.log.records():
                        pass
                except CorruptRecord as damage:
                    reason = f"disk {disk!r}: the change log is damaged ({damage}); "
                    reason += "resynchronisation needed"
                    if self._problem is None:
                        self.distrust(reason)
                    return reason
        return None

    def pending(self) -> PendingChanges:
        """Records, payload bytes and log file bytes since the last cut."""
        with self.lock:
            stats = [tracked.statistics() for tracked in self._tracked.values()]
            return PendingChanges(
                records=sum(s.log_records for s in stats),
                payload_bytes=sum(s.log_payload_bytes for s in stats),
                file_bytes=sum(s.log_file_bytes for s in stats),
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
        """Flush the tracked disks, then close every log and image.

        A clean close: once every log and tracked disk is flushed, the tracking marker
        is removed (durably), so the next resume knows nothing was lost. If the flush
        fails the marker stays, everything is closed and the error is raised.
        """
        with self.lock:
            try:
                if self._tracked:
                    for tracked in self._tracked.values():
                        tracked.flush()
                    durable_file.remove_durably([self._tracking_marker])
            finally:
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
            if disk in self.paths:
                msg = f"disk {disk!r} is closed: the engine was closed, or the site "
                msg += "holding it went down (recover_site brings it back)"
                raise TransitionNotAllowed(msg) from None
            msg = f"disk={disk!r} is not a disk of this VM; its disks: "
            msg += f"{sorted(self.paths)}"
            raise InvalidConfiguration(msg) from None


def _retired(log: Path) -> Path:
    """Where a replaced log waits to be deleted once the cut lock is released."""
    return log.with_name(log.name + ".retired")
