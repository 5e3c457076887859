"""Unit tests for engine.control.store: durable per-site control state in SQLite."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from engine.control.schema import SCHEMA_VERSION
from engine.control.store import ControlStore, OperationState
from engine.errors import InvalidConfiguration, InvalidName, ReplicationError
from engine.replica.recovery_point import RecoveryPoint
from engine.testing import ManualClock

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(500.0)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "primary.sqlite"


@pytest.fixture
def store(path: Path, clock: ManualClock) -> Iterator[ControlStore]:
    with ControlStore.open(path, site_name="primary", clock=clock) as control:
        control.add_vm(
            "vm-1", phase="protected", active_site="primary", direction="forward"
        )
        yield control


def test_new_vm_starts_at_cycle_one(store: ControlStore) -> None:
    """A VM added to the store has its phase, site, direction and cycle 1."""
    control = store.vm("vm-1")
    expected = ("protected", "primary", "forward", 0, 1)
    assert expected == (
        control.phase,
        control.active_site,
        control.direction,
        control.epoch,
        control.next_cycle_id,
    )


def test_state_survives_reopen(path: Path, clock: ManualClock) -> None:
    """Everything written is there after closing and reopening the file."""
    point = RecoveryPoint(1, 4, 2, 510.0, True, (("data", 9), ("os", 17)))
    with ControlStore.open(path, site_name="primary", clock=clock) as store:
        store.add_vm("vm-1", phase="protected", active_site="primary", direction="f")
        store.set_log_positions("vm-1", {"os": 17, "data": 9})
        store.save_recovery_points("vm-1", [point])
        first_cycle_id = store.take_cycle_id("vm-1")
    with ControlStore.open(path, site_name="primary", clock=clock) as store:
        expected_positions = {"data": 9, "os": 17}
        assert expected_positions == store.log_positions("vm-1")
        assert (point,) == store.recovery_points("vm-1")
        expected = (1, 2, ("vm-1",))
        actual = (first_cycle_id, store.take_cycle_id("vm-1"), store.vm_names())
        assert expected == actual


def test_complete_operation_moves_the_phase(
    store: ControlStore, clock: ManualClock
) -> None:
    """Completing an operation changes the phase, epoch and site in one step."""
    operation_id = store.begin_operation("vm-1", "failover", '{"point": 3}')
    pending = store.pending_operation("vm-1")
    assert pending is not None
    assert operation_id == pending.operation_id
    clock.advance(5)
    control = store.complete_operation(
        operation_id, "failed_over", epoch=1, active_site="secondary"
    )
    expected_control = ("failed_over", 1, "secondary")
    assert expected_control == (
        control.phase,
        control.epoch,
        control.active_site,
    )
    assert store.pending_operation("vm-1") is None
    finished = store.operation(operation_id)
    expected_operation = (OperationState.COMPLETED, 500.0, 505.0)
    assert expected_operation == (
        finished.state,
        finished.started_at,
        finished.finished_at,
    )


def test_abandon_operation_keeps_the_phase(store: ControlStore) -> None:
    """An abandoned operation leaves the phase as it was."""
    operation_id = store.begin_operation("vm-1", "planned_failover", "{}")
    store.abandon_operation(operation_id, "shutdown refused")
    abandoned = store.operation(operation_id)
    expected = (
        "protected",
        OperationState.ABANDONED,
        {"abandoned": "shutdown refused"},
    )
    assert expected == (
        store.vm("vm-1").phase,
        abandoned.state,
        json.loads(abandoned.result_json or "null"),
    )


def test_one_pending_operation_per_vm(store: ControlStore) -> None:
    """A second operation cannot begin while one is pending."""
    first = store.begin_operation("vm-1", "pause", "{}")
    with pytest.raises(ReplicationError, match=f"operation {first}"):
        store.begin_operation("vm-1", "resume", "{}")


def test_finished_operation_cannot_complete_again(store: ControlStore) -> None:
    """Completing an operation twice is refused, naming its state."""
    operation_id = store.begin_operation("vm-1", "pause", "{}")
    store.complete_operation(operation_id, "replication_paused")
    with pytest.raises(ReplicationError, match="is completed, not pending"):
        store.complete_operation(operation_id, "protected")


def test_unknown_vm_names_the_known_ones(store: ControlStore) -> None:
    """Asking for an unknown VM lists the VMs there are."""
    with pytest.raises(InvalidConfiguration, match=r"known: \['vm-1'\]"):
        store.vm("vm-9")


def test_duplicate_vm_is_refused(store: ControlStore) -> None:
    """Adding a VM twice is refused."""
    with pytest.raises(InvalidConfiguration, match="already"):
        store.add_vm("vm-1", phase="p", active_site="primary", direction="f")


def test_remove_vm_drops_its_rows(store: ControlStore) -> None:
    """Removing a VM removes its operations and positions too."""
    store.set_log_positions("vm-1", {"os": 1})
    store.begin_operation("vm-1", "disable", "{}")
    store.remove_vm("vm-1")
    expected = ((), 0)
    assert expected == (store.vm_names(), store.statistics().pending_operation_count)


@pytest.mark.parametrize(
    ("name", "params_json", "match"),
    [
        ("", "{}", "name=''"),
        ("failover", "{not json", "not valid JSON"),
        ("failover", 42, "must be a str of JSON"),
    ],
)
def test_operation_arguments_are_validated(
    store: ControlStore, name: str, params_json: str, match: str
) -> None:
    """Bad operation names or parameters are refused before anything is written."""
    with pytest.raises(InvalidConfiguration, match=match):
        store.begin_operation("vm-1", name, params_json)
    assert store.pending_operation("vm-1") is None


def test_hostile_vm_name_is_refused(store: ControlStore) -> None:
    """A VM name with a path separator is refused."""
    with pytest.raises(InvalidName):
        store.add_vm("a/b", phase="p", active_site="primary", direction="f")


def test_file_uses_wal_and_full_sync(store: ControlStore) -> None:
    """The connection runs in WAL mode with synchronous=FULL."""
    statistics = store.statistics()
    expected = ("wal", 2, SCHEMA_VERSION, 1)
    assert expected == (
        statistics.journal_mode,
        statistics.synchronous,
        statistics.schema_version,
        statistics.vm_count,
    )


def test_file_of_another_site_is_refused(path: Path, clock: ManualClock) -> None:
    """Opening a site's file under another site name is refused."""
    ControlStore.open(path, site_name="primary", clock=clock).close()
    with pytest.raises(InvalidConfiguration, match="belongs to site 'primary'"):
        ControlStore.open(path, site_name="secondary", clock=clock)


def test_newer_schema_is_refused(path: Path, clock: ManualClock) -> None:
    """A file written by a newer schema version is refused, naming both versions."""
    ControlStore.open(path, site_name="primary", clock=clock).close()
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        connection.commit()
    with pytest.raises(InvalidConfiguration, match="schema version 2"):
        ControlStore.open(path, site_name="primary", clock=clock)


def test_file_that_is_not_a_database_is_refused(path: Path, clock: ManualClock) -> None:
    """A file that is not SQLite is refused and left as it was."""
    content = b"these are not the pages you are looking for" * 100
    path.write_bytes(content)
    with pytest.raises(InvalidConfiguration, match="not an SQLite database"):
        ControlStore.open(path, site_name="primary", clock=clock)
    assert content == path.read_bytes()


def test_database_of_another_application_is_refused(
    path: Path, clock: ManualClock
) -> None:
    """An SQLite file of another application is refused untouched."""
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE other (x INTEGER)")
        connection.commit()
    with pytest.raises(InvalidConfiguration, match="another application"):
        ControlStore.open(path, site_name="primary", clock=clock)
    with closing(sqlite3.connect(path)) as connection:
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    expected = "delete"
    assert expected == mode


def test_missing_directory_is_reported(tmp_path: Path, clock: ManualClock) -> None:
    """A path whose directory does not exist is refused with a clear message."""
    with pytest.raises(InvalidConfiguration, match="directory does not exist"):
        ControlStore.open(tmp_path / "no" / "x.sqlite", site_name="p", clock=clock)


# -- crash between intent and completion, in a real child process ---------------------

CHILD = """
import os, signal, sys
from pathlib import Path
from engine.control.store import ControlStore, OperationState
from engine.testing import ManualClock

path, stop_after = Path(sys.argv[1]), sys.argv[2]
store = ControlStore.open(path, site_name="primary", clock=ManualClock(900.0))
store.add_vm("vm-1", phase="protected", active_site="primary", direction="forward")
operation_id = store.begin_operation("vm-1", "failover", '{"recovery_point_id": 7}')
if stop_after == "complete":
    store.complete_operation(operation_id, "failed_over", active_site="secondary")
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_killed_child(path: Path, stop_after: str) -> int:
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), stop_after],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )
    expected = ""
    assert expected == completed.stderr
    return completed.returncode


def test_kill_between_begin_and_complete_leaves_the_intent(
    path: Path, clock: ManualClock
) -> None:
    """After SIGKILL between begin and complete, reopen finds the pending intent."""
    killed = -signal.SIGKILL
    assert killed == run_killed_child(path, "begin")
    with ControlStore.open(path, site_name="primary", clock=clock) as store:
        pending = store.pending_operation("vm-1")
        assert pending is not None
        expected = ("failover", {"recovery_point_id": 7}, "protected")
        assert expected == (
            pending.name,
            json.loads(pending.params_json),
            store.vm("vm-1").phase,
        )


def test_kill_after_complete_keeps_the_new_phase(
    path: Path, clock: ManualClock
) -> None:
    """After SIGKILL right after complete, reopen finds the new phase, no intent."""
    killed = -signal.SIGKILL
    assert killed == run_killed_child(path, "complete")
    with ControlStore.open(path, site_name="primary", clock=clock) as store:
        expected = (None, "failed_over", "secondary")
        assert expected == (
            store.pending_operation("vm-1"),
            store.vm("vm-1").phase,
            store.vm("vm-1").active_site,
        )
