"""The crash sweeps' scenario, its oracle and the four properties checked after a crash.

One VM's life through the public engine API (``PLAN``): create, writes before
protection, enable, delta cycles, an app-consistent cycle, a forced resynchronisation,
pause, writes, resume, a cycle, disable. The resynchronisation is forced the legal
way: nine 4 KiB writes to one disk (36 KiB) outgrow its change log's limit (half of
the 64 KiB disk), so the next ``replicate`` returns None and the VM is resynchronising;
``resynchronize`` then compares and sends blocks.

Each write fills one block with its number (1, 2, ...), so the source's states form
a known sequence (``STATES``: digests of both disks together, from all zeros). A crash
sweep (``crash_sweep``) runs the scenario in a forked child that crashes at one
operation; the child reports each step and each acknowledged write (``Report``); the
parent then reopens the engine and checks:

1. every recovery point materializes to a state of the sequence (all disks at one
   cut), no later than what was written, the points in order;
2. every acknowledged write is on the source disks (a kill keeps the page cache;
   a power cut keeps only what was fsynced, so with ``durable_writes=False`` the
   engine must instead say a resynchronisation is needed if anything was lost);
3. replication resumes: following what the model allows (``status().allowed``),
   the replica becomes equal to the source, byte for byte;
4. both sites' SQLite control files pass ``PRAGMA integrity_check``.

Each failed check is a ``Problem``: (check, what failed in words that do not change
from point to point, so that a report can group them, and this point's details).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import struct
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore
from engine.testing import ManualClock

BLOCK: Final = 4096
DISKS: Final = {"data": 16 * BLOCK, "os": 16 * BLOCK}
VM: Final = "web"
REPOSITORY: Final = Path(__file__).resolve().parents[2]
SITES: Final = ("primary", "secondary")
DRIVE_STEPS_MAX: Final = 8  # steps to bring the replica back; the longest path takes 4


class Step(NamedTuple):
    """One step of the scenario: an engine call (and, for a write, where)."""

    action: str
    disk: str = ""
    block: int = 0


PLAN: Final = (
    Step("create_vm"),
    Step("write", "os", 0),
    Step("write", "data", 3),  # before protection: the initial copy carries them
    Step("enable_protection"),
    Step("write", "os", 1),
    Step("write", "data", 0),
    Step("write", "os", 1),  # the same block again: the cycle carries both records
    Step("replicate"),
    Step("write", "data", 1),
    Step("replicate_app_consistent"),
    *(Step("write", "os", block) for block in range(9)),  # 36 KiB > half of 64 KiB
    Step("replicate_over_limit"),  # returns None: the VM is resynchronising
    Step("resynchronize"),
    Step("write", "os", 3),
    Step("replicate"),
    Step("pause"),
    Step("write", "data", 5),
    Step("resume"),
    Step("replicate"),
    Step("disable"),
)

Report = Callable[[str], None]
Problem = tuple[str, str, str]  # (check, what failed: stable, detail: this point's)


def block_data(write_number: int) -> bytes:
    """The content of the ``write_number``-th write: its number, repeated."""
    return struct.pack("<I", write_number) * (BLOCK // 4)


def digest(images: Mapping[str, bytes | bytearray]) -> str:
    """One digest of all disks together (sorted by name)."""
    hasher = hashlib.sha256()
    for disk in sorted(images):
        hasher.update(images[disk])
    return hasher.hexdigest()[:16]


def _oracle() -> tuple[list[str], dict[int, int]]:
    images = {disk: bytearray(size) for disk, size in DISKS.items()}
    states = [digest(images)]
    write_of_step = {}
    for index, step in enumerate(PLAN):
        if step.action == "write":
            write_of_step[index] = len(states)
            start = step.block * BLOCK
            images[step.disk][start : start + BLOCK] = block_data(len(states))
            states.append(
                digest({disk: bytes(image) for disk, image in images.items()})
            )
    return states, write_of_step


STATES, WRITE_OF_STEP = _oracle()
"""The source's states after each write (index = writes done); step -> write number."""


def open_engine(sites: Path, *, durable_writes: bool) -> ReplicationEngine:
    """Open both sites under ``sites`` with a manual clock."""
    primary, secondary = (sites / site for site in SITES)
    return ReplicationEngine.open(
        primary, secondary, clock=ManualClock(), durable_writes=durable_writes
    )


def run_scenario(
    sites: Path,
    *,
    durable_writes: bool,
    report: Report,
    opened: Callable[[ReplicationEngine], None] | None = None,
) -> None:
    """Run ``PLAN``; report "step i" before each step and "ack n" after write n.

    ``opened`` is given the engine once it is open (to go on after a refusal).
    """
    engine = open_engine(sites, durable_writes=durable_writes)
    if opened is not None:
        opened(engine)
    for index, step in enumerate(PLAN):
        report(f"step {index}")
        action = step.action
        if action == "write":
            number = WRITE_OF_STEP[index]
            engine.write(VM, step.disk, step.block * BLOCK, block_data(number))
            report(f"ack {number}")
        elif action == "create_vm":
            engine.create_vm(VM, DISKS)
        elif action.startswith("replicate"):
            consistent = action == "replicate_app_consistent"
            cycle = engine.replicate(VM, app_consistent=consistent)
            if (cycle is None) != (action == "replicate_over_limit"):
                msg = f"step {index} ({action}) returned {cycle!r}"
                raise AssertionError(msg)
        else:
            getattr(engine, action)(VM)
    engine.close()
    report("end")


@dataclass
class Progress:
    """How far a child got: the step under way, the writes acknowledged, notes."""

    step: int = -1
    acknowledged: int = 0
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
            else:
                progress.notes.append(line)
        return progress

    @property
    def writes_possible(self) -> int:
        """The most writes the source may hold: acknowledged, plus one in flight."""
        in_flight = WRITE_OF_STEP.get(self.step) == self.acknowledged + 1
        return self.acknowledged + in_flight


def describe(error: BaseException) -> str:
    """An exception in one line: type, message, notes, and the innermost of our
    frames it passed through."""
    notes = "; ".join(getattr(error, "__notes__", ()))
    text = f"{type(error).__name__}: {error}" + (f" [{notes}]" if notes else "")
    ours = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if Path(frame.filename).is_relative_to(REPOSITORY)
    ]
    if ours:
        place = Path(ours[-1].filename).relative_to(REPOSITORY)
        text += f" (at {place}:{ours[-1].lineno} in {ours[-1].name})"
    return text.replace("\n", " | ")


def check_after_crash(
    directory: Path, progress: Progress, *, durable: bool, killed: bool
) -> list[Problem]:
    """Reopen the sites the crashed child left and check properties 1 to 4."""
    sites = directory / "sites"
    problems = check_control_files(sites)
    try:
        engine = open_engine(sites, durable_writes=durable)
    except Exception as error:  # reopening at all is a finding
        return [*problems, ("reopen", "the engine does not reopen", describe(error))]
    try:
        problems += check_points(engine, directory / "points", progress)
        problems += check_source(engine, progress, durable=durable, killed=killed)
        problems += drive_to_equality(engine)
    except Exception as error:  # any engine error is a finding
        problems.append(("recovery", "the engine raised", describe(error)))
    finally:
        with contextlib.suppress(Exception):
            engine.close()
    return problems


def check_control_files(sites: Path) -> list[Problem]:
    """(4) Both control files, as the crash left them, pass an integrity check."""
    problems = []
    for site in SITES:
        path = sites / site / "control.sqlite3"
        if path.exists():
            with contextlib.closing(sqlite3.connect(path)) as connection:
                (verdict,) = connection.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                problems.append(("(4)", f"{site} control file damaged", verdict))
    return problems


def _replica(engine: ReplicationEngine) -> ReplicaStore | None:
    if not (engine.secondary.replicas / VM / "store.json").exists():
        return None
    return ReplicaStore.open(engine.secondary.replicas, VM, ManualClock())


def check_points(
    engine: ReplicationEngine, scratch: Path, progress: Progress
) -> list[Problem]:
    """(1) Each recovery point is a cut of the source, not ahead of it, in order."""
    store = _replica(engine)
    if store is None:
        return []
    problems: list[Problem] = []
    cuts: list[tuple[int, int]] = []
    for point in store.catalogue.points:
        target = scratch / str(point.recovery_point_id)
        images = store.materialize(point.recovery_point_id, target)
        found = digest({disk: path.read_bytes() for disk, path in images.items()})
        shutil.rmtree(target)
        if found not in STATES:
            detail = f"point {point.recovery_point_id} equals none of the states"
            problems.append(
                ("(1)", "a recovery point is not a cut of the source", detail)
            )
            continue
        cuts.append((point.recovery_point_id, STATES.index(found)))
        if STATES.index(found) > progress.writes_possible:
            detail = (
                f"point {point.recovery_point_id} holds write {STATES.index(found)}"
            )
            detail += f", {progress.acknowledged} were acknowledged"
            problems.append(("(1)", "a recovery point is ahead of the writes", detail))
    if [cut for _, cut in cuts] != sorted(cut for _, cut in cuts):
        detail = f"(point, writes held): {cuts}"
        problems.append(("(1)", "recovery points are out of order", detail))
    return problems


def source_digest(engine: ReplicationEngine) -> str:
    """The digest of the source disks as the engine reads them."""
    return digest(
        {disk: engine.read(VM, disk, 0, size) for disk, size in DISKS.items()}
    )


def check_source(
    engine: ReplicationEngine, progress: Progress, *, durable: bool, killed: bool
) -> list[Problem]:
    """(2) Acknowledged writes are on the source, or the engine says some may not be."""
    if VM not in engine.vm_names():
        if progress.step > 0:  # create_vm had returned
            return [("(2)", "the VM is gone", f"after step {progress.step}")]
        return []
    found = source_digest(engine)
    if found in STATES[progress.acknowledged : progress.writes_possible + 1]:
        return []
    held = STATES.index(found) if found in STATES else "no state"
    detail = f"{progress.acknowledged} writes acknowledged, the source holds {held}"
    if killed or durable:
        return [("(2)", "an acknowledged write is missing from the source", detail)]
    status = engine.status(VM)
    noticed = status.phase == "resynchronizing" or status.log_problem is not None
    if status.phase == "unprotected" or noticed:
        return []
    what = "writes lost in the power cut and the engine sees no reason to resynchronise"
    return [("(2)", what, f"{detail}; phase {status.phase}")]


# What to call, by what the model allows, to bring the replica back (first match).
NEXT_STEP: Final = (
    ("resynchronize", "resynchronize"),
    ("resume", "resume"),
    ("continue_initial_replication", "continue_initial_replication"),
    ("enable_protection", "enable_protection"),
    ("replicate", "replicate"),
)


def drive_to_equality(engine: ReplicationEngine) -> list[Problem]:
    """(3) Do what the model allows until the replica equals the source."""
    taken: list[str] = []
    for _ in range(DRIVE_STEPS_MAX):
        if VM not in engine.vm_names():
            engine.create_vm(VM, DISKS)
            taken.append("create_vm")
            continue
        status = engine.status(VM)
        if status.phase == "protected" and _replica_equals_source(engine):
            return []  # and nothing left to ship: see _replica_equals_source
        step = next((call for name, call in NEXT_STEP if name in status.allowed), None)
        replicated_in_vain = step == "replicate" and taken[-1:] == ["replicate"]
        if step is None or replicated_in_vain:
            detail = f"phase {status.phase}, allowed {status.allowed}, after {taken}"
            detail += f"; log problem: {status.log_problem}"
            return [("(3)", "the replica never becomes equal to the source", detail)]
        getattr(engine, step)(VM)
        taken.append(step)
    detail = f"still unequal after {taken}"
    return [("(3)", "the replica never becomes equal to the source", detail)]


def _replica_equals_source(engine: ReplicationEngine) -> bool:
    """Equal bytes, with no change logged but not shipped (one would make them
    differ again: a record of a write the source never got, say)."""
    if engine.statistics().vms[VM].pending_log_records:
        return False
    store = _replica(engine)
    return store is not None and all(
        store.read(disk, 0, size) == engine.read(VM, disk, 0, size)
        for disk, size in DISKS.items()
    )
