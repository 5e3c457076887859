"""Unit tests for engine.control.site: one owner per site, damage never silent, and the
migration of schema-1 control files (real files, real locks, real child processes)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from engine.control.schema import SCHEMA_VERSION
from engine.control.site import CONTROL_FILE, SiteStorage
from engine.control.store import ControlStore
from engine.errors import DamagedState, InvalidConfiguration, SiteLocked
from engine.orchestration.engine import ReplicationEngine
from engine.storage.owner_lock import LOCK_FILE
from engine.testing import ManualClock

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(500.0)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "primary"


# -- one owner per site ----------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from engine.control.site import SiteStorage
from engine.testing import ManualClock

site = SiteStorage.open("primary", Path(sys.argv[1]), ManualClock(1_780_000_000.0))
print("holding", flush=True)
sys.stdin.read()
site.close()
"""


@contextmanager
def holder(root: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process that opened the site and waits on its stdin."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        cwd=REPOSITORY,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "holding\n"
        yield child
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def test_site_held_by_another_process_is_refused_naming_it(
    root: Path, clock: ManualClock
) -> None:
    """A second engine's open is refused with the holder's pid, host and start."""
    with holder(root) as child, pytest.raises(SiteLocked) as refused:
        SiteStorage.open("primary", root, clock)
    expected = (
        f"site 'primary' at '{root}' is in use by pid {child.pid} on host "
        f"{socket.gethostname()} ({Path(sys.executable).name} -c) since "
        "2026-05-28T20:26:40+00:00; stop that engine first, or open another site"
    )
    assert expected == str(refused.value)


def test_killed_holder_releases_the_site(root: Path, clock: ManualClock) -> None:
    """SIGKILL of the holder frees the site: the OS drops the lock with the process."""
    with holder(root) as child:
        with pytest.raises(SiteLocked, match=f"pid {child.pid} "):
            SiteStorage.open("primary", root, clock)
        child.kill()
        child.wait()
        site = SiteStorage.open("primary", root, clock)
    site.close()


def test_second_open_in_the_same_process_is_refused(
    root: Path, clock: ManualClock
) -> None:
    """Two SiteStorage objects of one process cannot own one site."""
    site = SiteStorage.open("primary", root, clock)
    try:
        with pytest.raises(SiteLocked, match=f"in use by pid {os.getpid()} "):
            SiteStorage.open("primary", root, clock)
    finally:
        site.close()


def test_close_releases_the_site(root: Path, clock: ManualClock) -> None:
    """Refused while the first is open; after its close() (idempotent) it opens."""
    first = SiteStorage.open("primary", root, clock)
    with pytest.raises(SiteLocked):
        SiteStorage.open("primary", root, clock)
    first.close()
    first.close()
    second = SiteStorage.open("primary", root, clock)
    second.close()


def test_lock_file_describes_the_holder(root: Path, clock: ManualClock) -> None:
    """The lock file records pid, host, program and the time from the site's clock."""
    site = SiteStorage.open("primary", root, clock)
    try:
        record = json.loads((root / LOCK_FILE).read_text())
    finally:
        site.close()
    expected = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "program": " ".join([Path(sys.executable).name, *sys.argv[:1]]),
        "since": "1970-01-01T00:08:20+00:00",
    }
    assert expected == record


@contextmanager
def foreign_lock(root: Path, description: bytes) -> Iterator[None]:
    """Another open file description holding the site's lock (as another engine)."""
    root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(descriptor, description)
        yield
    finally:
        os.close(descriptor)


def test_lock_is_taken_before_anything_is_created(
    root: Path, clock: ManualClock
) -> None:
    """A refused open of a new site creates nothing but the lock file in the root."""
    with foreign_lock(root, b""), pytest.raises(SiteLocked, match="not described"):
        SiteStorage.open("primary", root, clock)
    expected = [LOCK_FILE]
    assert expected == os.listdir(root)


def test_lock_is_taken_before_anything_is_read(root: Path, clock: ManualClock) -> None:
    """A locked site with a damaged control file is SiteLocked: nothing was read."""
    (root / "vms" / "web").mkdir(parents=True)
    (root / CONTROL_FILE).write_bytes(b"not a database" * 300)
    with foreign_lock(root, b"{}"), pytest.raises(SiteLocked):
        SiteStorage.open("primary", root, clock)


# -- damage is never silent ------------------------------------------------------------


@pytest.mark.parametrize("state", ["missing", "empty"])
@pytest.mark.parametrize("directory", ["vms", "outbox", "inbox", "replicas"])
def test_lost_control_file_over_vm_data_is_refused(
    root: Path, clock: ManualClock, state: str, directory: str
) -> None:
    """A missing or empty control file beside VM data is not silently re-created."""
    SiteStorage.open("primary", root, clock).close()
    (root / directory / "web").mkdir()
    control = root / CONTROL_FILE
    control.unlink()
    if state == "empty":
        control.write_bytes(b"")
    expected = (
        f"site 'primary' at '{root}' holds VM data {{'{directory}': ['web']}} but its "
        f"control file '{control}' is {state}: restore control.sqlite3 from a backup, "
        "or move the site aside to start afresh"
    )
    with pytest.raises(DamagedState) as refused:
        SiteStorage.open("primary", root, clock)
    assert expected == str(refused.value)
    assert (state == "empty") == control.exists()
    with pytest.raises(DamagedState):  # the refusal released the site's lock
        SiteStorage.open("primary", root, clock)


def test_empty_database_over_vm_data_is_refused(root: Path, clock: ManualClock) -> None:
    """An SQLite file without our tables beside VM data is damage too, left as is."""
    SiteStorage.open("primary", root, clock).close()
    (root / "vms" / "web").mkdir()
    control = root / CONTROL_FILE
    control.unlink()
    with closing(sqlite3.connect(control)) as connection:
        connection.execute("VACUUM")  # writes the header page: a valid, empty file
    content = control.read_bytes()
    with pytest.raises(DamagedState, match=f"'{control}' is damaged: it is empty"):
        SiteStorage.open("primary", root, clock)
    assert content == control.read_bytes()


def test_new_site_with_empty_directories_opens(root: Path, clock: ManualClock) -> None:
    """Empty data directories (a site created, nothing protected yet) are not damage."""
    for directory in ("vms", "outbox", "inbox", "replicas"):
        (root / directory).mkdir(parents=True)
    site = SiteStorage.open("primary", root, clock)
    try:
        expected = ()
        assert expected == site.control.vm_names()
    finally:
        site.close()


def test_damaged_control_file_is_refused_by_the_site(
    root: Path, clock: ManualClock
) -> None:
    """Garbage in control.sqlite3 is DamagedState from SiteStorage.open, site freed."""
    SiteStorage.open("primary", root, clock).close()
    control = root / CONTROL_FILE
    control.write_bytes(b"\x00garbage" * 1000)
    for _ in range(2):  # the second attempt is DamagedState again, not SiteLocked
        with pytest.raises(DamagedState, match=f"'{control}' is damaged"):
            SiteStorage.open("primary", root, clock)


# -- migration from schema 1 -----------------------------------------------------------

SCHEMA_1 = """
CREATE TABLE site (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    name TEXT NOT NULL) STRICT;
CREATE TABLE vm (
    name TEXT PRIMARY KEY,
    phase TEXT NOT NULL,
    active_site TEXT NOT NULL,
    direction TEXT NOT NULL,
    epoch INTEGER NOT NULL CHECK (epoch >= 0),
    next_cycle_id INTEGER NOT NULL CHECK (next_cycle_id >= 1)) STRICT;
CREATE TABLE log_position (
    vm TEXT NOT NULL REFERENCES vm (name) ON DELETE CASCADE,
    disk TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    PRIMARY KEY (vm, disk)) STRICT;
CREATE TABLE recovery_point (
    vm TEXT NOT NULL REFERENCES vm (name) ON DELETE CASCADE,
    recovery_point_id INTEGER NOT NULL,
    cycle_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    created_at REAL NOT NULL,
    app_consistent INTEGER NOT NULL CHECK (app_consistent IN (0, 1)),
    last_sequences TEXT NOT NULL,
    PRIMARY KEY (vm, recovery_point_id)) STRICT;
CREATE TABLE operation (
    operation_id INTEGER PRIMARY KEY AUTOINCREMENT,
    vm TEXT NOT NULL REFERENCES vm (name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    params_json TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'completed', 'abandoned')),
    started_at REAL NOT NULL,
    finished_at REAL,
    result_json TEXT) STRICT;
CREATE UNIQUE INDEX one_pending_operation_per_vm
    ON operation (vm) WHERE state = 'pending';
INSERT INTO site VALUES (1, 'primary');
INSERT INTO vm VALUES ('web', 'protected', 'primary', 'primary->secondary', 1, 5);
PRAGMA application_id = 1213613138;
PRAGMA user_version = 1;
PRAGMA journal_mode = WAL;
"""
"""A control file as version 1 of the engine wrote it (its schema, copied verbatim)."""


def write_schema_1_site(root: Path, images: dict[str, int]) -> Path:
    """A schema-1 site: control file with VM 'web', and its images (name -> bytes)."""
    (root / "vms" / "web").mkdir(parents=True)
    for disk, size in images.items():
        with (root / "vms" / "web" / f"{disk}.img").open("wb") as image:
            image.truncate(size)
    (root / "vms" / "web" / "os.img.hrl").write_bytes(b"a change log, not a disk")
    control = root / CONTROL_FILE
    with closing(sqlite3.connect(control)) as connection:
        connection.executescript(SCHEMA_1)
    return control


def user_version(control: Path) -> int:
    with closing(sqlite3.connect(control)) as connection:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
    return int(version)


def test_schema_1_site_gets_its_disks_from_the_images(
    root: Path, clock: ManualClock
) -> None:
    """Migration records each VM's disks from its images, once; state is kept."""
    control = write_schema_1_site(root, {"os": 8192, "data": 4096})
    site = SiteStorage.open("primary", root, clock)
    try:
        vm = site.control.vm("web")
        expected = ([("data", 4096), ("os", 8192)], ("protected", 1, 5))
        assert expected == (
            list(site.control.vm_disks("web").items()),
            (vm.phase, vm.epoch, vm.next_cycle_id),
        )
    finally:
        site.close()
    (root / "vms" / "web" / "data.img").unlink()  # the images are not read again
    (root / "vms" / "web" / "extra.img").write_bytes(b"\0" * 512)
    site = SiteStorage.open("primary", root, clock)
    try:
        expected_after = ({"data": 4096, "os": 8192}, SCHEMA_VERSION)
        assert expected_after == (site.control.vm_disks("web"), user_version(control))
    finally:
        site.close()


def test_schema_1_vm_without_images_is_refused_and_left_at_1(
    root: Path, clock: ManualClock
) -> None:
    """A schema-1 VM with no image to migrate is DamagedState; the file stays at 1."""
    control = write_schema_1_site(root, {})
    folder = root / "vms" / "web"
    with pytest.raises(DamagedState, match=f"folder '{folder}' holds no usable disk"):
        SiteStorage.open("primary", root, clock)
    expected = 1
    assert expected == user_version(control)


def test_schema_1_file_with_vms_needs_the_site(root: Path, clock: ManualClock) -> None:
    """ControlStore.open alone cannot migrate VMs (no images to read): refused."""
    control = write_schema_1_site(root, {"os": 4096})
    with pytest.raises(InvalidConfiguration, match=r"tracks VMs \['web'\]"):
        ControlStore.open(control, site_name="primary", clock=clock)
    expected = 1
    assert expected == user_version(control)


# -- the engine reads the disks from the control state ---------------------------------


def test_engine_reopens_vm_with_the_disks_it_was_created_with(tmp_path: Path) -> None:
    """A stray image in a VM's folder does not become a disk of the VM on reopen."""
    primary, secondary = tmp_path / "primary", tmp_path / "secondary"
    disks = {"os": 8192, "data": 4096}
    with ReplicationEngine.open(primary, secondary, clock=ManualClock(0.0)) as engine:
        engine.create_vm("web", disks)
    (primary / "vms" / "web" / "stray.img").write_bytes(b"\0" * 4096)
    with ReplicationEngine.open(primary, secondary, clock=ManualClock(0.0)) as engine:
        expected = (disks, disks)
        assert expected == (
            engine.primary.control.vm_disks("web"),
            engine.vm("web").disk_sizes,
        )


def test_symlinked_lock_file_is_refused(root: Path, clock: ManualClock) -> None:
    """A lock file planted as a symlink is not followed: refused, naming it."""
    root.mkdir()
    (root / LOCK_FILE).symlink_to(root.parent / "elsewhere")
    with pytest.raises(InvalidConfiguration, match="not a symlink"):
        SiteStorage.open("primary", root, clock)
    assert not (root.parent / "elsewhere").exists()
