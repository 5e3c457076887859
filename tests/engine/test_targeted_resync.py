"""A resynchronisation whose cost follows what diverged (``prepare_resync`` with
``candidates``), on real files: source disks and their change logs, an outbox, and an
in-process replica store whose images are compared whole with the source's."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.control.site import SiteStorage
from engine.errors import InvalidConfiguration, TransportError
from engine.log.extents import blocks_touched_by_log
from engine.log.writer import ChangeLog, log_path_for
from engine.replica.undo_blocks import blocks_in_undo_image
from engine.source.disks import SourceDisks
from engine.source.outbox import Outbox
from engine.source.resync import ResyncReport, prepare_resync
from engine.source.shipping import ship_cycle
from engine.storage.block_set import BlockSet
from engine.storage.disk import VirtualDisk
from engine.testing import LossyTransport, ManualClock
from engine.transport.in_process import InProcessReplica
from engine.transport.interface import CycleShipment

BLOCK = 4096
SIZES = {"os": 8 * 1024 * 1024, "data": 1024 * 1024}  # 2,048 and 256 blocks
VM = "web"


class RecordingReplica(LossyTransport):
    """The replica interface, recording which blocks each digest request named."""

    def __init__(self, inner: InProcessReplica) -> None:
        super().__init__(inner)
        self.asked: list[tuple[str, list[int] | None]] = []

    def block_digests(
        self,
        vm_name: str,
        disk: str,
        block_bytes: int,
        *,
        blocks: Sequence[int] | None = None,
    ) -> list[bytes]:
        """Record the request, then pass it through."""
        self.asked.append((disk, None if blocks is None else list(blocks)))
        return super().block_digests(vm_name, disk, block_bytes, blocks=blocks)


@dataclass
class Sites:
    """One VM's source disks and outbox, and its replica at the other site."""

    disks: SourceDisks
    outbox: Outbox
    replica: InProcessReplica
    recording: RecordingReplica
    clock: ManualClock
    cycle_id: int = 0
    epoch: int = 1

    def resync(
        self, candidates: Mapping[str, BlockSet] | None, **options: object
    ) -> ResyncReport:
        """Prepare a resynchronisation at the next epoch and ship its cycle."""
        self.cycle_id += 1
        self.epoch += 1
        report = prepare_resync(
            self.disks, self.recording, self.outbox,
            cycle_id=self.cycle_id, epoch=self.epoch, candidates=candidates,
            **options,  # type: ignore[arg-type]
        )  # fmt: skip
        record = self.outbox.cut_record(self.cycle_id)
        assert record is not None
        ship_cycle(self.replica, self.outbox, record, clock=self.clock)
        return report

    def target_writes(self, writes: Mapping[str, list[tuple[int, bytes]]]) -> None:
        """Apply writes at the target that the source never made (one cycle)."""
        self.cycle_id += 1
        newest = self.replica.status(VM).points[-1]
        directory = self.outbox.site.root.parent / f"elsewhere-{self.cycle_id}"
        directory.mkdir()
        logs, last = {}, {}
        for disk in SIZES:
            path = directory / f"{disk}.hrl"
            with ChangeLog.create(
                path, disk_id=disk, epoch=newest.epoch,
                first_sequence=newest.last_sequence(disk) + 1,
            ) as log:  # fmt: skip
                for offset, data in writes.get(disk, []):
                    log.append(offset, data)
                last[disk] = log.next_sequence - 1
            logs[disk] = path
        shipment = CycleShipment(self.cycle_id, newest.epoch, False, logs, last)
        self.replica.apply_cycle(VM, shipment)

    def undo_blocks(self, disk: str) -> BlockSet:
        """The blocks the last cycle applied at the target overwrote (its undo)."""
        points = self.replica.status(VM).points
        store = self.replica.store(VM)
        path = store.directory / "undo" / f"{points[-2].recovery_point_id}.undo"
        return blocks_in_undo_image(path, points[-1].cycle_id, disk, BLOCK, SIZES[disk])

    def logged_blocks(self, disk: str) -> BlockSet:
        """The blocks the source's current log touched (its writes since the cut)."""
        path = log_path_for(self.disks.paths[disk])
        return blocks_touched_by_log(path, BLOCK, SIZES[disk])

    def source_image(self, disk: str) -> bytes:
        return self.disks.paths[disk].read_bytes()

    def replica_image(self, disk: str) -> bytes:
        return self.replica.store(VM).read(disk, 0, SIZES[disk])

    def differing_blocks(self, disk: str) -> list[int]:
        ours, theirs = self.source_image(disk), self.replica_image(disk)
        return [
            block
            for block in range(SIZES[disk] // BLOCK)
            if ours[block * BLOCK : (block + 1) * BLOCK]
            != theirs[block * BLOCK : (block + 1) * BLOCK]
        ]


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    """Random disks, replicated once by a full comparison (point 1), tracked."""
    clock = ManualClock(1000.0)
    site = SiteStorage.open("primary", tmp_path / "primary", clock)
    directory = tmp_path / "primary" / "vms" / VM
    directory.mkdir(parents=True)
    generator = random.Random(2024)
    paths = {}
    for disk, size in SIZES.items():
        paths[disk] = directory / f"{disk}.img"
        with VirtualDisk.create(paths[disk], size) as image:
            for start in range(0, size, 64 * BLOCK):
                image.write(start, generator.randbytes(16 * BLOCK))
    (tmp_path / "secondary").mkdir()
    replica = InProcessReplica.open(
        "primary", "secondary", tmp_path / "secondary", clock
    )
    replica.create_replica(VM, SIZES, 8)
    disks = SourceDisks(paths, block_bytes=BLOCK, durable=False)
    found = Sites(disks, Outbox(site, VM), replica, RecordingReplica(replica), clock)
    found.resync(None)  # the first point: the replica equals the source
    found.recording.asked.clear()
    assert found.differing_blocks("os") == []
    try:
        yield found
    finally:
        disks.close()
        site.close()


def diverge(sites: Sites) -> tuple[dict[str, BlockSet], dict[str, list[int]]]:
    """About 1% of 'os' and a few blocks of 'data' differ, at the target (a cycle
    the source never made) and at the source (tracked writes since the cut); some
    candidates are written with the bytes they already hold. Returns the candidates
    a caller would build ((b) undo extents, (c) the source's log) and the blocks
    that really differ."""
    generator = random.Random(7)
    target_os = sorted(generator.sample(range(2048), 12))
    sites.target_writes(
        {
            "os": [(b * BLOCK + 100, generator.randbytes(50)) for b in target_os],
            "data": [(255 * BLOCK, b"t" * BLOCK)],
        }
    )
    source_os = sorted(generator.sample(sorted(set(range(2048)) - set(target_os)), 8))
    for block in source_os:
        sites.disks.write("os", block * BLOCK, generator.randbytes(BLOCK))
    unchanged = [3, 1000, 2047]  # rewritten with the bytes they hold: equal
    for block in unchanged:
        same = sites.disks.read("os", block * BLOCK, BLOCK)
        sites.disks.write("os", block * BLOCK, same)
    sites.disks.write("data", 10, b"s" * 20)
    candidates = {
        disk: sites.undo_blocks(disk).union(sites.logged_blocks(disk)) for disk in SIZES
    }
    differing = {"os": sorted(target_os + source_os), "data": [0, 255]}
    assert differing == {disk: sites.differing_blocks(disk) for disk in SIZES}
    assert set(candidates["os"]) == set(target_os + source_os + unchanged)
    return candidates, differing


def test_one_percent_divergence_compares_and_sends_only_the_candidates(
    sites: Sites,
) -> None:
    """23 candidates of 2,048 blocks on 'os' (20 differ), 2 of 256 on 'data': the
    target is asked for the candidates' digests only, only the differing blocks are
    logged, and the replica ends byte-identical to the source."""
    candidates, _ = diverge(sites)
    report = sites.resync(candidates)
    expected_asked = [(disk, list(candidates[disk])) for disk in sorted(SIZES)]
    assert expected_asked == sites.recording.asked
    assert (
        report.blocks_candidate,
        report.blocks_compared,
        report.blocks_sent,
        report.bytes_sent,
        report.full_comparison,
    ) == (25, 25, 22, 22 * BLOCK, False)
    for disk in SIZES:
        assert sites.source_image(disk) == sites.replica_image(disk), disk


def test_the_cycle_holds_only_the_differing_blocks(sites: Sites) -> None:
    """The sealed resynchronisation log touches exactly the differing blocks."""
    candidates, differing = diverge(sites)
    sites.cycle_id += 1
    sites.epoch += 1
    report = prepare_resync(
        sites.disks, sites.recording, sites.outbox,
        cycle_id=sites.cycle_id, epoch=sites.epoch, candidates=candidates,
    )  # fmt: skip
    for disk in SIZES:
        sealed = report.sealed[disk]
        touched = blocks_touched_by_log(sealed.path, BLOCK, SIZES[disk], sealed=True)
        assert differing[disk] == list(touched), disk


def test_a_block_missing_from_the_candidates_stays_different(sites: Sites) -> None:
    """The candidates are what is compared: leave out one block that differs at the
    target and it is neither compared nor sent; every other block is resynchronised.
    (Complete candidates are the caller's duty.)"""
    candidates, differing = diverge(sites)
    left_out = differing["os"][0]
    assert left_out in sites.undo_blocks("os")
    assert left_out not in sites.logged_blocks("os")
    incomplete = dict(candidates)
    incomplete["os"] = candidates["os"].difference(
        BlockSet.of(SIZES["os"], BLOCK, [left_out])
    )
    report = sites.resync(incomplete)
    assert (report.blocks_compared, report.blocks_sent) == (24, 21)
    assert [left_out] == sites.differing_blocks("os")
    assert sites.differing_blocks("data") == []


def test_writes_logged_before_the_restart_are_compared_without_being_named(
    sites: Sites,
) -> None:
    """Blocks written before tracking restarts are in the logs the restart replaces:
    they are compared even when no candidate names them (no window between the
    caller reading the logs and the restart)."""
    sites.disks.write("os", 500 * BLOCK + 1, b"late")
    sites.disks.write("data", 7 * BLOCK, b"late" * 1024)
    empty = {disk: BlockSet(size, BLOCK) for disk, size in SIZES.items()}
    report = sites.resync(empty)
    assert (
        report.blocks_candidate,
        report.blocks_compared,
        report.blocks_sent,
        report.full_comparison,
    ) == (0, 2, 2, False)
    assert sorted(sites.recording.asked) == [
        ("data", []),
        ("data", [7]),
        ("os", []),
        ("os", [500]),
    ]
    for disk in SIZES:
        assert sites.source_image(disk) == sites.replica_image(disk), disk


def test_writes_during_the_comparison_are_caught_by_tracking(sites: Sites) -> None:
    """A guest write while the candidates are compared, to a block no candidate
    names, reaches the replica through the restarted tracking."""
    candidates, _ = diverge(sites)
    written: list[str] = []

    def write_while_comparing(disk: str, done: int, total: int) -> None:
        if not written:
            sites.disks.write("os", 1500 * BLOCK, b"during" * 100)
            written.append(disk)

    report = sites.resync(candidates, progress=write_while_comparing)
    assert 1500 not in candidates["os"]
    assert (written, report.full_comparison) == (["data"], False)
    for disk in SIZES:
        assert sites.source_image(disk) == sites.replica_image(disk), disk


def test_without_candidates_every_block_is_compared_as_before(sites: Sites) -> None:
    """candidates=None: today's full comparison (every digest asked, every block
    compared), and the replica equals the source."""
    diverge(sites)
    progress: list[tuple[str, int, int]] = []
    report = sites.resync(None, progress=lambda *call: progress.append(call))
    assert sites.recording.asked == [("data", None), ("os", None)]
    assert (
        report.blocks_candidate,
        report.blocks_compared,
        report.blocks_sent,
        report.full_comparison,
    ) == (0, 2048 + 256, 22, True)
    assert ("data", SIZES["data"], SIZES["data"]) == progress[0]
    assert ("os", SIZES["os"], SIZES["os"]) == progress[-1]
    for disk in SIZES:
        assert sites.source_image(disk) == sites.replica_image(disk), disk


def test_untrusted_logs_fall_back_to_every_block(sites: Sites) -> None:
    """When the logs cannot vouch for the source's writes, the candidates are not
    enough: every block is compared, and the report says so."""
    candidates, _ = diverge(sites)
    sites.disks.distrust("test: a record may be missing")
    report = sites.resync(candidates)
    assert sites.recording.asked == [("data", None), ("os", None)]
    assert (
        report.blocks_candidate,
        report.blocks_compared,
        report.full_comparison,
    ) == (25, 2048 + 256, True)
    for disk in SIZES:
        assert sites.source_image(disk) == sites.replica_image(disk), disk


def test_a_damaged_replaced_log_falls_back_to_every_block(sites: Sites) -> None:
    """A log the restart replaces turns out damaged mid-file: what it held cannot
    be known, so every block is compared (asked after the restart)."""
    candidates, _ = diverge(sites)
    log = log_path_for(sites.disks.paths["os"])
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    report = sites.resync(candidates)
    assert report.full_comparison
    assert ("data", None) in sites.recording.asked
    assert ("os", None) in sites.recording.asked
    for disk in SIZES:
        assert sites.source_image(disk) == sites.replica_image(disk), disk


def test_untracked_disks_fall_back_to_every_block(sites: Sites) -> None:
    """Writes made while the disks were not tracked are in no log: every block."""
    sites.disks.stop_tracking()
    sites.disks.write("os", 42 * BLOCK, b"untracked")
    empty = {disk: BlockSet(size, BLOCK) for disk, size in SIZES.items()}
    report = sites.resync(empty)
    assert (report.full_comparison, report.blocks_sent) == (True, 1)
    assert sites.source_image("os") == sites.replica_image("os")


@pytest.mark.parametrize(
    ("candidates", "match"),
    [
        ({"os": BlockSet(SIZES["os"], BLOCK)}, r"name disks \['os'\]; they must"),
        (
            {"os": BlockSet(SIZES["os"], BLOCK), "data": BlockSet(SIZES["os"], BLOCK)},
            r"candidates\['data'\] is for a disk of 8388608 bytes",
        ),
        (
            {"os": BlockSet(SIZES["os"], 512), "data": BlockSet(SIZES["data"], BLOCK)},
            "in blocks of 512; disk 'os' has 8388608 bytes in blocks of 4096",
        ),
    ],
)
def test_candidates_must_describe_every_disk(
    sites: Sites, candidates: dict[str, BlockSet], match: str
) -> None:
    """Bad candidates are refused before anything changes (no cycle, same logs)."""
    log = log_path_for(sites.disks.paths["os"])
    before = log.read_bytes()
    with pytest.raises(InvalidConfiguration, match=match):
        prepare_resync(
            sites.disks, sites.recording, sites.outbox,
            cycle_id=9, epoch=9, candidates=candidates,
        )  # fmt: skip
    assert ([], before) == (sites.outbox.waiting(), log.read_bytes())


def test_the_link_down_refuses_before_anything_changes(sites: Sites) -> None:
    """The candidates' digests are asked first: a link down leaves all as it was."""
    candidates, _ = diverge(sites)
    log = log_path_for(sites.disks.paths["os"])
    before = log.read_bytes()
    sites.replica.link_up = False
    with pytest.raises(TransportError, match="is down"):
        prepare_resync(
            sites.disks, sites.recording, sites.outbox,
            cycle_id=9, epoch=9, candidates=candidates,
        )  # fmt: skip
    assert ([], before) == (sites.outbox.waiting(), log.read_bytes())
