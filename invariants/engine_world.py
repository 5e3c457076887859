"""One VM on a real engine, driven by the model's calls, and read back as a model state.

A :class:`World` owns an engine on two fresh site folders, one VM of two disks, and the
seams that play the environment for real: the link and vault switches and site crashes
of the engine itself, a :class:`~engine.storage.full_storage.FullStorageFileSystem`
for a site's replica storage filling up, a :class:`~engine.testing.LossyTransport` for
a final sync cut short, a guest that refuses to shut down, bytes flipped in a change
log on disk. Nothing inside the engine is patched.

**Writes carry their version.** Write number *n* (counted over the whole run, every
copy included) writes one block whose bytes spell *n*, at a block of its own (slot
*n*), so a copy's contents say exactly which writes it holds: a set of numbers. The
model's copies are lags relative to the active copy, and on its one line of history a
lag is a set difference: ``behind`` is how many of the active copy's writes a copy
lacks, ``divergent`` how many it holds that the active copy never had
(:func:`copy_between`). Blocks that hold anything but a whole version of their own
slot are a mapping error: a replica with bytes no write put there.

**The refinement mapping** (:meth:`World.abstract`) starts from the engine's own view
of the VM (``ProtectedVm.view``: phase, placement, log health, points, the failover's
choices, from its control state and catalogue) and replaces every copy by what the
bytes say: the active copy, the replica (the newest recovery point) or the old source,
each recovery point materialised, the test VM's disks. The loss record gets the
engine's own report's figures (exact or a lower bound) and the ghost count of writes
really lost. What a site that is down holds cannot be read through the engine; it
cannot change either, so the last reading stands until the site is back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from engine.binding.protected_vm import VmStatus
from engine.errors import ReplicationError
from engine.log.format import LOG_SUFFIX
from engine.orchestration.engine import ReplicationEngine
from engine.storage import files
from engine.storage.full_storage import FullStorageFileSystem
from engine.testing import LossyTransport, ManualClock
from engine.transport.interface import CycleShipment, ReplicaTarget
from model import Call, Copy, LossRecord, Phase, RecoveryPoint, Site, SystemState
from model.state import SiteState, VmState

VM: Final = "vm0"
DISKS: Final = ("d0", "d1")
BLOCK: Final = 4096
BLOCKS_PER_DISK: Final = 96
DISK_BYTES: Final = BLOCK * BLOCKS_PER_DISK

RETENTION: Final = 2
#: Files a refusal may touch without changing anything: SQLite's write-ahead log and
#: index (a read may checkpoint) and the sites' lock files.
_VOLATILE: Final = ("-wal", "-shm", "-journal", ".lock")
TRANSFER_SECONDS: Final = 1.0  # each transfer's delay on the engine's clock


def _third_cycle(shipment: CycleShipment) -> bool:
    """The cycles whose reply the conformance transports lose: every third."""
    return shipment.cycle_id % 3 == 2


MAGIC: Final = b"HVDRVER2"
_HEAD = struct.Struct(">8sQ")  # magic, how many versions follow
_VERSION = struct.Struct(">Q")
SLOT_BLOCKS: Final = 4
"""Blocks per disk that writes go to: two writes in a row share one, so a cycle's log
often holds two records for the same block, and their order matters."""
VERSIONS_PER_BLOCK: Final = (BLOCK - _HEAD.size) // _VERSION.size
WRITES_MAX: Final = VERSIONS_PER_BLOCK * SLOT_BLOCKS * len(DISKS)


class MappingError(AssertionError):
    """The engine holds bytes no write of the run put there."""


def slot_of(version: int) -> tuple[str, int]:
    """Where write ``version`` goes: (disk, byte offset). Writes 1 and 2 share a
    block of the first disk, 3 and 4 one of the second, and so on round the blocks."""
    pair = (version - 1) // 2
    return DISKS[pair % len(DISKS)], (pair // len(DISKS)) % SLOT_BLOCKS * BLOCK


def _parse(block: bytes, disk: str, offset: int) -> tuple[int, ...]:
    """The versions a block holds, oldest first (raises MappingError)."""
    # Zero bytes are counted in C: any() over each 4 KiB block took 40% of a
    # conformance run (profiled), most blocks of a sparse copy being empty.
    if block.count(0) == len(block):
        return ()
    magic, count = _HEAD.unpack_from(block)
    if magic != MAGIC or not 0 < count <= VERSIONS_PER_BLOCK:
        msg = f"disk {disk!r} block {offset // BLOCK} holds bytes no write made"
        raise MappingError(msg)
    versions = tuple(
        _VERSION.unpack_from(block, _HEAD.size + i * _VERSION.size)[0]
        for i in range(count)
    )
    end = _HEAD.size + count * _VERSION.size
    if block.count(0, end) != len(block) - end or list(versions) != sorted(
        set(versions)
    ):
        msg = f"disk {disk!r} block {offset // BLOCK} holds a damaged version list"
        raise MappingError(msg)
    for version in versions:
        if slot_of(version) != (disk, offset):
            msg = f"write {version} found at disk {disk!r} offset {offset}"
            raise MappingError(msg)
    return versions


def block_with(current: bytes, version: int) -> bytes:
    """The bytes of write ``version`` over a block holding ``current``: every version
    the block held, then this one (so a copy's bytes say which writes it holds, and a
    write applied before an older one leaves the older list behind)."""
    disk, offset = slot_of(version)
    versions = (*_parse(current, disk, offset), version)
    data = _HEAD.pack(MAGIC, len(versions)) + b"".join(
        _VERSION.pack(v) for v in versions
    )
    return data + bytes(BLOCK - len(data))


def versions_in(disks: dict[str, bytes]) -> frozenset[int]:
    """The writes a copy holds, from its disks' bytes (raises MappingError)."""
    found: set[int] = set()
    for disk, data in disks.items():
        for start in range(0, len(data), BLOCK):
            found.update(_parse(data[start : start + BLOCK], disk, start))
    return frozenset(found)


def copy_between(copy: frozenset[int], active: frozenset[int], test: set[int]) -> Copy:
    """``copy`` relative to ``active``: what it lacks and what it holds beyond."""
    extra = copy - active
    return Copy(
        behind=len(active - copy), divergent=len(extra), from_test=bool(extra & test)
    )


@dataclass
class Seen:
    """The last reading of what each site holds (kept while it is down)."""

    active: frozenset[int] = frozenset()
    other: frozenset[int] | None = None
    points: tuple[tuple[int, bool, frozenset[int]], ...] = ()  # id, app, versions
    test: frozenset[int] = frozenset()
    images: dict[Site, frozenset[int] | None] = field(default_factory=dict)
    newest: dict[Site, frozenset[int] | None] = field(default_factory=dict)
    catalogue: dict[Site, tuple[tuple[int, bool, frozenset[int]], ...]] = field(
        default_factory=dict
    )


class World:
    """An engine, one VM, the environment's seams, and the ghost of every write."""

    def __init__(self, directory: Path | None = None) -> None:
        self._stack = ExitStack()
        self._owned = directory is None
        self.directory = Path(
            directory or tempfile.mkdtemp(prefix="hvdr-conform-", dir=_scratch())
        )
        self.roots = {site: self.directory / site.value for site in Site}
        self.file_system = FullStorageFileSystem()
        self._stack.enter_context(files.use(self.file_system))
        self.refuse_shutdown = False
        self.lossy: dict[str, LossyTransport] = {}
        self.version = 0
        self.test_versions: set[int] = set()
        self.seen = Seen()
        self._last: VmState | None = None
        self.loss_uncountable = False  # the open report rolls back a resync's point
        self.resync_points: set[int] = set()  # ids of points resynchronisations made
        self.engine = self._open()
        self.engine.create_vm(VM, dict.fromkeys(DISKS, DISK_BYTES))

    def _open(self) -> ReplicationEngine:
        clock = ManualClock(1_000_000.0)

        def wrap(inner: ReplicaTarget) -> ReplicaTarget:
            # Every transfer takes a second; every third cycle's reply is lost after
            # the target committed it (the engine must find out and go on: the model
            # sees a cycle that worked).
            lossy = LossyTransport(
                inner, lose_reply=_third_cycle, delay=TRANSFER_SECONDS, clock=clock
            )
            self.lossy[inner.site_name] = lossy
            return lossy

        return ReplicationEngine.open(
            self.roots[Site.PRIMARY],
            self.roots[Site.SECONDARY],
            clock=clock,
            block_bytes=BLOCK,
            retention_count=RETENTION,
            wrap_transport=wrap,
            guest_shutdown=lambda vm, site: not self.refuse_shutdown,
        )

    def fingerprint(self) -> dict[str, bytes]:
        """Every file under both sites' folders, by path, with its content's digest
        (what a refused operation must leave as it found it)."""
        found = {}
        for site in Site:
            root = self.roots[site]
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.name.endswith(_VOLATILE):
                    found[str(path.relative_to(self.directory))] = _digest(path)
        return found

    def changed_since(self, before: dict[str, bytes]) -> list[str]:
        """The files created, deleted or changed since ``before`` (a fingerprint)."""
        after = self.fingerprint()
        return sorted(
            path
            for path in before.keys() | after.keys()
            if before.get(path) != after.get(path)
        )

    @property
    def replies_lost(self) -> int:
        """How many cycle replies the transports lost (the target held the point)."""
        return sum(lossy.replies_lost for lossy in self.lossy.values())

    def close(self) -> None:
        """Close the engine and delete the folders (when this world made them)."""
        try:
            self.engine.close()
        finally:
            self._stack.close()
            if self._owned:
                shutil.rmtree(self.directory, ignore_errors=True)

    # -- writes ------------------------------------------------------------------------

    def next_write(
        self, current: Callable[[str, int], bytes]
    ) -> tuple[int, str, int, bytes]:
        """The next version, its disk, offset and bytes, over the block the copy
        written to holds now (``current(disk, offset)`` reads it)."""
        if self.version >= WRITES_MAX:
            msg = f"a run makes at most {WRITES_MAX} writes"
            raise MappingError(msg)
        self.version += 1
        disk, offset = slot_of(self.version)
        return (
            self.version,
            disk,
            offset,
            block_with(current(disk, offset), self.version),
        )

    def read_image_block(self, site: Site, disk: str, offset: int) -> bytes:
        """A block of the VM's disk image at ``site``, straight from the file."""
        path = self.roots[site] / "vms" / VM / f"{disk}.img"
        with open(path, "rb") as stream:
            stream.seek(offset)
            return stream.read(BLOCK)

    # -- the refinement mapping --------------------------------------------------------

    def abstract(self) -> SystemState:
        """The engine's state as the model's, copies read from the bytes."""
        if self.blind:
            return self._blind()
        view = self.engine.vm(VM).view()
        vm = view.vms[0]
        status = self.engine.status(VM)
        self._read(vm, status)
        seen = self.seen
        active = seen.active
        test = self.test_versions

        def rel(copy: frozenset[int]) -> Copy:
            return copy_between(copy, active, test)

        other = vm.other
        if other is not None and _copy_readable(vm):
            if seen.other is None:
                msg = (
                    f"the engine shows a copy of the VM at the {vm.active.other.value} "
                )
                msg += f"site in phase {vm.phase.value}, and none was ever read there"
                raise MappingError(msg)
            other = rel(seen.other)
        if len(seen.points) != len(vm.points):
            msg = f"the engine shows {len(vm.points)} recovery points in phase "
            msg += f"{vm.phase.value}; {len(seen.points)} could be read"
            raise MappingError(msg)
        points = tuple(
            RecoveryPoint(rel(versions), app_consistent=app)
            for _, app, versions in reversed(seen.points)
        )
        test_copy = None
        if vm.test_copy is not None:
            if self.engine.sites.up(vm.active.other.value):
                seen.test = self._read_test_vm()
            test_copy = rel(seen.test)
        record = vm.last_failover
        if record is not None and status.loss is not None:
            report = status.loss
            # What the target could say at failover time: a report exact only since
            # its reconciliation (the old source's logs read later) was a bound then.
            at_failover = report.exact_at_failover
            # Known to the harness, not taken from the engine's word: the points rolled
            # back include one a resynchronisation made (its writes are blocks).
            self.loss_uncountable = any(
                point > report.recovery_point_id for point in self.resync_points
            )
            reported = report.writes_lost if at_failover else None
            record = LossRecord(
                kind=record.kind,
                lost_writes=self._lost_writes(vm),
                reported_writes=(
                    reported if reported is not None else report.writes_lost_at_least
                ),
                reported_exact=at_failover,
            )
        mapped = replace(
            vm, other=other, points=points, test_copy=test_copy, last_failover=record
        )
        self._last = mapped
        return replace(view, vms=(mapped,))

    @property
    def blind(self) -> bool:
        """Whether no site is up: nothing of the VM can be read."""
        return not any(self.engine.sites.up(site.value) for site in Site)

    def _blind(self) -> SystemState:
        """Both sites down: the VM as last read, stopped everywhere; the site facts."""
        assert self._last is not None, "read once before both sites went down"
        sites = self.engine.sites
        return SystemState(
            primary=_site_state(self.engine, Site.PRIMARY),
            secondary=_site_state(self.engine, Site.SECONDARY),
            link_up=sites.link_up,
            vms=(replace(self._last, running=frozenset()),),
        )

    def _lost_writes(self, vm: VmState) -> int:
        """Acknowledged writes of the old source the new active copy lacks."""
        if self.seen.other is None:
            return 0
        return len(self.seen.other - self.seen.active - self.test_versions)

    def _read(self, vm: VmState, status: VmStatus) -> None:
        """Refresh what the sites that are up hold."""
        engine = self.engine
        seen = self.seen
        for site in Site:
            if engine.sites.up(site.value):
                seen.images[site] = self._read_images(site)
                seen.newest[site] = self._read_newest(site)
        other_site = vm.active.other
        store_site = vm.active if vm.phase is Phase.FAILED_OVER else other_site
        if engine.sites.up(vm.active.value):
            seen.active = versions_in(
                {d: engine.read(VM, d, 0, DISK_BYTES) for d in DISKS}
            )
        elif vm.phase is not Phase.FAILED_OVER:
            seen.active = seen.images.get(vm.active) or frozenset()
        if vm.phase in (Phase.FAILED_OVER, Phase.COMMITTED):
            seen.other = seen.images.get(other_site)
        else:
            seen.other = seen.newest.get(other_site)
        if engine.sites.up(store_site.value):
            seen.catalogue[store_site] = self._read_points(store_site, vm, status)
        seen.points = seen.catalogue.get(store_site, ()) if vm.points else ()

    def _read_images(self, site: Site) -> frozenset[int] | None:
        folder = self.roots[site] / "vms" / VM
        if not all((folder / f"{d}.img").exists() for d in DISKS):
            return None
        return versions_in({d: (folder / f"{d}.img").read_bytes() for d in DISKS})

    def _read_newest(self, site: Site) -> frozenset[int] | None:
        transport = self.engine.transport_towards(site.value)
        status = transport.status(VM)
        if not status.exists or not status.points:
            return None
        return self._read_point(transport, status.points[-1].recovery_point_id)

    def _read_points(
        self, site: Site, vm: VmState, status: VmStatus
    ) -> tuple[tuple[int, bool, frozenset[int]], ...]:
        shown = status.recovery_points[-RETENTION:]
        if not vm.points:
            return ()
        transport = self.engine.transport_towards(site.value)
        return tuple(
            (
                point.recovery_point_id,
                point.app_consistent,
                self._read_point(transport, point.recovery_point_id),
            )
            for point in shown
        )

    @staticmethod
    def _read_point(transport: ReplicaTarget, point_id: int) -> frozenset[int]:
        reader = transport.point_reader(VM, point_id)
        return versions_in({d: reader.read(d, 0, DISK_BYTES) for d in DISKS})

    def _read_test_vm(self) -> frozenset[int]:
        disks = self.engine.test_vm(VM)
        return versions_in({d: disks.read(d, 0, DISK_BYTES) for d in DISKS})

    def newest_point_id(self) -> int | None:
        """The id of the newest recovery point the engine shows (None: none, or the
        VM cannot be read now)."""
        try:
            points = self.engine.status(VM).recovery_points
        except ReplicationError:
            return None
        return points[-1].recovery_point_id if points else None

    def note_resync_point(self, *, after_point: int | None) -> None:
        """A resynchronisation just completed: the point it made, if it made one (one
        newer than ``after_point``, the newest before it), carries blocks. When no
        block differed it makes none, and the next cycle's writes stay countable."""
        newest = self.newest_point_id()
        if newest is not None and (after_point is None or newest > after_point):
            self.resync_points.add(newest)

    # -- environment faults that need files -------------------------------------------

    def log_files(self, site: Site) -> Iterator[Path]:
        """The change logs holding unshipped records at ``site`` (active first)."""
        folder = self.roots[site] / "vms" / VM
        yield from sorted(folder.glob(f"*{LOG_SUFFIX}"))
        outbox = self.roots[site] / "outbox" / VM
        yield from sorted(outbox.glob(f"*/*{LOG_SUFFIX}"), reverse=True)


def _scratch() -> str | None:
    """A folder in memory when the machine has one (fsyncs are cheap there)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _site_state(engine: ReplicationEngine, site: Site) -> SiteState:
    sites = engine.sites
    return SiteState(
        up=sites.up(site.value),
        connected=sites.connected(site.value),
        storage_full=sites.storage_full(site.value),
    )


def _digest(path: Path) -> bytes:
    """A file's content digest; a SQLite database's by its rows (its pages move
    when a read checkpoints the write-ahead log)."""
    digest = hashlib.blake2b(digest_size=16)
    if path.suffix == ".sqlite3":
        uri = f"file:{path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as database:
            for line in database.iterdump():
                digest.update(line.encode())
    else:
        digest.update(path.read_bytes())
    return digest.digest()


def _copy_readable(vm: VmState) -> bool:
    """Whether the other copy is a whole past state (the initial copy is fuzzy until
    it completes, and so is a copy being resynchronised before it has any point: its
    lag is the model's, not the bytes')."""
    if vm.phase is Phase.INITIAL_REPLICATION:
        return False
    return not (vm.phase is Phase.RESYNCHRONIZING and not vm.points)


def damage_last_record(path: Path) -> bool:
    """Flip one byte of the last record's payload of log ``path`` (False: no record)."""
    data = path.read_bytes()
    if len(data) < BLOCK:
        return False
    position = len(data) - BLOCK // 2
    with open(path, "r+b") as stream:
        stream.seek(position)
        stream.write(bytes([data[position] ^ 0xFF]))
        stream.flush()
        os.fsync(stream.fileno())
    return True


def engine_error(error: BaseException) -> bool:
    """Whether ``error`` is one the engine raises on purpose (typed)."""
    return isinstance(error, ReplicationError)


__all__ = ["VM", "Call", "MappingError", "World", "damage_last_record"]
