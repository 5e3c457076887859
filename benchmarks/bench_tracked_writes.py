"""Tracked writes: ``TrackedDisk.write`` against plain ``os.pwrite``, same durability.

4 KiB writes at random 4 KiB-aligned offsets of a sparse disk, three durability
levels, each measured for both sides: no sync at all; ``fdatasync`` every
``SYNC_EVERY`` writes (plain: the disk; tracked: ``flush()``, i.e. log then disk); and
``fdatasync`` after every write (plain: the disk; tracked: ``durable=True``, log then
disk). Best of five rounds, interleaved. The tracked side also writes every byte a
second time (the log) and computes a CRC32C, so 1.0x is not the expectation: two
system calls per write instead of one put the ceiling near 0.5x.

Environment: ``HVDR_BENCH_WRITES`` (writes per round, default 20000; the per-write
durable level uses a tenth), ``HVDR_BENCH_DIR``. Goal: at least 0.4x plain throughput.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.log.tracked_disk import TrackedDisk
from engine.storage.disk import VirtualDisk

DISK_BYTES = 256 * 1024 * 1024
WRITE_BYTES = 4096
SYNC_EVERY = 64
ROUNDS = 5
GOAL_RATIO = 0.4

Workload = list[tuple[int, bytes]]


def make_workload(count: int, seed: int) -> Workload:
    generator = random.Random(seed)
    buffers = [generator.randbytes(WRITE_BYTES) for _ in range(64)]
    blocks = DISK_BYTES // WRITE_BYTES
    return [
        (generator.randrange(blocks) * WRITE_BYTES, buffers[index % 64])
        for index in range(count)
    ]


def run_plain(path: Path, workload: Workload, sync_every: int) -> float:
    """Plain pwrite (+ fdatasync every ``sync_every`` writes; 0 = never)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(descriptor, DISK_BYTES)
    pwrite, fdatasync = os.pwrite, os.fdatasync
    try:
        started = time.perf_counter()
        if sync_every:
            for index, (offset, data) in enumerate(workload, 1):
                pwrite(descriptor, data, offset)
                if index % sync_every == 0:
                    fdatasync(descriptor)
        else:
            for offset, data in workload:
                pwrite(descriptor, data, offset)
        return time.perf_counter() - started
    finally:
        os.close(descriptor)
        path.unlink()


def run_tracked(path: Path, workload: Workload, sync_every: int) -> float:
    """TrackedDisk writes (+ flush every ``sync_every``; 1 = durable per write)."""
    disk = VirtualDisk.create(path, DISK_BYTES)
    durable = sync_every == 1
    with TrackedDisk.start(disk, disk_id="bench", epoch=1, durable=durable) as tracked:
        write = tracked.write
        started = time.perf_counter()
        if sync_every > 1:
            for index, (offset, data) in enumerate(workload, 1):
                write(offset, data)
                if index % sync_every == 0:
                    tracked.flush()
        else:
            for offset, data in workload:
                write(offset, data)
        seconds = time.perf_counter() - started
        log_path = tracked.log.path
    path.unlink()
    log_path.unlink()
    return seconds


def best_of_both(directory: Path, workload: Workload, sync: int) -> tuple[float, float]:
    """Best plain and best tracked time; rounds interleaved to share the noise."""
    plain = tracked = float("inf")
    for _ in range(ROUNDS):
        os.sync()  # nobody pays for the previous run's writeback
        plain = min(plain, run_plain(directory / "disk.img", workload, sync))
        os.sync()
        tracked = min(tracked, run_tracked(directory / "disk.img", workload, sync))
    return plain, tracked


def main() -> None:
    """Time both sides at each durability level; print a table with ratios."""
    console = Console(width=100)
    count = int(os.environ.get("HVDR_BENCH_WRITES", "20000"))
    levels = [
        ("no fsync", 0, count),
        (f"fdatasync every {SYNC_EVERY} writes", SYNC_EVERY, count),
        ("fdatasync every write", 1, max(1, count // 10)),
    ]
    table = Table(
        title=f"{WRITE_BYTES} B random writes, {DISK_BYTES // 2**20} MiB disk"
    )
    for column in ("durability", "writes", "plain (writes/s)", "tracked (writes/s)"):
        table.add_column(column, justify="left" if column == "durability" else "right")
    table.add_column("tracked / plain", justify="right")
    ratios = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("HVDR_BENCH_DIR")) as name:
        directory = Path(name)
        for label, sync, writes in levels:
            workload = make_workload(writes, seed=writes)
            plain, tracked = best_of_both(directory, workload, sync)
            ratios.append(plain / tracked)
            table.add_row(
                label,
                str(writes),
                f"{writes / plain:,.0f}",
                f"{writes / tracked:,.0f}",
                f"{plain / tracked:.2f}x",
            )
    console.print(table)
    worst = min(ratios)
    verdict = "met" if worst >= GOAL_RATIO else "MISSED"
    console.print(
        f"goal >= {GOAL_RATIO}x plain throughput: worst {worst:.2f}x ({verdict})"
    )


if __name__ == "__main__":
    main()
