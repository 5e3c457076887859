"""The engine half of ``hvdr demo``: protect a sample VM on real files and replicate it.

Creates two site roots in a scratch directory, a VM with two sparse disks, writes some
data, enables protection with a progress bar (the disks copied one by one), writes
more, runs delta cycles, and prints the status, the recovery points and the statistics;
then shows one refusal that comes straight from the model. Failover and failback join
this drill when the engine runs them.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table

from engine.clock import SystemClock
from engine.errors import TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore

DISKS = {"os": 64 << 20, "data": 32 << 20}
BLOCK = 4096


def run_drill(console: Console, workdir: Path | None = None) -> None:
    """Run the engine drill in ``workdir`` (a fresh temporary directory by default)."""
    with tempfile.TemporaryDirectory(prefix="hvdr-demo-") as scratch:
        root = Path(workdir) if workdir is not None else Path(scratch)
        _drill(console, root)


def _drill(console: Console, root: Path) -> None:
    rng = random.Random(2026)
    console.print(f"\n[bold]engine drill[/bold] on real files under {root}")
    with ReplicationEngine.open(root / "primary", root / "secondary") as engine:
        engine.create_vm("sample", DISKS)
        for _ in range(256):
            disk = rng.choice(sorted(DISKS))
            block = rng.randrange(DISKS[disk] // BLOCK)
            engine.write("sample", disk, block * BLOCK, rng.randbytes(BLOCK))
        with Progress(
            TextColumn("initial copy {task.description}"),
            BarColumn(),
            DownloadColumn(),
            console=console,
            transient=False,
        ) as bar:
            tasks = {
                disk: bar.add_task(disk, total=size) for disk, size in DISKS.items()
            }

            def progress(disk: str, done: int, total: int) -> None:
                bar.update(tasks[disk], completed=done, total=total)

            engine.enable_protection("sample", progress=progress)
        table = Table("cycle", "records", "bytes shipped", "recovery point")
        for _ in range(3):
            for _ in range(64):
                disk = rng.choice(sorted(DISKS))
                block = rng.randrange(DISKS[disk] // BLOCK)
                engine.write("sample", disk, block * BLOCK, rng.randbytes(BLOCK))
            report = engine.replicate("sample")
            assert report is not None
            table.add_row(
                str(report.cycle_id),
                str(report.records),
                f"{report.bytes_shipped:,}",
                str(report.recovery_point_id),
            )
        console.print(table)
        status = engine.status("sample")
        stats = engine.statistics().vms["sample"]
        console.print(
            f"status: phase={status.phase} protected={status.protected} "
            f"health={status.health} recovery points="
            f"{[point.recovery_point_id for point in status.recovery_points]} "
            f"bytes shipped={stats.bytes_shipped:,}"
        )
        same = all(
            engine.read("sample", disk, 0, size) == _replica_bytes(engine, disk, size)
            for disk, size in DISKS.items()
        )
        console.print(f"replica equals source at the last cut: {same}")
        try:
            engine.resume("sample")
        except TransitionNotAllowed as refusal:
            console.print(f"refused by the model: {escape(str(refusal))}")


def _replica_bytes(engine: ReplicationEngine, disk: str, size: int) -> bytes:
    store = ReplicaStore.open(engine.secondary.replicas, "sample", SystemClock())
    return store.read(disk, 0, size)
