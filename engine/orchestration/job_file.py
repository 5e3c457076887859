"""The job store's file: its schema, the checks made before trusting one, and the
values it accepts from callers (text cut past a bound, parameters as a JSON object).

``PRAGMA application_id`` marks the file as an hvdr job store (distinct from a site's
control file) and ``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`. A SQLite file
of another application, or of a newer version, is refused with
:class:`~engine.errors.InvalidConfiguration` before anything is written to it.

Tables (``STRICT``: a wrong type is an error, not a conversion): ``job`` (kind,
target, parameters as a JSON object, state, run number, owner, times, error,
progress) and ``step`` (per job, in the order begun: run number, name, VM, group,
state, times, error, note); steps go with their job. The state columns accept only
the states of ``job_records.py``.

A file that is ours but damaged (not a database any more, failing ``quick_check``, a
table or an index missing or changed, a value the store never writes) is
:class:`~engine.errors.DamagedState` naming the file and what was found: nothing is
written to it, nor is it deleted; the operator moves it aside or restores a backup.
:class:`Row` checks each value read back, so damage never surfaces as a bare
``KeyError`` or ``ValueError`` far from the cause.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

from engine.control.sqlite_errors import (
    BUSY_TIMEOUT_SECONDS,
    sqlite_code,
    storage_exhausted,
    transient,
)
from engine.errors import (
    DamagedState,
    InvalidConfiguration,
    ReplicationError,
    StorageFull,
)
from engine.names import validate_name
from engine.orchestration.job_records import JobKind, JobState, StepState
from engine.storage.files import fsync_directory

APPLICATION_ID: Final = 0x48564A42  # "HVJB" in ASCII: marks the file as our job store
SCHEMA_VERSION: Final = 1

TEXT_CHARACTERS_MAX: Final = 4096
"""An error, a note or a reason is kept whole up to this length (the model's refusals
are a few hundred characters); longer text is cut, saying how much was cut, so that a
runaway message cannot grow the file without bound."""

PARAMS_BYTES_MAX: Final = 256 * 1024
"""A job's parameters are a plan's definition at most (names of up to
``recovery_plans.PLAN_VMS_MAX`` VMs, each at most 64 characters)."""


def _states(enum_type: type[JobState] | type[StepState]) -> str:
    return ", ".join(f"'{state.value}'" for state in enum_type)


SCHEMA: Final = (
    f"""CREATE TABLE job (
        job_id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        params_json TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ({_states(JobState)})),
        run INTEGER NOT NULL CHECK (run >= 1),
        owner TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        error TEXT,
        bytes_done INTEGER CHECK (bytes_done >= 0),
        bytes_total INTEGER CHECK (bytes_total >= 0)) STRICT""",
    f"""CREATE TABLE step (
        job_id INTEGER NOT NULL REFERENCES job (job_id) ON DELETE CASCADE,
        step_index INTEGER NOT NULL CHECK (step_index >= 0),
        run INTEGER NOT NULL CHECK (run >= 1),
        name TEXT NOT NULL,
        vm TEXT,
        group_number INTEGER CHECK (group_number >= 1),
        state TEXT NOT NULL CHECK (state IN ({_states(StepState)})),
        started_at REAL NOT NULL,
        finished_at REAL,
        error TEXT,
        note TEXT,
        PRIMARY KEY (job_id, step_index)) STRICT""",
    "CREATE INDEX job_by_state ON job (state)",
)
"""The tables, as version 1 creates them (every value bound as a parameter; the state
lists are our constants)."""


def checked_path(path: object) -> Path:
    if not isinstance(path, str | os.PathLike):
        msg = f"path={path!r} must be a path to the job store's file (str or "
        msg += f"os.PathLike, got {type(path).__name__}), e.g. '<folder>/jobs.sqlite'"
        raise InvalidConfiguration(msg)
    found = Path(path)
    if not found.parent.is_dir():
        msg = f"path={str(found)!r}: its folder does not exist; create it first"
        raise InvalidConfiguration(msg)
    if found.exists() and not found.is_file():
        msg = f"path={str(found)!r} exists and is not a file; name the job store's "
        msg += "file (e.g. '<folder>/jobs.sqlite')"
        raise InvalidConfiguration(msg)
    return found


def connect(path: Path) -> sqlite3.Connection:
    """Open, refuse a foreign or damaged file before writing, configure, create.

    A new store is made whole under another name and renamed into place
    (:func:`_create_whole`), so that a file at ``path`` always holds a schema: an
    empty one (0 bytes) is damage, refused, never taken for a new store."""
    if not path.exists():
        _create_whole(path)
    elif path.stat().st_size == 0:
        what = "it is empty (0 bytes), while a job store always holds its schema "
        what += "(truncated?)"
        raise damaged(path, what)
    try:
        connection = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
            check_same_thread=False,
        )  # fmt: skip
    except sqlite3.DatabaseError as error:
        raise translate(error, path) from error
    try:
        try:
            new = _refuse_foreign(connection, path)
        except sqlite3.DatabaseError as error:
            if transient(error) or storage_exhausted(error, path):
                raise
            what = f"it is not a readable SQLite database ({error})"
            raise damaged(path, what) from error
        (journal_mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if journal_mode != "wal":
            msg = f"path={str(path)!r}: SQLite refused WAL mode (got {journal_mode!r});"
            msg += " put the job store on a local filesystem"
            raise InvalidConfiguration(msg)
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        if new:
            _create(connection)
        _check_structure(connection, path)
    except sqlite3.DatabaseError as error:
        connection.close()
        if isinstance(error, sqlite3.ProgrammingError | sqlite3.NotSupportedError):
            raise
        raise translate(error, path) from error
    except BaseException:
        connection.close()
        raise
    return connection


CREATING_SUFFIX: Final = ".creating"
"""A new job store is written under its name plus this, then renamed."""


def _refuse_foreign(connection: sqlite3.Connection, path: Path) -> bool:
    """Refuse a file that is not our job store, or too new; True: a new empty one."""
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if application_id == version == tables == 0:
        return True
    if application_id != APPLICATION_ID or version == 0:
        msg = f"path={str(path)!r} is an SQLite database of another application "
        msg += f"(application_id={application_id:#x}, user_version={version}); "
        msg += "expected an hvdr job store: name another file"
        raise InvalidConfiguration(msg)
    if version > SCHEMA_VERSION:
        msg = f"path={str(path)!r} is a job store of schema version {version}, "
        msg += f"written by a newer hvdr; this one reads up to {SCHEMA_VERSION}"
        raise InvalidConfiguration(msg)
    return False


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open the store at ``path`` to read it beside its owner (WAL lets readers in
    while a writer works): nothing is created, locked, configured or written."""
    if not path.is_file():
        msg = f"path={str(path)!r}: no job store there yet (nothing has run)"
        raise InvalidConfiguration(msg)
    try:
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True,
            timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
            check_same_thread=False,
        )  # fmt: skip
        try:
            if _refuse_foreign(connection, path):
                raise damaged(path, "it holds no job store schema")
            _check_structure(connection, path)
        except BaseException:
            connection.close()
            raise
    except sqlite3.DatabaseError as error:
        raise translate(error, path) from error
    return connection


def _create_whole(path: Path) -> None:
    """Make a new job store at ``path``: the schema written and synced under a
    temporary name, then renamed into place and the folder synced."""
    temporary = path.with_name(path.name + CREATING_SUFFIX)
    for debris in (temporary, Path(f"{temporary}-journal")):
        debris.unlink(missing_ok=True)  # a creation a crash cut short
    try:
        with closing(sqlite3.connect(temporary, isolation_level=None)) as connection:
            connection.execute("PRAGMA synchronous = FULL")
            _create(connection)
        descriptor = os.open(temporary, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.rename(temporary, path)
        fsync_directory(path.parent)
    except sqlite3.DatabaseError as error:
        temporary.unlink(missing_ok=True)
        raise translate(error, path) from error
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def _create(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA:
            connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
    except BaseException:
        with suppress(sqlite3.DatabaseError):
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _structure(connection: sqlite3.Connection) -> list[tuple[object, ...]]:
    return connection.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()


def _expected_structure() -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(":memory:")) as reference:
        for statement in SCHEMA:
            reference.execute(statement)
        return _structure(reference)


_EXPECTED: Final = _expected_structure()


def _check_structure(connection: sqlite3.Connection, path: Path) -> None:
    found = _structure(connection)
    if found != _EXPECTED:
        names = sorted(str(entry[1]) for entry in found)
        what = f"its tables and indexes {names} are not those of job store schema "
        what += f"version {SCHEMA_VERSION} (or were changed)"
        raise damaged(path, what)


def damaged(path: Path, what: str) -> DamagedState:
    msg = f"job store {str(path)!r} is damaged: {what}; nothing was changed or "
    msg += "deleted: move the file aside (a new store starts an empty job history) "
    msg += "or restore it from a backup"
    return DamagedState(msg)


def translate(error: sqlite3.DatabaseError, path: Path) -> Exception:
    """Our error for an SQLite error: full, busy, or else the file is damaged."""
    if sqlite_code(error) == sqlite3.SQLITE_FULL or storage_exhausted(error, path):
        msg = f"job store {str(path)!r} cannot be written, the storage is full "
        msg += f"({error}); the job store was left as it was: free space and retry"
        return StorageFull(msg)
    if transient(error):
        msg = f"job store {str(path)!r} stayed locked by another connection for more "
        msg += f"than {BUSY_TIMEOUT_SECONDS:g} s ({error}); the job store was left "
        msg += "as it was: close the other program (an sqlite3 shell?) and retry"
        return ReplicationError(msg)
    return damaged(path, f"SQLite reports {error}")


def caller_text(argument: str, value: object) -> str:
    """Caller text (an error, a note, a reason), cut past the bound."""
    if not isinstance(value, str) or not value:
        msg = f"{argument}={value!r} must be a non-empty str"
        raise InvalidConfiguration(msg)
    if len(value) <= TEXT_CHARACTERS_MAX:
        return value
    cut = len(value) - TEXT_CHARACTERS_MAX
    return value[:TEXT_CHARACTERS_MAX] + f" [... {cut} characters cut]"


def params_json_text(params: object) -> str:
    if params is None:
        return "{}"
    if not isinstance(params, Mapping):
        msg = f"params={params!r} must be None or a mapping of JSON values"
        raise InvalidConfiguration(msg)
    try:
        text = json.dumps(dict(params), sort_keys=True)
    except (TypeError, ValueError) as error:
        msg = f"params={params!r} must hold only JSON values ({error})"
        raise InvalidConfiguration(msg) from None
    if len(text) > PARAMS_BYTES_MAX:
        msg = f"params: {len(text)} bytes of JSON, over {PARAMS_BYTES_MAX}"
        raise InvalidConfiguration(msg)
    return text


@dataclass(frozen=True)
class Row:
    """Checks one row read back: typed values, or :class:`DamagedState` naming the
    file, the row, the column and the value."""

    path: Path
    where: str

    def refuse(self, column: str, value: object, allowed: str) -> NoReturn:
        shown = repr(value)[:80]
        what = f"{self.where} has {column}={shown}; allowed: {allowed}"
        raise damaged(self.path, what)

    def integer(self, column: str, value: object, *, minimum: int) -> int:
        if type(value) is not int or value < minimum:
            self.refuse(column, value, f"an int >= {minimum}")
        return value

    def optional_integer(
        self, column: str, value: object, *, minimum: int = 0
    ) -> int | None:
        return None if value is None else self.integer(column, value, minimum=minimum)

    def time(self, column: str, value: object) -> float:
        if type(value) is not float:
            self.refuse(column, value, "a time (a float of seconds)")
        return value

    def optional_time(self, column: str, value: object) -> float | None:
        return None if value is None else self.time(column, value)

    def text(self, column: str, value: object) -> str:
        if not isinstance(value, str) or not value:
            self.refuse(column, value, "non-empty text")
        return value

    def optional_text(self, column: str, value: object) -> str | None:
        return None if value is None else self.text(column, value)

    def name(self, column: str, value: object) -> str:
        try:
            return validate_name(value, argument=column)
        except InvalidConfiguration:
            self.refuse(column, value, "a name (letters, digits, '.', '_', '-')")

    def choice(
        self, column: str, value: object, choices: type[JobState | StepState | JobKind]
    ) -> str:
        allowed = [str(choice) for choice in choices]
        if not isinstance(value, str) or value not in allowed:
            self.refuse(column, value, ", ".join(allowed))
        return value

    def json_object(self, column: str, value: object) -> str:
        try:
            found = json.loads(value) if isinstance(value, str) else None
        except ValueError:
            found = None
        if not isinstance(found, dict) or not isinstance(value, str):
            self.refuse(column, value, "a JSON object")
        return value
