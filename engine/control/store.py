"""Durable control state of one site: what each VM is doing, in one SQLite file.

The binding layer (the model deciding, the mechanics executing) keeps here, per VM: its
lifecycle phase, the active site and the replication direction, the replication epoch,
the next cycle id, each disk's change-log position, a mirror of the recovery-point
catalogue, and **the operation in progress**. An operation follows one protocol:

1. :meth:`ControlStore.begin_operation` records the intent (name and parameters) and
   returns its id, before any effect starts;
2. the caller runs the effect, which must be idempotent (it may run again after a
   crash);
3. :meth:`ControlStore.complete_operation` marks it completed **and** moves the phase in
   one transaction, or :meth:`ControlStore.abandon_operation` closes it with the phase
   unchanged (the effect was rolled back).

A restarted engine asks :meth:`ControlStore.pending_operation` for each VM and finishes
or rolls back what it finds; at most one operation per VM is pending (a partial unique
index enforces it, so two racing writers cannot both begin one).

**Why SQLite**: transactions make "operation completed + phase changed" one durable
step, and the library is in the standard library. The file is opened in WAL mode
(readers, such as a status command, do not block the writer) with ``synchronous=FULL``:
a commit is on disk when it returns, which the intent protocol needs (WAL with
``NORMAL`` may lose the last commits on power loss). Foreign keys are on, tables are
``STRICT`` (a wrong type is an error, not a silent conversion), and every value is
bound as a parameter (only PRAGMA values, our constants, are spelled out: SQLite
cannot bind them).

**Versioning** and the schema live in ``control_schema.py``: a file from a newer
version, of another application, of another site, or not a database at all is refused
with :class:`InvalidConfiguration` before anything is written to it.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from engine.clock import Clock
from engine.control.schema import (
    SCHEMA_VERSION,
    configure,
    create_or_check_site,
    refuse_foreign,
)
from engine.errors import InvalidConfiguration, ReplicationError, StorageFull
from engine.names import validate_disk_name, validate_site_name, validate_vm_name
from engine.replica.recovery_point import RecoveryPoint, make_last_sequences

BUSY_TIMEOUT_SECONDS: Final = 5.0
"""How long a writer waits for another connection's lock (a status reader, a second
engine process by mistake) before failing: long enough for any of our transactions."""

TEXT_CHARACTERS_MAX: Final = 64
"""Phases, directions and operation names are short identifiers from the model."""

PARAMS_BYTES_MAX: Final = 64 * 1024
"""Operation parameters are a few ids and flags; the bound stops a caller from turning
the control file into a data store."""

_OPERATION_SELECT: Final = (
    "SELECT operation_id, vm, name, params_json, state, started_at, finished_at, "
    "result_json FROM operation WHERE "
)
_OPERATION_BY_ID: Final = _OPERATION_SELECT + "operation_id = ?"
_OPERATION_PENDING_FOR_VM: Final = _OPERATION_SELECT + "vm = ? AND state = 'pending'"


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


class ControlStore:
    """The durable control state of one site (one SQLite file)."""

    def __init__(
        self, connection: sqlite3.Connection, site_name: str, clock: Clock
    ) -> None:
        """Use :meth:`open`; this only binds an opened, checked connection."""
        self._connection = connection
        self.site_name = site_name
        self._clock = clock

    @classmethod
    def open(cls, path: Path, *, site_name: str, clock: Clock) -> Self:
        """Open (creating if missing) the control file of ``site_name`` at ``path``."""
        validate_site_name(site_name)
        if not Path(path).parent.is_dir():
            msg = f"path={str(path)!r}: its directory does not exist; create the "
            msg += "site's storage root first"
            raise InvalidConfiguration(msg)
        connection = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None
        )
        try:
            refuse_foreign(connection, path)
            configure(connection, path)
            create_or_check_site(connection, path, site_name)
        except sqlite3.DatabaseError as error:
            connection.close()
            msg = f"path={str(path)!r} is not an SQLite database ({error}); "
            msg += "point the site at its control file, or move this file away"
            raise InvalidConfiguration(msg) from error
        except BaseException:
            connection.close()
            raise
        return cls(connection, site_name, clock)

    def close(self) -> None:
        """Close the connection (idempotent); committed state is already durable."""
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

    def add_vm(
        self,
        vm_name: str,
        *,
        phase: str,
        active_site: str,
        direction: str,
        epoch: int = 0,
    ) -> VmControl:
        """Start tracking ``vm_name``; refuse a VM already known."""
        validate_vm_name(vm_name)
        validate_site_name(active_site)
        values = (
            vm_name,
            _text("phase", phase),
            active_site,
            _text("direction", direction),
        )
        with self._transaction() as cursor:
            if self._find_vm(cursor, vm_name) is not None:
                msg = f"vm_name={vm_name!r} is already in the control store of site "
                msg += f"{self.site_name!r}; remove_vm() it first"
                raise InvalidConfiguration(msg)
            cursor.execute(
                "INSERT INTO vm VALUES (?, ?, ?, ?, ?, 1)",
                (*values, _count("epoch", epoch)),
            )
        return self.vm(vm_name)

    def remove_vm(self, vm_name: str) -> None:
        """Forget ``vm_name`` with its positions, points and operations."""
        with self._transaction() as cursor:
            self._require_vm(cursor, vm_name)
            cursor.execute("DELETE FROM vm WHERE name = ?", (vm_name,))

    def vm(self, vm_name: str) -> VmControl:
        """Return the control row of ``vm_name``."""
        return self._require_vm(self._connection.cursor(), vm_name)

    def vm_names(self) -> tuple[str, ...]:
        """Return the names of the VMs tracked here, sorted."""
        rows = self._connection.execute("SELECT name FROM vm ORDER BY name")
        return tuple(name for (name,) in rows)

    def take_cycle_id(self, vm_name: str) -> int:
        """Return the VM's next cycle id and durably advance it (never handed twice)."""
        with self._transaction() as cursor:
            control = self._require_vm(cursor, vm_name)
            cursor.execute(
                "UPDATE vm SET next_cycle_id = next_cycle_id + 1 WHERE name = ?",
                (vm_name,),
            )
        return control.next_cycle_id

    def set_log_positions(self, vm_name: str, positions: Mapping[str, int]) -> None:
        """Record, per disk, the sequence of the last change-log record shipped."""
        rows = [
            (vm_name, validate_disk_name(disk), _sequence(disk, sequence))
            for disk, sequence in positions.items()
        ]
        with self._transaction() as cursor:
            self._require_vm(cursor, vm_name)
            cursor.executemany(
                "INSERT INTO log_position VALUES (?, ?, ?) ON CONFLICT (vm, disk) "
                "DO UPDATE SET sequence = excluded.sequence",
                rows,
            )

    def log_positions(self, vm_name: str) -> dict[str, int]:
        """Return the recorded log position of each disk of ``vm_name``."""
        self.vm(vm_name)
        rows = self._connection.execute(
            "SELECT disk, sequence FROM log_position WHERE vm = ? ORDER BY disk",
            (vm_name,),
        )
        return dict(rows)

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

    def recovery_points(self, vm_name: str) -> tuple[RecoveryPoint, ...]:
        """Return the VM's catalogue mirror, oldest first."""
        self.vm(vm_name)
        rows = self._connection.execute(
            "SELECT recovery_point_id, cycle_id, epoch, created_at, app_consistent, "
            "last_sequences FROM recovery_point WHERE vm = ? "
            "ORDER BY recovery_point_id",
            (vm_name,),
        )
        return tuple(
            RecoveryPoint(
                recovery_point_id=row[0],
                cycle_id=row[1],
                epoch=row[2],
                created_at=row[3],
                app_consistent=bool(row[4]),
                last_sequences=make_last_sequences(json.loads(row[5])),
            )
            for row in rows
        )

    # -- operations --------------------------------------------------------------------

    def begin_operation(self, vm_name: str, name: str, params_json: str) -> int:
        """Record the intent to run operation ``name``; return its id."""
        values = (_text("name", name), _json_text("params_json", params_json))
        with self._transaction() as cursor:
            self._require_vm(cursor, vm_name)
            pending = self._pending(cursor, vm_name)
            if pending is not None:
                msg = f"cannot begin {name!r} on VM {vm_name!r}: operation "
                msg += f"{pending.operation_id} ({pending.name!r}) is still pending; "
                msg += "complete or abandon it first"
                raise ReplicationError(msg)
            cursor.execute(
                "INSERT INTO operation (vm, name, params_json, state, started_at) "
                "VALUES (?, ?, ?, 'pending', ?)",
                (vm_name, *values, self._clock.now()),
            )
            operation_id = cursor.lastrowid
        assert operation_id is not None
        return operation_id

    def complete_operation(
        self,
        operation_id: int,
        new_phase: str,
        *,
        epoch: int | None = None,
        active_site: str | None = None,
        direction: str | None = None,
        result_json: str | None = None,
    ) -> VmControl:
        """Mark the operation completed and move its VM to ``new_phase``, atomically.

        ``epoch``, ``active_site`` and ``direction`` change with the phase when given.
        """
        _text("new_phase", new_phase)
        if active_site is not None:
            validate_site_name(active_site)
        if result_json is not None:
            _json_text("result_json", result_json)
        with self._transaction() as cursor:
            operation = self._require_pending(cursor, operation_id)
            control = self._require_vm(cursor, operation.vm_name)
            cursor.execute(
                "UPDATE vm SET phase = ?, epoch = ?, active_site = ?, direction = ? "
                "WHERE name = ?",
                (
                    new_phase,
                    control.epoch if epoch is None else _count("epoch", epoch),
                    active_site or control.active_site,
                    _text("direction", direction or control.direction),
                    operation.vm_name,
                ),
            )
            self._finish(cursor, operation_id, OperationState.COMPLETED, result_json)
        return self.vm(operation.vm_name)

    def abandon_operation(self, operation_id: int, reason: str) -> None:
        """Close a pending operation whose effect was rolled back; phase unchanged."""
        with self._transaction() as cursor:
            self._require_pending(cursor, operation_id)
            result = json.dumps({"abandoned": reason})
            self._finish(cursor, operation_id, OperationState.ABANDONED, result)

    def pending_operation(self, vm_name: str) -> Operation | None:
        """Return the VM's pending operation (to finish after a restart), if any."""
        cursor = self._connection.cursor()
        self._require_vm(cursor, vm_name)
        return self._pending(cursor, vm_name)

    def operation(self, operation_id: int) -> Operation:
        """Return the operation ``operation_id``, whatever its state."""
        cursor = self._connection.cursor()
        found = self._find_operation(cursor, _OPERATION_BY_ID, operation_id)
        if found is None:
            msg = f"operation_id={operation_id!r} is not in the control store of "
            msg += f"site {self.site_name!r}"
            raise InvalidConfiguration(msg)
        return found

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

    # -- helpers -----------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction; a full disk surfaces as :class:`StorageFull`."""
        cursor = self._connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
        except sqlite3.OperationalError as error:
            if getattr(error, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            msg = f"site {self.site_name!r}: its control state cannot be written, "
            msg += "the storage is full; nothing changed: free space and retry"
            raise StorageFull(msg) from error

    def _find_vm(self, cursor: sqlite3.Cursor, vm_name: str) -> VmControl | None:
        row = cursor.execute(
            "SELECT name, phase, active_site, direction, epoch, next_cycle_id "
            "FROM vm WHERE name = ?",
            (vm_name,),
        ).fetchone()
        return None if row is None else VmControl(*row)

    def _require_vm(self, cursor: sqlite3.Cursor, vm_name: str) -> VmControl:
        found = self._find_vm(cursor, vm_name)
        if found is None:
            known = [name for (name,) in cursor.execute("SELECT name FROM vm")]
            msg = f"vm_name={vm_name!r} is not in the control store of site "
            msg += f"{self.site_name!r}; known: {sorted(known)}"
            raise InvalidConfiguration(msg)
        return found

    def _find_operation(
        self, cursor: sqlite3.Cursor, query: str, value: object
    ) -> Operation | None:
        assert query in (_OPERATION_BY_ID, _OPERATION_PENDING_FOR_VM), query
        row = cursor.execute(query, (value,)).fetchone()
        if row is None:
            return None
        operation_id, vm_name, name, params_json, state, started, finished, result = row
        return Operation(
            operation_id=operation_id,
            vm_name=vm_name,
            name=name,
            params_json=params_json,
            state=OperationState(state),
            started_at=started,
            finished_at=finished,
            result_json=result,
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


def _text(argument: str, value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= TEXT_CHARACTERS_MAX:
        msg = f"{argument}={value!r} must be a str of 1 to {TEXT_CHARACTERS_MAX} "
        msg += f"characters (got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    return value


def _count(argument: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{argument}={value!r} must be an int >= 0 (got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    return value


def _sequence(disk: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        msg = f"positions[{disk!r}]={value!r} must be an int >= -1 (-1: no record yet)"
        raise InvalidConfiguration(msg)
    return value


def _json_text(argument: str, value: object) -> str:
    if not isinstance(value, str) or len(value.encode()) > PARAMS_BYTES_MAX:
        msg = f"{argument} must be a str of JSON text up to {PARAMS_BYTES_MAX} bytes "
        msg += f"(got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    try:
        json.loads(value)
    except json.JSONDecodeError as error:
        msg = f"{argument}={value[:80]!r} is not valid JSON: {error}"
        raise InvalidConfiguration(msg) from error
    return value
