"""One write transaction on an SQLite connection, the way every store here takes one.

The control store (``store.py``) and the orchestrator's job store
(``engine/orchestration/jobs.py``) both open their connection in autocommit mode and
write in explicit ``BEGIN IMMEDIATE`` ... ``COMMIT`` blocks, holding their own lock
around each: :func:`transaction` is that block, :func:`rollback` ends one an error
interrupted (the original error is what gets reported).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress


def rollback(connection: sqlite3.Connection) -> None:
    """End a transaction an error interrupted (the original error is reported)."""
    if connection.in_transaction:
        with suppress(sqlite3.DatabaseError):
            connection.execute("ROLLBACK")


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
    """One write transaction (the caller holds its store's lock)."""
    cursor = connection.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    try:
        yield cursor
    except BaseException:
        rollback(connection)
        raise
    cursor.execute("COMMIT")
