"""Guest-write stalls: how long a write waits while a cycle or an initial copy runs.

A writer thread issues tracked 4 KiB writes at random offsets of a VM's disk
(``HVDR_BENCH_DISK_MIB``, default 1024 MiB) as fast as it can, and records the latency
of each (``time.perf_counter`` around ``engine.write``). Meanwhile the main thread
runs, in turn:

1. the **initial replication** of the disk, filled with random data beforehand;
2. a **delta cycle** after 1% of the disk's blocks were rewritten;
3. a **resynchronisation** (every block's digest compared with the replica's).

Three peers, measured in the same run: the same writer with nothing else running (this
machine's scheduling and page-cache noise); the same writer while ``cp`` copies the
disk image and fsyncs it (the kernel's own I/O contention, with no Python in the
copy); and the same writer while another thread runs pure Python (the interpreter's
own floor: Python's global interpreter lock is shared by the writer and the cycle, so
a write that returns from the kernel waits up to the switch interval, 5 ms by default,
for a busy thread to let go). Printed: the longest stall and the 99.9th percentile in
each phase, and the longest time the cycle held the cut lock
(``VmStatistics.cut_seconds_max``: the only wait the engine itself imposes on writes
during a cycle). Goal (the issue's): the longest stall during the cycle stays under
10 ms; writes wait only for the cut, never for the copy or the ship and apply.

Environment: ``HVDR_BENCH_DISK_MIB``, ``HVDR_BENCH_DIR`` (where to put the sites).
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.peers import cp_then_fsync
from engine.clock import SystemClock
from engine.orchestration.engine import ReplicationEngine

VM = "bench"
DISK = "data"
BLOCK_BYTES = 4096
FILL_CHUNK_BYTES = 8 * 1024 * 1024
CHANGED_FRACTION = 0.01
GOAL_STALL_SECONDS = 0.010
BASELINE_SECONDS = 1.0


class Writer:
    """A thread writing 4 KiB blocks at random offsets, recording each latency."""

    def __init__(self, engine: ReplicationEngine, size_bytes: int, seed: int) -> None:
        self._engine = engine
        self._blocks = size_bytes // BLOCK_BYTES
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        data = self._random.randbytes(BLOCK_BYTES)
        clock = time.perf_counter
        while not self._stop.is_set():
            offset = self._random.randrange(self._blocks) * BLOCK_BYTES
            started = clock()
            self._engine.write(VM, DISK, offset, data)
            self.latencies.append(clock() - started)


def busy_python(seconds: float) -> None:
    """Keep the interpreter busy with pure Python for ``seconds``."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        for number in range(10_000):
            total += number * number
    del total


def copy_with_cp(source: Path, target: Path) -> None:
    """``cp --reflink=never`` then fsync: the kernel's own I/O, no Python in it."""
    cp_then_fsync(source, target)
    target.unlink()


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    """Measure and print the stalls."""
    console = Console()
    size_bytes = int(os.environ.get("HVDR_BENCH_DISK_MIB", "1024")) * 1024 * 1024
    base = os.environ.get("HVDR_BENCH_DIR") or None
    generator = random.Random(7)
    rows: list[tuple[str, Writer, float]] = []
    with tempfile.TemporaryDirectory(dir=base) as directory:
        root = Path(directory)
        with ReplicationEngine.open(
            root / "primary", root / "secondary", clock=SystemClock()
        ) as engine:
            engine.create_vm(VM, {DISK: size_bytes})
            for offset in range(0, size_bytes, FILL_CHUNK_BYTES):
                engine.write(VM, DISK, offset, generator.randbytes(FILL_CHUNK_BYTES))
            engine.vm(VM).flush()
            with Writer(engine, size_bytes, 1) as idle:
                time.sleep(BASELINE_SECONDS)
            rows.append(("writes alone (peer)", idle, BASELINE_SECONDS))
            with Writer(engine, size_bytes, 4) as busy:
                busy_python(BASELINE_SECONDS)
            rows.append(("beside pure Python (peer)", busy, BASELINE_SECONDS))
            image = root / "primary" / "vms" / VM / f"{DISK}.img"
            with Writer(engine, size_bytes, 6) as beside_cp:
                started = time.perf_counter()
                copy_with_cp(image, root / "cp-copy.img")
                cp_seconds = time.perf_counter() - started
            rows.append(("beside cp + fsync (peer)", beside_cp, cp_seconds))
            with Writer(engine, size_bytes, 2) as copying:
                started = time.perf_counter()
                engine.enable_protection(VM)
                copy_seconds = time.perf_counter() - started
            rows.append(("during the initial copy", copying, copy_seconds))
            blocks = size_bytes // BLOCK_BYTES
            for block in generator.sample(
                range(blocks), int(blocks * CHANGED_FRACTION)
            ):
                engine.write(VM, DISK, block * BLOCK_BYTES, generator.randbytes(4096))
            with Writer(engine, size_bytes, 3) as cycling:
                started = time.perf_counter()
                engine.replicate(VM)
                cycle_seconds = time.perf_counter() - started
            rows.append(("during a 1% delta cycle", cycling, cycle_seconds))
            cut_seconds = engine.statistics().vms[VM].cut_seconds_max
            with Writer(engine, size_bytes, 5) as comparing:
                started = time.perf_counter()
                engine.resynchronize(VM)
                resync_seconds = time.perf_counter() - started
            rows.append(("during a resynchronisation", comparing, resync_seconds))
    table = Table(title=f"guest-write stalls, {size_bytes >> 20} MiB disk")
    for column in ("while", "seconds", "writes", "p99.9 ms", "longest ms"):
        table.add_column(column, justify="right")
    for label, writer, seconds in rows:
        table.add_row(
            label,
            f"{seconds:.2f}",
            str(len(writer.latencies)),
            f"{percentile(writer.latencies, 0.999) * 1e3:.2f}",
            f"{max(writer.latencies) * 1e3:.2f}",
        )
    console.print(table)
    worst = max(rows[4][1].latencies)
    verdict = "met" if worst < GOAL_STALL_SECONDS else "NOT met"
    console.print(
        f"longest stall during the cycle: {worst * 1e3:.2f} ms "
        f"(goal < {GOAL_STALL_SECONDS * 1e3:.0f} ms: {verdict}); the cut held the "
        f"lock at most {cut_seconds * 1e3:.2f} ms; interpreter floor "
        f"{max(rows[1][1].latencies) * 1e3:.2f} ms, beside cp "
        f"{max(rows[2][1].latencies) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
