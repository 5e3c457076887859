"""ReplicaStore: open() only reads; the owner's recover() finishes an interrupted apply.

A store is left as a crash leaves it (an apply stopped after its intent, plus debris
of temporary files and a stray undo image), with real files. Opening it must change
nothing, down to inode numbers and mtimes; refusing work must change nothing either;
recover() then rolls the apply forward (or back) and removes the debris. Paths read
from intent.json must lie under the trusted site root, or nothing is touched.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.errors import DamagedState, InvalidConfiguration, ReplicationError
from engine.replica.store import RecoveryAction, ReplicaStore
from engine.testing import Cycle, CycleSource, ManualClock

DISKS = {"os": 64 * 1024, "data": 32 * 1024}
VM = "vm-1"


class Stop(Exception):
    """Stands for the process dying at a crash point."""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The site root: ``replicas/`` (the stores) and ``inbox/`` (the logs) under it."""
    return tmp_path / "site"


@pytest.fixture
def source(site: Path) -> Iterator[CycleSource]:
    cycle_source = CycleSource(site / "inbox", DISKS, epoch=1)
    yield cycle_source
    cycle_source.close()


@pytest.fixture
def store(site: Path) -> ReplicaStore:
    return ReplicaStore.create(site / "replicas", VM, DISKS, 3, ManualClock(1000.0))


def open_store(site: Path) -> ReplicaStore:
    return ReplicaStore.open(site / "replicas", VM, ManualClock(2000.0))


def replica_bytes(store: ReplicaStore) -> dict[str, bytes]:
    return {disk: store.read(disk, 0, size) for disk, size in DISKS.items()}


def cut_after_writes(source: CycleSource, fill: int) -> Cycle:
    source.write("os", 0, bytes([fill]) * 5000)
    source.write("data", 100, bytes([fill + 1]) * 3000)
    return source.cut()


def leave_interrupted(store: ReplicaStore, source: CycleSource) -> tuple[Cycle, Cycle]:
    """Commit cycle 1; stop cycle 2 after its first disk; leave a crash's debris."""
    first = cut_after_writes(source, 1)
    store.apply_cycle(1, first.logs, epoch=1, app_consistent=False)
    second = cut_after_writes(source, 7)

    def stop(step: str) -> None:
        if step == "disk_applied:data":
            raise Stop

    with pytest.raises(Stop):
        store.apply_cycle(
            2, second.logs, epoch=1, app_consistent=False, crash_point=stop
        )
    (store.directory / "store.json.tmp").write_bytes(b'{"half": ')
    (store.directory / "replica" / "os.img.tmp").write_bytes(b"partial")
    (store.directory / "undo" / "99.undo").write_bytes(b"stray")
    return first, second


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every directory and file under ``root``: (inode, size, mtime in ns)."""
    entries = {}
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            path = Path(directory, name)
            status = path.lstat()
            key = str(path.relative_to(root))
            entries[key] = (status.st_ino, status.st_size, status.st_mtime_ns)
    return entries


# -- open() has no side effects --------------------------------------------------------


def test_open_with_a_pending_apply_changes_nothing(
    store: ReplicaStore, source: CycleSource, site: Path
) -> None:
    """Opening a store left mid-apply creates, changes and deletes no file."""
    leave_interrupted(store, source)
    before = tree(site)
    reopened = open_store(site)
    assert reopened.pending_recovery
    assert before == tree(site)


def test_recover_rolls_forward_and_removes_the_debris(
    store: ReplicaStore, source: CycleSource, site: Path
) -> None:
    """recover() finishes the apply (its logs are intact) and deletes the debris."""
    first, second = leave_interrupted(store, source)
    reopened = open_store(site)
    report = reopened.recover()
    expected = (RecoveryAction.ROLLED_FORWARD, 2, False, (1, 2))
    actual = (
        report.action,
        report.cycle_id,
        reopened.pending_recovery,
        reopened.catalogue.recovery_point_ids,
    )
    assert expected == actual
    assert second.snapshot == replica_bytes(reopened)
    layout = (["replica", "store.json", "undo"], ["data.img", "os.img"], ["1.undo"])
    assert layout == (
        sorted(os.listdir(reopened.directory)),
        sorted(os.listdir(reopened.directory / "replica")),
        os.listdir(reopened.directory / "undo"),
    )
    images = reopened.materialize(1, site / "materialized")
    assert first.snapshot == {disk: path.read_bytes() for disk, path in images.items()}


def test_recover_with_nothing_pending_only_removes_debris(
    store: ReplicaStore, site: Path
) -> None:
    """With no intent, recover() reports NONE and deletes temporary files."""
    (store.directory / "store.json.tmp").write_bytes(b"{")
    reopened = open_store(site)
    assert not reopened.pending_recovery
    report = reopened.recover()
    nothing_done = (RecoveryAction.NONE, None)
    assert nothing_done == (report.action, report.cycle_id)
    assert not (store.directory / "store.json.tmp").exists()
    assert RecoveryAction.NONE is reopened.recover().action


REFUSED: dict[str, Callable[[ReplicaStore, Path], object]] = {
    "read": lambda store, _: store.read("os", 0, 1),
    "materialize": lambda store, site: store.materialize(1, site / "out"),
    "block_digests": lambda store, _: store.block_digests("os", 4096),
    "apply_cycle": lambda store, site: store.apply_cycle(
        3, {"os": site / "x.hrl", "data": site / "y.hrl"}, epoch=1, app_consistent=False
    ),
    "install_initial_copy": lambda store, site: store.install_initial_copy(
        {"os": site / "os.img"}
    ),
    "discard_recovery_points": lambda store, _: store.discard_recovery_points(),
}


@pytest.mark.parametrize("operation", sorted(REFUSED))
def test_a_pending_apply_refuses_work_until_recovered(
    store: ReplicaStore, source: CycleSource, site: Path, operation: str
) -> None:
    """While an apply waits, reads and changes say "recover() first" and change
    nothing; the catalogue and the statistics stay readable."""
    leave_interrupted(store, source)
    reopened = open_store(site)
    before = tree(site)
    with pytest.raises(ReplicationError, match=r"recover\(\) first") as refused:
        REFUSED[operation](reopened, site)
    assert type(refused.value) is ReplicationError
    assert before == tree(site)
    statistics = reopened.statistics()
    readable = ((1,), 1)
    assert readable == (
        reopened.catalogue.recovery_point_ids,
        statistics.recovery_point_count,
    )
    reopened.recover()
    recovered = (1, 2)
    assert recovered == reopened.catalogue.recovery_point_ids


# -- paths read from intent.json are checked -------------------------------------------


def plant_intent(store: ReplicaStore, logs: dict[str, str]) -> Path:
    """Write an intent.json naming ``logs`` for the committed cycle 1 (the cleanup
    path, which deletes the logs it names without reading them)."""
    point = store.catalogue.latest()
    document = {
        "cycle_id": point.cycle_id,
        "epoch": point.epoch,
        "logs": logs,
        "undo": "origin",
        "point": point.to_json(),
    }
    path = store.directory / "intent.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def committed(store: ReplicaStore, source: CycleSource) -> ReplicaStore:
    """The store with cycle 1 committed."""
    cycle = cut_after_writes(source, 1)
    store.apply_cycle(1, cycle.logs, epoch=1, app_consistent=False)
    return store


def test_recover_refuses_an_intent_pointing_outside_the_site(
    committed: ReplicaStore, site: Path, tmp_path: Path
) -> None:
    """An intent naming a file outside the site root raises DamagedState naming it,
    and the file is not deleted."""
    precious = tmp_path / "precious"
    precious.write_bytes(b"not yours")
    reopened = open_store(site)
    plant_intent(committed, {"os": str(precious), "data": str(precious)})
    with pytest.raises(DamagedState, match=r"intent\.json") as refused:
        reopened.recover()
    assert str(precious) in str(refused.value)
    untouched = b"not yours"
    assert untouched == precious.read_bytes()
    assert (committed.directory / "intent.json").exists()


def test_open_refuses_an_intent_pointing_outside_the_site(
    committed: ReplicaStore, site: Path, tmp_path: Path
) -> None:
    """open() validates the intent too: DamagedState, and nothing is touched."""
    precious = tmp_path / "precious"
    precious.write_bytes(b"not yours")
    plant_intent(committed, {"os": str(precious), "data": str(precious)})
    before = tree(tmp_path)
    with pytest.raises(DamagedState, match=re.escape(str(precious))):
        open_store(site)
    assert before == tree(tmp_path)


@pytest.mark.parametrize(
    "where",
    ["symlink out of the site", "relative path", "inside the replica store"],
)
def test_intent_paths_that_only_look_trusted_are_refused(
    committed: ReplicaStore, site: Path, tmp_path: Path, where: str
) -> None:
    """The check resolves symlinks, needs absolute paths, and never lets recovery
    delete a store's own files (the replicas directory is not a log's place)."""
    precious = tmp_path / "precious"
    precious.write_bytes(b"not yours")
    link = site / "inbox" / "looks-fine.hrl"
    link.symlink_to(precious)
    image = committed.directory / "replica" / "os.img"
    named = {
        "symlink out of the site": str(link),
        "relative path": "inbox/looks-fine.hrl",
        "inside the replica store": str(image),
    }[where]
    plant_intent(committed, {"os": named, "data": named})
    with pytest.raises(DamagedState, match=r"intent\.json"):
        open_store(site).recover()
    assert (True, True, DISKS["os"]) == (
        precious.exists(),
        link.is_symlink(),
        image.stat().st_size,
    )


def test_apply_refuses_logs_outside_the_trusted_root(
    site: Path, source: CycleSource
) -> None:
    """A narrower trusted root refuses logs elsewhere before anything is written."""
    store = ReplicaStore.create(
        site / "replicas", VM, DISKS, 3, ManualClock(), trusted_root=site / "elsewhere"
    )
    cycle = cut_after_writes(source, 1)
    before = tree(site)
    with pytest.raises(InvalidConfiguration, match="trusted root"):
        store.apply_cycle(1, cycle.logs, epoch=1, app_consistent=False)
    assert before == tree(site)


def test_trusted_root_inside_the_replicas_directory_is_refused(
    store: ReplicaStore, site: Path
) -> None:
    """A trusted root under the stores would trust the stores' own files."""
    with pytest.raises(InvalidConfiguration, match="trusted_root"):
        ReplicaStore.open(
            site / "replicas", VM, ManualClock(), trusted_root=store.directory
        )
