"""Initial copy: ``copy_disk_image`` against ``cp --reflink=never`` on the same disks.

Two sparse disk images (half random data, half holes, in alternating 4 MiB runs) are
copied by each method in turn, five rounds (the order rotating, everything synced
before each timed run), best time kept. ``cp`` is followed by an ``fsync`` of its
target so both sides end equally durable (``copy_disk_image`` fsyncs itself). Page
cache is warm for every method alike (the sources are read once first).

Environment: ``HVDR_BENCH_DISK_BYTES`` (total of both disks, default 1 GiB),
``HVDR_BENCH_DIR`` (where to put the files, default the system temporary directory).
Goal: our throughput at least 0.8x cp's.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.peers import cp_then_fsync
from engine.storage.sparse_copy import copy_disk_image

RUN_BYTES = 4 * 1024 * 1024
ROUNDS = 5
GOAL_RATIO = 0.8


def make_disk(path: Path, size_bytes: int, seed: int) -> None:
    """A sparse image: data and holes alternate in 4 MiB runs (half data)."""
    generator = random.Random(seed)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(descriptor, size_bytes)
        for offset in range(0, size_bytes, 2 * RUN_BYTES):
            length = min(RUN_BYTES, size_bytes - offset)
            os.pwrite(descriptor, generator.randbytes(length), offset)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_all(path: Path) -> None:
    """Warm the page cache for ``path``."""
    with path.open("rb") as stream:
        while stream.read(8 * 1024 * 1024):
            pass


def ours(source: Path, target: Path) -> None:
    copy_disk_image(source, target)


def ours_without_copy_file_range(source: Path, target: Path) -> None:
    copy_disk_image(source, target, use_copy_file_range=False)


def time_method(
    method: Callable[[Path, Path], None], sources: list[Path], directory: Path
) -> float:
    targets = [directory / f"{source.stem}.copy" for source in sources]
    os.sync()  # nobody pays for the previous method's writeback
    started = time.perf_counter()
    for source, target in zip(sources, targets, strict=True):
        method(source, target)
    seconds = time.perf_counter() - started
    for source, target in zip(sources, targets, strict=True):
        assert os.path.getsize(source) == os.path.getsize(target)
        target.unlink()
    return seconds


def main() -> None:
    """Build the disks, time each method, print a table and the ratio to cp."""
    console = Console(width=100)
    total_bytes = int(os.environ.get("HVDR_BENCH_DISK_BYTES", str(1024**3)))
    disk_bytes = max(RUN_BYTES, total_bytes // 2 // 4096 * 4096)
    if shutil.which("cp") is None:
        console.print("cp not found: skipping")
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("HVDR_BENCH_DIR")) as name:
        directory = Path(name)
        sources = [directory / "os.img", directory / "data.img"]
        for seed, source in enumerate(sources):
            make_disk(source, disk_bytes, seed)
            read_all(source)
        methods: dict[str, Callable[[Path, Path], None]] = {
            "copy_disk_image (copy_file_range)": ours,
            "copy_disk_image (pread/pwrite)": ours_without_copy_file_range,
            "cp --reflink=never + fsync": cp_then_fsync,
        }
        best = dict.fromkeys(methods, float("inf"))
        labels = list(methods)
        for round_number in range(ROUNDS):
            shift = round_number % len(labels)  # rotate who goes first
            for label in labels[shift:] + labels[:shift]:
                seconds = time_method(methods[label], sources, directory)
                best[label] = min(best[label], seconds)
    logical = 2 * disk_bytes
    reference = best["cp --reflink=never + fsync"]
    table = Table(
        title=f"initial copy of 2 disks, {logical / 2**20:.0f} MiB, half holes"
    )
    for column in ("method", "best of 5 (s)", "MiB/s (logical)", "throughput vs cp"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for label, seconds in best.items():
        table.add_row(
            label,
            f"{seconds:.3f}",
            f"{logical / 2**20 / seconds:.0f}",
            f"{reference / seconds:.2f}x",
        )
    console.print(table)
    ratio = reference / best["copy_disk_image (copy_file_range)"]
    verdict = "met" if ratio >= GOAL_RATIO else "MISSED"
    console.print(f"goal >= {GOAL_RATIO}x cp throughput: {ratio:.2f}x ({verdict})")


if __name__ == "__main__":
    main()
