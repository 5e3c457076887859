"""ReplicaStore: every damaged, missing or mis-sized file of a store is DamagedState.

Never a bare ValueError, KeyError, OSError or json error, and never CorruptRecord
(which means "a change log failed its checks", to which the binding answers by
distrusting the source's logs): a damaged catalogue or intent is the store's own
problem. Each case damages a real store on disk the way a disk, a person or a bug
could, and checks the error names the file and what was wrong.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.errors import CorruptRecord, DamagedState, InvalidConfiguration
from engine.replica.store import ReplicaStore
from engine.storage import files
from engine.testing import Cycle, CycleSource, ManualClock

DISKS = {"os": 64 * 1024, "data": 32 * 1024}
VM = "vm-1"
Document = dict[str, object]


class Stop(Exception):
    """Stands for the process dying at a crash point."""


@pytest.fixture
def source(tmp_path: Path) -> Iterator[CycleSource]:
    cycle_source = CycleSource(tmp_path / "inbox", DISKS, epoch=1)
    yield cycle_source
    cycle_source.close()


def build(root: Path, source: CycleSource) -> ReplicaStore:
    """A store with points 1 and 2 retained (so undo/1.undo is needed)."""
    created = ReplicaStore.create(root / "replicas", VM, DISKS, 3, ManualClock())
    for fill in (1, 2):
        cycle = cut(source, fill)
        created.apply_cycle(cycle.cycle_id, cycle.logs, epoch=1, app_consistent=False)
    return created


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store built once (its logs are gone once applied); tests damage copies."""
    root = tmp_path_factory.mktemp("template")
    source = CycleSource(root / "inbox", DISKS, epoch=1)
    try:
        build(root, source)
    finally:
        source.close()
    return root / "replicas"


@pytest.fixture
def store(template: Path, tmp_path: Path) -> ReplicaStore:
    """A copy of the template store under ``tmp_path``."""
    shutil.copytree(template, tmp_path / "replicas", symlinks=True)
    return open_store(tmp_path)


def cut(source: CycleSource, fill: int) -> Cycle:
    source.write("os", 0, bytes([fill]) * 5000)
    source.write("data", 100, bytes([fill]) * 3000)
    return source.cut()


def open_store(tmp_path: Path) -> ReplicaStore:
    return ReplicaStore.open(tmp_path / "replicas", VM, ManualClock())


def assert_damaged(raised: pytest.ExceptionInfo[DamagedState], *names: str) -> None:
    """The error is DamagedState proper and names every one of ``names``."""
    assert not isinstance(raised.value, CorruptRecord)
    message = str(raised.value)
    assert [name for name in names if name not in message] == []


def edit(change: Callable[[Document], object]) -> Callable[[bytes], bytes]:
    """A damage that edits the JSON document in place."""

    def damage(data: bytes) -> bytes:
        document = json.loads(data)
        change(document)
        return json.dumps(document).encode()

    return damage


def catalogue(document: Document) -> Document:
    value = document["catalogue"]
    assert isinstance(value, dict)
    return value


def first_point(document: Document) -> Document:
    points = catalogue(document)["points"]
    assert isinstance(points, list)
    point = points[0]
    assert isinstance(point, dict)
    return point


STORE_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "garbage": (lambda _: b"\x00garbage\xff", "not valid JSON"),
    "empty": (lambda _: b"", "not valid JSON"),
    "truncated": (lambda data: data[: len(data) // 2], "not valid JSON"),
    "not an object": (lambda _: b"[1, 2, 3]", "JSON object"),
    "nested too deep": (lambda _: b"[" * 100_000, "not valid JSON"),
    "huge integer": (lambda _: b'{"format_version": ' + b"9" * 5000 + b"}", "JSON"),
    "newer format": (edit(lambda d: d.update(format_version=99)), "format_version=99"),
    "no format_version": (edit(lambda d: d.pop("format_version")), "format_version"),
    "another vm": (edit(lambda d: d.update(vm_name="vm-2")), "vm_name"),
    "no disks": (edit(lambda d: d.pop("disks")), "disks"),
    "disks not an object": (edit(lambda d: d.update(disks="os")), "disks"),
    "disk size a string": (edit(lambda d: d.update(disks={"os": "64k"})), "disks"),
    "disk size negative": (edit(lambda d: d.update(disks={"os": -1})), "disks"),
    "no retention": (edit(lambda d: d.pop("retention_count")), "retention_count"),
    "retention a string": (
        edit(lambda d: d.update(retention_count="3")),
        "retention_count",
    ),
    "no catalogue": (edit(lambda d: d.pop("catalogue")), "catalogue"),
    "points not a list": (
        edit(lambda d: catalogue(d).update(points="nope")),
        "points",
    ),
    "point id missing": (
        edit(lambda d: first_point(d).pop("recovery_point_id")),
        "recovery_point_id",
    ),
    "created_at a string": (
        edit(lambda d: first_point(d).update(created_at="noon")),
        "created_at",
    ),
    "created_at not finite": (
        lambda data: data.replace(b'"created_at": 0.0', b'"created_at": NaN', 1),
        "created_at",
    ),
    "point lacks a disk": (
        edit(lambda d: first_point(d).update(last_sequences={"os": 1})),
        "last_sequences",
    ),
    "points out of order": (
        edit(lambda d: catalogue(d).update(last_recovery_point_id=1)),
        "out of order",
    ),
}


@pytest.mark.parametrize("damage", sorted(STORE_DAMAGE))
def test_damaged_store_json_is_damaged_state(
    store: ReplicaStore, tmp_path: Path, damage: str
) -> None:
    """open() refuses a damaged catalogue with DamagedState naming store.json."""
    path = store.directory / "store.json"
    change, reason = STORE_DAMAGE[damage]
    damaged = change(path.read_bytes())
    assert damaged != path.read_bytes()
    path.write_bytes(damaged)
    with pytest.raises(DamagedState) as raised:
        open_store(tmp_path)
    assert_damaged(raised, str(path), reason)


def test_store_json_that_is_a_directory_is_damaged_state(
    store: ReplicaStore, tmp_path: Path
) -> None:
    """An unreadable catalogue (here a directory in its place) is DamagedState."""
    path = store.directory / "store.json"
    path.unlink()
    path.mkdir()
    with pytest.raises(DamagedState) as raised:
        open_store(tmp_path)
    assert_damaged(raised, str(path))


@pytest.fixture
def intent(tmp_path: Path, source: CycleSource) -> Path:
    """A store with cycle 3 interrupted after its first disk: intent.json left."""
    store = build(tmp_path, source)
    cycle = cut(source, 3)

    def stop(step: str) -> None:
        if step == "disk_applied:data":
            raise Stop

    with pytest.raises(Stop):
        store.apply_cycle(
            3, cycle.logs, epoch=1, app_consistent=False, crash_point=stop
        )
    path = store.directory / "intent.json"
    assert path.exists()
    return path


def intent_point(document: Document) -> Document:
    point = document["point"]
    assert isinstance(point, dict)
    return point


INTENT_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "garbage": (lambda _: b"\x00\x01\x02", "not valid JSON"),
    "truncated": (lambda data: data[: len(data) // 2], "not valid JSON"),
    "not an object": (lambda _: b'"intent"', "JSON object"),
    "no cycle_id": (edit(lambda d: d.pop("cycle_id")), "cycle_id"),
    "cycle_id a bool": (edit(lambda d: d.update(cycle_id=True)), "cycle_id"),
    "epoch negative": (edit(lambda d: d.update(epoch=-1)), "epoch"),
    "logs a list": (edit(lambda d: d.update(logs=["a"])), "logs"),
    "a disk's log missing": (
        edit(lambda d: d.update(logs={"os": "/x/os.hrl"})),
        "logs",
    ),
    "a log path a number": (
        edit(lambda d: d.update(logs={"os": 1, "data": 2})),
        "logs",
    ),
    "undo escapes": (edit(lambda d: d.update(undo="../../precious")), "undo"),
    "undo of another point": (edit(lambda d: d.update(undo="1")), "undo"),
    "no point": (edit(lambda d: d.pop("point")), "point"),
    "point of another cycle": (
        edit(lambda d: intent_point(d).update(cycle_id=9)),
        "cycle",
    ),
    "point id reused": (
        edit(lambda d: intent_point(d).update(recovery_point_id=2)),
        "recovery_point_id",
    ),
}


@pytest.mark.parametrize("damage", sorted(INTENT_DAMAGE))
def test_damaged_intent_json_is_damaged_state(
    intent: Path, tmp_path: Path, damage: str
) -> None:
    """open() refuses a damaged intent with DamagedState naming intent.json, and
    changes nothing (the replica stays half-applied until the file is restored)."""
    change, reason = INTENT_DAMAGE[damage]
    damaged = change(intent.read_bytes())
    assert damaged != intent.read_bytes()
    intent.write_bytes(damaged)
    listing = sorted(os.listdir(intent.parent / "undo"))
    with pytest.raises(DamagedState) as raised:
        open_store(tmp_path)
    assert_damaged(raised, str(intent), reason)
    assert (damaged, listing) == (
        intent.read_bytes(),
        sorted(os.listdir(intent.parent / "undo")),
    )


# -- the files beside the catalogue ----------------------------------------------------


def remove_image(store: ReplicaStore) -> str:
    (store.directory / "replica" / "os.img").unlink()
    return "os.img"


def shrink_image(store: ReplicaStore) -> str:
    os.truncate(store.directory / "replica" / "os.img", 4096)
    return "4096"


def directory_for_image(store: ReplicaStore) -> str:
    path = store.directory / "replica" / "data.img"
    path.unlink()
    path.mkdir()
    return "data.img"


def remove_replica_directory(store: ReplicaStore) -> str:
    for image in (store.directory / "replica").iterdir():
        image.unlink()
    (store.directory / "replica").rmdir()
    return "replica"


def remove_undo_directory(store: ReplicaStore) -> str:
    for image in (store.directory / "undo").iterdir():
        image.unlink()
    (store.directory / "undo").rmdir()
    return "undo"


def remove_needed_undo(store: ReplicaStore) -> str:
    (store.directory / "undo" / "1.undo").unlink()
    return "1.undo"


FILE_DAMAGE: dict[str, Callable[[ReplicaStore], str]] = {
    "replica image missing": remove_image,
    "replica image of the wrong size": shrink_image,
    "replica image a directory": directory_for_image,
    "replica directory missing": remove_replica_directory,
    "undo directory missing": remove_undo_directory,
    "undo image of a retained point missing": remove_needed_undo,
}


@pytest.mark.parametrize("damage", sorted(FILE_DAMAGE))
def test_missing_or_wrong_files_are_damaged_state(
    store: ReplicaStore, tmp_path: Path, damage: str
) -> None:
    """open() checks the images and undo images the catalogue needs."""
    named = FILE_DAMAGE[damage](store)
    with pytest.raises(DamagedState) as raised:
        open_store(tmp_path)
    assert_damaged(raised, named)


def test_store_directory_without_catalogue_is_damaged_state(
    store: ReplicaStore, tmp_path: Path
) -> None:
    """A store directory whose store.json is gone: "the catalogue is missing"."""
    (store.directory / "store.json").unlink()
    with pytest.raises(DamagedState, match="catalogue is missing") as raised:
        open_store(tmp_path)
    assert_damaged(raised, "store.json")


def test_no_store_directory_is_invalid_configuration(tmp_path: Path) -> None:
    """No store at all is not damage: it was never created."""
    with pytest.raises(InvalidConfiguration, match="no replica store"):
        open_store(tmp_path)


class FailAt(files.FileSystem):
    """The operating system's file operations, the ``fail_at``-th of which fails
    with EIO (an explicit seam of the file layer: the store cannot tell)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.count = 0

    def _step(self) -> None:
        self.count += 1
        if self.count == self.fail_at:
            raise OSError(errno.EIO, "injected I/O error")

    def open(self, path: Path, flags: int, mode: int = 0o600) -> int:
        self._step()
        return super().open(path, flags, mode)

    def ftruncate(self, descriptor: int, length: int) -> None:
        self._step()
        super().ftruncate(descriptor, length)

    def fsync(self, descriptor: int) -> None:
        self._step()
        super().fsync(descriptor)

    def fsync_directory(self, path: Path) -> None:
        self._step()
        super().fsync_directory(path)

    def rename(self, source: Path, target: Path) -> None:
        self._step()
        super().rename(source, target)

    def make_directory(
        self, path: Path, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        self._step()
        super().make_directory(path, parents=parents, exist_ok=exist_ok)


def test_a_failed_create_leaves_no_half_store(tmp_path: Path) -> None:
    """create() failing at any file operation leaves no store, or a whole one (it
    builds the store aside and renames it into place); the next create then
    succeeds. So a store directory without store.json is only ever damage."""
    root = tmp_path / "replicas"
    store_directory = root / VM
    failures = 0
    for fail_at in itertools.count(1):
        try:
            with files.use(FailAt(fail_at)):
                ReplicaStore.create(root, VM, DISKS, 3, ManualClock())
        except OSError:
            failures += 1
        else:
            break
        if store_directory.exists():  # failed after the rename: a whole store
            open_store(tmp_path)
            files.remove_tree_durably(store_directory)
    assert failures > 8
    expected = [VM]
    assert expected == os.listdir(root)


# -- damage met by the operation that needs the file -----------------------------------


def test_damaged_undo_image_in_materialize_is_damaged_state(
    store: ReplicaStore, tmp_path: Path
) -> None:
    """materialize() meeting a damaged undo image raises DamagedState naming it and
    leaves no image behind."""
    path = store.directory / "undo" / "1.undo"
    damaged = bytearray(path.read_bytes())
    damaged[40] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(DamagedState) as raised:
        store.materialize(1, tmp_path / "out")
    assert_damaged(raised, str(path))
    nothing: list[str] = []
    assert nothing == os.listdir(tmp_path / "out")


def test_undo_image_gone_after_open_is_damaged_state(
    store: ReplicaStore, tmp_path: Path
) -> None:
    """An undo image deleted behind the store's back is DamagedState, not OSError."""
    (store.directory / "undo" / "1.undo").unlink()
    with pytest.raises(DamagedState) as raised:
        store.materialize(1, tmp_path / "out")
    assert_damaged(raised, "1.undo")


def test_replica_image_gone_after_open_is_damaged_state(
    store: ReplicaStore,
) -> None:
    """A replica image deleted behind the store's back is DamagedState on read."""
    (store.directory / "replica" / "os.img").unlink()
    with pytest.raises(DamagedState) as raised:
        store.read("os", 0, 1)
    assert_damaged(raised, "os.img")
    with pytest.raises(DamagedState):
        store.block_digests("os", 4096)


def test_rollback_with_a_damaged_undo_image_is_damaged_state(
    intent: Path, source: CycleSource, tmp_path: Path
) -> None:
    """A rollback that needs a damaged undo image raises DamagedState naming it; the
    intent stays, so the store keeps refusing work (and says so)."""
    document = json.loads(intent.read_bytes())
    Path(document["logs"]["os"]).unlink()  # the roll back is needed
    undo = intent.parent / "undo" / f"{document['undo']}.undo"
    undo.write_bytes(undo.read_bytes()[:-1])
    reopened = open_store(tmp_path)
    with pytest.raises(DamagedState) as raised:
        reopened.recover()
    assert_damaged(raised, str(undo))
    assert reopened.pending_recovery
