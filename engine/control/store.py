"""Durable control state of one site: what each VM is doing, in one SQLite file.

The binding layer (the model deciding, the mechanics executing) keeps here, per VM: its
lifecycle phase, the active site and the replication direction (data, never inferred
from site names), the replication epoch, the next cycle id, its disks (name, size,
order), each disk's change-log position, a mirror of the recovery-point catalogue, and
**the operation in progress**. An operation follows one protocol:

1. :meth:`ControlStore.begin_operation` records the intent (name and parameters) and
   returns its id, before any effect starts;
2. the caller runs the effect, which must be idempotent (it may run again after a
   crash);
3. :meth:`ControlStore.complete_operation` marks it completed **and** moves the phase in
   one transaction, or :meth:`ControlStore.abandon_operation` closes it with the phase
   unchanged (the effect was rolled back).

A restarted engine asks :meth:`ControlStore.pending_operation` for each VM and finishes
or rolls back what it finds; at most one operation per VM is pending (a partial unique
index enforces it, so two racing writers cannot both begin one). Creating a VM can be
all-or-nothing the same way: ``add_vm(..., creating=True)`` records the VM, its disks
and a pending :data:`CREATE_VM` operation in one transaction (see :meth:`add_vm`).

**Why SQLite**: transactions make "operation completed + phase changed" one durable
step, and the library is in the standard library. The file is opened in WAL mode
(readers, such as a status command, do not block the writer) with ``synchronous=FULL``:
a commit is on disk when it returns, which the intent protocol needs (WAL with
``NORMAL`` may lose the last commits on power loss). Foreign keys are on, tables are
``STRICT`` (a wrong type is an error, not a silent conversion), and every value is
bound as a parameter (only PRAGMA values, our constants, are spelled out: SQLite
cannot bind them).

**Threads**: one connection, opened with ``check_same_thread=False``, serves any
thread; every public method holds one ``threading.RLock`` for its whole use of the
connection (a transaction included), so the calls of two threads never interleave
inside one transaction and the one-pending-operation rule holds across threads.

**Damage is never silent**: a damaged file (not a database any more, truncated, a
table or an index missing or changed, a row holding a value the engine never writes)
raises :class:`~engine.errors.DamagedState` naming the file and what was found, from
:meth:`ControlStore.open` (which runs SQLite's ``quick_check``, compares the tables with
the schema and reads every VM, disk, log-position and pending-operation row) and from
any later call (each row is checked as it is read; an SQLite error that is not "full"
or "busy" becomes ``DamagedState``), never a bare SQLite error, ``KeyError`` or
``ValueError``. :meth:`ControlStore.integrity_check` runs the full check on demand.

**Versioning**, migrations and the schema live in ``schema.py``: a file from a newer
version, of another application or of another site is refused with
:class:`InvalidConfiguration` before anything is written to it.
"""

from __future__ import annotations

import enum
import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Concatenate, Final, ParamSpec, Self, TypeVar

from engine.clock import Clock
from engine.control.schema import (
    SCHEMA_VERSION,
    LegacyDisks,
    configure,
    create_or_check_site,
    damaged,
    refuse_foreign,
)
from engine.control.sqlite_errors import (
    BUSY_TIMEOUT_SECONDS,
    storage_exhausted,
    transient,
    translate,
)
from engine.control.sqlite_transactions import rollback, transaction
from engine.control.values import (
    PARAMS_BYTES_MAX,
    Row,
    checked_count,
    checked_json_text,
    checked_sequence,
    checked_text,
    disk_rows,
)
from engine.errors import (
    CorruptRecord,
    DamagedState,
    InvalidConfiguration,
    ReplicationError,
)
from engine.names import validate_disk_name, validate_site_name, validate_vm_name
from engine.replica.recovery_point import ID_MAX, RecoveryPoint

CREATE_VM: Final = "create_vm"
"""The operation ``add_vm(..., creating=True)`` records (params: ``{"disks": ...}``)."""

_OPERATION_SELECT: Final = (
    "SELECT operation_id, vm, name, params_json, state, started_at, finished_at, "
    "result_json FROM operation WHERE "
)
_OPERATION_BY_ID: Final = _OPERATION_SELECT + "operation_id = ?"
_OPERATION_PENDING_FOR_VM: Final = _OPERATION_SELECT + "vm = ? AND state = 'pending'"
_OPERATIONS_PENDING: Final = _OPERATION_SELECT + "state = 'pending'"
_VM_SELECT: Final = (
    "SELECT name, phase, active_site, direction, epoch, next_cycle_id, generation, "
    "details_json FROM vm "
)

P = ParamSpec("P")
R = TypeVar("R")


class OperationState(enum.StrEnum):
    """Where an operation is in the intent protocol (stored as its value)."""

    PENDING = "pending"  # intent recorded; the effect may have run, wholly or partly
    COMPLETED = "completed"  # effect done and the phase moved, in one transaction
    ABANDONED = "abandoned"  # effect rolled back; the phase did not move


@dataclass(frozen=True, slots=True)
class VmControl:
    """The control row of one VM."""

    vm_name: str
    phase: str
    active_site: str
    direction: str
    epoch: int
    next_cycle_id: int
    generation: int = 0  # grows with every completed operation (the newer row wins)
    details_json: str = "{}"  # a JSON object: what the phase alone does not say

    @property
    def details(self) -> dict[str, object]:
        """The details as a fresh dict; damage is :class:`DamagedState`."""
        try:
            found = json.loads(self.details_json)
        except ValueError as error:
            found = error
        if not isinstance(found, dict):
            msg = f"the control row of VM {self.vm_name!r} holds details that are not "
            msg += f"a JSON object ({str(found)[:80]}): the control file is damaged; "
            msg += "restore it from a backup"
            raise DamagedState(msg)
        return found


@dataclass(frozen=True, slots=True)
class Operation:
    """One recorded operation: its intent, and how it ended (if it did)."""

    operation_id: int
    vm_name: str
    name: str
    params_json: str
    state: OperationState
    started_at: float
    finished_at: float | None
    result_json: str | None


@dataclass(frozen=True, slots=True)
class ControlStoreStatistics:
    """Counts and settings of one control file."""

    site_name: str
    schema_version: int
    journal_mode: str
    synchronous: int  # 2 = FULL
    vm_count: int
    pending_operation_count: int
    finished_operation_count: int


def _serialised(
    method: Callable[Concatenate[ControlStore, P], R],
) -> Callable[Concatenate[ControlStore, P], R]:
    """Run ``method`` holding the store's lock, its SQLite errors made ours."""

    @functools.wraps(method)
    def serialised(store: ControlStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with store._lock:
            store._require_open()
            try:
                return method(store, *args, **kwargs)
            except sqlite3.DatabaseError as error:
                if isinstance(
                    error, sqlite3.ProgrammingError | sqlite3.NotSupportedError
                ):
                    raise  # our own misuse of the module, not the file's state
                store._rollback()
                raise translate(error, store.path, store.site_name) from error

    return serialised


class ControlStore:
    """The durable control state of one site (one SQLite file)."""

    def __init__(
        self, connection: sqlite3.Connection, path: Path, site_name: str, clock: Clock
    ) -> None:
        """Use :meth:`open`; this only binds an opened, checked connection."""
        self._connection = connection
        self.path = path
        self.site_name = site_name
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        site_name: str,
        clock: Clock,
        create: bool = True,
        legacy_disks: LegacyDisks | None = None,
    ) -> Self:
        """Open the control file of ``site_name`` at ``path``, checked and migrated.

        With ``create`` a missing or empty file is created; without, it is
        :class:`DamagedState` (the caller knows state should be there).
        ``legacy_disks(vm_name)`` tells the disks of each VM of a schema-1 file, once,
        in the migration's transaction (``SiteStorage.open`` reads them from the
        images).
        """
        validate_site_name(site_name)
        path = Path(path)
        if not path.parent.is_dir():
            msg = f"path={str(path)!r}: its directory does not exist; create the "
            msg += "site's storage root first"
            raise InvalidConfiguration(msg)
        if not create and not path.is_file():
            raise damaged(path, "it is missing, and is not to be created afresh here")
        try:
            connection = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.DatabaseError as error:
            raise translate(error, path, site_name) from error
        try:
            try:
                new = refuse_foreign(connection, path)
            except sqlite3.DatabaseError as error:
                if transient(error) or storage_exhausted(error, path):
                    raise
                what = f"it is not a readable SQLite database ({error})"
                raise damaged(path, what) from error
            if new and not create:
                what = "it is empty (no hvdr tables), and is not to be created afresh"
                raise damaged(path, what)
            configure(connection, path)
            create_or_check_site(connection, path, site_name, legacy_disks)
            store = cls(connection, path, site_name, clock)
            store._check_on_open()
        except sqlite3.DatabaseError as error:
            connection.close()
            if isinstance(error, sqlite3.ProgrammingError | sqlite3.NotSupportedError):
                raise
            raise translate(error, path, site_name) from error
        except BaseException:
            connection.close()
            raise
        return store

    def close(self) -> None:
        """Close the connection (idempotent); committed state is already durable."""
        with self._lock:
            self._closed = True
            self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- VMs ---------------------------------------------------------------------------

    @_serialised
    def add_vm(
        self,
        vm_name: str,
        *,
        phase: str,
        active_site: str,
        direction: str,
        disks: Mapping[str, int],
        epoch: int = 0,
        creating: bool = False,
    ) -> VmControl:
        """Start tracking ``vm_name`` with its ``disks`` (name -> bytes, in order).

        A VM already known is refused. With ``creating`` a pending :data:`CREATE_VM`
        operation (params ``{"disks": {...}}``) is recorded in the same transaction:
        the caller then creates the VM's files and completes it with
        ``complete_operation(pending_operation(vm_name).operation_id, new_phase)``, or
        calls :meth:`remove_vm` when that fails. A restart that finds a pending
        ``create_vm`` rolls it back the same way (remove the files, then the VM).
        """
        validate_vm_name(vm_name)
        validate_site_name(active_site)
        values = (
            vm_name,
            checked_text("phase", phase),
            active_site,
            checked_text("direction", direction),
            checked_count("epoch", epoch),
        )
        new_disks = disk_rows(vm_name, disks)
        params = json.dumps({"disks": {row[1]: row[2] for row in new_disks}})
        if creating and len(params) > PARAMS_BYTES_MAX:
            msg = f"disks: {len(new_disks)} disks make a create_vm record of "
            msg += f"{len(params)} bytes, over {PARAMS_BYTES_MAX}; use fewer disks"
            raise InvalidConfiguration(msg)
        with self._transaction() as cursor:
            if self._find_vm(cursor, vm_name) is not None:
                msg = f"vm_name={vm_name!r} is already in the control store of site "
                msg += f"{self.site_name!r}; remove_vm() it first"
                raise InvalidConfiguration(msg)
            cursor.execute("INSERT INTO vm VALUES (?, ?, ?, ?, ?, 1, 0, '{}')", values)
            cursor.executemany("INSERT INTO disk VALUES (?, ?, ?, ?)", new_disks)
            if creating:
                self._insert_operation(cursor, vm_name, CREATE_VM, params)
        return self.vm(vm_name)

    @_serialised
    def remove_vm(self, vm_name: str) -> None:
        """Forget ``vm_name`` with its disks, positions, points and operations."""
        with self._transaction() as cursor:
            self._require_vm(cursor, vm_name)
            cursor.execute("DELETE FROM vm WHERE name = ?", (vm_name,))

    @_serialised
    def vm(self, vm_name: str) -> VmControl:
        """Return the control row of ``vm_name``."""
        return self._require_vm(self._connection.cursor(), vm_name)

    @_serialised
    def vm_names(self) -> tuple[str, ...]:
        """Return the names of the VMs tracked here, sorted."""
        rows = self._connection.execute(_VM_SELECT + "ORDER BY name").fetchall()
        return tuple(self._decode_vm(row).vm_name for row in rows)

    @_serialised
    def vm_disks(self, vm_name: str) -> dict[str, int]:
        """Return the disks of ``vm_name`` (name -> size in bytes), in their order."""
        cursor = self._connection.cursor()
        self._require_vm(cursor, vm_name)
        return self._disks(cursor, vm_name)

    @_serialised
    def take_cycle_id(self, vm_name: str, *, above: int = -1) -> int:
        """Return the VM's next cycle id, at least ``above + 1``, and durably advance
        past it (never handed twice), in one transaction."""
        if isinstance(above, bool) or above > ID_MAX:
            msg = f"above={above!r} must be an int up to {ID_MAX} (a replica's last "
            msg += "cycle id: a catalogue claiming more is damaged)"
            raise InvalidConfiguration(msg)
        with self._transaction() as cursor:
            control = self._require_vm(cursor, vm_name)
            taken = max(control.next_cycle_id, above + 1)
            cursor.execute(
                "UPDATE vm SET next_cycle_id = ? WHERE name = ?", (taken + 1, vm_name)
            )
        return taken

    @_serialised
    def set_log_positions(self, vm_name: str, positions: Mapping[str, int]) -> None:
        """Record, per disk, the sequence of the last change-log record shipped."""
        rows = [
            (vm_name, validate_disk_name(disk), checked_sequence(disk, sequence))
            for disk, sequence in positions.items()
        ]
        with self._transaction() as cursor:
            self._require_vm(cursor, vm_name)
            cursor.executemany(
                "INSERT INTO log_position VALUES (?, ?, ?) ON CONFLICT (vm, disk) "
                "DO UPDATE SET sequence = excluded.sequence",
                rows,
            )

    @_serialised
    def log_positions(self, vm_name: str) -> dict[str, int]:
        """Return the recorded log position of each disk of ``vm_name``."""
        cursor = self._connection.cursor()
        self._require_vm(cursor, vm_name)
        return self._log_positions(cursor, vm_name)

    @_serialised
    def save_recovery_points(
        self, vm_name: str, points: Sequence[RecoveryPoint]
    ) -> None:
        """Replace the VM's catalogue mirror with ``points`` (oldest first)."""
        rows = [
            (
                vm_name,
                point.recovery_point_id,
                point.cycle_id,
                point.epoch,
                point.created_at,
                int(point.app_consistent),
                json.dumps(dict(point.last_sequences), sort_keys=True),
            )
            for point in points
        ]
        with self._transaction() as cursor:
            self._require_vm(cursor, vm_name)
            cursor.execute("DELETE FROM recovery_point WHERE vm = ?", (vm_name,))
            cursor.executemany(
                "INSERT INTO recovery_point VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )

    @_serialised
    def recovery_points(self, vm_name: str) -> tuple[RecoveryPoint, ...]:
        """Return the VM's catalogue mirror, oldest first."""
        cursor = self._connection.cursor()
        self._require_vm(cursor, vm_name)
        rows = cursor.execute(
            "SELECT recovery_point_id, cycle_id, epoch, created_at, app_consistent, "
            "last_sequences FROM recovery_point WHERE vm = ? "
            "ORDER BY recovery_point_id",
            (vm_name,),
        ).fetchall()
        return tuple(self._decode_point(vm_name, row) for row in rows)

    # -- operations --------------------------------------------------------------------

    @_serialised
    def begin_operation(self, vm_name: str, name: str, params_json: str) -> int:
        """Record the intent to run operation ``name``; return its id."""
        values = (
            checked_text("name", name),
            checked_json_text("params_json", params_json),
        )
        with self._transaction() as cursor:
            self._require_vm(cursor, vm_name)
            return self._insert_operation(cursor, vm_name, *values)

    @_serialised
    def complete_operation(
        self,
        operation_id: int,
        new_phase: str,
        *,
        epoch: int | None = None,
        active_site: str | None = None,
        direction: str | None = None,
        result_json: str | None = None,
        details_json: str | None = None,
    ) -> VmControl:
        """Mark the operation completed and move its VM to ``new_phase``, atomically.

        ``epoch``, ``active_site``, ``direction`` and the details (a JSON object)
        change with the phase when given; the row's generation grows by one.
        """
        checked_text("new_phase", new_phase)
        if active_site is not None:
            validate_site_name(active_site)
        if direction is not None:
            checked_text("direction", direction)
        if epoch is not None:
            checked_count("epoch", epoch)
        if result_json is not None:
            checked_json_text("result_json", result_json)
        if details_json is not None:
            _checked_details(details_json)
        with self._transaction() as cursor:
            operation = self._require_pending(cursor, operation_id)
            control = self._require_vm(cursor, operation.vm_name)
            cursor.execute(
                "UPDATE vm SET phase = ?, epoch = ?, active_site = ?, direction = ?, "
                "generation = ?, details_json = ? WHERE name = ?",
                (
                    new_phase,
                    control.epoch if epoch is None else epoch,
                    active_site or control.active_site,
                    direction or control.direction,
                    control.generation + 1,
                    control.details_json if details_json is None else details_json,
                    operation.vm_name,
                ),
            )
            self._finish(cursor, operation_id, OperationState.COMPLETED, result_json)
        return self.vm(operation.vm_name)

    @_serialised
    def abandon_operation(self, operation_id: int, reason: str) -> None:
        """Close a pending operation whose effect was rolled back; phase unchanged."""
        with self._transaction() as cursor:
            self._require_pending(cursor, operation_id)
            result = json.dumps({"abandoned": reason})
            self._finish(cursor, operation_id, OperationState.ABANDONED, result)

    @_serialised
    def update_details(self, vm_name: str, details_json: str) -> VmControl:
        """Replace the VM's details outside an operation (what the environment did:
        a site that crashed stops the copy running there); the generation grows."""
        _checked_details(details_json)
        with self._transaction() as cursor:
            control = self._require_vm(cursor, vm_name)
            cursor.execute(
                "UPDATE vm SET generation = ?, details_json = ? WHERE name = ?",
                (control.generation + 1, details_json, vm_name),
            )
        return self.vm(vm_name)

    @_serialised
    def adopt_vm(self, row: VmControl, disks: Mapping[str, int]) -> bool:
        """Take the other site's row of a VM when it is newer; return whether it was.

        A VM unknown here is added with ``disks``; a known one takes the row's phase,
        roles, epoch, generation and details when ``row.generation`` is higher (its
        next cycle id never goes back). A VM with an operation pending here is left
        alone: the restart that finishes it decides first.
        """
        validate_vm_name(row.vm_name)
        validate_site_name(row.active_site)
        _checked_details(row.details_json)
        with self._transaction() as cursor:
            found = self._find_vm(cursor, row.vm_name)
            if found is None:
                cursor.execute(
                    "INSERT INTO vm VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row.vm_name, row.phase, row.active_site, row.direction,
                        row.epoch, row.next_cycle_id, row.generation, row.details_json,
                    ),
                )  # fmt: skip
                rows = disk_rows(row.vm_name, disks)
                cursor.executemany("INSERT INTO disk VALUES (?, ?, ?, ?)", rows)
                return True
            if found.generation >= row.generation:
                return False
            if self._pending(cursor, row.vm_name) is not None:
                return False
            cursor.execute(
                "UPDATE vm SET phase = ?, active_site = ?, direction = ?, epoch = ?, "
                "next_cycle_id = ?, generation = ?, details_json = ? WHERE name = ?",
                (
                    row.phase, row.active_site, row.direction, row.epoch,
                    max(row.next_cycle_id, found.next_cycle_id), row.generation,
                    row.details_json, row.vm_name,
                ),
            )  # fmt: skip
            return True

    @_serialised
    def pending_operation(self, vm_name: str) -> Operation | None:
        """Return the VM's pending operation (to finish after a restart), if any."""
        cursor = self._connection.cursor()
        self._require_vm(cursor, vm_name)
        return self._pending(cursor, vm_name)

    @_serialised
    def operation(self, operation_id: int) -> Operation:
        """Return the operation ``operation_id``, whatever its state."""
        cursor = self._connection.cursor()
        found = self._find_operation(cursor, _OPERATION_BY_ID, operation_id)
        if found is None:
            msg = f"operation_id={operation_id!r} is not in the control store of "
            msg += f"site {self.site_name!r}"
            raise InvalidConfiguration(msg)
        return found

    # -- the file ----------------------------------------------------------------------

    @_serialised
    def statistics(self) -> ControlStoreStatistics:
        """Return counts and the settings in force."""
        execute = self._connection.execute
        (journal_mode,) = execute("PRAGMA journal_mode").fetchone()
        (synchronous,) = execute("PRAGMA synchronous").fetchone()
        (pending,) = execute(
            "SELECT count(*) FROM operation WHERE state = 'pending'"
        ).fetchone()
        (total,) = execute("SELECT count(*) FROM operation").fetchone()
        return ControlStoreStatistics(
            site_name=self.site_name,
            schema_version=SCHEMA_VERSION,
            journal_mode=journal_mode,
            synchronous=synchronous,
            vm_count=len(self.vm_names()),
            pending_operation_count=pending,
            finished_operation_count=total - pending,
        )

    @_serialised
    def integrity_check(self) -> str:
        """Return SQLite's ``PRAGMA integrity_check`` result: ``"ok"`` when sound.

        Otherwise one line per problem SQLite found. A file too damaged for SQLite to
        check at all raises :class:`DamagedState`.
        """
        rows = self._connection.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(line) for (line,) in rows)

    # -- helpers -----------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            msg = f"the control store of site {self.site_name!r} at "
            msg += f"{str(self.path)!r} is closed; open the site again"
            raise ReplicationError(msg)

    def _rollback(self) -> None:
        """End a transaction an error interrupted (the original error is reported)."""
        rollback(self._connection)

    def _transaction(self) -> AbstractContextManager[sqlite3.Cursor]:
        """One write transaction (callers hold the lock: they are ``_serialised``)."""
        return transaction(self._connection)

    def _check_on_open(self) -> None:
        """Read what a restart relies on, so that damage shows at open."""
        with self._lock:
            rows = self._connection.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                found = [line for (line,) in rows[:5]]
                raise damaged(self.path, f"SQLite's quick_check reports {found}")
            cursor = self._connection.cursor()
            rows = cursor.execute(_VM_SELECT + "ORDER BY name").fetchall()
            for control in map(self._decode_vm, rows):
                self._disks(cursor, control.vm_name)
                self._log_positions(cursor, control.vm_name)
            self._operations(cursor, _OPERATIONS_PENDING)

    def _find_vm(self, cursor: sqlite3.Cursor, vm_name: str) -> VmControl | None:
        row = cursor.execute(_VM_SELECT + "WHERE name = ?", (vm_name,)).fetchone()
        return None if row is None else self._decode_vm(row)

    def _require_vm(self, cursor: sqlite3.Cursor, vm_name: str) -> VmControl:
        found = self._find_vm(cursor, vm_name)
        if found is None:
            known = [name for (name,) in cursor.execute("SELECT name FROM vm")]
            msg = f"vm_name={vm_name!r} is not in the control store of site "
            msg += f"{self.site_name!r}; known: {sorted(known)}"
            raise InvalidConfiguration(msg)
        return found

    def _disks(self, cursor: sqlite3.Cursor, vm_name: str) -> dict[str, int]:
        rows = cursor.execute(
            "SELECT name, size_bytes, ordinal FROM disk WHERE vm = ? ORDER BY ordinal",
            (vm_name,),
        ).fetchall()
        if not rows:
            raise damaged(self.path, f"VM {vm_name!r} has no rows in table disk")
        disks: dict[str, int] = {}
        for name, size, ordinal in rows:
            row = Row(self.path, f"disk {name!r} of VM {vm_name!r}")
            row.integer("ordinal", ordinal, minimum=0)
            disks[row.name("name", name, validate_disk_name)] = row.integer(
                "size_bytes", size, minimum=1
            )
        return disks

    def _log_positions(self, cursor: sqlite3.Cursor, vm_name: str) -> dict[str, int]:
        rows = cursor.execute(
            "SELECT disk, sequence FROM log_position WHERE vm = ? ORDER BY disk",
            (vm_name,),
        ).fetchall()
        positions: dict[str, int] = {}
        for disk, sequence in rows:
            row = Row(self.path, f"log position of disk {disk!r} of VM {vm_name!r}")
            positions[row.name("disk", disk, validate_disk_name)] = row.integer(
                "sequence", sequence, minimum=-1
            )
        return positions

    def _decode_vm(self, values: tuple[object, ...]) -> VmControl:
        name, phase, active_site, direction, epoch, next_cycle_id = values[:6]
        generation, details = values[6:]
        row = Row(self.path, f"VM {name!r}")
        # Checked when used (VmControl.details), so one VM's damaged details do not
        # stop the site, or the other VMs, from opening.
        details_text = details if isinstance(details, str) else "{}"
        if not isinstance(details, str):
            row.refuse("details_json", details, "JSON text")
        return VmControl(
            vm_name=row.name("name", name, validate_vm_name),
            phase=row.text("phase", phase),
            active_site=row.name("active_site", active_site, validate_site_name),
            direction=row.text("direction", direction),
            epoch=row.integer("epoch", epoch, minimum=0),
            next_cycle_id=row.integer("next_cycle_id", next_cycle_id, minimum=1),
            generation=row.integer("generation", generation, minimum=0),
            details_json=details_text,
        )

    def _decode_point(self, vm_name: str, values: tuple[object, ...]) -> RecoveryPoint:
        point_id, cycle_id, epoch, created_at, app_consistent, sequences = values
        row = Row(self.path, f"recovery point {point_id!r} of VM {vm_name!r}")
        flag = row.integer("app_consistent", app_consistent, minimum=0)
        data = {
            "recovery_point_id": point_id,
            "cycle_id": cycle_id,
            "epoch": epoch,
            "created_at": created_at,
            "app_consistent": flag == 1 if flag in (0, 1) else flag,
            "last_sequences": json.loads(row.json_text("last_sequences", sequences)),
        }
        try:
            return RecoveryPoint.from_json(data)
        except CorruptRecord as error:
            raise damaged(self.path, f"{row.where} is unreadable ({error})") from error

    def _insert_operation(
        self, cursor: sqlite3.Cursor, vm_name: str, name: str, params_json: str
    ) -> int:
        pending = self._pending(cursor, vm_name)
        if pending is not None:
            msg = f"cannot begin {name!r} on VM {vm_name!r}: operation "
            msg += f"{pending.operation_id} ({pending.name!r}) is still pending; "
            msg += "complete or abandon it first"
            raise ReplicationError(msg)
        cursor.execute(
            "INSERT INTO operation (vm, name, params_json, state, started_at) "
            "VALUES (?, ?, ?, 'pending', ?)",
            (vm_name, name, params_json, self._clock.now()),
        )
        operation_id = cursor.lastrowid
        assert operation_id is not None
        return operation_id

    def _operations(
        self, cursor: sqlite3.Cursor, query: str, *values: object
    ) -> list[Operation]:
        assert query.startswith(_OPERATION_SELECT), query
        rows = cursor.execute(query, values).fetchall()
        return [self._decode_operation(row) for row in rows]

    def _find_operation(
        self, cursor: sqlite3.Cursor, query: str, value: object
    ) -> Operation | None:
        found = self._operations(cursor, query, value)
        assert len(found) <= 1, found  # the key, or the partial unique index
        return found[0] if found else None

    def _decode_operation(self, values: tuple[object, ...]) -> Operation:
        operation_id, vm_name, name, params, state, started, finished, result = values
        row = Row(self.path, f"operation {operation_id!r}")
        states = [str(known) for known in OperationState]
        if state not in states:
            row.refuse("state", state, f"one of {states}")
        pending = state == OperationState.PENDING
        if pending != (finished is None):
            allowed = "None while pending, a time once finished"
            row.refuse(f"state={state!r} and finished_at", finished, allowed)
        return Operation(
            operation_id=row.integer("operation_id", operation_id, minimum=1),
            vm_name=row.name("vm", vm_name, validate_vm_name),
            name=row.text("name", name),
            params_json=row.json_text("params_json", params),
            state=OperationState(state),
            started_at=row.time("started_at", started),
            finished_at=None if finished is None else row.time("finished_at", finished),
            result_json=None
            if result is None
            else row.json_text("result_json", result),
        )

    def _pending(self, cursor: sqlite3.Cursor, vm_name: str) -> Operation | None:
        return self._find_operation(cursor, _OPERATION_PENDING_FOR_VM, vm_name)

    def _require_pending(self, cursor: sqlite3.Cursor, operation_id: int) -> Operation:
        found = self._find_operation(cursor, _OPERATION_BY_ID, operation_id)
        if found is None or found.state is not OperationState.PENDING:
            state = "unknown" if found is None else found.state
            msg = f"operation_id={operation_id!r} is {state}, not pending; "
            msg += "only a pending operation can be completed or abandoned"
            raise ReplicationError(msg)
        return found

    def _finish(
        self,
        cursor: sqlite3.Cursor,
        operation_id: int,
        state: OperationState,
        result: str | None,
    ) -> None:
        cursor.execute(
            "UPDATE operation SET state = ?, finished_at = ?, result_json = ? "
            "WHERE operation_id = ?",
            (state, self._clock.now(), result, operation_id),
        )


def _checked_details(details_json: str) -> str:
    """A VM's details must be one JSON object (within the size a row may hold)."""
    checked_json_text("details_json", details_json)
    if not isinstance(json.loads(details_json), dict):
        msg = f"details_json={details_json[:80]!r} must be a JSON object"
        raise InvalidConfiguration(msg)
    return details_json
