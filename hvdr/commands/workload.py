"""The demo's guest: a thread writing versioned blocks, and what each copy holds.

Write ``v`` (``v`` = 1, 2, ...) puts a block of its own pattern at a fixed place
(:meth:`Placement.place`): the pattern repeats a 32-byte header naming the write (a
magic, the version, the disk and the block), so reading a block says which write it
holds, and a block copied to the wrong place or mixed from two writes does not match.
Versions grow with time and a later write to a block always has a higher version, so
the content a copy must have for a set of writes is, per block, the pattern of the
newest of them placed there (zeros where none was).

**Which writes a copy holds** (:func:`holding`): the newest version of the VM's
*lineage* found in the copy names the prefix it should hold; every block of every disk
is then compared with the image of exactly those writes. The lineage is every write
tried, less the writes a failover lost (:meth:`Workload.fork`): after an unplanned
failover the new active copy holds writes 1..N and then the ones written after the
failover, never the lost N+1..M.

**The thread** writes one block, then sleeps ``interval_seconds``. A refused write
(the VM shut down for a failover, its site down) is not acknowledged: the thread
records the refusal and parks until :meth:`Workload.resume`; the same version is
tried again, so acknowledged versions stay contiguous. :meth:`Workload.pause` parks it
on purpose (for a comparison of copies that must not move).
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from engine import ReplicationEngine, ReplicationError

BLOCK_BYTES: Final = 4096
HEADER: Final = struct.Struct("<8sQQQ")  # magic, version, disk index, block
MAGIC: Final = b"hvdr-vrs"
TEST_MAGIC: Final = b"testvm!!"  # what the drill's test VM writes: no version of ours
WAIT_SECONDS_MAX: Final = 30.0  # a demo step that waits longer than this is broken

Reader = Callable[[str, int, int], bytes]  # (disk, offset, length) -> bytes


def pattern(magic: bytes, version: int, disk_index: int, block: int) -> bytes:
    """One block: the header repeated."""
    header = HEADER.pack(magic, version, disk_index, block)
    return header * (BLOCK_BYTES // HEADER.size)


@dataclass(frozen=True)
class Placement:
    """Where each write goes: two thirds to the first disk, a third to the second,
    each disk filled block after block like a log (scattered 4 KiB writes would
    fragment the sparse images, whose deletion then takes seconds on some
    filesystems), wrapping round at its end."""

    disks: Mapping[str, int]  # name -> bytes, in the VM's order

    def place(self, version: int) -> tuple[str, int]:
        """The disk and block of write ``version``."""
        names = list(self.disks)
        if len(names) > 1 and version % 3 == 0:
            index, nth = 1, version // 3 - 1
        elif len(names) > 1:
            index, nth = 0, version - version // 3 - 1
        else:
            index, nth = 0, version - 1
        return names[index], nth % (self.disks[names[index]] // BLOCK_BYTES)

    def block_of(self, version: int) -> bytes:
        """The bytes write ``version`` puts at its place."""
        disk, block = self.place(version)
        return pattern(MAGIC, version, list(self.disks).index(disk), block)


@dataclass(frozen=True)
class Holding:
    """Which writes a copy holds, checked on every block of every disk."""

    newest: int  # the newest write of the lineage found (0: none)
    writes: int  # how many writes of the lineage that prefix has
    blocks_checked: int
    blocks_mismatched: int  # blocks that are not "exactly those writes"
    lost_between: tuple[int, int] | None  # writes of a failover this prefix skips

    @property
    def exact(self) -> bool:
        """The copy holds exactly writes of the lineage up to ``newest``."""
        return self.blocks_mismatched == 0

    def describe(self) -> str:
        """E.g. "writes 1..812" or "writes 1..812 and 1,065..1,300"."""
        if self.newest == 0:
            text = "no write"
        elif self.lost_between is None or self.newest < self.lost_between[0]:
            text = f"writes 1..{self.newest:,}"
        else:
            first, last = self.lost_between
            text = f"writes 1..{first - 1:,} and {last + 1:,}..{self.newest:,}"
        if not self.exact:
            text += f", {self.blocks_mismatched:,} block(s) not matching"
        return text


class Workload:
    """A guest writing versioned blocks to a VM from a background thread."""

    def __init__(
        self,
        engine: ReplicationEngine,
        vm: str,
        disks: Mapping[str, int],
        *,
        interval_seconds: float,
    ) -> None:
        self.engine = engine
        self.vm = vm
        self.placement = Placement(dict(disks))
        self.interval_seconds = interval_seconds
        self.acknowledged = 0  # writes 1..acknowledged returned without error
        self.attempted = 0  # the newest write tried (in flight, or refused)
        self.refusals: list[tuple[int, ReplicationError]] = []  # version, why
        self.lost: tuple[int, int] | None = None  # writes a failover lost
        self._condition = threading.Condition()
        self._run = False  # the thread should write (False: park)
        self._parked = True
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="workload", daemon=True)

    def start(self) -> None:
        """Start writing."""
        self._run = True
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._condition:
                self._parked = not self._run
                self._condition.notify_all()
                while not self._run and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                self._parked = False
            version = self.acknowledged + 1
            self.attempted = version
            disk, block = self.placement.place(version)
            data = self.placement.block_of(version)
            try:
                self.engine.write(self.vm, disk, block * BLOCK_BYTES, data)
            except ReplicationError as refusal:
                with self._condition:
                    self.refusals.append((version, refusal))
                    self._run = False
                continue
            with self._condition:
                self.acknowledged = version
                self._condition.notify_all()
            time.sleep(self.interval_seconds)

    def pause(self) -> int:
        """Park the thread; return the last acknowledged write."""
        with self._condition:
            self._run = False
        return self.wait_parked()

    def wait_parked(self) -> int:
        """Wait until the thread parked (paused, or refused a write)."""
        with self._condition:
            if not self._condition.wait_for(
                lambda: self._parked and not self._run, WAIT_SECONDS_MAX
            ):
                msg = f"the workload did not stop writing in {WAIT_SECONDS_MAX} s"
                raise TimeoutError(msg)
            return self.acknowledged

    def resume(self) -> None:
        """Write again (after a pause or a refusal)."""
        with self._condition:
            self._run = True
            self._condition.notify_all()

    def wait_for(self, writes: int) -> int:
        """Wait until ``writes`` more writes were acknowledged; return the newest."""
        with self._condition:
            goal = self.acknowledged + writes
            if not self._condition.wait_for(
                lambda: self.acknowledged >= goal, WAIT_SECONDS_MAX
            ):
                msg = f"the workload wrote {self.acknowledged} of {goal} writes in "
                msg += f"{WAIT_SECONDS_MAX} s"
                raise TimeoutError(msg)
            return self.acknowledged

    def stop(self) -> None:
        """End the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def fork(self, kept: int, written: int) -> None:
        """A failover kept writes 1..``kept`` of 1..``written``: the rest are lost
        to the VM's lineage from now on."""
        assert self.lost is None  # the demo runs one lossy failover
        if written > kept:
            self.lost = (kept + 1, written)

    def lineage(self, newest: int | None = None) -> list[int]:
        """The writes of the active copy, oldest first, up to ``newest`` (default:
        the newest tried, since a write in flight may already be in a copy)."""
        last = self.attempted if newest is None else newest
        versions = range(1, last + 1)
        if self.lost is None:
            return list(versions)
        first, end = self.lost
        return [v for v in versions if not first <= v <= end]

    def holding(self, copy: Mapping[str, bytes]) -> Holding:
        """Which of the VM's writes ``copy`` holds."""
        return holding(self.placement, self.lineage(), copy, self.lost)

    def blocks_of(self, versions: Iterable[int]) -> set[tuple[str, int]]:
        """The distinct blocks the writes ``versions`` went to."""
        return {self.placement.place(version) for version in versions}


def read_copy(read: Reader, disks: Mapping[str, int]) -> dict[str, bytes]:
    """Every byte of every disk of a copy."""
    return {disk: read(disk, 0, size) for disk, size in disks.items()}


def holding(
    placement: Placement,
    lineage: Sequence[int],
    copy: Mapping[str, bytes],
    lost: tuple[int, int] | None = None,
) -> Holding:
    """Which prefix of ``lineage`` (the VM's writes, ascending) ``copy`` holds,
    checked block by block; ``lost`` names the writes a failover skipped."""
    known = set(lineage)
    newest = 0
    for disk in placement.disks:
        data = copy[disk]
        for offset in range(0, len(data), BLOCK_BYTES):
            magic, version, _, _ = HEADER.unpack_from(data, offset)
            if magic == MAGIC and version in known and version > newest:
                newest = version
    writes = [version for version in lineage if version <= newest]
    expected = expected_image(placement, writes)
    mismatched = 0
    checked = 0
    for disk, data in copy.items():
        checked += len(data) // BLOCK_BYTES
        if data == expected[disk]:
            continue
        mismatched += sum(
            data[offset : offset + BLOCK_BYTES]
            != expected[disk][offset : offset + BLOCK_BYTES]
            for offset in range(0, len(data), BLOCK_BYTES)
        )
    return Holding(newest, len(writes), checked, mismatched, lost)


def expected_image(
    placement: Placement, versions: Iterable[int]
) -> dict[str, bytearray]:
    """The disks as they are after exactly the writes ``versions`` (ascending)."""
    images = {disk: bytearray(size) for disk, size in placement.disks.items()}
    for version in versions:
        disk, block = placement.place(version)
        offset = block * BLOCK_BYTES
        images[disk][offset : offset + BLOCK_BYTES] = placement.block_of(version)
    return images
