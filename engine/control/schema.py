"""The schema of a site's control file, its migrations, and the checks made before
trusting one.

``PRAGMA application_id`` marks the file as ours and ``PRAGMA user_version`` holds
:data:`SCHEMA_VERSION`. Opening a file from a newer version, or an SQLite file of
another application, raises :class:`InvalidConfiguration` naming the path, what was
found and what to do; nothing is written to it. One file per site: a file created for
another site is refused too. A file that is ours but damaged (not a database any more,
truncated, a table or an index missing, a column changed) is
:class:`~engine.errors.DamagedState` (see ``store.py``).

Tables (all ``STRICT``): ``site`` (one row: the site the file belongs to), ``vm``
(phase, active site, direction, epoch, next cycle id: the roles are data, never inferred
from site names), ``disk`` (per VM: name, size in bytes, ordinal), ``log_position``
(per VM and disk), ``recovery_point`` (the catalogue mirror) and ``operation`` (intent,
state, times, result). A partial unique index allows one pending operation per VM. Rows
of a VM go with it (``ON DELETE CASCADE``).

**Versions.** Version 1 is :data:`SCHEMA_V1`; each later version ``n`` adds the
statements of ``MIGRATIONS[n]``. A new file is created as version 1 and migrated
forward by the same steps, so a new file and a migrated one cannot differ. A migration
runs in the transaction that checks the site, with ``user_version``: it is all done or
not at all. Version 2 added the ``disk`` table; the rows of VMs that existed before it
come from their images (``site.py``, the one place that looks at them). An older engine
never rewrites a newer file: it refuses it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from contextlib import closing, suppress
from pathlib import Path
from typing import Final

from engine.errors import DamagedState, InvalidConfiguration

SCHEMA_VERSION: Final = 3
APPLICATION_ID: Final = 0x48564452  # "HVDR" in ASCII: marks the file as ours

SCHEMA_V1: Final = (
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
"""The first schema, as version 1 of the engine created it."""

MIGRATIONS: Final[Mapping[int, tuple[str, ...]]] = {
    2: (
        """CREATE TABLE disk (
            vm TEXT NOT NULL REFERENCES vm (name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
            ordinal INTEGER NOT NULL CHECK (ordinal >= 0),
            PRIMARY KEY (vm, name),
            UNIQUE (vm, ordinal)) STRICT""",
    ),
    3: (
        # Which site's row is newer (a failover recorded at the target while the old
        # source was down), and what the phase alone does not say (where the VM runs,
        # the failover in progress, the drill, the loss report) as one JSON object.
        (
            "ALTER TABLE vm ADD COLUMN generation INTEGER NOT NULL DEFAULT 0 "
            "CHECK (generation >= 0)"
        ),
        "ALTER TABLE vm ADD COLUMN details_json TEXT NOT NULL DEFAULT '{}'",
    ),
}
"""``MIGRATIONS[n]``: the statements taking a file from version ``n - 1`` to ``n``."""

LegacyDisks = Callable[[str], Mapping[str, int]]
"""The disks (name -> size in bytes) of a VM recorded before the ``disk`` table."""


def refuse_foreign(connection: sqlite3.Connection, path: Path) -> bool:
    """Refuse, before writing anything, a file that is not ours or is too new.

    Returns whether the file is new (an empty database, ours to create).
    """
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if application_id == version == tables == 0:
        return True  # a new, empty database: ours to create
    if application_id != APPLICATION_ID or version == 0:
        msg = f"path={str(path)!r} is an SQLite database of another application "
        msg += f"(application_id={application_id:#x}, user_version={version}); "
        msg += "expected an hvdr control file"
        raise InvalidConfiguration(msg)
    if version > SCHEMA_VERSION:
        msg = f"path={str(path)!r} has schema version {version}, written by a newer "
        msg += f"hvdr; this one reads up to {SCHEMA_VERSION}: upgrade hvdr"
        raise InvalidConfiguration(msg)
    return False


def configure(connection: sqlite3.Connection, path: Path) -> None:
    """WAL, ``synchronous=FULL`` and foreign keys, or refuse the file's filesystem."""
    (journal_mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if journal_mode != "wal":
        msg = f"path={str(path)!r}: SQLite refused WAL mode (got {journal_mode!r}); "
        msg += "put the control file on a local filesystem"
        raise InvalidConfiguration(msg)
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")


def create_or_check_site(
    connection: sqlite3.Connection,
    path: Path,
    site_name: str,
    legacy_disks: LegacyDisks | None,
) -> int:
    """Create, migrate and check the file in one transaction; return the version found.

    A new file is created and migrated to :data:`SCHEMA_VERSION` (0 is returned). A
    file of another site is refused; an older file is migrated (``legacy_disks`` tells
    the disks of its VMs when it predates the ``disk`` table). The structure (tables,
    columns, indexes) is then compared with the one this version creates.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        (found,) = connection.execute("PRAGMA user_version").fetchone()
        if found == 0:
            for statement in SCHEMA_V1:
                connection.execute(statement)
            connection.execute("INSERT INTO site VALUES (1, ?)", (site_name,))
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
        rows = connection.execute("SELECT name FROM site").fetchall()
        if len(rows) != 1:
            what = (
                f"its site table holds {len(rows)} rows, expected 1 (the site's name)"
            )
            raise damaged(path, what)
        ((stored_site,),) = rows
        if stored_site != site_name:
            msg = f"site_name={site_name!r} does not match the control file at "
            msg += f"{str(path)!r}, which belongs to site {stored_site!r}"
            raise InvalidConfiguration(msg)
        for version in range(max(found, 1) + 1, SCHEMA_VERSION + 1):
            _migrate(connection, path, version, legacy_disks if found else None)
        if found != SCHEMA_VERSION:
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        check_structure(connection, path)
    except BaseException:
        if connection.in_transaction:  # SQLite may have rolled back already
            with suppress(sqlite3.DatabaseError):  # the first error is the one to tell
                connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return int(found)


def _migrate(
    connection: sqlite3.Connection,
    path: Path,
    version: int,
    legacy_disks: LegacyDisks | None,
) -> None:
    """Take the file from ``version - 1`` to ``version`` (inside the transaction)."""
    for statement in MIGRATIONS[version]:
        connection.execute(statement)
    if version != 2:
        return
    vms = [name for (name,) in connection.execute("SELECT name FROM vm ORDER BY name")]
    if vms and legacy_disks is None:
        msg = f"control file {str(path)!r} (schema version 1) tracks VMs {vms} "
        msg += "whose disks are not recorded yet; open it through SiteStorage.open, "
        msg += "which reads them from the VMs' images once"
        raise InvalidConfiguration(msg)
    for vm in vms:
        assert legacy_disks is not None
        rows = [
            (vm, disk, size, ordinal)
            for ordinal, (disk, size) in enumerate(legacy_disks(vm).items())
        ]
        connection.executemany("INSERT INTO disk VALUES (?, ?, ?, ?)", rows)


def _expected_structure() -> dict[str, tuple[tuple[object, ...], ...]]:
    """Tables and indexes with their columns, as this version creates them."""
    with closing(sqlite3.connect(":memory:")) as reference:
        for statement in SCHEMA_V1:
            reference.execute(statement)
        for version in range(2, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                reference.execute(statement)
        return _structure(reference)


def _structure(
    connection: sqlite3.Connection,
) -> dict[str, tuple[tuple[object, ...], ...]]:
    """Each table's columns (name, type, not null, primary key) and each index."""
    structure: dict[str, tuple[tuple[object, ...], ...]] = {}
    objects = connection.execute(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    for kind, name in objects:
        if kind == "table":
            columns = connection.execute(f"PRAGMA table_info({name!r})").fetchall()
            structure[name] = tuple((c[1], c[2], c[3], c[5]) for c in columns)
        else:
            columns = connection.execute(f"PRAGMA index_info({name!r})").fetchall()
            structure[name] = ((kind,), *(tuple(c) for c in columns))
    return structure


_EXPECTED: Final = _expected_structure()


def check_structure(connection: sqlite3.Connection, path: Path) -> None:
    """Refuse with :class:`DamagedState` a file whose tables or indexes differ."""
    found = _structure(connection)
    missing = sorted(set(_EXPECTED) - set(found))
    changed = sorted(
        name for name in set(_EXPECTED) & set(found) if _EXPECTED[name] != found[name]
    )
    if missing or changed:
        what = f"tables or indexes missing {missing}, changed {changed} (expected "
        what += f"those of schema version {SCHEMA_VERSION})"
        raise damaged(path, what)


def damaged(path: Path, what: str) -> DamagedState:
    """The error for a control file found damaged: names the file, what was found."""
    msg = f"control file {str(path)!r} is damaged: {what}; restore control.sqlite3 "
    msg += "from a backup, or move the site aside to start afresh"
    return DamagedState(msg)
