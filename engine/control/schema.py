"""The schema of a site's control file, and the checks made before trusting one.

``PRAGMA application_id`` marks the file as ours and ``PRAGMA
user_version`` holds :data:`SCHEMA_VERSION`. Opening a file from a newer version, an
SQLite file of another application, or a file that is not a database at all raises
:class:`InvalidConfiguration` naming the path, what was found and what to do; nothing is
written to it. One file per site: a file created for another site is refused too.

Tables (all ``STRICT``): ``site`` (one row: the site the file belongs to), ``vm``
(phase, active site, direction, epoch, next cycle id), ``log_position`` (per VM and
disk), ``recovery_point`` (the catalogue mirror) and ``operation`` (intent, state,
times, result). A partial unique index allows one pending operation per VM. Rows of a VM
go with it (``ON DELETE CASCADE``). A later schema version adds a migration step here,
keyed on ``user_version``; files are never rewritten silently by an older engine."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from engine.errors import InvalidConfiguration

SCHEMA_VERSION: Final = 1
APPLICATION_ID: Final = 0x48564452  # "HVDR" in ASCII: marks the file as ours


SCHEMA: Final = (
    """CREATE TABLE site (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        name TEXT NOT NULL) STRICT""",
    """CREATE TABLE vm (
        name TEXT PRIMARY KEY,
        phase TEXT NOT NULL,
        active_site TEXT NOT NULL,
        direction TEXT NOT NULL,
        epoch INTEGER NOT NULL CHECK (epoch >= 0),
        next_cycle_id INTEGER NOT NULL CHECK (next_cycle_id >= 1)) STRICT""",
    """CREATE TABLE log_position (
        vm TEXT NOT NULL REFERENCES vm (name) ON DELETE CASCADE,
        disk TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        PRIMARY KEY (vm, disk)) STRICT""",
    """CREATE TABLE recovery_point (
        vm TEXT NOT NULL REFERENCES vm (name) ON DELETE CASCADE,
        recovery_point_id INTEGER NOT NULL,
        cycle_id INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        created_at REAL NOT NULL,
        app_consistent INTEGER NOT NULL CHECK (app_consistent IN (0, 1)),
        last_sequences TEXT NOT NULL,
        PRIMARY KEY (vm, recovery_point_id)) STRICT""",
    """CREATE TABLE operation (
        operation_id INTEGER PRIMARY KEY AUTOINCREMENT,
        vm TEXT NOT NULL REFERENCES vm (name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        params_json TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'completed', 'abandoned')),
        started_at REAL NOT NULL,
        finished_at REAL,
        result_json TEXT) STRICT""",
    """CREATE UNIQUE INDEX one_pending_operation_per_vm
        ON operation (vm) WHERE state = 'pending'""",
)


def refuse_foreign(connection: sqlite3.Connection, path: Path) -> None:
    """Refuse, before writing anything, a file that is not ours or is too new."""
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if application_id == version == tables == 0:
        return  # a new, empty database: ours to create
    if application_id != APPLICATION_ID or version == 0:
        msg = f"path={str(path)!r} is an SQLite database of another application "
        msg += f"(application_id={application_id:#x}, user_version={version}); "
        msg += "expected an hvdr control file"
        raise InvalidConfiguration(msg)
    if version > SCHEMA_VERSION:
        msg = f"path={str(path)!r} has schema version {version}, written by a newer "
        msg += f"hvdr; this one reads up to {SCHEMA_VERSION}: upgrade hvdr"
        raise InvalidConfiguration(msg)


def configure(connection: sqlite3.Connection, path: Path) -> None:
    (journal_mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if journal_mode != "wal":
        msg = f"path={str(path)!r}: SQLite refused WAL mode (got {journal_mode!r}); "
        msg += "put the control file on a local filesystem"
        raise InvalidConfiguration(msg)
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")


def create_or_check_site(
    connection: sqlite3.Connection, path: Path, site_name: str
) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if tables == 0:
            for statement in SCHEMA:
                connection.execute(statement)
            connection.execute("INSERT INTO site VALUES (1, ?)", (site_name,))
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        (stored_site,) = connection.execute("SELECT name FROM site").fetchone()
        if stored_site != site_name:
            msg = f"site_name={site_name!r} does not match the control file at "
            msg += f"{str(path)!r}, which belongs to site {stored_site!r}"
            raise InvalidConfiguration(msg)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
