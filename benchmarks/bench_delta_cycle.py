"""Delta cycle: one ``replicate()`` after 1% of a disk changed, vs the initial copy.

A VM with one disk (``HVDR_BENCH_DISK_MIB``, default 1024 MiB) is filled with random
data in 8 MiB writes *before* protection, so the initial replication copies every
byte. ``enable_protection`` is timed (the whole initial replication: tracking started,
the image shipped, installed in the replica, the first cycle applied). Then 1% of the
disk's 4 KiB blocks, chosen at random without repeats, are rewritten through the
tracker and one ``replicate()`` is timed; this is done ``CYCLES`` times with fresh
blocks. Everything is synced before each timed step, so neither side pays for the
other's writeback; the page cache is warm for both (the data was just written).

The peer is the initial replication of the same disk, measured in the same run: a
delta cycle moves 1% of the bytes, so its cost should be near 1% of a full copy, plus
a constant per cycle. Goal: the worst delta cycle takes at most 3% of the initial
replication's time. For scale, ``cp --reflink=never`` + ``fsync`` of the same image is
timed too (printed, not a goal): it shows how much of the initial replication is
the copy itself.

Environment: ``HVDR_BENCH_DISK_MIB`` (disk size, default 1024), ``HVDR_BENCH_DIR``
(where to put the sites, default the system temporary directory).
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.peers import cp_then_fsync
from engine.binding.protected_vm import CycleReport
from engine.clock import SystemClock
from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore

VM = "bench"
DISK = "data"
FILL_CHUNK_BYTES = 8 * 1024 * 1024
BLOCK_BYTES = 4096
CHANGED_FRACTION = 0.01
CYCLES = 3
GOAL_RATIO = 0.03


def fill_disk(engine: ReplicationEngine, size_bytes: int, seed: int) -> None:
    """Write random data over the whole disk in large chunks (before protection)."""
    generator = random.Random(seed)
    for offset in range(0, size_bytes, FILL_CHUNK_BYTES):
        length = min(FILL_CHUNK_BYTES, size_bytes - offset)
        engine.write(VM, DISK, offset, generator.randbytes(length))
    engine.vm(VM).flush()


def change_blocks(
    engine: ReplicationEngine, size_bytes: int, generator: random.Random
) -> tuple[int, float]:
    """Rewrite ``CHANGED_FRACTION`` of the 4 KiB blocks; return (blocks, seconds)."""
    blocks = size_bytes // BLOCK_BYTES
    chosen = generator.sample(range(blocks), max(1, int(blocks * CHANGED_FRACTION)))
    payloads = [generator.randbytes(BLOCK_BYTES) for _ in range(64)]
    started = time.perf_counter()
    for index, block in enumerate(chosen):
        engine.write(VM, DISK, block * BLOCK_BYTES, payloads[index % 64])
    engine.vm(VM).flush()
    return len(chosen), time.perf_counter() - started


def time_initial(engine: ReplicationEngine) -> tuple[float, float]:
    """Time ``enable_protection``; return (total seconds, seconds until copied)."""
    copied_at = [0.0]

    def progress(disk: str, done: int, total: int) -> None:
        if done == total:
            copied_at[0] = time.perf_counter()

    os.sync()  # the fill's writeback is not the initial copy's cost
    started = time.perf_counter()
    engine.enable_protection(VM, progress=progress)
    seconds = time.perf_counter() - started
    return seconds, copied_at[0] - started


def time_cycle(engine: ReplicationEngine) -> tuple[CycleReport, float]:
    """Time one ``replicate()``; return its report and the wall time."""
    os.sync()  # the workload's writeback is not the cycle's cost
    started = time.perf_counter()
    report = engine.replicate(VM)
    seconds = time.perf_counter() - started
    assert report is not None, "the cycle fell back to a resynchronisation"
    return report, seconds


def time_cp(source: Path, directory: Path) -> float:
    """Time ``cp --reflink=never`` of ``source`` plus an fsync: a plain full copy."""
    target = directory / "cp-reference.img"
    os.sync()
    started = time.perf_counter()
    cp_then_fsync(source, target)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def time_floor(source: Path, directory: Path, blocks: int, seed: int) -> float:
    """Time the floor of any durable apply: ``blocks`` random 4 KiB ``pwrite``
    calls into a full copy of the image, then one ``fsync`` (no log, no undo, no
    catalogue)."""
    target = directory / "floor.img"
    subprocess.run(["cp", "--reflink=never", str(source), str(target)], check=True)
    size_bytes = target.stat().st_size
    generator = random.Random(seed)
    payload = generator.randbytes(BLOCK_BYTES)
    descriptor = os.open(target, os.O_WRONLY)
    try:
        os.fsync(descriptor)
        started = time.perf_counter()
        for _ in range(blocks):
            offset = generator.randrange(size_bytes // BLOCK_BYTES) * BLOCK_BYTES
            os.pwrite(descriptor, payload, offset)
        os.fsync(descriptor)
        seconds = time.perf_counter() - started
    finally:
        os.close(descriptor)
    target.unlink()
    return seconds


def check_replica(engine: ReplicationEngine, size_bytes: int, seed: int) -> None:
    """Spot-check that the replica equals the source at a few random places."""
    store = ReplicaStore.open(engine.secondary.replicas, VM, SystemClock())
    generator = random.Random(seed)
    for _ in range(16):
        offset = generator.randrange(size_bytes // BLOCK_BYTES) * BLOCK_BYTES
        expected = engine.read(VM, DISK, offset, BLOCK_BYTES)
        assert store.read(DISK, offset, BLOCK_BYTES) == expected, offset


def main() -> None:
    """Fill, protect (timed), change 1% and replicate (timed); print the ratios."""
    console = Console(width=100)
    size_mib = int(os.environ.get("HVDR_BENCH_DISK_MIB", "1024"))
    size_bytes = size_mib * 1024 * 1024
    generator = random.Random(2026)
    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("HVDR_BENCH_DIR")) as name:
        directory = Path(name)
        engine = ReplicationEngine.open(directory / "primary", directory / "secondary")
        try:
            engine.create_vm(VM, {DISK: size_bytes})
            fill_disk(engine, size_bytes, seed=1)
            initial, copy_seconds = time_initial(engine)
            rows.append(
                ("initial replication", "-", f"{size_mib} MiB", f"{initial:.3f}", "-")
            )
            ratios = []
            for cycle in range(1, CYCLES + 1):
                blocks, write_seconds = change_blocks(engine, size_bytes, generator)
                report, seconds = time_cycle(engine)
                assert report.records == blocks, (report.records, blocks)
                ratios.append(seconds / initial)
                rows.append(
                    (
                        f"delta cycle {cycle}",
                        f"{blocks} ({write_seconds:.2f} s to write)",
                        f"{report.bytes_shipped / 2**20:.1f} MiB",
                        f"{seconds:.3f}",
                        f"{seconds / initial:.2%}",
                    )
                )
            check_replica(engine, size_bytes, seed=3)
            image = engine.primary.disk_path(VM, DISK)
            cp_seconds = time_cp(image, directory)
            floor_seconds = time_floor(image, directory, blocks, seed=5)
        finally:
            engine.close()
    table = Table(title=f"delta cycle after 1% of a {size_mib} MiB disk changed")
    for column in ("step", "4 KiB blocks changed", "shipped", "seconds", "of initial"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"initial replication: {copy_seconds:.3f} s until the last byte was copied, "
        f"{initial - copy_seconds:.3f} s to make it durable (fsync), install it "
        "and apply the first cycle"
    )
    console.print(
        f"for reference: cp --reflink=never + fsync of the same image took "
        f"{cp_seconds:.3f} s; initial replication / cp = {initial / cp_seconds:.2f}x, "
        f"worst delta cycle / cp = {max(ratios) * initial / cp_seconds:.2%}"
    )
    worst = max(ratios)
    console.print(
        f"floor: {blocks} random 4 KiB pwrites + fsync into a plain copy took "
        f"{floor_seconds:.3f} s = {floor_seconds / initial:.2%} of the initial "
        f"replication; worst delta cycle / floor = "
        f"{worst * initial / floor_seconds:.2f}x"
    )
    verdict = "PASS" if worst <= GOAL_RATIO else "MISS"
    console.print(
        f"goal delta/initial <= {GOAL_RATIO:.0%}: worst {worst:.2%}, "
        f"first {ratios[0]:.2%} ({verdict})"
    )


if __name__ == "__main__":
    main()
