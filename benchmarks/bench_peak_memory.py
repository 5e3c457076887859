"""Peak memory: replicating a large sparse disk, against a process that only imports.

A fresh child process (``benchmarks/memory_child.py``) creates a VM with one sparse
disk (``HVDR_BENCH_SPARSE_GIB``, default 4 GiB), writes ``HVDR_BENCH_DATA_MIB``
(default 64 MiB) of random data in 1 MiB extents scattered over it (the rest stays
holes), enables protection and runs ``CYCLES`` delta cycles of ``CHANGED_BLOCKS``
random 4 KiB writes each. It reports its peak resident set (``VmHWM``) after each
phase (``VmHWM``, not ``ru_maxrss``: the latter keeps the high-water mark of the
forked parent from before ``exec``, so it reads as large as this benchmark's process).
The peer, measured in the same run, is a child that only imports the engine:
the difference is what replicating costs on top of the interpreter and the imports.

Memory must not grow with the disk's size (the copy streams extents, a cycle streams
its log), so the goal is an absolute one: the child's peak resident set at most
100 MiB. The child also says how long each phase took and how many bytes the initial
copy actually moved (holes are skipped, so about the data written, not the disk size).

Environment: ``HVDR_BENCH_SPARSE_GIB`` (disk size, default 4), ``HVDR_BENCH_DATA_MIB``
(data scattered over it, default 64), ``HVDR_BENCH_DIR`` (where to put the sites).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

CYCLES = 3
CHANGED_BLOCKS = 2048  # 8 MiB of 4 KiB writes per cycle, scattered over the disk
GOAL_PEAK_MIB = 100
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_child(*arguments: str) -> tuple[dict[str, Any], float]:
    """Run ``benchmarks.memory_child`` in a fresh interpreter; return its report."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_child", *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        msg = f"child {arguments[0]!r} exited {completed.returncode}:\n"
        raise RuntimeError(msg + completed.stderr)
    report: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return report, seconds


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def phase_table(samples: list[dict[str, Any]], disk_gib: int, data_mib: int) -> Table:
    table = Table(
        title=f"replicating a {disk_gib} GiB sparse disk holding {data_mib} MiB"
    )
    for column in ("phase", "seconds", "peak so far (MiB)", "RSS after (MiB)", "moved"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for entry in samples:
        moved = entry.get("initial_copy_bytes", entry.get("shipped_bytes"))
        table.add_row(
            entry["phase"],
            f"{entry['seconds']:.3f}",
            mib(entry["VmHWM"]),
            mib(entry["VmRSS"]),
            "-" if moved is None else f"{moved / 2**20:.1f} MiB",
        )
    return table


def main() -> None:
    """Measure the baseline child, then the replicating child; print both."""
    console = Console(width=100)
    disk_gib = int(os.environ.get("HVDR_BENCH_SPARSE_GIB", "4"))
    data_mib = int(os.environ.get("HVDR_BENCH_DATA_MIB", "64"))
    baseline, _ = run_child("baseline")
    baseline_kib = baseline["samples"][-1]["VmHWM"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("HVDR_BENCH_DIR")) as name:
        report, wall_seconds = run_child(
            "replicate",
            name,
            str(disk_gib * 2**30),
            str(data_mib * 2**20),
            str(CYCLES),
            str(CHANGED_BLOCKS),
        )
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    samples = report["samples"]
    console.print(phase_table(samples, disk_gib, data_mib))
    initial = next(s for s in samples if s["phase"] == "enable_protection")
    peak_kib = max(s["VmHWM"] for s in samples)
    console.print(
        f"initial copy moved {initial['initial_copy_bytes'] / 2**20:.1f} MiB of "
        f"{disk_gib * 1024} MiB (replica allocates "
        f"{initial['replica_allocated_bytes'] / 2**20:.1f} MiB); child ran "
        f"{wall_seconds:.1f} s"
    )
    console.print(
        f"peak RSS: baseline (engine imported) {mib(baseline_kib)} MiB, replicating "
        f"{mib(peak_kib)} MiB, difference {mib(peak_kib - baseline_kib)} MiB"
    )
    console.print(
        f"cross-check, ru_maxrss: child {mib(report['ru_maxrss_kib'])} MiB, "
        f"RUSAGE_CHILDREN {mib(children_kib)} MiB (Linux keeps the high-water mark "
        "across exec, so these may also count this parent's image in the forked child)"
    )
    verdict = "PASS" if peak_kib <= GOAL_PEAK_MIB * 1024 else "MISS"
    console.print(
        f"goal peak RSS <= {GOAL_PEAK_MIB} MiB: {mib(peak_kib)} MiB ({verdict})"
    )


if __name__ == "__main__":
    main()
