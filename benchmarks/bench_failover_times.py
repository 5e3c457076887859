"""Failover, commit and failback: how long each takes, against a copy of the disks.

A VM with two disks (``HVDR_BENCH_DISK_MIB`` in all, default 1024 MiB: two halves)
filled with random data before protection is protected, then taken round the failover
half of the lifecycle, each operation timed on its own (everything synced first; the
page cache warm):

1. **planned failover** to the secondary, with ``PENDING_BLOCKS`` random 4 KiB writes
   per disk left unshipped, so its final sync has work (its share is printed);
2. **commit** (the replica images become the VM's disks: moved, not copied);
3. **reverse replication** towards the primary after the same number of writes at the
   new source (planned: its first cycle ships them, no block compared);
4. **failback**: a planned failover back to the primary, commit, reverse replication
   (timed each, and in total), with writes before each as above;
5. **unplanned failover to the point before the newest** (the source still running,
   one cycle of ``PENDING_BLOCKS`` per disk rolled back) and its **commit**, which
   applies that cycle's undo image to the promoted images.

Peers, measured in the same run on the same images: ``cp --sparse=always`` of both
disk images followed by an fsync of each copy (what a failover that copied the disks
would cost at least), and a plain sequential read of both images (8 MiB ``read``
calls, from the page cache). The design moves files and ships deltas, so every step
should cost a small fraction of one copy; no goal is set, the ratios are printed.

Environment: ``HVDR_BENCH_DISK_MIB`` (both disks together, default 1024),
``HVDR_BENCH_DIR`` (where to put the sites, default the system temporary directory).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from benchmarks.peers import cp_then_fsync
from engine.clock import SystemClock
from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore

VM = "bench"
DISK_NAMES = ("os", "data")
BLOCK_BYTES = 4096
FILL_CHUNK_BYTES = 8 * 1024 * 1024
PENDING_BLOCKS = 256  # random 4 KiB writes per disk before each step (1 MiB per disk)

Row = tuple[str, float, str]
Result = TypeVar("Result")


class Workload:
    """Random 4 KiB writes on every disk of the VM, then a flush."""

    def __init__(self, engine: ReplicationEngine, disk_bytes: int) -> None:
        self.engine = engine
        self.disk_bytes = disk_bytes
        self.generator = random.Random(2026)

    def fill(self) -> None:
        for disk in DISK_NAMES:
            for offset in range(0, self.disk_bytes, FILL_CHUNK_BYTES):
                length = min(FILL_CHUNK_BYTES, self.disk_bytes - offset)
                self.engine.write(VM, disk, offset, self.generator.randbytes(length))
        self.engine.flush(VM)

    def write(self, blocks: int = PENDING_BLOCKS) -> None:
        for disk in DISK_NAMES:
            for block in self.generator.sample(
                range(self.disk_bytes // BLOCK_BYTES), blocks
            ):
                data = self.generator.randbytes(BLOCK_BYTES)
                self.engine.write(VM, disk, block * BLOCK_BYTES, data)
        self.engine.flush(VM)


def timed(function: Callable[[], Result]) -> tuple[Result, float]:
    """Sync, then time ``function()``; return its result and the wall time."""
    os.sync()
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def round_trip(engine: ReplicationEngine, work: Workload) -> list[Row]:
    """Planned failover, commit, reverse; failback; each timed (rows to print)."""
    rows: list[Row] = []
    work.write()
    report, seconds = timed(lambda: engine.planned_failover(VM))
    final = report.final_sync
    share = "no final sync" if final is None else f"final sync {final.seconds:.3f} s"
    rows.append(("planned failover to the secondary", seconds, share))
    _, seconds = timed(lambda: engine.commit(VM))
    rows.append(("commit", seconds, "replica images moved into place"))
    work.write()
    _, seconds = timed(lambda: engine.reverse_replication(VM))
    rows.append(("reverse replication (planned)", seconds, "ships writes since commit"))
    total = 0.0
    for label, writes_first, step in (
        ("failback: planned failover", True, lambda: engine.planned_failover(VM)),
        ("failback: commit", False, lambda: engine.commit(VM)),
        ("failback: reverse", True, lambda: engine.reverse_replication(VM)),
    ):
        if writes_first:
            work.write()
        _, seconds = timed(step)
        total += seconds
        rows.append((label, seconds, ""))
    rows.append(("failback, in total", total, "the three steps above"))
    assert engine.status(VM).active_site == "primary"
    return rows


def rolled_back(engine: ReplicationEngine, work: Workload) -> list[Row]:
    """Unplanned failover to the point before the newest, and its commit."""
    work.write()
    engine.replicate(VM)
    older = engine.status(VM).recovery_points[-1].recovery_point_id
    work.write()
    engine.replicate(VM)
    _, failover_seconds = timed(lambda: engine.unplanned_failover(VM, older))
    commit, commit_seconds = timed(lambda: engine.commit(VM))
    blocks = commit.blocks_rolled_back
    return [
        ("unplanned failover, older point", failover_seconds, "source left running"),
        (
            "commit, rolling one cycle back",
            commit_seconds,
            f"{blocks:,} blocks rolled back",
        ),
    ]


def check_replica(engine: ReplicationEngine, disk_bytes: int) -> None:
    """The replica at the secondary equals the primary at a few random places."""
    store = ReplicaStore.open(engine.secondary.replicas, VM, SystemClock())
    generator = random.Random(7)
    for disk in DISK_NAMES:
        for _ in range(16):
            offset = generator.randrange(disk_bytes // BLOCK_BYTES) * BLOCK_BYTES
            expected = engine.read(VM, disk, offset, BLOCK_BYTES)
            assert store.read(disk, offset, BLOCK_BYTES) == expected, (disk, offset)


def time_cp(images: list[Path], directory: Path) -> float:
    """``cp --sparse=always`` of every image, then an fsync of each copy."""
    targets = [directory / f"cp-{image.name}" for image in images]
    os.sync()
    started = time.perf_counter()
    for image, target in zip(images, targets, strict=True):
        cp_then_fsync(image, target, sparse=True)
    seconds = time.perf_counter() - started
    for target in targets:
        target.unlink()
    return seconds


def time_read(images: list[Path]) -> float:
    """A plain sequential read of every image, 8 MiB per call."""
    started = time.perf_counter()
    for image in images:
        descriptor = os.open(image, os.O_RDONLY)
        try:
            while os.read(descriptor, FILL_CHUNK_BYTES):
                pass
        finally:
            os.close(descriptor)
    return time.perf_counter() - started


def main() -> None:
    """Take a filled VM through failover, commit and failback; print the ratios."""
    console = Console(width=120)
    total_mib = int(os.environ.get("HVDR_BENCH_DISK_MIB", "1024"))
    disk_bytes = total_mib * 1024 * 1024 // len(DISK_NAMES)
    with tempfile.TemporaryDirectory(dir=os.environ.get("HVDR_BENCH_DIR")) as name:
        directory = Path(name)
        engine = ReplicationEngine.open(directory / "primary", directory / "secondary")
        try:
            engine.create_vm(VM, dict.fromkeys(DISK_NAMES, disk_bytes))
            work = Workload(engine, disk_bytes)
            work.fill()
            os.sync()
            engine.enable_protection(VM)
            rows = round_trip(engine, work)
            check_replica(engine, disk_bytes)
            images = [engine.primary.disk_path(VM, disk) for disk in DISK_NAMES]
            cp_seconds = time_cp(images, directory)
            read_seconds = time_read(images)
            rows += rolled_back(engine, work)
        finally:
            engine.close()
    mib = disk_bytes // 2**20
    table = Table(title=f"failover, commit and failback: a VM of 2 x {mib} MiB, filled")
    for column in ("step", "seconds", "of cp", "of read", "note"):
        table.add_column(
            column, justify="left" if column in ("step", "note") else "right"
        )
    for label, seconds, note in rows:
        table.add_row(label, f"{seconds:.3f}", f"{seconds / cp_seconds:.2f}x",
                      f"{seconds / read_seconds:.2f}x", note)  # fmt: skip
    console.print(table)
    console.print(
        "peers, same run: cp --sparse=always + fsync of both images "
        f"{cp_seconds:.3f} s; "
        f"a sequential read of both (page cache) {read_seconds:.3f} s; writes before "
        f"each step: {PENDING_BLOCKS} random 4 KiB blocks per disk"
    )


if __name__ == "__main__":
    main()
