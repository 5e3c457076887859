"""Resynchronisation after an unplanned failover, against rsync's delta transfer.

**The scenario** (built once per engine run, identically, from the same seeds). A VM
with one disk (``HVDR_BENCH_DISK_MIB``, default 1024 MiB) is filled with random data
before protection and protected (the initial replication). Then 1% of its 4 KiB
blocks, distinct and chosen at random, diverge:

1. half are written at the primary, flushed, and never shipped: the primary site
   crashes (``crash_site``);
2. the secondary fails over, unplanned, to the latest point, and the failover is
   committed;
3. the other half are written at the secondary, the new source, after commit;
4. the primary comes back (``recover_site``: the loss is reconciled from its logs).

The old copy (the primary's image) and the new source's image now differ in exactly
those blocks. Both are copied aside, each into a folder of its own, so rsync starts
from the state the engine starts from.

**Three runs.** *Targeted*: ``reverse_replication`` as it is; the engine knows what may
differ (the blocks rolled back at commit, the old source's unshipped records, the new
source's log) and compares only those blocks' digests. *Fallback*: the same scenario,
but the saved block sets beside the new source's disks (``*.blocks``) are deleted
before ``reverse_replication``, as if that knowledge were lost: the engine compares
every block's digest (``full_comparison``). *Peer*: ``rsync -r -I --no-whole-file
--inplace --stats`` from the new source's folder to the old copy's, on the copies made
in the same scenario, right after the engine's run. Everything is synced before each
timed run; the page cache is warm for both (the images were just written).

**What is timed.** The whole ``reverse_replication`` call (reconciliation, adoption of
the old copy as the replica, the comparison, and the cycle shipped and applied durably
with its undo image, ending on the first recovery point), and the rsync command. rsync
does not fsync its output; the fsync of its destination is timed on its own and
printed, not counted. **Bytes**: for the engine, the sealed cycle log that travels
source to target (the differing blocks with their record headers) and the digests the
target sends the source (16 bytes per compared block); for rsync, ``Total bytes
sent`` and ``Total bytes received`` from ``--stats``. Both results are checked: the
replica at the primary, and rsync's destination, each equal the new source byte for
byte, and the engine sent exactly the diverged blocks. For scale, the floor of any
durable apply of the divergence is timed last, on rsync's destination: one ``pwrite``
per diverged block and one ``fsync``.

Goals (the issue's): targeted at most 0.1x rsync's time, fallback at most 0.8x, and
fewer bytes sent than rsync in both. Without rsync on ``PATH`` the engine runs are
still timed and printed, and the comparison is skipped with a message saying so.

Environment: ``HVDR_BENCH_DISK_MIB`` (disk size, default 1024), ``HVDR_BENCH_DIR``
(where to put the sites, default the system temporary directory).
"""

from __future__ import annotations

import filecmp
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.clock import SystemClock
from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore
from engine.source.resync import ResyncReport
from engine.storage.digests import DIGEST_BYTES

VM = "bench"
DISK = "data"
BLOCK_BYTES = 4096
FILL_CHUNK_BYTES = 8 * 1024 * 1024
DIVERGED_FRACTION = 0.01  # of the disk's blocks: half unshipped, half written after
TARGETED_GOAL = 0.1  # of rsync's time
FALLBACK_GOAL = 0.8
RSYNC = ("rsync", "-r", "-I", "--no-whole-file", "--inplace", "--stats")
RSYNC_MISSING = (
    "rsync was not found on PATH: the comparison with rsync is skipped (install it "
    "with `apt-get install rsync`; `make bench` does so where it can)"
)


@dataclass(frozen=True)
class EngineRun:
    """One timed ``reverse_replication`` and what its resynchronisation did."""

    seconds: float
    resync: ResyncReport
    shipped_bytes: int  # the sealed cycle logs, source to target
    digest_bytes: int  # the replica's digests, target to source


@dataclass(frozen=True)
class RsyncRun:
    """One timed rsync and its ``--stats``."""

    seconds: float
    fsync_seconds: float
    sent_bytes: int
    received_bytes: int
    literal_bytes: int


def build_scenario(engine: ReplicationEngine, size_bytes: int) -> list[int]:
    """Fill, protect, diverge by ``DIVERGED_FRACTION`` across an unplanned failover
    and its commit, bring the old source back (see the module's docstring); return
    the blocks that diverged."""
    generator = random.Random(2026)
    engine.create_vm(VM, {DISK: size_bytes})
    for offset in range(0, size_bytes, FILL_CHUNK_BYTES):
        length = min(FILL_CHUNK_BYTES, size_bytes - offset)
        engine.write(VM, DISK, offset, generator.randbytes(length))
    engine.flush(VM)
    os.sync()
    engine.enable_protection(VM)
    blocks = size_bytes // BLOCK_BYTES
    chosen = generator.sample(range(blocks), max(2, int(blocks * DIVERGED_FRACTION)))
    unshipped, written_after = chosen[: len(chosen) // 2], chosen[len(chosen) // 2 :]
    for block in unshipped:
        engine.write(VM, DISK, block * BLOCK_BYTES, generator.randbytes(BLOCK_BYTES))
    engine.flush(VM)
    engine.crash_site("primary")
    engine.unplanned_failover(VM)
    engine.commit(VM)
    for block in written_after:
        engine.write(VM, DISK, block * BLOCK_BYTES, generator.randbytes(BLOCK_BYTES))
    engine.flush(VM)
    engine.recover_site("primary")
    return chosen


def copy_aside(engine: ReplicationEngine, directory: Path) -> tuple[Path, Path]:
    """Copy the old copy and the new source's image into folders of their own;
    return (the new source's folder, the old copy's folder)."""
    new, old = directory / "rsync-new-source", directory / "rsync-old-copy"
    for folder, site in ((new, engine.secondary), (old, engine.primary)):
        folder.mkdir()
        shutil.copyfile(site.disk_path(VM, DISK), folder / f"{DISK}.img")
    return new, old


def forget_divergence(engine: ReplicationEngine) -> list[Path]:
    """Delete the saved block sets beside the new source's disks; return them."""
    found = sorted(engine.secondary.vm_directory(VM).glob("*.blocks"))
    assert found, "commit saved no block set beside the new source's disks"
    for path in found:
        path.unlink()
    return found


def time_reverse(engine: ReplicationEngine) -> EngineRun:
    """Time ``reverse_replication``; check its replica equals the new source."""
    os.sync()
    started = time.perf_counter()
    report = engine.reverse_replication(VM)
    seconds = time.perf_counter() - started
    resync = report.resync
    assert resync is not None, "an unplanned failover's reverse did not resynchronise"
    check_replica(engine)
    return EngineRun(
        seconds=seconds,
        resync=resync,
        shipped_bytes=sum(log.file_bytes for log in resync.sealed.values()),
        digest_bytes=resync.blocks_compared * DIGEST_BYTES,
    )


def check_replica(engine: ReplicationEngine) -> None:
    """The replica at the primary holds the new source's bytes, every one."""
    store = ReplicaStore.open(engine.primary.replicas, VM, SystemClock())
    size_bytes = engine.disk_sizes(VM)[DISK]
    for offset in range(0, size_bytes, FILL_CHUNK_BYTES):
        length = min(FILL_CHUNK_BYTES, size_bytes - offset)
        expected = engine.read(VM, DISK, offset, length)
        assert store.read(DISK, offset, length) == expected, offset


def time_rsync(new: Path, old: Path) -> RsyncRun:
    """Time rsync's delta transfer from ``new`` to ``old``; read its ``--stats``."""
    os.sync()
    started = time.perf_counter()
    completed = subprocess.run(
        [*RSYNC, f"{new}/", f"{old}/"], check=True, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    target = old / f"{DISK}.img"
    descriptor = os.open(target, os.O_RDONLY)
    try:
        started = time.perf_counter()
        os.fsync(descriptor)
        fsync_seconds = time.perf_counter() - started
    finally:
        os.close(descriptor)
    assert filecmp.cmp(new / f"{DISK}.img", target, shallow=False), "rsync differs"
    stats = completed.stdout
    return RsyncRun(
        seconds=seconds,
        fsync_seconds=fsync_seconds,
        sent_bytes=_stat(stats, "Total bytes sent"),
        received_bytes=_stat(stats, "Total bytes received"),
        literal_bytes=_stat(stats, "Literal data"),
    )


def time_floor(image: Path, blocks: list[int]) -> float:
    """The floor of any durable apply of the divergence: one ``pwrite`` per diverged
    block into a plain image, then one ``fsync`` (no log, no undo, no digests)."""
    payload = random.Random(5).randbytes(BLOCK_BYTES)
    descriptor = os.open(image, os.O_WRONLY)
    try:
        os.fsync(descriptor)
        started = time.perf_counter()
        for block in blocks:
            os.pwrite(descriptor, payload, block * BLOCK_BYTES)
        os.fsync(descriptor)
        return time.perf_counter() - started
    finally:
        os.close(descriptor)


def _stat(stats: str, label: str) -> int:
    found = re.search(rf"^{label}: ([\d,]+)", stats, re.MULTILINE)
    assert found is not None, f"rsync --stats printed no {label!r}:\n{stats}"
    return int(found.group(1).replace(",", ""))


def run_scenario(
    size_bytes: int, *, targeted: bool, rsync: bool
) -> tuple[EngineRun, RsyncRun | None, float]:
    """Build the scenario in a fresh directory, time the engine, then rsync, then
    the floor (on rsync's destination, once rsync is done with it)."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("HVDR_BENCH_DIR")) as name:
        directory = Path(name)
        engine = ReplicationEngine.open(directory / "primary", directory / "secondary")
        try:
            diverged = build_scenario(engine, size_bytes)
            new, old = copy_aside(engine, directory)
            if not targeted:
                forget_divergence(engine)
            run = time_reverse(engine)
            assert run.resync.blocks_sent == len(diverged), "not exactly the diverged"
        finally:
            engine.close()
        peer = time_rsync(new, old) if rsync else None
        return run, peer, time_floor(old / f"{DISK}.img", diverged)


RUNS = (("targeted", True, TARGETED_GOAL), ("digest fallback", False, FALLBACK_GOAL))


def verdict(label: str, run: EngineRun, peer: RsyncRun, goal: float) -> str:
    """One line: the ratios against rsync and whether each goal was met."""
    time_ratio = run.seconds / peer.seconds
    sent_ratio = run.shipped_bytes / peer.sent_bytes
    met = "met" if time_ratio <= goal else "MISSED"
    fewer = "met" if run.shipped_bytes < peer.sent_bytes else "MISSED"
    return (
        f"{label}: {time_ratio:.2f}x rsync's time, goal <= {goal}x: {met}; "
        f"{sent_ratio:.2f}x rsync's bytes sent, goal fewer: {fewer} (rsync: literal "
        f"data {peer.literal_bytes:,} B; the fsync of its destination, not counted, "
        f"{peer.fsync_seconds:.3f} s)"
    )


def add_rows(table: Table, label: str, run: EngineRun, peer: RsyncRun | None) -> None:
    """The engine's row, and rsync's from the same scenario below it."""
    resync = run.resync
    cells = [label, f"{resync.blocks_compared:,}", f"{resync.blocks_sent:,}",
             f"{run.shipped_bytes:,}", f"{run.digest_bytes:,}",
             f"{run.seconds:.3f}"]  # fmt: skip
    if peer is None:
        table.add_row(*cells, "-", "-")
        return
    table.add_row(*cells, f"{run.seconds / peer.seconds:.2f}x",
                  f"{run.shipped_bytes / peer.sent_bytes:.2f}x")  # fmt: skip
    table.add_row("  rsync", "-", "-", f"{peer.sent_bytes:,}",
                  f"{peer.received_bytes:,}", f"{peer.seconds:.3f}", "",
                  "")  # fmt: skip


def main() -> None:
    """Run the targeted and the fallback scenario, each beside rsync; print ratios."""
    console = Console(width=120)
    size_mib = int(os.environ.get("HVDR_BENCH_DISK_MIB", "1024"))
    rsync = shutil.which("rsync") is not None
    if not rsync:
        console.print(f"[bold red]{RSYNC_MISSING}")
    title = f"resynchronisation after an unplanned failover, {size_mib} MiB"
    table = Table(title=title)
    for column in ("run", "blocks compared", "blocks sent", "sent", "received",
                   "seconds", "time / rsync", "sent / rsync"):  # fmt: skip
        table.add_column(column, justify="left" if column == "run" else "right")
    verdicts, floors, runs = [], [], []
    for label, targeted, goal in RUNS:
        run, peer, floor = run_scenario(
            size_mib * 1024 * 1024, targeted=targeted, rsync=rsync
        )
        assert run.resync.full_comparison is not targeted, label
        add_rows(table, label, run, peer)
        runs.append(run)
        floors.append(floor)
        if peer is not None:
            verdicts.append(verdict(label, run, peer, goal))
    console.print(table)
    console.print(
        "sent: the engine's shipped cycle log (differing blocks and record headers), "
        "rsync's 'Total bytes sent'; received: the replica's digests (16 B per "
        "compared block), rsync's 'Total bytes received' (its block checksums)"
    )
    for line in verdicts or [RSYNC_MISSING]:
        console.print(line)
    console.print(
        f"floor of any durable apply of the {runs[0].resync.blocks_sent:,} diverged "
        f"blocks (one pwrite each into a plain image, one fsync): {min(floors):.3f} "
        f"s; targeted / floor = {runs[0].seconds / min(floors):.1f}x"
    )


if __name__ == "__main__":
    main()
