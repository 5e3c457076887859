"""The failover crash sweeps' scenarios, their oracle, the checks and the driver.

Three plans through the public engine API, on two disks of 64 KiB:

- ``PLANNED``: protect, versioned writes and cycles, a drill (test failover, a write
  and a cycle during it, cleanup), a planned failover in two calls
  (``-Prepare``: shutdown and final sync; then the failover), commit, writes at the
  secondary, reverse replication (deltas only), cycles, then failback: a planned
  failover in one call, commit, reverse replication again, a cycle;
- ``UNPLANNED``: protect, cycles, writes left unshipped and flushed, the primary
  crashes (``crash_site``), an unplanned failover from the older of the two newest
  points, a change of point to the newest, commit, writes, the primary comes back
  (``recover_site``: the loss is reconciled), reverse replication with its targeted
  resynchronisation, cycles, a planned failover back prepared and then cancelled
  (replication stops for good), disable, enable (now from the secondary), cycles;
- ``DIVERGENT``: protect, cycles, writes left unshipped, an unplanned failover from the
  older of the two newest points with the source still running (no shutdown asked),
  writes to that old copy (divergent: lost, never merged), commit, writes, reverse
  replication (the loss reconciled from the old copy's logs, the old copy stopped,
  the blocks that may differ resynchronised), cycles.

Write ``n`` fills one block with ``n`` (``block_data``), so every state of the VM's
disks is known: the oracle (``Oracle``) replays the plan on images in memory and lists
the *history*, the states the active copy passes through in order (one per write, and
one where a failover from an older point rolls it back); each step records the
history index it ends at, the phase it ends in and the phases it passes through.

A sweep crashes a forked child at one file operation; the child reports each step
under way (``step i``), each acknowledged write (``ack n``; a write to the old copy is
``stale n``, never part of the history) and each flush that made the writes so far
durable (``flushed n``). After a restart
(``ReplicationEngine.open``), :func:`check_after_crash` checks:

(0) the engine reopens, nothing is damaged, no operation is left pending at either
    site, and both control files pass ``PRAGMA integrity_check``;
(1) the VM's phase is one the model reaches on the step under way: the phase before
    it, after it, or one it passes through (the restart finished the operation or
    rolled it back by itself);
(2) the active copy holds one of the states the step may leave: from the state before
    the step to the state after it (a write in flight may or may not be there). Every
    write acknowledged and flushed before the crash is there; after a power cut with
    ``durable_writes=False`` an acknowledged but unflushed write may be lost only if
    the engine says a resynchronisation is needed;
(3) every recovery point at either site, materialised, is a state of the history no
    later than the crash, and the points are in history order;
(4) the lifecycle can be driven to its end (:func:`drive_to_failback`): following
    the phase, the VM reaches ``protected`` at the primary through planned failovers
    (zero loss), writing a new version in each steady phase; the primary's images
    then equal the state found after the restart plus those writes, byte for byte,
    and the replica equals them after one more cycle, every point a state. After a
    kill no resynchronisation may be needed; after a power cut or a full disk the
    model may ask for one.

Each failed check is a ``Problem`` (check, what failed in stable words, detail), as in
``crash_scenario``.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

from crash_scenario import BLOCK, DISKS, SITES, VM, Problem, Report, block_data, digest
from crash_scenario import describe as describe_error

from engine.errors import CorruptRecord, ReplicationError, TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore
from engine.source.shipping import CrashPoint
from engine.testing import ManualClock

BLOCKS: Final = DISKS["os"] // BLOCK
DRIVER_VERSION_BASE: Final = 1000  # the driver's writes: distinct from the plan's
DRIVE_STEPS_MAX: Final = 16  # the longest way to failback takes 11 steps

Images = dict[str, bytes]


class Step(NamedTuple):
    """One engine call of a plan, the phase it ends in and those it passes through."""

    action: str
    phase: str
    via: tuple[str, ...] = ()
    writes: int = 1  # write steps: how many
    point: int = 0  # unplanned_failover: which point, by position (-2: second newest)


STEADY: Final = ("protected", "reverse_replicating")

PLANNED: Final = (
    Step("create_vm", "unprotected"),
    Step("write", "unprotected", writes=2),
    Step("enable_protection", "protected", via=("initial_replication",)),
    Step("write", "protected", writes=3),
    Step("replicate", "protected"),
    Step("start_test_failover", "test_failover"),  # a drill from the latest point
    Step("write", "test_failover"),  # production goes on, and so do cycles
    Step("replicate", "test_failover"),
    Step("cleanup_test_failover", "protected"),
    Step("write", "protected", writes=2),  # left for the final sync
    Step("prepare_planned_failover", "failover_prepared"),
    Step("failover", "failed_over", via=("failing_over",)),
    Step("commit", "committed"),
    Step("write", "committed", writes=2),  # at the secondary: tracked since commit
    Step("reverse_replication", "reverse_replicating"),
    Step("write", "reverse_replicating", writes=2),
    Step("replicate", "reverse_replicating"),
    Step("write", "reverse_replicating"),
    Step("planned_failover", "failed_over", via=("failover_prepared", "failing_over")),
    Step("commit", "committed"),
    Step("reverse_replication", "protected"),
    Step("write", "protected"),
    Step("replicate", "protected"),
)

UNPLANNED: Final = (
    Step("create_vm", "unprotected"),
    Step("write", "unprotected", writes=2),
    Step("enable_protection", "protected", via=("initial_replication",)),
    Step("write", "protected", writes=2),
    Step("replicate", "protected"),
    Step("write", "protected", writes=2),
    Step("replicate", "protected"),
    Step("write", "protected", writes=2),  # never shipped: lost by the failover
    Step("flush", "protected"),
    Step("crash_site", "protected"),
    Step("unplanned_failover", "failed_over", via=("failing_over",), point=-2),
    Step("change_recovery_point", "failed_over", point=-1),  # the newest instead
    Step("commit", "committed"),
    Step("write", "committed", writes=2),
    Step("recover_site", "committed"),
    Step("reverse_replication", "reverse_replicating", via=("resynchronizing",)),
    Step("write", "reverse_replicating", writes=2),
    Step("replicate", "reverse_replicating"),
    Step("prepare_planned_failover", "failover_prepared"),
    Step("cancel_failover", "replication_stopped"),
    Step("write", "replication_stopped"),  # the VM runs again where it was
    Step("disable", "unprotected"),
    Step("enable_protection", "reverse_replicating", via=("initial_replication",)),
    Step("write", "reverse_replicating", writes=2),
    Step("replicate", "reverse_replicating"),
)

DIVERGENT: Final = (
    Step("create_vm", "unprotected"),
    Step("write", "unprotected"),
    Step("enable_protection", "protected", via=("initial_replication",)),
    Step("write", "protected", writes=2),
    Step("replicate", "protected"),
    Step("write", "protected", writes=2),
    Step("replicate", "protected"),
    Step("write", "protected", writes=2),  # never shipped: lost by the failover
    Step("unplanned_failover", "failed_over", via=("failing_over",), point=-2),
    Step("write_stale", "failed_over", writes=2),  # the old copy still runs
    Step("commit", "committed"),
    Step("write", "committed", writes=2),
    Step(
        "reverse_replication", "reverse_replicating", via=("resynchronizing",)
    ),  # reconciles, stops the old copy, resynchronises what may differ
    Step("write", "reverse_replicating", writes=2),
    Step("replicate", "reverse_replicating"),
)

#: The durable steps the other plans never take: a replica created with the first disk
#: copied (the target was down when protection was enabled), an orphan replica
#: dropped when its site comes back (disabled while it was down), and the marker of
#: distrusted logs removed by disable (a damaged log refused by the target).
DEFERRED: Final = (
    Step("create_vm", "unprotected"),
    Step("write", "unprotected"),
    Step("crash_target", "unprotected"),
    Step("enable_protection_target_down", "initial_replication"),
    Step("recover_target", "initial_replication"),
    Step("continue_initial_replication", "protected"),  # creates the replica
    Step("write", "protected", writes=2),
    Step("replicate", "protected"),
    Step("crash_target", "protected"),
    Step("disable", "unprotected"),  # the replica stays behind at the target
    Step("recover_target", "unprotected"),  # and is dropped there
    Step("enable_protection", "protected", via=("initial_replication",)),
    Step("write", "protected", writes=2),
    Step("damage_log", "protected"),
    Step("replicate_refused", "protected"),  # the logs are distrusted, durably
    Step("disable", "unprotected"),  # which removes the marker
    Step("enable_protection", "protected", via=("initial_replication",)),
    Step("write", "protected"),
    Step("replicate", "protected"),
)

PLANS: Final = {
    "planned": PLANNED,
    "unplanned": UNPLANNED,
    "divergent": DIVERGENT,
    "deferred": DEFERRED,
}
STALE_VERSION_BASE: Final = 500  # writes to the old copy: never part of the history

#: Steps after which every write so far is durable whatever ``durable_writes`` is
#: (the planned failover's shutdown flushes the disks before the final sync).
FLUSHING: Final = frozenset({"flush", "prepare_planned_failover", "planned_failover"})


def write_target(version: int) -> tuple[str, int]:
    """Where write ``version`` goes: (disk, block); later writes reuse blocks."""
    return ("os" if version % 2 else "data"), version % BLOCKS


def zero_images() -> dict[str, bytearray]:
    return {disk: bytearray(size) for disk, size in DISKS.items()}


def apply_write(images: dict[str, bytearray], version: int) -> None:
    disk, block = write_target(version)
    images[disk][block * BLOCK : (block + 1) * BLOCK] = block_data(version)


def frozen(images: Mapping[str, bytes | bytearray]) -> Images:
    return {disk: bytes(image) for disk, image in images.items()}


@dataclass
class Oracle:
    """The plan replayed on images in memory: the history and where each step ends.

    ``history[k]`` is the active copy's k-th state (``images[k]`` its bytes);
    ``end[i]`` the history index step ``i`` ends at; ``state_of_write[n]`` the index
    write ``n`` made; ``points`` the history indexes the target's points hold (to map
    ``Step.point`` onto a state).
    """

    plan: Sequence[Step]
    history: list[str] = field(default_factory=list)
    images: list[Images] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    state_of_write: dict[int, int] = field(default_factory=dict)
    write_versions: dict[int, tuple[int, ...]] = field(default_factory=dict)
    rollbacks: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        current = zero_images()
        self._append(current)
        version = 0
        points: list[int] = []  # the target's points, as history indexes
        offered: list[int] = []  # those an unplanned failover chose from
        for index, step in enumerate(self.plan):
            if step.action == "write":
                numbers = []
                for _ in range(step.writes):
                    version += 1
                    apply_write(current, version)
                    self._append(current)
                    self.state_of_write[version] = len(self.history) - 1
                    numbers.append(version)
                self.write_versions[index] = tuple(numbers)
            elif step.action in ("unplanned_failover", "change_recovery_point"):
                if step.action == "unplanned_failover":
                    offered, points = points, []
                chosen = offered[step.point]
                current = {d: bytearray(b) for d, b in self.images[chosen].items()}
                self._append(current)
                self.rollbacks.append(len(self.history) - 1)
            elif step.action in (
                "enable_protection",
                "continue_initial_replication",
                "replicate",
            ):
                points.append(len(self.history) - 1)
            elif step.action in ("commit", "disable", "cancel_failover"):
                points = []
            self.end.append(len(self.history) - 1)

    def _append(self, images: Mapping[str, bytes | bytearray]) -> None:
        self.images.append(frozen(images))
        self.history.append(digest(self.images[-1]))

    def log_damaged(self, step: int) -> bool:
        """Whether a log the plan damaged may still be there during ``step``: a
        resynchronisation is then the engine's right answer, not the crash's doing."""
        damaged = False
        for index, taken in enumerate(self.plan[: step + 1]):
            if taken.action == "damage_log":
                damaged = True
            elif taken.action == "disable" and index < step:
                damaged = False  # a finished disable deleted the logs
        return damaged

    def before(self, step: int) -> int:
        """The history index the active copy is at when step ``step`` begins."""
        return self.end[step - 1] if step > 0 else 0

    def phases(self, step: int) -> set[str]:
        """The phases a crash in step ``step`` may leave (before, through, after)."""
        if step < 0:
            return {"unprotected"}
        before = self.plan[step - 1].phase if step > 0 else "unprotected"
        return {before, *self.plan[step].via, self.plan[step].phase}


ORACLES: Final = {name: Oracle(plan) for name, plan in PLANS.items()}


# -- running a plan --------------------------------------------------------------------


def open_engine(
    sites: Path, *, durable_writes: bool, crash_point: CrashPoint | None = None
) -> ReplicationEngine:
    """Open both sites under ``sites`` with a manual clock (and the engine's named
    ``crash_point`` seam, for a sweep that crashes at its steps)."""
    primary, secondary = (sites / site for site in SITES)
    return ReplicationEngine.open(
        primary, secondary, clock=ManualClock(), durable_writes=durable_writes,
        crash_point=crash_point,
    )  # fmt: skip


def write_version(
    engine: ReplicationEngine, version: int, *, site: str | None = None
) -> None:
    disk, block = write_target(version)
    engine.write(VM, disk, block * BLOCK, block_data(version), site=site)


def run_scenario(
    name: str,
    sites: Path,
    *,
    durable_writes: bool,
    report: Report,
    opened: Callable[[ReplicationEngine], None] | None = None,
    crash_point: CrashPoint | None = None,
) -> None:
    """Run plan ``name``; report "step i" before each step, "ack n" after write n,
    "flushed n" once writes up to n are durable; check each step's phase."""
    oracle = ORACLES[name]
    engine = open_engine(sites, durable_writes=durable_writes, crash_point=crash_point)
    if opened is not None:
        opened(engine)
    acknowledged = 0
    for index, step in enumerate(oracle.plan):
        report(f"step {index}")
        if step.action == "write":
            for version in oracle.write_versions[index]:
                write_version(engine, version)
                acknowledged = version
                report(f"ack {version}")
                if durable_writes:
                    report(f"flushed {version}")
        elif step.action == "write_stale":
            for number in range(step.writes):
                version = STALE_VERSION_BASE + index * 10 + number
                write_version(engine, version, site="primary")
                report(f"stale {version}")
        else:
            _run_step(engine, step)
        if step.action in FLUSHING:
            report(f"flushed {acknowledged}")
        phase = engine.status(VM).phase
        if phase != step.phase:
            msg = f"step {index} ({step.action}) ended in {phase}, not {step.phase}"
            raise AssertionError(msg)
    engine.close()
    report("end")


def _run_step(engine: ReplicationEngine, step: Step) -> None:
    action = step.action
    if action == "create_vm":
        engine.create_vm(VM, DISKS)
    elif action == "replicate":
        if engine.replicate(VM) is None:
            msg = "replicate shipped nothing: the plan writes before each cycle"
            raise AssertionError(msg)
    elif action == "flush":
        engine.flush(VM)
    elif action == "crash_site":
        engine.crash_site("primary")
    elif action == "recover_site":
        engine.recover_site("primary")
    elif action == "crash_target":
        engine.crash_site("secondary")
    elif action == "recover_target":
        engine.recover_site("secondary")
    elif action == "enable_protection_target_down":
        with contextlib.suppress(TransitionNotAllowed):  # no disk can be copied yet
            engine.enable_protection(VM)
    elif action == "damage_log":
        _damage_log(engine)
    elif action == "replicate_refused":
        with contextlib.suppress(CorruptRecord):
            engine.replicate(VM)
        if engine.status(VM).log_problem is None:
            msg = "a cycle of a damaged log was not refused"
            raise AssertionError(msg)
    elif action == "prepare_planned_failover":
        engine.planned_failover(VM, then_fail_over=False)
    elif action == "unplanned_failover":
        points = engine.status(VM).recovery_points
        engine.unplanned_failover(VM, points[step.point].recovery_point_id)
    elif action == "change_recovery_point":
        points = engine.status(VM).recovery_points
        engine.change_recovery_point(VM, points[step.point].recovery_point_id)
    elif action == "reverse_replication":
        engine.reverse_replication(VM)
    else:
        getattr(engine, action)(VM)


def _damage_log(engine: ReplicationEngine) -> None:
    """Flip a byte of a record of the active site's newest log (a disk fault)."""
    folder = engine.sites.storage("primary").root / "vms" / VM
    log = max(folder.glob("*.hrl"), key=lambda path: path.stat().st_size)
    with log.open("r+b") as stream:
        stream.seek(log.stat().st_size - 100)
        byte = stream.read(1)
        stream.seek(-1, 1)
        stream.write(bytes([byte[0] ^ 0xFF]))


# -- what a child reported -------------------------------------------------------------


@dataclass
class Progress:
    """How far a child got: the step under way, writes acknowledged and flushed."""

    step: int = -1
    acknowledged: int = 0
    flushed: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Progress:
        progress = cls()
        for line in text.splitlines():
            word, _, rest = line.partition(" ")
            if word == "step":
                progress.step = int(rest)
            elif word == "ack":
                progress.acknowledged = int(rest)
            elif word == "flushed":
                progress.flushed = int(rest)
            else:
                progress.notes.append(line)
        return progress

    def span(self, oracle: Oracle) -> range:
        """The history indexes the active copy may be at: from the state of the last
        acknowledged write (or the step's start) to the step's end."""
        if self.step < 0:
            return range(1)
        low = oracle.before(self.step)
        if self.acknowledged:
            low = max(low, oracle.state_of_write[self.acknowledged])
        if oracle.plan[self.step].action == "write":
            written = oracle.state_of_write.get(self.acknowledged + 1)
            high = (
                low if written is None or written > oracle.end[self.step] else written
            )
        else:
            high = oracle.end[self.step]
        return range(low, high + 1)


# -- the checks ------------------------------------------------------------------------


def check_after_crash(
    name: str,
    directory: Path,
    progress: Progress,
    *,
    durable: bool,
    killed: bool,
    resync_allowed: bool | None = None,
) -> list[Problem]:
    """Reopen the sites the crashed child left and check properties 0 to 4."""
    sites = directory / "sites"
    problems = check_control_files(sites)
    try:
        engine = open_engine(sites, durable_writes=durable)
    except Exception as error:  # reopening at all is a finding
        return [*problems, ("(0)", "the engine does not reopen", describe_error(error))]
    try:
        problems += check_engine(
            name, engine, directory, progress, durable=durable, killed=killed,
            resync_allowed=(
                not killed or ORACLES[name].log_damaged(progress.step)
                if resync_allowed is None
                else resync_allowed
            ),
        )  # fmt: skip
    except Exception as error:  # any engine error is a finding
        problems.append(("recovery", "the engine raised", describe_error(error)))
    finally:
        with contextlib.suppress(Exception):
            engine.close()
    return problems


def check_engine(
    name: str,
    engine: ReplicationEngine,
    directory: Path,
    progress: Progress,
    *,
    durable: bool,
    killed: bool = True,
    resync_allowed: bool = False,
    pending_allowed: frozenset[str] = frozenset(),
) -> list[Problem]:
    """Properties 0 to 4 on an open engine (4 only when 0 to 3 hold)."""
    oracle = ORACLES[name]
    if VM not in engine.vm_names():
        if progress.step > 0:  # create_vm had returned
            return [("(0)", "the VM is gone", f"step {progress.step}")]
        return []
    problems = check_state_free(engine, pending_allowed=pending_allowed)
    if problems:
        return problems
    problems += check_phase(engine, oracle, progress)
    found = check_active(engine, oracle, progress, durable=durable, killed=killed)
    problems += found[0]
    problems += check_points(engine, directory / "points", oracle, progress)
    if not problems:
        past = frozenset(oracle.history[: progress.span(oracle)[-1] + 1])
        problems += drive_to_failback(
            engine, found[1], resync_allowed=resync_allowed, past=past
        )
    return problems


def check_control_files(sites: Path) -> list[Problem]:
    """(0) Both control files, as the crash left them, pass an integrity check."""
    problems = []
    for site in SITES:
        path = sites / site / "control.sqlite3"
        if path.exists():
            with contextlib.closing(sqlite3.connect(path)) as connection:
                (verdict,) = connection.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                problems.append(("(0)", f"{site} control file damaged", verdict))
    return problems


def up_sites(engine: ReplicationEngine) -> list[str]:
    """The sites that are up (a full disk may stop the plan while one is down)."""
    return [site for site in SITES if engine.sites.up(site)]


def check_state_free(
    engine: ReplicationEngine, *, pending_allowed: frozenset[str] = frozenset()
) -> list[Problem]:
    """(0) Nothing damaged, no operation pending at either site (but those of
    ``pending_allowed``: in the same process after a full disk, an operation never
    abandoned waits for the next one)."""
    if engine.damaged:
        detail = f"{engine.damaged}; recovered {engine.recovered}"
        return [("(0)", "the VM is damaged after the restart", detail)]
    problems: list[Problem] = []
    for site in up_sites(engine):
        control = engine.sites.storage(site).control
        if VM in control.vm_names():
            pending = control.pending_operation(VM)
            if pending is not None and pending.name not in pending_allowed:
                detail = f"{pending.name} at {site}; recovered {engine.recovered}"
                problems.append(("(0)", "an operation is left pending", detail))
    return problems


def check_phase(
    engine: ReplicationEngine, oracle: Oracle, progress: Progress
) -> list[Problem]:
    """(1) The phase is one of the step under way's."""
    phase = engine.status(VM).phase
    allowed = oracle.phases(progress.step)
    if phase in allowed:
        return []
    step = oracle.plan[progress.step].action
    detail = f"step {progress.step} ({step}): phase {phase}, expected one of "
    detail += f"{sorted(allowed)}; recovered {engine.recovered.get(VM)}"
    return [("(1)", "the phase is not one of the step's", detail)]


def active_images(engine: ReplicationEngine) -> Images:
    return {disk: engine.read(VM, disk, 0, size) for disk, size in DISKS.items()}


def check_active(
    engine: ReplicationEngine,
    oracle: Oracle,
    progress: Progress,
    *,
    durable: bool,
    killed: bool,
) -> tuple[list[Problem], Images]:
    """(2) The active copy is at a state the step may leave; returns its bytes."""
    images = active_images(engine)
    found = digest(images)
    span = progress.span(oracle)
    if any(oracle.history[k] == found for k in span):
        return [], images
    held = [k for k, state in enumerate(oracle.history) if state == found]
    detail = f"step {progress.step} ({oracle.plan[progress.step].action}): the active "
    detail += f"copy holds state {held or 'none'}, expected one of {list(span)}; "
    detail += f"{progress.acknowledged} writes acknowledged, {progress.flushed} flushed"
    strict = durable or killed
    return _unexpected_state(engine, images, oracle, progress, detail, strict)


def _unexpected_state(
    engine: ReplicationEngine,
    images: Images,
    oracle: Oracle,
    progress: Progress,
    detail: str,
    strict: bool,
) -> tuple[list[Problem], Images]:
    """(2) when the active copy is at no state of the step: a violation, unless a
    power cut without durable writes took only unflushed writes and the engine says
    a resynchronisation is needed."""
    if strict:
        what = "the active copy is not at a state of the step"
        return [("(2)", what, detail)], images
    lost = _flushed_writes_lost(images, oracle, progress)
    if lost:
        what = "a flushed write is missing from the active copy"
        return [("(2)", what, f"{detail}; flushed blocks lost: {lost}")], images
    status = engine.status(VM)
    noticed = status.phase == "resynchronizing" or status.log_problem is not None
    if noticed or status.phase == "unprotected":
        return [], images
    what = "unflushed writes lost in the power cut and no resynchronisation is due"
    return [("(2)", what, f"{detail}; phase {status.phase}")], images


def _flushed_writes_lost(
    images: Images, oracle: Oracle, progress: Progress
) -> list[str]:
    """The blocks holding bytes of no state from the last flushed one on.

    The last flushed state is that of the newest flushed write, or the newest
    rollback of a failover from an older point, whichever is later: what a power cut
    may not take (the model drops what the failover rolled back).
    """
    span = progress.span(oracle)
    low = oracle.state_of_write[progress.flushed] if progress.flushed else 0
    low = max([low, *(k for k in oracle.rollbacks if k <= span[0])])
    lost = []
    for disk, image in images.items():
        for block in range(BLOCKS):
            window = slice(block * BLOCK, (block + 1) * BLOCK)
            allowed = {oracle.images[k][disk][window] for k in range(low, span[-1] + 1)}
            if image[window] not in allowed:
                lost.append(f"{disk}:{block}")
    return lost


def _stores(engine: ReplicationEngine) -> list[tuple[str, ReplicaStore]]:
    found = []
    for site in up_sites(engine):
        replicas = engine.sites.storage(site).replicas
        if (replicas / VM / "store.json").exists():
            found.append((site, ReplicaStore.open(replicas, VM, ManualClock())))
    return found


def check_points(
    engine: ReplicationEngine, scratch: Path, oracle: Oracle, progress: Progress
) -> list[Problem]:
    """(3) Each point at either site is a state of the history, not ahead, in order.

    Every point of every store, but while failed over, at the active site, only the
    points the engine offers (``status().recovery_points``: a commit left pending
    offers only its chosen point, the newer ones may be rolled back already)."""
    problems: list[Problem] = []
    latest = progress.span(oracle)[-1]
    status = engine.status(VM)
    offered = {point.recovery_point_id for point in status.recovery_points}
    for site, store in _stores(engine):
        previous = -1
        for point in store.catalogue.points:
            hidden = point.recovery_point_id not in offered
            if status.phase == "failed_over" and site == status.active_site and hidden:
                continue
            target = scratch / f"{site}-{point.recovery_point_id}"
            paths = store.materialize(point.recovery_point_id, target)
            found = digest({disk: path.read_bytes() for disk, path in paths.items()})
            shutil.rmtree(target)
            held = [k for k in range(latest + 1) if oracle.history[k] == found]
            name = f"point {point.recovery_point_id} at {site}"
            if not held:
                ahead = found in oracle.history
                what = "ahead of the writes" if ahead else "not a state of the source"
                problems.append(("(3)", f"a recovery point is {what}", name))
                continue
            later = [k for k in held if k >= previous]
            if not later:
                detail = f"{name} holds {held}, an earlier point {previous}"
                problems.append(("(3)", "recovery points are out of order", detail))
                continue
            previous = later[0]
    return problems


# -- driving the lifecycle to its end --------------------------------------------------

#: What to call in each phase on the way to failback (the steady phases: see below).
NEXT_STEP: Final = {
    "unprotected": "enable_protection",
    "initial_replication": "continue_initial_replication",
    "resynchronizing": "resynchronize",
    "replication_paused": "resume",
    "test_failover": "cleanup_test_failover",
    "failover_prepared": "failover",
    "failing_over": "complete_failover",
    "failed_over": "commit",
    "committed": "reverse_replication",
    "replication_stopped": "disable",
    "reverse_replicating": "planned_failover",
}


def drive_to_failback(
    engine: ReplicationEngine,
    found: Images,
    *,
    resync_allowed: bool,
    past: frozenset[str] = frozenset(),
) -> list[Problem]:
    """(4) From the phase found, reach ``protected`` at the primary, writing a new
    version in each steady phase; then the images and the replica equal the
    expected bytes. A resynchronisation the model asks for in a steady phase is
    allowed only when ``resync_allowed`` (a power cut, a full disk: the logs may not
    vouch for the replica); after a kill nothing is lost and none is needed. At the
    end every recovery point must be a state of ``past`` or of the drive."""
    expected = {disk: bytearray(image) for disk, image in found.items()}
    states = {*past, digest(found)}
    taken: list[str] = []
    for site in SITES:
        if not engine.sites.up(site):  # the plan stopped while it was down
            engine.recover_site(site)
            taken.append(f"recover_site {site}")
    version = DRIVER_VERSION_BASE
    for _ in range(DRIVE_STEPS_MAX):
        status = engine.status(VM)
        if status.phase in (*STEADY, "committed") and (
            not taken or not taken[-1].startswith("write")
        ):
            version += 1
            write_version(engine, version)
            apply_write(expected, version)
            states.add(digest(expected))
            taken.append(f"write {version}")
            continue
        if status.phase == "protected" and status.active_site == "primary":
            break
        call = NEXT_STEP.get(status.phase)
        forced = call not in status.allowed and "resynchronize" in status.allowed
        if status.phase in STEADY and forced:
            if not resync_allowed:
                detail = f"phase {status.phase} at {status.active_site}, log problem "
                detail += f"{status.log_problem}, after {taken}"
                return [("(4)", "a kill forced a resynchronisation", detail)]
            call = "resynchronize"
        if call is None or call not in status.allowed:
            detail = f"phase {status.phase} at {status.active_site}, allowed "
            detail += f"{status.allowed}, after {taken}"
            return [("(4)", "the lifecycle cannot be driven to failback", detail)]
        try:
            getattr(engine, call)(VM)
        except ReplicationError as error:
            detail = f"{call} in {status.phase} after {taken}: {describe_error(error)}"
            return [("(4)", "a step towards failback was refused", detail)]
        taken.append(call)
        if call == "complete_failover":
            # Found failing over (a crash between an unplanned failover's two
            # steps): until now the old source was the active copy; the replica VM
            # starts from the chosen point, a state of the history up to the step.
            found = active_images(engine)
            if digest(found) not in past:
                detail = f"after {taken}: the replica VM runs from no state of the "
                detail += "history up to the step"
                return [("(4)", "the failover completed on no past state", detail)]
            expected = {disk: bytearray(image) for disk, image in found.items()}
            states.add(digest(found))
    else:
        return [("(4)", "failback takes too many steps", f"after {taken}")]
    return _check_end(
        engine, frozen(expected), taken, frozenset(states), resync_allowed
    )


def _check_end(
    engine: ReplicationEngine,
    expected: Images,
    taken: list[str],
    states: frozenset[str],
    resync_allowed: bool,
) -> list[Problem]:
    """Failback done: the primary's images are the expected bytes; one more cycle
    and the replica equals them; every point is one of ``states``."""
    primary = engine.sites.storage("primary")
    engine.flush(VM)
    on_disk = {disk: primary.disk_path(VM, disk).read_bytes() for disk in DISKS}
    if on_disk != expected:
        differ = [disk for disk in DISKS if on_disk[disk] != expected[disk]]
        detail = f"disks {differ} differ after {taken}"
        return [("(4)", "failback does not end on the last writes", detail)]
    try:
        engine.replicate(VM)
        status = engine.status(VM)
        if status.phase == "resynchronizing":
            if not resync_allowed:
                detail = f"log problem {status.log_problem}, after {taken}"
                return [("(4)", "a kill forced a resynchronisation", detail)]
            engine.resynchronize(VM)
    except ReplicationError as error:
        detail = f"after {taken}: {describe_error(error)}"
        return [("(4)", "the cycle after failback was refused", detail)]
    replica = engine.transport_towards("secondary").store(VM)  # type: ignore[attr-defined]
    copied = {disk: replica.read(disk, 0, size) for disk, size in DISKS.items()}
    problems: list[Problem] = []
    if copied != expected:
        problems.append(("(4)", "the replica differs after failback", f"after {taken}"))
    target = engine.transport_towards("secondary")
    for point in target.status(VM).points:
        reader = target.point_reader(VM, point.recovery_point_id)
        images = {disk: reader.read(disk, 0, size) for disk, size in DISKS.items()}
        if digest(images) not in states:
            detail = f"point {point.recovery_point_id} after {taken}"
            problems.append(("(4)", "a point after failback is no state", detail))
    return problems
