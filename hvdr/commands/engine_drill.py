"""The engine half of ``hvdr demo``: the whole protection lifecycle on real files.

Two site folders (under a temporary directory, or ``--workdir``), a VM with two sparse
disks and a guest writing versioned blocks from a background thread
(``workload.py``), so every check can say which writes each copy holds. The drill:

1. initial replication (progress bars), then delta cycles, each recovery point
   checked to hold exactly the writes up to one instant (crash consistency);
2. a test failover from an older point: the test VM reads that point, its writes
   never reach the replica while cycles go on; cleanup;
3. a planned failover (zero loss, byte for byte), commit, reverse replication (deltas
   only: no block resynchronised);
4. failback: the same back to the primary, which ends byte-identical to what the VM
   last wrote;
5. an unplanned failover with the primary crashed (``drill_unplanned.py``): the loss
   report as the target knows it (a lower bound, labelled so), the primary recovered,
   the exact loss after reconciliation against the writes the drill knows it lost,
   reverse replication with its targeted resynchronisation.

Each claim is a :class:`~hvdr.commands.verification.Check`, computed from what the
copies hold; the drill prints only figures the engine reported or the copies show.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table

from engine import (
    CycleReport,
    ReplicationEngine,
    ReplicationError,
    TransitionNotAllowed,
)
from engine.transport.interface import ReplicaTarget
from hvdr.commands import drill_unplanned
from hvdr.commands.verification import Verification
from hvdr.commands.workload import (
    BLOCK_BYTES,
    TEST_MAGIC,
    Holding,
    Workload,
    pattern,
    read_copy,
)

VM: Final = "demo"
SITES: Final = ("primary", "secondary")
DISKS: Final = {"os": 64 << 20, "data": 32 << 20}  # sparse: moderate, and fast
WRITE_INTERVAL_SECONDS: Final = 0.001  # the guest's pace: ~hundreds of writes/s
WRITES_PER_CYCLE: Final = 150  # a cycle runs once the guest wrote this many more
TEST_VM_WRITES: Final = 8


class WorkdirInUse(Exception):
    """``--workdir`` already holds sites: the drill needs fresh ones."""


def check_workdir(workdir: Path) -> None:
    """Refuse a ``--workdir`` that already holds a site: the drill creates both."""
    root = Path(workdir)
    used = [str(root / site) for site in SITES if (root / site).exists()]
    if used:
        msg = f"--workdir {str(root)!r} already holds {used}; give an empty or new "
        msg += "folder (the drill creates both sites), or remove those"
        raise WorkdirInUse(msg)


class Sites(Protocol):
    """Where the sites' replicas live when they are not in-process (``--network``)."""

    def start(self, root: Path) -> Mapping[str, ReplicaTarget]:
        """Start a replica server per site (roots under ``root``); their clients."""
        ...

    def crash(self, site: str) -> None:
        """The site's replica server dies with its hosts (SIGKILL)."""
        ...

    def recover(self, site: str) -> None:
        """The site's replica server starts again (same address)."""
        ...

    def stop(self) -> None:
        """Stop every server (SIGTERM), close the clients."""
        ...


def run_drill(
    console: Console, workdir: Path | None = None, sites: Sites | None = None
) -> Verification:
    """Run the drill in ``workdir`` (kept after) or in a temporary directory; with
    ``sites``, every replica is behind that site's replica server."""
    verification = Verification(console)
    if workdir is not None:
        check_workdir(workdir)
        Drill(console, Path(workdir), verification, sites).run()
        return verification
    with tempfile.TemporaryDirectory(prefix="hvdr-demo-") as scratch:
        Drill(console, Path(scratch), verification, sites).run()
    return verification


class Drill:
    """One run of the drill: the engine, the guest, and what was verified."""

    vm: Final = VM

    def __init__(
        self,
        console: Console,
        root: Path,
        verification: Verification,
        sites: Sites | None = None,
    ):
        self.console = console
        self.root = root
        self.sites = sites
        self.verify = verification
        self.engine: ReplicationEngine
        self.workload: Workload
        self.points: dict[tuple[str, int], Holding] = {}  # (site, point) -> held

    def run(self) -> None:
        """Every step, with the guest writing throughout; the engine closed after."""
        self.console.print(
            f"\n[bold]engine drill[/bold] on real files under {self.root}"
        )
        sizes = ", ".join(f"{disk} {size >> 20} MiB" for disk, size in DISKS.items())
        self.console.print(
            f"VM {VM!r}: disks {sizes} (sparse), a guest writing versioned 4 KiB "
            "blocks from a thread"
        )
        servers = None if self.sites is None else self.sites.start(self.root)
        try:
            self._run(servers)
        finally:
            if self.sites is not None:
                self.sites.stop()

    def crash_site(self, site: str) -> None:
        """The site's hosts go down (its replica server too, in network mode)."""
        self.engine.crash_site(site)
        if self.sites is not None:
            self.sites.crash(site)
            self.console.print(f"the {site} site's replica server was killed (SIGKILL)")

    def recover_site(self, site: str) -> dict[str, str]:
        """The site's hosts come back (its replica server first)."""
        if self.sites is not None:
            self.sites.recover(site)
            self.console.print(f"the {site} site's replica server started again")
        return self.engine.recover_site(site)

    def _run(self, servers: Mapping[str, ReplicaTarget] | None) -> None:
        with ReplicationEngine.open(
            self.root / "primary", self.root / "secondary", replica_servers=servers
        ) as engine:
            self.engine = engine
            engine.create_vm(VM, DISKS)
            self.workload = Workload(
                engine, VM, DISKS, interval_seconds=WRITE_INTERVAL_SECONDS
            )
            self.workload.start()
            error = None
            try:
                self.protect()
                self.test_failover()
                self.planned("primary", "secondary")
                self.planned("secondary", "primary")
                drill_unplanned.run(self)
            except (ReplicationError, TimeoutError) as raised:
                error = raised
                self.console.print_exception()
            finally:
                self.workload.stop()
            self.verify.check(
                "the drill ran every step without an error",
                error is None,
                "no error" if error is None else f"{type(error).__name__}: {error}",
            )
            self.check_refusals()

    # -- reading the copies ------------------------------------------------------------

    def active_copy(self) -> dict[str, bytes]:
        """The VM's disks as it reads them (the chosen point while failed over)."""

        def read(disk: str, offset: int, length: int) -> bytes:
            return self.engine.read(VM, disk, offset, length)

        return read_copy(read, DISKS)

    def point_copy(self, site: str, point: int) -> dict[str, bytes]:
        """The replica at ``site`` as of recovery point ``point``."""
        reader = self.engine.transport_towards(site).point_reader(VM, point)
        return read_copy(reader.read, DISKS)

    def image_copy(self, site: str) -> dict[str, bytes]:
        """The VM's disk image files in ``site``'s folder (``vms/<vm>/<disk>.img``)."""
        folder = self.root / site / "vms" / VM
        return {disk: (folder / f"{disk}.img").read_bytes() for disk in DISKS}

    def holding(self, copy: dict[str, bytes]) -> Holding:
        """Which writes ``copy`` holds."""
        return self.workload.holding(copy)

    # -- 1. protection and cycles ------------------------------------------------------

    def protect(self) -> None:
        """Initial replication with progress bars, while the guest writes."""
        self.section("initial replication, then delta cycles")
        before = self.workload.wait_for(100)
        with Progress(
            TextColumn("initial copy {task.description:5}"),
            BarColumn(),
            DownloadColumn(),
            console=self.console,
        ) as bar:
            tasks = {
                disk: bar.add_task(disk, total=size) for disk, size in DISKS.items()
            }

            def progress(disk: str, done: int, total: int) -> None:
                bar.update(tasks[disk], completed=done, total=total)

            self.engine.enable_protection(VM, progress=progress)
        after = self.workload.acknowledged
        first = self.engine.status(VM).recovery_points[0].recovery_point_id
        found = self.remember_point("secondary", first)
        self.console.print(
            f"recovery point {first}: {found.describe()} (the guest wrote "
            f"{after - before:,} during the copy)"
        )
        self.verify.check(
            "initial replication: the first point holds exactly the writes up to one "
            "instant during the copy",
            found.exact and before <= found.newest <= self.workload.attempted,
            f"point {first}: {found.describe()}; acknowledged before the copy "
            f"{before:,}, after {after:,}",
        )
        self.cycles("secondary", 3)

    def cycles(self, target: str, count: int) -> None:
        """``count`` delta cycles towards ``target``, each point checked."""
        table = Table(
            "cycle", "records", "bytes shipped", "recovery point", "the point holds",
            title=f"delta cycles towards the {target} site",
        )  # fmt: skip
        for _ in range(count):
            self.workload.wait_for(WRITES_PER_CYCLE)
            self.cycle(target, table)
        self.console.print(table)

    def cycle(self, target: str, table: Table | None = None) -> CycleReport:
        """One delta cycle; its point must hold exactly the writes up to its cut, and
        the cycle must carry one record per write since the previous point."""
        previous = self.newest_known(target)
        before = self.workload.acknowledged
        report = self.engine.replicate(VM)
        assert report is not None  # the guest always wrote since the last cycle
        found = self.remember_point(target, report.recovery_point_id)
        since = found.writes - previous
        if table is not None:
            table.add_row(
                str(report.cycle_id), f"{report.records:,}",
                f"{report.bytes_shipped:,}", str(report.recovery_point_id),
                found.describe(),
            )  # fmt: skip
        self.verify.check(
            f"cycle {report.cycle_id} → point {report.recovery_point_id} at the "
            f"{target}: exactly the writes up to its cut, one record per write",
            found.exact
            and before <= found.newest <= self.workload.attempted
            and report.records == since,
            f"{found.describe()}; {report.records:,} records for {since:,} writes "
            f"since the previous point",
        )
        return report

    def remember_point(self, site: str, point: int) -> Holding:
        """What point ``point`` at ``site`` holds, remembered for later checks."""
        found = self.holding(self.point_copy(site, point))
        self.points[site, point] = found
        return found

    def newest_known(self, site: str) -> int:
        """How many writes the newest point at ``site`` holds (as checked)."""
        points = self.engine.transport_towards(site).status(VM).points
        return self.points[site, points[-1].recovery_point_id].writes

    # -- 2. the test failover ----------------------------------------------------------

    def test_failover(self) -> None:
        """A test VM from an older point; its writes stay in its overlay."""
        self.section("test failover (a drill) from an older recovery point")
        points = self.engine.status(VM).recovery_points
        point = points[-2].recovery_point_id
        report = self.engine.start_test_failover(VM, point)
        test_vm = self.engine.test_vm(VM)
        seen = self.holding(read_copy(test_vm.read, DISKS))
        expected = self.points["secondary", report.recovery_point_id].newest
        self.console.print(
            f"test VM from recovery point {report.recovery_point_id} (newest: "
            f"{points[-1].recovery_point_id}): it reads {seen.describe()}"
        )
        self.verify.check(
            "test failover: the test VM reads exactly its recovery point",
            seen.exact and seen.newest == expected,
            f"test VM: {seen.describe()}; point {point}: writes 1..{expected:,}",
        )
        places = [
            self.workload.placement.place(v) for v in range(1, TEST_VM_WRITES + 1)
        ]
        for disk, block in places:
            test_vm.write(disk, block * BLOCK_BYTES, pattern(TEST_MAGIC, 0, 0, block))
        test_vm.flush()
        kept = all(
            test_vm.read(disk, block * BLOCK_BYTES, BLOCK_BYTES)
            == pattern(TEST_MAGIC, 0, 0, block)
            for disk, block in places
        )
        self.console.print(f"the test VM wrote {len(places)} blocks; cycles go on:")
        self.workload.wait_for(WRITES_PER_CYCLE)
        cycle = self.cycle("secondary")
        newest = self.point_copy("secondary", cycle.recovery_point_id)
        leaked = sum(
            newest[disk][block * BLOCK_BYTES : block * BLOCK_BYTES + len(TEST_MAGIC)]
            == TEST_MAGIC
            for disk, block in places
        )
        self.verify.check(
            "test failover: the test VM's writes never reach the replica",
            kept and leaked == 0,
            f"test VM reads back its {len(places)} blocks: {kept}; of them in point "
            f"{cycle.recovery_point_id}: {leaked}",
        )
        self.engine.cleanup_test_failover(VM)
        status = self.engine.status(VM)
        try:
            self.engine.test_vm(VM)
            gone = False
        except TransitionNotAllowed:
            gone = True
        self.verify.check(
            "test failover cleaned up: back to protected, no test VM",
            status.phase == "protected" and gone,
            f"phase {status.phase}; test VM refused after cleanup: {gone}",
        )

    # -- 3 and 4. planned failover, commit, reverse; failback --------------------------

    def planned(self, source: str, target: str) -> None:
        """Planned failover ``source`` → ``target``, commit, reverse replication."""
        back = " (failback)" if target == "primary" else ""
        self.section(f"planned failover {source} → {target}{back}")
        self.workload.wait_for(WRITES_PER_CYCLE)
        report = self.engine.planned_failover(VM)
        written = self.workload.wait_parked()
        version, refusal = self.workload.refusals[-1]
        self.console.print(
            f"the guest shut down: its write {version:,} was refused "
            f"({escape(str(refusal))})"
        )
        sync = report.final_sync
        if sync is not None:
            self.console.print(
                f"final sync: cycle {sync.cycle_id}, {sync.records:,} records, "
                f"{sync.bytes_shipped:,} bytes → point {sync.recovery_point_id}"
            )
        loss = report.loss
        assert loss is not None  # a completed failover always has its report
        self.console.print(f"loss report: {escape(loss.summary())}")
        replica_vm = self.active_copy()
        seen = self.holding(replica_vm)
        same = replica_vm == self.image_copy(source)
        self.console.print(
            f"the replica VM at the {target} site reads {seen.describe()}"
        )
        self.verify.check(
            f"planned failover{back}: zero loss, byte for byte",
            loss.exact and loss.writes_lost == 0 and seen.exact
            and seen.newest == written and same,
            f"reported: {loss.writes_lost} lost (exact: {loss.exact}); replica VM "
            f"{seen.describe()} of {written:,} acknowledged; equals the {source}'s "
            f"disks: {same}",
        )  # fmt: skip
        self.commit(source, target, written, replica_vm)
        self.reverse_deltas(target, source)

    def commit(
        self, source: str, target: str, written: int, replica_vm: dict[str, bytes]
    ) -> None:
        """Commit; after a failback the disks must be what the VM last wrote."""
        commit = self.engine.commit(VM)
        status = self.engine.status(VM)
        self.console.print(
            f"commit: {commit.recovery_points_deleted} recovery points deleted, "
            f"active site {commit.active_site}, epoch {commit.epoch}"
        )
        self.verify.check(
            f"commit at the {target}: every recovery point deleted",
            status.recovery_points == () and status.active_site == target,
            f"{commit.recovery_points_deleted} deleted, {len(status.recovery_points)} "
            f"left; active site {status.active_site}",
        )
        if target == "primary":
            disks = self.image_copy("primary")
            seen = self.holding(disks)
            self.verify.check(
                "failback: the primary's disks are byte-identical to what the VM last "
                "wrote",
                disks == replica_vm == self.image_copy(source)
                and seen.exact and seen.newest == written,
                f"primary's images: {seen.describe()}; the VM's last write "
                f"{written:,}; equal to the secondary's disks: "
                f"{disks == self.image_copy(source)}",
            )  # fmt: skip
        self.workload.resume()

    def reverse_deltas(self, active: str, target: str) -> None:
        """Reverse replication after a planned failover: deltas, no resync."""
        reverse = self.engine.reverse_replication(VM)
        blocks = 0 if reverse.resync is None else reverse.resync.blocks_sent
        self.console.print(
            f"reverse replication: {reverse.active_site} → {reverse.target_site}, "
            f"phase {reverse.phase}, first recovery point "
            f"{reverse.first_recovery_point_id}, {blocks} blocks resynchronised "
            "(the old source's disks are the replica: deltas only)"
        )
        status = self.engine.status(VM)
        self.verify.check(
            f"reverse replication {active} → {target}: 0 blocks resynchronised, "
            "protected again",
            reverse.resync is None
            and status.protected
            and status.active_site == active,
            f"blocks resynchronised {blocks}; phase {status.phase}, protected "
            f"{status.protected}, active {status.active_site}",
        )
        first = reverse.first_recovery_point_id
        assert first is not None  # decision 15: the first cycle makes the first point
        self.remember_point(target, first)
        self.cycles(target, 2)

    def check_refusals(self) -> None:
        """The guest's writes were refused exactly when the drill stopped it: by the
        model at each planned failover's shutdown, and when the primary crashed.

        A write racing ``crash_site`` is refused with whichever error the step it
        reached raises (the model's ``TransitionNotAllowed``, ``SiteUnreachable``,
        or a bare ``ReplicationError`` from the control store being closed), so the
        crash's refusal is checked to be a ``ReplicationError`` of any kind.
        """
        expected = [
            ("planned failover", TransitionNotAllowed),
            ("failback", TransitionNotAllowed),
            ("primary crash", ReplicationError),
        ]
        refusals = [refusal for _, refusal in self.workload.refusals]
        matched = len(refusals) == len(expected) and all(
            isinstance(refusal, kind)
            for refusal, (_, kind) in zip(refusals, expected, strict=False)
        )
        shown = [
            f"{moment}: {type(refusal).__name__}"
            for (moment, _), refusal in zip(expected, refusals, strict=False)
        ]
        self.verify.check(
            "the guest's writes were refused only when the VM was shut down for a "
            "failover or its site crashed",
            matched,
            f"{len(refusals)} refusals, expected {len(expected)}: {'; '.join(shown)}",
        )

    def section(self, title: str) -> None:
        """A heading."""
        self.console.rule(f"[bold]{escape(title)}[/bold]", align="left")
