"""A read-through view of one recovery point of a replica store: no copy made.

A drill (a test failover, ``engine/replica/drill.py``) starts a test VM from an older
recovery point without copying its disks. :class:`PointView` answers reads of that
point from the files the store already keeps: the replica images hold the newest
point, and the undo image of each older point holds the bytes its successor's cycle
overwrote (``engine/replica/undo_image.py``). So the value of a byte at point P is
the value in the first undo image holding it, in the order undo(P), undo(P+1), ...,
undo(newest - 1), and the replica's value when none holds it: undo(P) holds P's own
bytes of whatever P's successor changed, and a byte no later cycle changed is still
the replica's.

**The index.** Each undo image is read once, whole (every CRC32C and its trailer,
``locate_undo_extents``), and reduced to the positions of its extents in the file;
those are merged per disk into one sorted list of disjoint pieces, each saying where
its bytes are (an undo image and a position there, or zeros), an earlier image
winning where two overlap. A read then finds its pieces by bisection, reads the range
from the replica once and lays the pieces over it (``pread`` of the undo images).
The images are trusted after they were indexed: an undo image is written once and
never changed, and the store deletes one only when its point is merged away, which a
pin (``ReplicaStore.pin``) prevents for the point a drill reads and every newer one.

**Cycles applied meanwhile.** An apply adds a point at the newest end and writes the
undo image of the point that was newest; the chain from P grows there and its first
links never change. Every read compares the store's catalogue (an immutable value
the store swaps whole at each commit) with the one indexed, and when it changed
indexes the new links only, at the lowest precedence. A point merged away since
(no pin held it) is :class:`RecoveryPointNotFound`.

**One thread, serialised with applies.** The store is single-writer and takes no lock;
a view reads the replica and the undo images, so its caller serialises reads with the
store's applies (in the in-process transport, the lock its replica-changing calls
already take). While an interrupted apply waits for ``recover()``, reads refuse as the
store's do. A damaged or missing undo image is :class:`DamagedState` naming the file.
"""

from __future__ import annotations

import bisect
import heapq
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import (
    CorruptRecord,
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    RecoveryPointNotFound,
)
from engine.replica.recovery_point import RecoveryPointCatalogue
from engine.replica.store import WHAT_TO_DO, ReplicaStore, UndoStep
from engine.replica.undo_image import locate_undo_extents
from engine.storage.disk import require_int


@dataclass(frozen=True, slots=True)
class PointViewStatistics:
    """Counters of one view: what it indexed, and how often it looked again."""

    recovery_point_id: int
    undo_images_indexed: int
    pieces: int  # disjoint regions, all disks, whose bytes come from an undo image
    refreshes: int  # times the catalogue had changed and the index was extended


@dataclass(frozen=True, slots=True)
class _Piece:
    """Bytes ``[start, end)`` of a disk are in undo image ``source`` at ``position``
    (None: zeros)."""

    start: int
    end: int
    source: int  # index into PointView._sources
    position: int | None


class _DiskIndex:
    """The disjoint pieces of one disk, sorted by start."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.pieces: list[_Piece] = []

    def add_image(self, pieces: list[_Piece]) -> None:
        """Add an image's pieces where no earlier image covers the bytes."""
        added = []
        covered_until = 0
        for piece in sorted(pieces, key=lambda p: p.start):
            start = max(piece.start, covered_until)  # a damaged image may overlap
            for gap_start, gap_end in self._gaps(start, piece.end):
                shift = gap_start - piece.start
                position = None if piece.position is None else piece.position + shift
                added.append(_Piece(gap_start, gap_end, piece.source, position))
            covered_until = max(covered_until, piece.end)
        self.pieces = list(heapq.merge(self.pieces, added, key=lambda p: p.start))
        self.starts = [piece.start for piece in self.pieces]

    def overlapping(self, start: int, end: int) -> Iterator[_Piece]:
        """Yield the pieces that overlap ``[start, end)``, in order."""
        index = max(0, bisect.bisect_right(self.starts, start) - 1)
        while index < len(self.pieces) and self.pieces[index].start < end:
            if self.pieces[index].end > start:
                yield self.pieces[index]
            index += 1

    def _gaps(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Yield the parts of ``[start, end)`` no piece covers."""
        cursor = start
        for piece in self.overlapping(start, end):
            if piece.start > cursor:
                yield cursor, piece.start
            cursor = max(cursor, piece.end)
        if cursor < end:
            yield cursor, end


class PointView:
    """The bytes of one recovery point of a store, read through its undo chain."""

    def __init__(self, store: ReplicaStore, recovery_point_id: int) -> None:
        """Index the undo chain from ``recovery_point_id`` to the store's newest point.

        RecoveryPointNotFound when the catalogue does not hold the point;
        DamagedState when an undo image of the chain is damaged or missing.
        """
        self._store = store
        self._recovery_point_id = recovery_point_id
        self._steps: list[UndoStep] = []
        self._sources: list[Path] = []
        self._disks = {disk: _DiskIndex() for disk in store.disks}
        self._catalogue: RecoveryPointCatalogue | None = None
        self._refreshes = 0
        self._refresh()

    @property
    def recovery_point_id(self) -> int:
        """The point this view reads."""
        return self._recovery_point_id

    @property
    def disks(self) -> Mapping[str, int]:
        """The VM's disks and their sizes in bytes (the store's)."""
        return self._store.disks

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes of ``disk`` from ``offset`` as the point holds them.

        InvalidConfiguration for a disk the VM does not have, DiskRangeError for a
        range outside it.
        """
        size = self._disk_size(disk)
        offset = require_int(offset, argument="offset")
        length = require_int(length, argument="length")
        if offset < 0 or length < 0 or offset + length > size:
            msg = f"offset={offset}, length={length} on disk {disk!r} must satisfy "
            msg += f"0 <= offset and offset + length <= {size}"
            raise DiskRangeError(msg)
        self._refresh()
        data = bytearray(self._store.read(disk, offset, length))
        end = offset + length
        descriptors: dict[int, int] = {}
        try:
            for piece in self._disks[disk].overlapping(offset, end):
                start, stop = max(piece.start, offset), min(piece.end, end)
                data[start - offset : stop - offset] = self._piece_bytes(
                    piece, start, stop, descriptors
                )
        finally:
            for descriptor in descriptors.values():
                os.close(descriptor)
        return bytes(data)

    def statistics(self) -> PointViewStatistics:
        """Return the view's counters."""
        return PointViewStatistics(
            recovery_point_id=self._recovery_point_id,
            undo_images_indexed=len(self._steps),
            pieces=sum(len(index.pieces) for index in self._disks.values()),
            refreshes=self._refreshes,
        )

    # -- helpers -----------------------------------------------------------------------

    def _disk_size(self, disk: str) -> int:
        disks = self._store.disks
        if disk not in disks:
            msg = f"disk={disk!r} is not a disk of VM {self._store.vm_name!r}; "
            msg += f"choices: {sorted(disks)}"
            raise InvalidConfiguration(msg)
        return disks[disk]

    def _refresh(self) -> None:
        """Index the links added to the chain since the catalogue last changed."""
        catalogue = self._store.catalogue
        if catalogue is self._catalogue:
            return
        try:
            chain = self._store.undo_chain(self._recovery_point_id)
        except RecoveryPointNotFound as error:
            if self._catalogue is not None:
                note = f"recovery point {self._recovery_point_id} was merged away "
                note += "since this view was made: pin it (ReplicaStore.pin) to "
                note += "read it while cycles are applied"
                error.add_note(note)
            raise
        known = [step.recovery_point_id for step in self._steps]
        assert known == [s.recovery_point_id for s in chain[: len(known)]], known
        for step in chain[len(self._steps) :]:
            self._index(step)
        if self._catalogue is not None:
            self._refreshes += 1
        self._catalogue = catalogue

    def _index(self, step: UndoStep) -> None:
        source = len(self._sources)
        try:
            locations = locate_undo_extents(step.path, cycle_id=step.cycle_id)
        except CorruptRecord as error:
            msg = f"{error}. It is a file of the replica store, needed to read "
            msg += f"recovery point {self._recovery_point_id}: {WHAT_TO_DO}"
            raise DamagedState(msg) from error
        except OSError as error:
            msg = f"undo image {str(step.path)!r}, needed to read recovery point "
            msg += f"{self._recovery_point_id}, is missing or unreadable ({error}): "
            msg += f"the replica store is damaged: {WHAT_TO_DO}"
            raise DamagedState(msg) from error
        per_disk: dict[str, list[_Piece]] = {disk: [] for disk in self._disks}
        for location in locations:
            if location.disk not in per_disk:
                msg = f"undo image {str(step.path)!r} names disk {location.disk!r}, "
                msg += f"not a disk of the store {sorted(per_disk)}: {WHAT_TO_DO}"
                raise DamagedState(msg)
            end = location.offset + location.length
            piece = _Piece(location.offset, end, source, location.data_position)
            per_disk[location.disk].append(piece)
        for disk, pieces in per_disk.items():
            self._disks[disk].add_image(pieces)
        self._sources.append(step.path)
        self._steps.append(step)

    def _piece_bytes(
        self, piece: _Piece, start: int, stop: int, descriptors: dict[int, int]
    ) -> bytes:
        if piece.position is None:
            return bytes(stop - start)
        path = self._sources[piece.source]
        if piece.source not in descriptors:
            try:
                descriptors[piece.source] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as error:
                msg = f"undo image {str(path)!r}, needed to read recovery point "
                msg += f"{self._recovery_point_id}, is missing or unreadable "
                msg += f"({error}): the replica store is damaged: {WHAT_TO_DO}"
                raise DamagedState(msg) from error
        position = piece.position + (start - piece.start)
        data = os.pread(descriptors[piece.source], stop - start, position)
        if len(data) != stop - start:
            msg = f"undo image {str(path)!r} ended before byte {position + len(data)}"
            msg += f" of the {stop - start} its index holds there: the image is "
            msg += f"damaged: {WHAT_TO_DO}"
            raise DamagedState(msg)
        return data
