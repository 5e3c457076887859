"""A drill on real files: a test VM from an old point, beside a moving replica."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import (
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    InvalidName,
)
from engine.replica.drill import TestVm, cleanup_drill, open_drill, start_drill
from engine.replica.point_view import PointView
from engine.replica.store import ReplicaStore
from engine.testing import CycleSource, ManualClock

REPOSITORY = Path(__file__).resolve().parents[2]
BLOCK = 4096
DISKS = {"os": 256 * BLOCK, "data": 64 * BLOCK}
RETENTION = 2


class Replica:
    """A replica store fed by a CycleSource; remembers every point's bytes."""

    def __init__(self, site: Path) -> None:
        self.site = site
        self.source = CycleSource(site / "source", DISKS, epoch=1)
        self.store = ReplicaStore.create(
            site / "replicas", "vm-1", DISKS, RETENTION, ManualClock(1_000.0)
        )
        self.snapshots: dict[int, dict[str, bytes]] = {}

    def cycles(self, count: int) -> None:
        """Apply ``count`` cycles of random writes across both disks."""
        for _ in range(count):
            generator = random.Random(self.source.cycles_cut)
            for disk, size in DISKS.items():
                for _ in range(12):
                    length = generator.randrange(1, 3 * BLOCK)
                    offset = generator.randrange(0, size - length)
                    self.source.write(disk, offset, generator.randbytes(length))
            cycle = self.source.cut()
            point = self.store.apply_cycle(
                cycle.cycle_id, cycle.logs, epoch=1, app_consistent=False
            )
            self.snapshots[point.recovery_point_id] = cycle.snapshot

    def materialized(self, point: int) -> dict[str, bytes]:
        images = self.store.materialize(point, self.site / f"materialized-{point}")
        found = {disk: path.read_bytes() for disk, path in images.items()}
        for path in images.values():
            path.unlink()
        return found

    def replica(self) -> dict[str, bytes]:
        return {disk: self.store.read(disk, 0, size) for disk, size in DISKS.items()}


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    made = Replica(tmp_path / "site")
    made.cycles(3)  # points 2 and 3 retained
    yield made
    made.source.close()


@pytest.fixture
def area(tmp_path: Path) -> Path:
    return tmp_path / "site" / "drills" / "vm-1"


def vm_bytes(vm: TestVm) -> dict[str, bytes]:
    return {disk: vm.read(disk, 0, size) for disk, size in DISKS.items()}


def test_a_drill_reads_its_point_exactly(replica: Replica, area: Path) -> None:
    """A test VM from an older point reads what materialize() gives of that point."""
    with start_drill(replica.store, 2, area, BLOCK) as vm:
        expected = replica.materialized(2)
        assert (replica.snapshots[2], 2) == (expected, vm.recovery_point_id)
        assert expected == vm_bytes(vm)


def test_cycles_during_a_drill_change_nothing_it_reads(
    replica: Replica, area: Path
) -> None:
    """Cycles applied meanwhile leave the drill's bytes and are kept past
    retention while pinned; cleanup merges back down to the retention count."""
    with start_drill(replica.store, 2, area, BLOCK) as vm:
        for _ in range(3):
            replica.cycles(1)
            assert replica.snapshots[2] == vm_bytes(vm)
        expected_ids = (2, 3, 4, 5, 6)
        assert expected_ids == replica.store.catalogue.recovery_point_ids
    cleanup_drill(replica.store, area)
    expected = (None, (5, 6), ["5.undo"])
    actual: tuple[int | None, tuple[int, ...], list[str]] = (
        replica.store.pinned,
        replica.store.catalogue.recovery_point_ids,
        sorted(os.listdir(replica.store.directory / "undo")),
    )
    assert expected == actual
    assert replica.snapshots[5] == replica.materialized(5)


def test_test_vm_writes_never_reach_the_replica(replica: Replica, area: Path) -> None:
    """The test VM's writes read back; the replica and every later point keep the
    source's bytes."""
    with start_drill(replica.store, 2, area, BLOCK) as vm:
        vm.write("os", 10, b"drill write")  # partial block
        vm.write("data", 3 * BLOCK, b"\xee" * (2 * BLOCK))  # whole blocks
        vm.flush()
        replica.cycles(2)
        expected = (b"drill write", b"\xee" * (2 * BLOCK))
        assert expected == (
            vm.read("os", 10, 11),
            vm.read("data", 3 * BLOCK, 2 * BLOCK),
        )
        around = replica.snapshots[2]["os"][:10]
        assert around == vm.read("os", 0, 10)
        assert replica.snapshots[5] == replica.replica()
        for point in (3, 4, 5):
            assert replica.snapshots[point] == replica.materialized(point)
            view = PointView(replica.store, point)
            later = {d: view.read(d, 0, size) for d, size in DISKS.items()}
            assert replica.snapshots[point] == later


def test_reopen_after_close_keeps_flushed_writes(replica: Replica, area: Path) -> None:
    """Close, reopen the store and the drill: the writes are there, over the point."""
    with start_drill(replica.store, 2, area, BLOCK) as vm:
        vm.write("os", BLOCK + 5, b"kept")
        vm.flush()
    replica.cycles(1)
    store = ReplicaStore.open(replica.site / "replicas", "vm-1", ManualClock())
    with open_drill(store, area) as vm:
        expected = bytearray(replica.snapshots[2]["os"])
        expected[BLOCK + 5 : BLOCK + 9] = b"kept"
        assert (bytes(expected), 2) == (vm.read("os", 0, DISKS["os"]), store.pinned)


CHILD = """
import os, signal, sys
from pathlib import Path
from engine.replica.drill import open_drill
from engine.replica.store import ReplicaStore
from engine.testing import ManualClock

store = ReplicaStore.open(Path(sys.argv[1]), "vm-1", ManualClock())
vm = open_drill(store, Path(sys.argv[2]))
vm.write("os", 7, b"flushed before the kill")
vm.write("data", 40 * 4096, b"x" * 4096)
vm.flush()
vm.write("data", 50 * 4096, b"never flushed")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_kill_after_flush_keeps_the_writes(replica: Replica, area: Path) -> None:
    """A real process SIGKILLed after a flush: reopened, its flushed writes are
    there, and a write to a new block after the flush is not."""
    start_drill(replica.store, 2, area, BLOCK).close()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(replica.site / "replicas"), str(area)],
        cwd=REPOSITORY, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stdout + child.stderr
    store = ReplicaStore.open(replica.site / "replicas", "vm-1", ManualClock())
    with open_drill(store, area) as vm:
        point = replica.snapshots[2]
        expected = (
            b"flushed before the kill",
            b"x" * BLOCK,
            point["data"][50 * BLOCK : 51 * BLOCK],
        )
        actual = (
            vm.read("os", 7, 23),
            vm.read("data", 40 * BLOCK, BLOCK),
            vm.read("data", 50 * BLOCK, BLOCK),
        )
        assert expected == actual


def test_cleanup_twice_and_without_an_area_is_fine(
    replica: Replica, area: Path
) -> None:
    """cleanup_drill deletes the area and unpins; again, it changes nothing."""
    start_drill(replica.store, 2, area, BLOCK).close()
    cleanup_drill(replica.store, area)
    cleanup_drill(replica.store, area)
    expected = (False, None)
    assert expected == (area.exists(), replica.store.pinned)
    with pytest.raises(InvalidConfiguration, match="holds no drill"):
        open_drill(replica.store, area)


def test_no_copy_of_the_disks_is_made(replica: Replica, area: Path) -> None:
    """The overlays hold only the blocks written; the store gains no file."""
    before = sorted(str(p) for p in replica.store.directory.rglob("*"))
    with start_drill(replica.store, 2, area, BLOCK) as vm:
        vm.write("os", 100 * BLOCK + 1, b"a")
        vm.write("os", 200 * BLOCK, b"b" * (2 * BLOCK))
    allocated = (area / "os.overlay").stat().st_blocks * 512
    if allocated > DISKS["os"] // 2:
        pytest.skip(f"{area} does not keep files sparse ({allocated} bytes)")
    assert allocated <= 4 * BLOCK
    assert (area / "data.overlay").stat().st_blocks * 512 <= BLOCK
    assert before == sorted(str(p) for p in replica.store.directory.rglob("*"))


def test_a_damaged_map_is_damaged_state(replica: Replica, area: Path) -> None:
    """A flipped byte in a disk's map: reopening the drill names the map."""
    with start_drill(replica.store, 2, area, BLOCK) as vm:
        vm.write("os", 0, b"x")
    content = bytearray((area / "os.map").read_bytes())
    content[-1] ^= 0x01
    (area / "os.map").write_bytes(bytes(content))
    with pytest.raises(DamagedState, match=r"os\.map"):
        open_drill(replica.store, area)


def test_a_damaged_undo_image_is_damaged_state(replica: Replica, area: Path) -> None:
    """A damaged undo image of the chain: open_drill names it; start_drill names
    it too and leaves no area and no pin behind."""
    start_drill(replica.store, 2, area, BLOCK).close()
    undo = replica.store.directory / "undo" / "2.undo"
    content = bytearray(undo.read_bytes())
    content[len(content) // 2] ^= 0x01
    undo.write_bytes(bytes(content))
    with pytest.raises(DamagedState, match=r"2\.undo"):
        open_drill(replica.store, area)
    cleanup_drill(replica.store, area)
    with pytest.raises(DamagedState, match=r"2\.undo"):
        start_drill(replica.store, 2, area, BLOCK)
    expected = (False, None)
    assert expected == (area.exists(), replica.store.pinned)


def test_bad_disks_ranges_and_block_sizes_are_refused(
    replica: Replica, area: Path
) -> None:
    """Unknown or hostile disk names, ranges outside a disk, bad block sizes."""
    with pytest.raises(InvalidConfiguration, match="block_bytes"):
        start_drill(replica.store, 2, area, 1000)
    with start_drill(replica.store, 2, area, BLOCK) as vm:
        for name in ("swap", "../os", "os.overlay"):
            with pytest.raises(InvalidConfiguration, match="choices"):
                vm.read(name, 0, 1)
        with pytest.raises(DiskRangeError):
            vm.write("data", DISKS["data"] - 1, b"ab")
        with pytest.raises(DiskRangeError):
            vm.read("os", -1, 1)


def test_a_second_drill_or_a_used_area_is_refused(
    replica: Replica, area: Path, tmp_path: Path
) -> None:
    """One drill per store; an area with files in it, or inside the store, or
    holding the store, is refused before anything is pinned or written."""
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidConfiguration, match="not an empty directory"):
        start_drill(replica.store, 2, tmp_path / "used", BLOCK)
    for inside in (replica.store.directory / "drill", replica.site):
        with pytest.raises(InvalidConfiguration, match="outside the replica store"):
            start_drill(replica.store, 2, inside, BLOCK)
    assert replica.store.pinned is None
    start_drill(replica.store, 2, area, BLOCK).close()
    with pytest.raises(InvalidConfiguration, match="one drill at a time"):
        start_drill(replica.store, 3, tmp_path / "other", BLOCK)


def test_cleanup_refuses_a_directory_that_is_not_a_drill(
    replica: Replica, tmp_path: Path
) -> None:
    """cleanup_drill deletes nothing in a directory holding other files."""
    mistyped = tmp_path / "site" / "drills"
    mistyped.mkdir(parents=True)
    (mistyped / "notes.txt").write_text("not a drill")
    with pytest.raises(InvalidConfiguration, match=r"notes\.txt"):
        cleanup_drill(replica.store, mistyped)
    assert (mistyped / "notes.txt").exists()


def test_a_planted_symlink_does_not_escape_the_area(
    replica: Replica, area: Path, tmp_path: Path
) -> None:
    """An overlay replaced by a symlink out of the area is refused, and cleanup
    will not follow it."""
    start_drill(replica.store, 2, area, BLOCK).close()
    outside = tmp_path / "outside.img"
    outside.write_bytes(bytes(DISKS["os"]))
    (area / "os.overlay").unlink()
    (area / "os.overlay").symlink_to(outside)
    with pytest.raises(InvalidName, match="outside the root"):
        open_drill(replica.store, area)
    with pytest.raises(InvalidConfiguration, match=r"os\.overlay"):
        cleanup_drill(replica.store, area)
    assert outside.read_bytes() == bytes(DISKS["os"])


def test_a_damaged_drill_file_is_damaged_state(replica: Replica, area: Path) -> None:
    """drill.json naming hostile disks or another block size is DamagedState."""
    start_drill(replica.store, 2, area, BLOCK).close()
    path = area / "drill.json"
    document = json.loads(path.read_bytes())
    document["disks"] = {"../../escape": 4096}
    path.write_text(json.dumps(document))
    with pytest.raises(DamagedState, match=r"drill\.json"):
        open_drill(replica.store, area)
    cleanup_drill(replica.store, area)
    assert not area.exists()


def test_a_drill_the_store_no_longer_pins_is_damaged_state(
    replica: Replica, area: Path
) -> None:
    """An area whose point the store does not pin cannot be trusted."""
    start_drill(replica.store, 2, area, BLOCK).close()
    replica.store.unpin()
    with pytest.raises(DamagedState, match="pins None"):
        open_drill(replica.store, area)
