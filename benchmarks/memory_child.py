"""The child process of ``bench_peak_memory``: replicate a sparse disk, report memory.

Run by the benchmark as ``python -m benchmarks.memory_child MODE ...``, so its peak
resident set is the engine's alone (not the benchmark's, nor rich's: this module imports
only the standard library and the engine). Modes:

- ``baseline``: import the engine and report, nothing else (the floor to compare with);
- ``replicate ROOT DISK_BYTES DATA_BYTES CYCLES CHANGED_BLOCKS``: create a VM with one
  sparse disk of ``DISK_BYTES``, write ``DATA_BYTES`` of random data in 1 MiB extents
  scattered over it (the rest stays holes), enable protection, then run ``CYCLES``
  delta cycles of ``CHANGED_BLOCKS`` random 4 KiB writes each.

After each phase it samples ``VmHWM`` (the peak resident set so far) and ``VmRSS`` from
``/proc/self/status``; it prints one JSON object on its last line of output.
"""

from __future__ import annotations

import json
import random
import resource
import sys
import time
from pathlib import Path

from engine.orchestration.engine import ReplicationEngine

VM = "bench"
DISK = "data"
EXTENT_BYTES = 1024 * 1024
BLOCK_BYTES = 4096

Sample = dict[str, object]


def memory_kib() -> dict[str, int]:
    """``VmHWM`` and ``VmRSS`` of this process, in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmHWM", "VmRSS"}:
            fields[key] = int(value.split()[0])  # "  12345 kB"
    return fields


def sample(phase: str, seconds: float, **extra: object) -> Sample:
    return {"phase": phase, "seconds": seconds, **memory_kib(), **extra}


def scatter_data(engine: ReplicationEngine, disk_bytes: int, data_bytes: int) -> None:
    """Write ``data_bytes`` in 1 MiB extents at distinct random 1 MiB-aligned places."""
    generator = random.Random(1)
    extents = generator.sample(
        range(disk_bytes // EXTENT_BYTES), data_bytes // EXTENT_BYTES
    )
    for extent in sorted(extents):
        engine.write(VM, DISK, extent * EXTENT_BYTES, generator.randbytes(EXTENT_BYTES))
    engine.vm(VM).flush()


def change_blocks(
    engine: ReplicationEngine, disk_bytes: int, count: int, generator: random.Random
) -> None:
    """Rewrite ``count`` distinct random 4 KiB blocks anywhere on the disk."""
    payloads = [generator.randbytes(BLOCK_BYTES) for _ in range(64)]
    blocks = generator.sample(range(disk_bytes // BLOCK_BYTES), count)
    for index, block in enumerate(blocks):
        engine.write(VM, DISK, block * BLOCK_BYTES, payloads[index % 64])
    engine.vm(VM).flush()


def replicate(
    root: Path, disk_bytes: int, data_bytes: int, cycles: int, changed: int
) -> list[Sample]:
    """Run the workload of the ``replicate`` mode; return a sample per phase."""
    samples = [sample("engine imported", 0.0)]
    engine = ReplicationEngine.open(root / "primary", root / "secondary")
    try:
        started = time.perf_counter()
        engine.create_vm(VM, {DISK: disk_bytes})
        scatter_data(engine, disk_bytes, data_bytes)
        samples.append(sample("sparse disk written", time.perf_counter() - started))
        started = time.perf_counter()
        engine.enable_protection(VM)
        seconds = time.perf_counter() - started
        statistics = engine.statistics()
        assert statistics.transport is not None, "the in-process transport counts"
        cycles_bytes = statistics.vms[VM].bytes_shipped
        replica = engine.secondary.replicas / VM / "replica" / f"{DISK}.img"
        samples.append(
            sample(
                "enable_protection",
                seconds,
                initial_copy_bytes=statistics.transport.bytes_shipped - cycles_bytes,
                replica_allocated_bytes=replica.stat().st_blocks * 512,
            )
        )
        generator = random.Random(2)
        for cycle in range(1, cycles + 1):
            change_blocks(engine, disk_bytes, changed, generator)
            started = time.perf_counter()
            report = engine.replicate(VM)
            seconds = time.perf_counter() - started
            assert report is not None, "the cycle fell back to a resynchronisation"
            samples.append(
                sample(
                    f"delta cycle {cycle}", seconds, shipped_bytes=report.bytes_shipped
                )
            )
    finally:
        engine.close()
    return samples


def main(argv: list[str]) -> None:
    """Run the mode named by ``argv[0]``; print the samples as JSON."""
    if argv[0] == "baseline":
        samples = [sample("engine imported", 0.0)]
    elif argv[0] == "replicate":
        root, *numbers = argv[1:]
        disk_bytes, data_bytes, cycles, changed = (int(n) for n in numbers)
        samples = replicate(Path(root), disk_bytes, data_bytes, cycles, changed)
    else:
        msg = f"mode={argv[0]!r} must be one of: baseline, replicate"
        raise SystemExit(msg)
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"samples": samples, "ru_maxrss_kib": maxrss_kib}))


if __name__ == "__main__":
    main(sys.argv[1:])
