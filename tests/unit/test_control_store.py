"""Unit tests for engine.control.store: durable per-site control state in SQLite."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from engine.control.schema import SCHEMA_VERSION
from engine.control.store import CREATE_VM, ControlStore, OperationState
from engine.errors import (
    DamagedState,
    InvalidConfiguration,
    InvalidName,
    ReplicationError,
)
from engine.replica.recovery_point import RecoveryPoint
from engine.testing import ManualClock

REPOSITORY = Path(__file__).resolve().parents[2]
DISKS = {"os": 8192, "data": 4096}


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
            "vm-1",
            phase="protected",
            active_site="primary",
            direction="forward",
            disks=DISKS,
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
        store.add_vm(
            "vm-1", phase="protected", active_site="primary", direction="f", disks=DISKS
        )
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
        store.add_vm(
            "vm-1", phase="p", active_site="primary", direction="f", disks=DISKS
        )


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
        store.add_vm(
            "a/b", phase="p", active_site="primary", direction="f", disks=DISKS
        )


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
    with pytest.raises(
        InvalidConfiguration, match=f"schema version {SCHEMA_VERSION + 1}"
    ):
        ControlStore.open(path, site_name="primary", clock=clock)


def test_file_that_is_not_a_database_is_refused(path: Path, clock: ManualClock) -> None:
    """A file that is not SQLite is damage, refused naming the file, left as it was."""
    content = b"these are not the pages you are looking for" * 100
    path.write_bytes(content)
    with pytest.raises(DamagedState, match=f"{path}.*not a readable SQLite database"):
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
from engine.control.store import CREATE_VM, ControlStore, OperationState
from engine.testing import ManualClock

path, stop_after = Path(sys.argv[1]), sys.argv[2]
store = ControlStore.open(path, site_name="primary", clock=ManualClock(900.0))
store.add_vm(
    "vm-1", phase="protected", active_site="primary", direction="forward",
    disks={"os": 4096},
)
if stop_after == "creating":
    store.add_vm(
        "vm-2", phase="creating", active_site="primary", direction="forward",
        disks={"os": 8192, "data": 4096}, creating=True,
    )
    os.kill(os.getpid(), signal.SIGKILL)
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


def test_kill_after_add_vm_creating_leaves_vm_and_intent_together(
    path: Path, clock: ManualClock
) -> None:
    """A VM added with creating=True comes back with its disks and create_vm pending."""
    killed = -signal.SIGKILL
    assert killed == run_killed_child(path, "creating")
    with ControlStore.open(path, site_name="primary", clock=clock) as store:
        pending = store.pending_operation("vm-2")
        assert pending is not None
        expected = (
            CREATE_VM,
            {"disks": {"os": 8192, "data": 4096}},
            "creating",
            ["os", "data"],
        )
        assert expected == (
            pending.name,
            json.loads(pending.params_json),
            store.vm("vm-2").phase,
            list(store.vm_disks("vm-2")),
        )


# -- disks -----------------------------------------------------------------------------


def test_disks_come_back_in_their_order(path: Path, clock: ManualClock) -> None:
    """vm_disks returns the disks as added (not sorted by name), after a reopen too."""
    disks = {"os": 8192, "data": 4096, "logs": 512}
    with ControlStore.open(path, site_name="primary", clock=clock) as store:
        store.add_vm(
            "vm-1", phase="p", active_site="primary", direction="f", disks=disks
        )
    with ControlStore.open(path, site_name="primary", clock=clock) as store:
        expected = [("os", 8192), ("data", 4096), ("logs", 512)]
        assert expected == list(store.vm_disks("vm-1").items())


def test_disks_go_with_their_vm(store: ControlStore, path: Path) -> None:
    """remove_vm deletes the VM's disk rows too."""
    store.remove_vm("vm-1")
    with closing(sqlite3.connect(path)) as connection:
        (rows,) = connection.execute("SELECT count(*) FROM disk").fetchone()
    expected = 0
    assert expected == rows


@pytest.mark.parametrize(
    ("disks", "error", "match"),
    [
        ({}, InvalidConfiguration, "at least one disk"),
        ([("os", 4096)], InvalidConfiguration, "must be a non-empty mapping"),
        ({"../os": 4096}, InvalidName, "disk_name='../os'"),
        ({"os": 0}, InvalidConfiguration, r"disks\['os'\]=0 must be a positive int"),
        ({"os": -4096}, InvalidConfiguration, "must be a positive int"),
        ({"os": True}, InvalidConfiguration, "must be a positive int"),
        ({"os": 4096.0}, InvalidConfiguration, "must be a positive int"),
        ({"os": 2**63}, InvalidConfiguration, "up to 9223372036854775807"),
    ],
)
def test_bad_disks_are_refused(
    store: ControlStore, disks: object, error: type[Exception], match: str
) -> None:
    """Disk names and sizes are validated before anything is written."""
    with pytest.raises(error, match=match):
        store.add_vm(
            "vm-2",
            phase="p",
            active_site="primary",
            direction="f",
            disks=disks,  # type: ignore[arg-type]
            creating=True,
        )
    expected = (("vm-1",), 0)
    assert expected == (store.vm_names(), store.statistics().pending_operation_count)


def test_add_vm_creating_records_create_vm_pending(store: ControlStore) -> None:
    """creating=True records the create_vm intent; completing it moves the phase."""
    store.add_vm(
        "vm-2",
        phase="creating",
        active_site="primary",
        direction="forward",
        disks={"os": 4096},
        creating=True,
    )
    pending = store.pending_operation("vm-2")
    assert pending is not None
    expected_pending = (CREATE_VM, {"disks": {"os": 4096}})
    assert expected_pending == (pending.name, json.loads(pending.params_json))
    control = store.complete_operation(pending.operation_id, "unprotected")
    expected = ("unprotected", None)
    assert expected == (control.phase, store.pending_operation("vm-2"))


def test_add_vm_creating_is_undone_by_remove_vm(store: ControlStore) -> None:
    """A creation that failed is rolled back by remove_vm: VM, disks, intent gone."""
    store.add_vm(
        "vm-2",
        phase="creating",
        active_site="primary",
        direction="forward",
        disks={"os": 4096},
        creating=True,
    )
    store.remove_vm("vm-2")
    expected = (("vm-1",), 0)
    assert expected == (store.vm_names(), store.statistics().pending_operation_count)


# -- threads ---------------------------------------------------------------------------


def test_calls_from_another_thread_succeed(store: ControlStore) -> None:
    """A store opened in one thread serves calls made from another."""
    results: list[object] = []

    def work() -> None:
        try:
            store.add_vm(
                "vm-2", phase="p", active_site="primary", direction="f", disks=DISKS
            )
            operation_id = store.begin_operation("vm-2", "pause", "{}")
            store.complete_operation(operation_id, "replication_paused")
            results.append(
                (
                    store.vm("vm-2").phase,
                    store.vm_disks("vm-2"),
                    store.integrity_check(),
                )
            )
        except BaseException as error:
            results.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    expected = [("replication_paused", DISKS, "ok")]
    assert expected == results


def test_two_threads_keep_one_pending_operation(store: ControlStore) -> None:
    """Two threads racing begin/complete on one VM never both hold a pending one."""
    rounds = 200
    start = threading.Barrier(2)
    outcomes: dict[str, tuple[int, int, list[BaseException]]] = {}

    def work(tag: str) -> None:
        began, refused = 0, 0
        errors: list[BaseException] = []
        start.wait()
        for _ in range(rounds):
            try:
                operation_id = store.begin_operation("vm-1", "pause", json.dumps(tag))
            except ReplicationError as error:
                if "is still pending" not in str(error):
                    errors.append(error)
                refused += 1
                continue
            except BaseException as error:
                errors.append(error)
                continue
            try:
                pending = store.pending_operation("vm-1")
                if pending is None or pending.operation_id != operation_id:
                    errors.append(AssertionError(f"{tag}: pending is {pending}"))
                store.complete_operation(operation_id, "protected")
                began += 1
            except BaseException as error:
                errors.append(error)
        outcomes[tag] = (began, refused, errors)

    threads = [threading.Thread(target=work, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statistics = store.statistics()
    began = outcomes["a"][0] + outcomes["b"][0]
    no_errors: list[BaseException] = []
    expected = (no_errors, no_errors, rounds, rounds, 0, began)
    assert expected == (
        outcomes["a"][2],
        outcomes["b"][2],
        outcomes["a"][0] + outcomes["a"][1],
        outcomes["b"][0] + outcomes["b"][1],
        statistics.pending_operation_count,
        statistics.finished_operation_count,
    )


# -- damage ----------------------------------------------------------------------------


def fill(path: Path, clock: ManualClock, vm_count: int = 12) -> None:
    """A control file of several pages: VMs, disks, positions, points, operations."""
    point = RecoveryPoint(1, 4, 0, 510.0, True, (("data", 9), ("os", 17)))
    with ControlStore.open(path, site_name="primary", clock=clock) as store:
        for index in range(vm_count):
            name = f"vm-{index}"
            store.add_vm(
                name,
                phase="protected",
                active_site="primary",
                direction="f",
                disks=DISKS,
            )
            store.set_log_positions(name, {"os": 17, "data": 9})
            store.save_recovery_points(name, [point])
            store.begin_operation(name, "replicate", '{"phase": "protected"}')


def garbage(size: int) -> bytes:
    return random.Random(7).randbytes(size)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: garbage(len(data)), id="all-garbage"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated-to-half"),
        pytest.param(lambda data: data[:4096] + garbage(len(data) - 4096), id="pages"),
    ],
)
def test_damaged_file_is_refused_at_open(
    path: Path, clock: ManualClock, damage: Callable[[bytes], bytes]
) -> None:
    """Garbage or a truncated file is DamagedState naming the file, left as found."""
    fill(path, clock)
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)
    with pytest.raises(DamagedState, match=f"control file '{path}' is damaged"):
        ControlStore.open(path, site_name="primary", clock=clock)
    assert damaged == path.read_bytes()


@pytest.mark.parametrize(
    "table", ["site", "vm", "disk", "log_position", "recovery_point", "operation"]
)
def test_dropped_table_is_refused_at_open(
    path: Path, clock: ManualClock, table: str
) -> None:
    """A table dropped behind the engine's back is DamagedState at open."""
    fill(path, clock, vm_count=2)
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(f"DROP TABLE {table}")
        connection.commit()
    with pytest.raises(DamagedState, match=f"'{path}' is damaged.*{table}"):
        ControlStore.open(path, site_name="primary", clock=clock)


@pytest.mark.parametrize(
    ("table", "call"),
    [
        ("vm", lambda store: store.vm("vm-1")),
        ("disk", lambda store: store.vm_disks("vm-1")),
        ("operation", lambda store: store.begin_operation("vm-1", "pause", "{}")),
        ("recovery_point", lambda store: store.recovery_points("vm-1")),
        ("log_position", lambda store: store.set_log_positions("vm-1", {"os": 3})),
    ],
)
def test_dropped_table_is_refused_by_a_later_call(
    store: ControlStore,
    path: Path,
    table: str,
    call: Callable[[ControlStore], object],
) -> None:
    """A table dropped while the store is open: the next call is DamagedState."""
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(f"DROP TABLE {table}")
        connection.commit()
    with pytest.raises(DamagedState, match=f"'{path}' is damaged.*no such table"):
        call(store)


def read_vm(store: ControlStore) -> object:
    return store.vm("vm-0")


def read_disks(store: ControlStore) -> object:
    return store.vm_disks("vm-0")


def read_positions(store: ControlStore) -> object:
    return store.log_positions("vm-0")


def read_pending(store: ControlStore) -> object:
    return store.pending_operation("vm-0")


def read_operation(store: ControlStore) -> object:
    return store.operation(1)


IMPOSSIBLE_ROWS = [
    pytest.param("UPDATE vm SET epoch = -3", "epoch", read_vm, id="negative-epoch"),
    pytest.param(
        "UPDATE vm SET next_cycle_id = 0", "next_cycle_id", read_vm, id="cycle-0"
    ),
    pytest.param(
        "UPDATE vm SET active_site = '../x'", "active_site", read_vm, id="bad-site"
    ),
    pytest.param("UPDATE vm SET phase = ''", "phase", read_vm, id="empty-phase"),
    pytest.param(
        "UPDATE disk SET size_bytes = 0", "size_bytes", read_disks, id="disk-size-0"
    ),
    pytest.param(
        "UPDATE disk SET name = 'a/b' WHERE name = 'os'",
        "name",
        read_disks,
        id="disk-name",
    ),
    pytest.param(
        "DELETE FROM disk", "no rows in table disk", read_disks, id="no-disks"
    ),
    pytest.param(
        "UPDATE log_position SET sequence = -7",
        "sequence",
        read_positions,
        id="sequence",
    ),
    pytest.param(
        "UPDATE operation SET state = 'exploded'", "state", read_operation, id="state"
    ),
    pytest.param(
        "UPDATE operation SET params_json = '{bad'",
        "params_json",
        read_pending,
        id="json",
    ),
    pytest.param(
        "UPDATE operation SET finished_at = 3.0",
        "finished_at",
        read_pending,
        id="pending-finished",
    ),
]


def corrupt(path: Path, statement: str) -> None:
    """Write an impossible value through a separate connection, checks switched off."""
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA ignore_check_constraints = ON")
        connection.execute(statement)
        connection.commit()


@pytest.mark.parametrize(("statement", "column", "call"), IMPOSSIBLE_ROWS)
def test_impossible_row_is_refused_at_open(
    path: Path,
    clock: ManualClock,
    statement: str,
    column: str,
    call: Callable[[ControlStore], object],
) -> None:
    """A row holding a value the engine never writes is DamagedState at open."""
    fill(path, clock, vm_count=2)
    corrupt(path, statement)
    with pytest.raises(DamagedState, match=f"'{path}' is damaged"):
        ControlStore.open(path, site_name="primary", clock=clock)


@pytest.mark.parametrize(("statement", "column", "call"), IMPOSSIBLE_ROWS)
def test_impossible_row_is_refused_by_a_later_call(
    path: Path,
    clock: ManualClock,
    statement: str,
    column: str,
    call: Callable[[ControlStore], object],
) -> None:
    """The same rows written while the store is open: the call reading them refuses."""
    fill(path, clock, vm_count=1)
    with ControlStore.open(path, site_name="primary", clock=clock) as store:
        corrupt(path, statement)
        with pytest.raises(DamagedState, match=f"'{path}' is damaged.*{column}"):
            call(store)


def test_unreadable_recovery_point_is_damage(store: ControlStore, path: Path) -> None:
    """A catalogue mirror row that does not parse is DamagedState, not a ValueError."""
    point = RecoveryPoint(1, 4, 0, 510.0, True, (("data", 9), ("os", 17)))
    store.save_recovery_points("vm-1", [point])
    corrupt(path, "UPDATE recovery_point SET last_sequences = '[1, 2'")
    with pytest.raises(DamagedState, match="recovery point 1 of VM 'vm-1'"):
        store.recovery_points("vm-1")


def test_integrity_check_says_ok_then_names_the_damage(
    store: ControlStore, path: Path
) -> None:
    """integrity_check is 'ok' on a sound file and SQLite's report on a damaged one."""
    before = store.integrity_check()
    corrupt(path, "UPDATE vm SET epoch = -3")
    after = store.integrity_check()
    expected = ("ok", True)
    assert expected == (before, "CHECK constraint failed in vm" in after)


def test_store_refuses_calls_after_close(path: Path, clock: ManualClock) -> None:
    """A call after close() is a ReplicationError naming the site, not sqlite3's."""
    store = ControlStore.open(path, site_name="primary", clock=clock)
    store.close()
    store.close()
    with pytest.raises(ReplicationError, match=r"site 'primary' .* is closed"):
        store.vm_names()
