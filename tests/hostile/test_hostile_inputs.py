"""The hostile-input catalogue: one table of bad inputs, each refused and harmless.

Every row starts from a copy of a small real site pair (two 32 KiB disks), takes a
hash of every file and folder under both storage roots (disk images, change logs,
outbox and inbox, the SQLite control files, the replica's images, undo images and
catalogue), gives the engine one bad input and checks three things: the error is the
row's class of ``engine.errors`` (never a bare ``ValueError``, ``KeyError``,
``OSError`` or a traceback from deep inside), its message contains the row's words
(what was wrong, and where it matters what is allowed), and no byte changed.

Four kinds of bad input, by where they enter:

- **arguments** of the engine's front (names with ``..``, ``/``, NUL, overlong names,
  names whose derived paths are overlong, negative offsets, writes past the end of a
  disk, wrong types, recovery points that do not exist);
- **shipments** arriving at the replica interface from the other site (truncated and
  bit-flipped records, wrong sequence numbers, a log from another disk or epoch,
  oversized lengths, hostile disk names, cycle ids and paths);
- **damaged files** the engine keeps (control state, replica catalogue, images, undo
  images, change logs, the outbox): the row damages the file with the engine closed,
  and the engine must refuse with :class:`DamagedState` or :class:`CorruptRecord`, or
  take the documented verdict (the logs are untrusted: resynchronise) and say so;
  never repair the damage silently into a loss. Only the files the row names as the
  verdict's may change;
- **every operation in every wrong phase**: one row per phase of the lifecycle walk
  (``tests/phase_walk.py``, shared with ``tests/failover/test_verdicts.py``) tries
  every operation the model refuses there, with the hashes checked around each.

The SQLite ``-shm`` file is an index of the write-ahead log that readers update; it is
not state and is left out of the hashes (the ``-wal`` file is in).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import pytest
from phase_walk import OPERATIONS, VM, WALK, model_refusal, step_forward

from engine.errors import (
    CorruptRecord,
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    InvalidName,
    LogMismatch,
    RecoveryPointNotFound,
    ReplicationError,
    TransitionNotAllowed,
)
from engine.log.format import HEADER_CRC, HEADER_FIXED, RECORD_HEADER
from engine.log.writer import ChangeLog
from engine.orchestration.engine import ReplicationEngine
from engine.testing import LossyTransport, ManualClock
from engine.transport.interface import CycleShipment

BLOCK = 4096
DISK_BYTES = 8 * BLOCK
DISKS = {"os": DISK_BYTES, "data": DISK_BYTES}
SITES = ("primary", "secondary")
NOT_STATE = ("-shm",)  # SQLite's shared-memory index of the WAL (readers write it)


# -- the two sites of one case ---------------------------------------------------------


class Sites:
    """The two storage roots of one case, and the engine on them while it is open."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._engine: ReplicationEngine | None = None

    @property
    def engine(self) -> ReplicationEngine:
        """The engine on both roots, opened on first use."""
        if self._engine is None:
            self._engine = open_engine(self.root)
        return self._engine

    def close(self) -> None:
        """Close the engine if it is open."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.close()

    def path(self, site: str, *parts: str) -> Path:
        """A path under one site's storage root."""
        return self.root.joinpath(site, *parts)

    def hostile(self, name: str) -> Path:
        """A folder outside both roots for what the other site (or anyone) sends."""
        directory = self.root / "hostile" / name
        directory.mkdir(parents=True, exist_ok=True)
        return directory


def open_engine(root: Path, **options: object) -> ReplicationEngine:
    """The engine on the two roots under ``root``."""
    return ReplicationEngine.open(
        root / "primary",
        root / "secondary",
        clock=ManualClock(1000.0),
        **options,  # type: ignore[arg-type]
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every file (its SHA-256) and folder under both site roots, by relative path."""
    found: dict[str, str] = {}
    for site in SITES:
        for directory, folders, names in os.walk(root / site):
            here = Path(directory)
            for folder in folders:
                found[str((here / folder).relative_to(root)) + "/"] = "folder"
            for name in names:
                if name.endswith(NOT_STATE):
                    continue
                path = here / name
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[str(path.relative_to(root))] = digest
    return found


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The paths whose hash differs, or that appeared or vanished."""
    return sorted(
        p for p in before.keys() | after.keys() if before.get(p) != after.get(p)
    )


# -- the templates every case starts from ----------------------------------------------


def build_unprotected(root: Path) -> None:
    """A VM created, written, not protected."""
    with open_engine(root) as engine:
        engine.create_vm(VM, DISKS)
        engine.write(VM, "os", 0, b"u" * BLOCK)


def build_protected(root: Path) -> None:
    """Protected: three points, and a write still in the current log."""
    with open_engine(root) as engine:
        engine.create_vm(VM, DISKS)
        engine.write(VM, "os", 0, b"1" * BLOCK)
        engine.enable_protection(VM)
        for fill in (b"2", b"3"):
            engine.write(VM, "os", BLOCK, fill * BLOCK)
            engine.write(VM, "data", 0, fill * BLOCK)
            engine.replicate(VM)
        engine.write(VM, "data", BLOCK, b"4" * BLOCK)


def build_waiting(root: Path) -> None:
    """Protected, with a cycle cut and sealed in the outbox that the link lost."""
    build_protected(root)
    with open_engine(root, wrap_transport=LossyTransport) as engine:
        lossy = engine.transport
        assert isinstance(lossy, LossyTransport)
        lossy.drops = 1
        with pytest.raises(ReplicationError, match="link lost"):
            engine.replicate(VM)


def build_drill(root: Path) -> None:
    """A test failover running from the newest point."""
    build_protected(root)
    with open_engine(root) as engine:
        engine.start_test_failover(VM)


def build_unplanned(root: Path) -> None:
    """Failed over unplanned to the secondary with the primary crashed."""
    build_protected(root)
    with open_engine(root) as engine:
        engine.crash_site("primary")
        engine.unplanned_failover(VM)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "unprotected": build_unprotected,
    "protected": build_protected,
    "waiting": build_waiting,
    "drill": build_drill,
    "unplanned": build_unplanned,
}

#: The phase at each position of the walk (checked when the templates are built).
WALK_PHASES = (
    "unprotected", "protected", "replication_paused", "protected", "test_failover",
    "protected", "failover_prepared", "failed_over", "committed",
    "reverse_replicating", "failed_over", "committed", "protected",
    "failover_prepared", "replication_stopped", "unprotected",
)  # fmt: skip


def build_walk(directory: Path) -> list[str]:
    """Copy both sites at each position of the walk; return the phases met."""
    live = directory / "live"
    phases = []
    with open_engine(live) as engine:
        engine.create_vm(VM, DISKS)
    for index, step in enumerate([*WALK, None]):
        with open_engine(live) as engine:
            phases.append(engine.status(VM).phase)
        for site in SITES:
            shutil.copytree(live / site, directory / f"walk-{index}" / site)
        if step is not None:
            with open_engine(live) as engine:
                step_forward(engine, step, index + 1)
    return phases


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every template, built once per module (cases copy them)."""
    directory = tmp_path_factory.mktemp("templates")
    for name, build in BUILDERS.items():
        build(directory / name)
    phases = build_walk(directory)
    assert phases == list(WALK_PHASES), " ".join(phases)
    return directory


# -- hostile shipments -----------------------------------------------------------------


@dataclass(frozen=True)
class Basis:
    """What the replica of the protected template expects of the next cycle."""

    epoch: int
    next_cycle_id: int
    next_sequences: dict[str, int]


def basis(sites: Sites) -> Basis:
    """Read the replica's newest point through the replica interface."""
    status = sites.engine.transport.status(VM)
    newest = status.points[-1]
    return Basis(
        epoch=newest.epoch,
        next_cycle_id=status.last_cycle_id + 1,
        next_sequences={disk: last + 1 for disk, last in newest.last_sequences},
    )


Damage = Callable[[dict[str, bytearray]], None]
"""Edits the logs' bytes (disk -> the sealed log as written) before they are sent."""


@dataclass(frozen=True)
class Ship:
    """A cycle as a hostile or broken source could send it: valid unless told."""

    damage: Damage | None = None
    records: int = 1  # records per disk, each one block at block 0, 1, ...
    offset: int = 0  # of the first record
    epoch_delta: int = 0  # in the logs' headers and the shipment
    header_epoch_delta: int = 0  # in the logs' headers only
    sequence_delta: int = 0  # added to each log's first sequence
    disk_ids: Mapping[str, str] = field(default_factory=dict)  # header disk id
    rename: Mapping[str, str] = field(default_factory=dict)  # shipment key -> key
    drop: tuple[str, ...] = ()  # disks left out of the shipment
    extra: tuple[str, ...] = ()  # disks added (a copy of the os log)
    cycle_id: object = None  # None: the next one
    epoch: object = None  # None: the basis's (plus epoch_delta)
    last_delta: int = 0  # added to every last sequence declared
    paths: Mapping[str, Path] = field(default_factory=dict)  # disk -> sent path
    vm_name: str = VM

    def __call__(self, sites: Sites) -> object:
        """Send the cycle through the replica interface towards the secondary."""
        return sites.engine.transport.apply_cycle(self.vm_name, self.shipment(sites))

    def shipment(self, sites: Sites) -> CycleShipment:
        """Write the logs outside both roots and describe them."""
        base = basis(sites)
        epoch = base.epoch + self.epoch_delta
        directory = sites.hostile("cycle")
        raw: dict[str, bytearray] = {}
        last: dict[str, int] = {}
        for disk in DISKS:
            first = base.next_sequences[disk] + self.sequence_delta
            path = directory / f"{disk}.hrl"
            with ChangeLog.create(
                directory / f"{disk}.current",
                disk_id=self.disk_ids.get(disk, disk),
                epoch=epoch + self.header_epoch_delta,
                first_sequence=first,
            ) as log:
                for number in range(self.records):
                    log.append(
                        self.offset + number * BLOCK, bytes([65 + number]) * BLOCK
                    )
                sealed = log.seal(path)
            raw[disk] = bytearray(path.read_bytes())
            last[disk] = sealed.last_sequence + self.last_delta
        if self.damage is not None:
            self.damage(raw)
        logs: dict[str, Path] = {}
        for disk, data in raw.items():
            (directory / f"{disk}.hrl").write_bytes(bytes(data))
            logs[disk] = self.paths.get(disk, directory / f"{disk}.hrl")
        for extra in self.extra:
            logs[extra] = logs["os"]
            last[extra] = last["os"]
        for old, new in self.rename.items():
            logs[new] = logs.pop(old)
            last[new] = last.pop(old)
        for disk in self.drop:
            del logs[disk]
            del last[disk]
        return CycleShipment(
            cycle_id=base.next_cycle_id if self.cycle_id is None else self.cycle_id,  # type: ignore[arg-type]
            epoch=epoch if self.epoch is None else self.epoch,  # type: ignore[arg-type]
            app_consistent=False,
            logs=logs,
            last_sequences=last,
        )


def header_bytes(disk: str) -> int:
    """The length of a log header for ``disk``."""
    return HEADER_FIXED.size + len(disk) + HEADER_CRC.size


def on_os(edit: Callable[[bytearray], None]) -> Damage:
    """A damage applied to the os disk's log only."""

    def damage(raw: dict[str, bytearray]) -> None:
        edit(raw["os"])

    return damage


def truncate(count: int) -> Damage:
    """Cut ``count`` bytes off the end of the os log."""
    return on_os(lambda data: data.__delitem__(slice(len(data) - count, None)))


def flip(position: int) -> Damage:
    """Flip one bit at ``position`` of the os log (negative: from the end)."""

    def edit(data: bytearray) -> None:
        data[position] ^= 0x10

    return on_os(edit)


def rewrite_record(
    sequence: int | None = None,
    offset: int | None = None,
    length: int | None = None,
    *,
    index: int = 0,
    fix_crc: bool = True,
) -> Damage:
    """Rewrite fields of the os log's record ``index`` (its CRC recomputed if told)."""

    def edit(data: bytearray) -> None:
        position = header_bytes("os")
        for _ in range(index):
            _, _, size, _ = RECORD_HEADER.unpack_from(data, position)
            position += RECORD_HEADER.size + size
        old_sequence, old_offset, old_length, old_crc = RECORD_HEADER.unpack_from(
            data, position
        )
        payload = bytes(data[position + RECORD_HEADER.size :][:old_length])
        fields = (
            old_sequence if sequence is None else sequence,
            old_offset if offset is None else offset,
            old_length if length is None else length,
        )
        crc = old_crc
        if fix_crc:
            covered = struct.pack("<QQI", *fields)
            crc = google_crc32c.value(covered + payload)
        RECORD_HEADER.pack_into(data, position, *fields, crc)

    return on_os(edit)


def rewrite_header(
    *, version: int | None = None, disk_id: bytes | None = None
) -> Damage:
    """Rewrite the os log's header (its CRC recomputed, so only the field is wrong)."""

    def edit(data: bytearray) -> None:
        fixed = header_bytes("os") - HEADER_CRC.size
        magic, old_version, _, epoch, first = HEADER_FIXED.unpack_from(data, 0)
        name = data[HEADER_FIXED.size : fixed] if disk_id is None else disk_id
        header = HEADER_FIXED.pack(
            magic, old_version if version is None else version, len(name), epoch, first
        ) + bytes(name)
        header += HEADER_CRC.pack(google_crc32c.value(header))
        data[: fixed + HEADER_CRC.size] = header

    return on_os(edit)


# -- damaged files ---------------------------------------------------------------------


FileDamage = Callable[[Sites], None]


def overwrite(site: str, *parts: str, data: bytes) -> FileDamage:
    """Replace a file's bytes."""

    def damage(sites: Sites) -> None:
        sites.path(site, *parts).write_bytes(data)

    return damage


def cut_file(site: str, *parts: str, keep: float = 0.5) -> FileDamage:
    """Truncate a file to a fraction of its size."""

    def damage(sites: Sites) -> None:
        path = sites.path(site, *parts)
        with path.open("r+b") as handle:
            handle.truncate(int(path.stat().st_size * keep))

    return damage


def flip_file(site: str, *parts: str, position: int) -> FileDamage:
    """Flip one bit of a file."""

    def damage(sites: Sites) -> None:
        path = sites.path(site, *parts)
        data = bytearray(path.read_bytes())
        data[position] ^= 0x10
        path.write_bytes(bytes(data))

    return damage


def sql(site: str, statement: str) -> FileDamage:
    """Edit a site's control state with SQLite itself (a valid file, wrong content)."""

    def damage(sites: Sites) -> None:
        connection = sqlite3.connect(sites.path(site, "control.sqlite3"))
        try:
            with connection:
                connection.execute(statement)
        finally:
            connection.close()

    return damage


def edit_catalogue_disk(sites: Sites) -> None:
    """Rename a disk in the replica's catalogue to a path (valid JSON otherwise)."""
    path = sites.path("secondary", "replicas", VM, "store.json")
    path.write_bytes(path.read_bytes().replace(b'"os"', b'"../os"'))


def outbox_log(sites: Sites) -> Path:
    """The sealed os log of the cycle waiting in the outbox."""
    [cycle] = sorted(sites.path("primary", "outbox", VM).iterdir())
    return cycle / "os.hrl"


def flip_outbox_log(sites: Sites) -> None:
    """Flip a bit in the payload of the waiting cycle's data log."""
    path = outbox_log(sites).with_name("data.hrl")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))


def garble_cut_record(sites: Sites) -> None:
    """Replace the waiting cycle's cut record with something that is not JSON."""
    (outbox_log(sites).parent / "cycle.json").write_bytes(b"not json")


# -- the verdicts a damaged file may lead to -------------------------------------------


Verdict = Callable[[Sites], None]


def resynchronisation_needed(sites: Sites) -> None:
    """The logs are no longer trusted: health critical, the next cycle resyncs."""
    status = sites.engine.status(VM)
    assert status.health == "critical", status
    assert status.log_problem is not None, status
    assert sites.engine.replicate(VM) is None
    assert sites.engine.status(VM).phase == "resynchronizing"


def replica_refused(sites: Sites) -> None:
    """A damaged replica raises on every call for the VM, a cycle too."""
    with pytest.raises(DamagedState, match=r"store\.json"):
        sites.engine.replicate(VM)


def phase_kept(sites: Sites) -> None:
    """The failed operation left the VM where it was, still replicating."""
    assert sites.engine.status(VM).phase == "protected"
    sites.engine.write(VM, "os", 0, b"k" * BLOCK)
    assert sites.engine.replicate(VM) is not None


def log_problem(sites: Sites) -> str:
    """Open the engine on the damaged sites; return the log problem its status
    reports (the damage must be reported, never passed over)."""
    problem = sites.engine.status(VM).log_problem
    assert problem is not None, "the damage went unreported"
    return problem


#: What the documented verdict "the logs are untrusted" writes at the source: the
#: damaged log replaced by a fresh one, and the verdict itself.
UNTRUSTED_LOG = (
    "primary/vms/web/data.img.hrl",
    "primary/vms/web/logs-untrusted.txt",
)


# -- the table -------------------------------------------------------------------------


Attack = Callable[[Sites], object]


@dataclass(frozen=True)
class Case:
    """One bad input: where it starts, what it does, how it must be refused."""

    id: str
    start: str  # a template: BUILDERS' names or walk-<n>
    attack: Attack
    error: type[ReplicationError] | None  # None: no error, the verdict is reported
    words: tuple[str, ...]
    damage: FileDamage | None = None  # done with the engine closed, before the hash
    may_change: tuple[str, ...] = ()  # paths the documented verdict writes
    verdict: Verdict | None = None  # checked after the refusal
    opened: bool = True  # hash with the engine open (False: the attack opens it)


def write(disk: str, offset: object, data: object, vm: str = VM) -> Attack:
    return lambda s: s.engine.write(vm, disk, offset, data)  # type: ignore[arg-type]


def read(disk: str, offset: object, length: object) -> Attack:
    return lambda s: s.engine.read(VM, disk, offset, length)  # type: ignore[arg-type]


def create(name: object, disks: object) -> Attack:
    return lambda s: s.engine.create_vm(name, disks)  # type: ignore[arg-type]


def drill_write(disk: str, offset: int, data: bytes) -> Attack:
    return lambda s: s.engine.test_vm(VM).write(disk, offset, data)


def open_too_deep(sites: Sites) -> object:
    """Open a new site pair whose control files' paths are longer than SQLite opens."""
    deep = sites.hostile("d" * 200) / ("e" * 200) / ("f" * 200)
    return open_engine(deep)


HOSTILE_NAMES: dict[str, object] = {
    "dotdot": "..",
    "parent": "../escape",
    "slash": "a/b",
    "absolute": "/etc",
    "backslash": "a\\b",
    "nul": "a\x00b",
    "overlong": "v" * 65,
    "empty": "",
    "hidden": ".hidden",
    "inner-dotdot": "a..b",
    "device": "CON",
    "trailing-dot": "name.",
    "not-a-str": 7,
}

CASES: list[Case] = [
    # -- names -------------------------------------------------------------------------
    *[
        Case(f"vm-name-{key}", "protected", create(name, DISKS), InvalidName,
             ("vm_name", "allowed" if key != "device" else "device"))
        for key, name in HOSTILE_NAMES.items()
        if key not in ("not-a-str",)
    ],
    Case("vm-name-not-a-str", "protected", create(7, DISKS), InvalidName,
         ("vm_name=7", "must be a str")),
    *[
        Case(f"disk-name-{key}", "protected", create("new", {name: DISK_BYTES}),
             InvalidName, ("disk_name",))
        for key, name in HOSTILE_NAMES.items()
    ],
    Case("disk-names-differ-in-case", "protected",
         create("new", {"os": DISK_BYTES, "OS": DISK_BYTES}), InvalidConfiguration,
         ("only in case",)),
    Case("vm-name-differs-in-case", "protected", create("WEB", DISKS),
         InvalidConfiguration, ("'WEB'", "only in case")),
    Case("vm-exists", "protected", create(VM, DISKS), InvalidConfiguration,
         ("already exists",)),
    Case("site-root-too-deep", "protected", open_too_deep, InvalidConfiguration,
         ("primary_root=", "bytes long", "at most 504")),
    Case("unknown-vm", "protected", lambda s: s.engine.status("nope"),
         InvalidConfiguration, ("'nope'", "unknown", "web")),
    Case("hostile-vm-in-operation", "protected", lambda s: s.engine.replicate("../web"),
         InvalidConfiguration, ("'../web'",)),
    # -- disk sizes --------------------------------------------------------------------
    Case("disk-size-negative", "protected", create("new", {"os": -BLOCK}),
         InvalidConfiguration, ("disks['os']=-4096", "positive")),
    Case("disk-size-zero", "protected", create("new", {"os": 0}), InvalidConfiguration,
         ("disks['os']=0", "positive")),
    Case("disk-size-not-a-block-multiple", "protected", create("new", {"os": 5000}),
         InvalidConfiguration, ("5000", "multiple of block_bytes")),
    Case("disk-size-a-bool", "protected", create("new", {"os": True}),
         InvalidConfiguration, ("disks['os']=True",)),
    Case("disk-size-beyond-any-file", "protected", create("new", {"os": 2**70}),
         InvalidConfiguration, ("disks['os']",)),
    Case("disks-not-a-mapping", "protected", create("new", ["os"]),
         InvalidConfiguration, ("disks=", "mapping")),
    Case("no-disks", "protected", create("new", {}), InvalidConfiguration,
         ("at least one disk",)),
    # -- guest reads and writes --------------------------------------------------------
    Case("write-negative-offset", "protected", write("os", -BLOCK, b"x" * BLOCK),
         DiskRangeError, ("offset=-4096", "0 <= offset")),
    Case("write-past-the-end", "protected", write("os", DISK_BYTES, b"x"),
         DiskRangeError, (f"offset={DISK_BYTES}", f"size_bytes={DISK_BYTES}")),
    Case("write-straddling-the-end", "protected",
         write("os", DISK_BYTES - BLOCK, b"x" * (BLOCK + 1)), DiskRangeError,
         ("offset + length <= size_bytes",)),
    Case("write-huge-offset", "protected", write("os", 2**64, b"x"), DiskRangeError,
         ("offset=18446744073709551616",)),
    Case("write-empty", "protected", write("os", 0, b""), DiskRangeError, ("length",)),
    Case("write-offset-a-float", "protected", write("os", 0.5, b"x"),
         InvalidConfiguration, ("offset=0.5",)),
    Case("write-offset-a-bool", "protected", write("os", True, b"x"),
         InvalidConfiguration, ("offset=True",)),
    Case("write-data-a-str", "protected", write("os", 0, "text"), InvalidConfiguration,
         ("data", "str")),
    Case("write-unknown-disk", "protected", write("swap", 0, b"x"),
         InvalidConfiguration, ("'swap'", "os")),
    Case("write-hostile-disk", "protected", write("../os", 0, b"x"),
         InvalidConfiguration, ("'../os'",)),
    Case("write-unknown-site", "protected",
         lambda s: s.engine.write(VM, "os", 0, b"x", site="moon"), InvalidConfiguration,
         ("'moon'", "primary", "secondary")),
    Case("read-negative-length", "protected", read("os", 0, -1), DiskRangeError,
         ("length=-1",)),
    Case("read-past-the-end", "protected", read("os", DISK_BYTES - 1, 2),
         DiskRangeError, ("size_bytes",)),
    Case("read-negative-offset", "protected", read("os", -1, 1), DiskRangeError,
         ("offset=-1",)),
    Case("test-vm-write-past-the-end", "drill", drill_write("os", DISK_BYTES, b"x"),
         DiskRangeError, ("size",)),
    Case("test-vm-write-negative-offset", "drill", drill_write("os", -1, b"x"),
         DiskRangeError, ("offset=-1",)),
    Case("test-vm-write-unknown-disk", "drill", drill_write("swap", 0, b"x"),
         InvalidConfiguration, ("'swap'",)),
    # -- recovery points and other arguments -------------------------------------------
    Case("test-failover-point-unknown", "protected",
         lambda s: s.engine.start_test_failover(VM, 999), RecoveryPointNotFound,
         ("999",)),
    Case(
        "test-failover-point-negative",
        "protected",
        lambda s: s.engine.start_test_failover(VM, -1),
        RecoveryPointNotFound,
        ("-1",),
    ),
    Case(
        "test-failover-point-a-str",
        "protected",
        lambda s: s.engine.start_test_failover(VM, "1"),  # type: ignore[arg-type]
        InvalidConfiguration,
        ("'1'",),
    ),
    Case("change-point-unknown", "unplanned",
         lambda s: s.engine.change_recovery_point(VM, 999), RecoveryPointNotFound,
         ("999",)),
    Case("unplanned-point-unknown", "protected",
         lambda s: s.engine.unplanned_failover(VM, point=999), RecoveryPointNotFound,
         ("999",)),
    Case("unplanned-point-a-word", "protected",
         lambda s: s.engine.unplanned_failover(VM, point="oldest"),
         InvalidConfiguration, ("'oldest'", "latest")),
    Case(
        "app-consistent-not-a-bool",
        "protected",
        lambda s: s.engine.replicate(VM, app_consistent="yes"),  # type: ignore[arg-type]
        InvalidConfiguration,
        ("app_consistent='yes'",),
    ),
    Case("crash-unknown-site", "protected", lambda s: s.engine.crash_site("moon"),
         InvalidConfiguration, ("'moon'",)),
    Case("digests-bad-block-size", "protected",
         lambda s: s.engine.transport.block_digests(VM, "os", 3), InvalidConfiguration,
         ("block_bytes=3",)),
    Case("digests-negative-block", "protected",
         lambda s: s.engine.transport.block_digests(VM, "os", BLOCK, blocks=[-1]),
         DiskRangeError, ("blocks [-1]", "0 to 7")),
    Case("digests-block-past-the-end", "protected",
         lambda s: s.engine.transport.block_digests(VM, "os", BLOCK, blocks=[8]),
         DiskRangeError, ("blocks [8]", "0 to 7")),
    Case("point-reader-unknown-point", "protected",
         lambda s: s.engine.transport.point_reader(VM, 999), RecoveryPointNotFound,
         ("999",)),
    Case("point-reader-past-the-end", "protected",
         lambda s: s.engine.transport.point_reader(VM, 1).read("os", DISK_BYTES, 1),
         DiskRangeError, ("offset=32768", "offset + length <= 32768")),
    Case("replica-hostile-vm", "protected",
         lambda s: s.engine.transport.status("../primary"), InvalidName,
         ("'../primary'",)),
    Case("open-bad-block-size", "protected",
         lambda s: open_engine(s.root, block_bytes=1000),
         InvalidConfiguration, ("block_bytes=1000", "power of two"), opened=False),
    Case("open-bad-retention", "protected",
         lambda s: open_engine(s.root, retention_count=0),
         InvalidConfiguration, ("retention_count=0",), opened=False),
    # -- shipments from the other site -------------------------------------------------
    Case("log-truncated-in-payload", "protected", Ship(truncate(10)), CorruptRecord,
         ("torn payload", "os")),
    Case("log-truncated-in-record-header", "protected", Ship(truncate(BLOCK + 10)),
         CorruptRecord, ("torn record header",)),
    Case("log-truncated-at-a-record", "protected",
         Ship(truncate(RECORD_HEADER.size + BLOCK), records=2), CorruptRecord,
         ("log ends before its last sequence",)),
    Case("log-truncated-in-header", "protected",
         Ship(on_os(lambda d: d.__delitem__(slice(20, None)))), CorruptRecord,
         ("truncated header",)),
    Case("log-empty", "protected", Ship(on_os(lambda d: d.clear())), CorruptRecord,
         ("truncated header",)),
    Case("log-bit-flip-in-payload", "protected", Ship(flip(-10)), CorruptRecord,
         ("record checksum mismatch",)),
    Case("log-bit-flip-in-offset", "protected", Ship(flip(header_bytes("os") + 9)),
         CorruptRecord, ("record checksum mismatch",)),
    Case("log-bit-flip-in-header", "protected", Ship(flip(13)), CorruptRecord,
         ("header checksum mismatch",)),
    Case("log-bad-magic", "protected", Ship(flip(0)), CorruptRecord, ("bad magic",)),
    Case("log-unknown-format-version", "protected", Ship(rewrite_header(version=9)),
         CorruptRecord, ("unsupported format version",)),
    Case("log-disk-id-a-path", "protected", Ship(rewrite_header(disk_id=b"../os")),
         CorruptRecord, ("bad disk id",)),
    Case("log-sequence-gap-inside", "protected",
         Ship(rewrite_record(sequence=99, index=1), records=2), CorruptRecord,
         ("sequence gap",)),
    Case("log-skips-a-cycle", "protected", Ship(sequence_delta=1), CorruptRecord,
         ("sequence",)),
    Case("log-replays-applied-records", "protected", Ship(sequence_delta=-1),
         CorruptRecord, ("sequence",)),
    Case("log-of-another-disk", "protected", Ship(disk_ids={"os": "data"}), LogMismatch,
         ("wrong disk id", "'data'")),
    Case("logs-of-two-disks-swapped", "protected",
         Ship(disk_ids={"os": "data", "data": "os"}), LogMismatch, ("wrong disk id",)),
    Case("log-of-another-epoch", "protected", Ship(header_epoch_delta=1), LogMismatch,
         ("wrong epoch",)),
    Case("cycle-of-an-older-epoch", "protected", Ship(epoch_delta=-1), LogMismatch,
         ("epoch=0", "older than", "epoch 1")),
    Case("record-length-oversized", "protected",
         Ship(rewrite_record(length=16 * 1024 * 1024 + 1, fix_crc=False)),
         CorruptRecord, ("record length exceeds limit",)),
    Case("record-length-past-the-file", "protected",
         Ship(rewrite_record(length=BLOCK * 4)), CorruptRecord, ("torn payload",)),
    Case("record-length-zero", "protected", Ship(rewrite_record(length=0)),
         CorruptRecord, ("zero-length record",)),
    Case("record-past-the-disk-end", "protected", Ship(offset=DISK_BYTES - 1),
         CorruptRecord, ("record past disk end",)),
    Case("record-offset-negative-as-u64", "protected",
         Ship(rewrite_record(offset=2**64 - BLOCK)), CorruptRecord,
         ("record past disk end",)),
    Case("log-ends-before-declared", "protected", Ship(last_delta=1), CorruptRecord,
         ("log ends before its last sequence",)),
    Case("log-goes-past-declared", "protected", Ship(last_delta=-1, records=2),
         CorruptRecord, ("sequence",)),
    *[
        Case(f"shipment-disk-name-{key}", "protected", Ship(rename={"os": str(name)}),
             InvalidName, ("disk_name",))
        for key, name in HOSTILE_NAMES.items()
        if key not in ("not-a-str", "empty")
    ],
    Case("shipment-missing-a-disk", "protected", Ship(drop=("data",)),
         InvalidConfiguration, ("must name exactly the disks", "data")),
    Case("shipment-extra-disk", "protected", Ship(extra=("swap",)),
         InvalidConfiguration, ("must name exactly the disks", "swap")),
    Case("shipment-cycle-id-negative", "protected", Ship(cycle_id=-1),
         InvalidConfiguration, ("cycle_id=-1",)),
    Case("shipment-cycle-id-a-bool", "protected", Ship(cycle_id=True),
         InvalidConfiguration, ("cycle_id=True",)),
    Case("shipment-cycle-id-a-str", "protected", Ship(cycle_id="9"),
         InvalidConfiguration, ("cycle_id='9'",)),
    Case("shipment-cycle-id-long-gone", "protected", Ship(cycle_id=0),
         InvalidConfiguration, ("cycle_id=0", "not newer")),
    Case("shipment-epoch-negative", "protected", Ship(epoch=-1), InvalidConfiguration,
         ("epoch=-1",)),
    Case("shipment-log-missing", "protected",
         Ship(paths={"os": Path("/nonexistent/os.hrl")}), InvalidConfiguration,
         ("does not exist",)),
    Case("shipment-log-a-folder", "protected", Ship(paths={"os": Path("/")}),
         InvalidConfiguration, ("'/'",)),
    Case("shipment-for-a-hostile-vm", "protected", Ship(vm_name="../primary"),
         InvalidName, ("'../primary'",)),
    Case("shipment-for-an-unknown-vm", "protected", Ship(vm_name="nope"),
         InvalidConfiguration, ("'nope'", "no replica")),
    # -- damaged files -----------------------------------------------------------------
    Case("control-garbage", "protected", lambda s: s.engine, DamagedState,
         ("control.sqlite3",),
         damage=overwrite("primary", "control.sqlite3", data=b"\x00garbage" * 512)),
    Case("control-truncated", "protected", lambda s: s.engine, DamagedState,
         ("control.sqlite3",), damage=cut_file("primary", "control.sqlite3")),
    Case("control-empty-secondary", "protected", lambda s: s.engine, DamagedState,
         ("control.sqlite3",),
         damage=overwrite("secondary", "control.sqlite3", data=b"")),
    Case("control-unknown-phase", "protected", lambda s: s.engine.status(VM),
         DamagedState, ("phase", "bogus"),
         damage=sql("primary", "UPDATE vm SET phase = 'bogus'")),
    Case("control-hostile-vm-name", "protected", lambda s: s.engine, DamagedState,
         ("../x",), damage=sql("primary", "UPDATE vm SET name = '../x'")),
    Case("control-hostile-disk-name", "protected", lambda s: s.engine.status(VM),
         DamagedState, ("../os",),
         damage=sql("primary", "UPDATE disk SET name = '../os' WHERE name = 'os'")),
    Case("control-unknown-site", "protected", lambda s: s.engine.status(VM),
         DamagedState, ("moon",),
         damage=sql("primary", "UPDATE vm SET active_site = 'moon'")),
    Case("catalogue-garbage", "protected", lambda s: s.engine.status(VM), DamagedState,
         ("store.json",),
         damage=overwrite("secondary", "replicas", VM, "store.json", data=b"{]"),
         verdict=replica_refused),
    Case("catalogue-truncated", "protected", lambda s: s.engine.status(VM),
         DamagedState, ("store.json",),
         damage=cut_file("secondary", "replicas", VM, "store.json")),
    Case("replica-image-truncated", "protected", lambda s: s.engine.status(VM),
         DamagedState, ("os.img",),
         damage=cut_file("secondary", "replicas", VM, "replica", "os.img")),
    Case(
        "undo-image-bit-flip",
        "protected",
        lambda s: s.engine.start_test_failover(VM, 1),
        DamagedState,
        ("1.undo",),
        damage=flip_file("secondary", "replicas", VM, "undo", "1.undo", position=40),
        # The model allowed the drill, so the journal records it, abandoned; the
        # drill area's (empty) folder stays.
        may_change=("secondary/control.sqlite3", "secondary/drills/"),
        verdict=phase_kept,
    ),
    Case("catalogue-hostile-disk-name", "protected", lambda s: s.engine.status(VM),
         DamagedState, ("store.json", "../os"), damage=edit_catalogue_disk),
    # An unreadable marker says nothing of the host's boot: the logs may miss
    # records, so they are untrusted (docs: the engine's unclean-shutdown rule).
    Case("tracking-marker-garbage", "protected", log_problem, None,
         ("unclean shutdown", "resynchronisation needed"),
         damage=overwrite("primary", "vms", VM, "tracking-open.json", data=b"\xff{"),
         may_change=("primary/vms/web/tracking-open.json", *UNTRUSTED_LOG),
         verdict=resynchronisation_needed),
    Case("source-disk-truncated", "protected", lambda s: s.engine.status(VM),
         DamagedState, ("os.img",), damage=cut_file("primary", "vms", VM, "os.img")),
    Case("current-log-header-damaged", "protected", log_problem, None,
         ("header checksum mismatch",),
         damage=flip_file("primary", "vms", VM, "data.img.hrl", position=13),
         may_change=UNTRUSTED_LOG, verdict=resynchronisation_needed),
    Case("current-log-torn-tail", "protected", log_problem, None,
         ("torn payload", "bytes dropped"),
         damage=cut_file("primary", "vms", VM, "data.img.hrl", keep=0.9),
         may_change=UNTRUSTED_LOG, verdict=resynchronisation_needed),
    Case(
        "outbox-log-bit-flip",
        "waiting",
        lambda s: s.engine.replicate(VM),
        CorruptRecord,
        ("record checksum mismatch", "data.hrl"),
        damage=flip_outbox_log,
        verdict=resynchronisation_needed,
        # The verdict: the refused cycle is dropped from the outbox (its writes are
        # on the source's disks), the logs marked untrusted, the attempt journaled.
        may_change=(
            "primary/control.sqlite3",
            "primary/vms/web/logs-untrusted.txt",
            *[
                f"primary/outbox/web/cycle-4/{name}"
                for name in ("", "cycle.json", "data.hrl", "os.hrl")
            ],
        ),
    ),
    Case("outbox-cut-record-garbage", "waiting", log_problem, None, ("cycle.json",),
         damage=garble_cut_record, verdict=resynchronisation_needed),
]  # fmt: skip


def walk_case(index: int, phase: str) -> Case:
    """Every operation the model refuses at this position of the walk."""
    return Case(f"every-wrong-operation-in-{phase}-{index}", f"walk-{index}",
                every_refused_operation, TransitionNotAllowed, ())  # fmt: skip


def every_refused_operation(sites: Sites) -> object:
    """Try each refused operation with the hashes checked around it; raise the last."""
    engine = sites.engine
    phase = engine.status(VM).phase
    last: TransitionNotAllowed | None = None
    for name, (action, call) in OPERATIONS.items():
        refusal = model_refusal(engine, action)
        if refusal is None:
            continue
        before = snapshot(sites.root)
        with pytest.raises(TransitionNotAllowed) as refused:
            call(engine)
        message = str(refused.value)
        assert refusal in message, (phase, name, message)
        assert phase in message, (phase, name, message)
        assert "allowed" in message, (phase, name, message)
        assert changed(before, snapshot(sites.root)) == [], (phase, name)
        last = refused.value
    assert last is not None, f"the model refuses nothing in {phase}?"
    raise last


CASES += [walk_case(index, phase) for index, phase in enumerate(WALK_PHASES)]


@pytest.fixture
def sites(
    templates: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Sites]:
    """A copy of the case's template, its engine closed at the end."""
    case: Case = request.param
    for site in SITES:
        shutil.copytree(templates / case.start / site, tmp_path / "case" / site)
    opened = Sites(tmp_path / "case")
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("sites", "case"), [(c, c) for c in CASES], ids=[c.id for c in CASES],
    indirect=["sites"],
)  # fmt: skip
def test_hostile_input_is_refused_and_changes_nothing(sites: Sites, case: Case) -> None:
    """The row's typed error, naming what was wrong; not one byte changed."""
    if case.damage is not None:
        case.damage(sites)
    elif case.opened:
        sites.engine  # noqa: B018 - opened before the hashes: opening writes its own
    before = snapshot(sites.root)
    if case.error is None:  # a documented verdict, reported without an error
        message = str(case.attack(sites))
    else:
        with pytest.raises(ReplicationError) as raised:
            case.attack(sites)
        error = raised.value
        assert isinstance(error, case.error), (type(error).__name__, str(error))
        message = str(error)
    assert [w for w in case.words if w not in message] == [], message
    if case.damage is not None or not case.opened:
        sites.close()  # compare quiescent sites, as they were hashed
    after = snapshot(sites.root)
    unexpected = [p for p in changed(before, after) if p not in case.may_change]
    assert unexpected == [], " ".join(unexpected)
    if case.verdict is not None:
        case.verdict(sites)


def test_the_longest_names_fit_every_file_they_name(tmp_path: Path) -> None:
    """64-character VM and disk names (the limit) work through a cycle and a drill:
    no derived file name passes the filesystem's 255 bytes."""
    vm, disk = "v" * 64, "d" * 64
    with open_engine(tmp_path) as engine:
        engine.create_vm(vm, {disk: DISK_BYTES})
        engine.enable_protection(vm)
        engine.write(vm, disk, 0, b"n" * BLOCK)
        engine.replicate(vm)
        engine.start_test_failover(vm)
        assert engine.test_vm(vm).read(disk, 0, BLOCK) == b"n" * BLOCK
        engine.cleanup_test_failover(vm)
    longest = max(len(os.fsencode(p.name)) for p in tmp_path.rglob("*"))
    assert longest <= 255
