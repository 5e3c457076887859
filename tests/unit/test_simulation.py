"""The crash-test file systems: the power-loss model rule by rule, kill, count."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InvalidConfiguration
from engine.storage import durable_file, files
from engine.storage.files import FileSystem
from engine.testing import (
    CountingFileSystem,
    KillingFileSystem,
    PowerCut,
    PowerLossFileSystem,
)

REPOSITORY = Path(__file__).resolve().parents[2]
CREATE = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC


def write_new(fs: FileSystem, path: Path, data: bytes, *, sync: bool = True) -> None:
    """Create ``path`` with ``data`` through ``fs``; fsync it when ``sync``."""
    descriptor = fs.open(path, CREATE | os.O_TRUNC)
    try:
        fs.pwrite(descriptor, data, 0)
        if sync:
            fs.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_synced(fs: FileSystem, path: Path, data: bytes, offset: int) -> None:
    """Write ``data`` at ``offset`` of the existing ``path`` through ``fs``; fsync."""
    descriptor = fs.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        fs.pwrite(descriptor, data, offset)
        fs.fsync(descriptor)
    finally:
        os.close(descriptor)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (relative) -> content, None for a directory."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        found[name] = None if path.is_dir() else path.read_bytes()
    return found


def test_fsynced_file_in_fsynced_directory_survives(tmp_path: Path) -> None:
    """A file fsynced, then its directory fsynced, is there after the cut."""
    fs = PowerLossFileSystem([tmp_path])
    write_new(fs, tmp_path / "a", b"hello")
    fs.fsync_directory(tmp_path)
    fs.power_cut()
    assert tree(tmp_path) == {"a": b"hello"}


def test_unsynced_appended_bytes_are_lost(tmp_path: Path) -> None:
    """Bytes written after the last fsync are gone; those before it stay."""
    (tmp_path / "log").write_bytes(b"base")
    fs = PowerLossFileSystem([tmp_path])
    write_synced(fs, tmp_path / "log", b"+synced", 4)
    descriptor = fs.open(tmp_path / "log", os.O_WRONLY | os.O_CLOEXEC)
    fs.pwritev(descriptor, [b"+lost", b"+too"], 11)
    os.close(descriptor)
    assert (tmp_path / "log").read_bytes() == b"base+synced+lost+too"
    fs.power_cut()
    assert tree(tmp_path) == {"log": b"base+synced"}


def test_unsynced_file_in_synced_directory_is_empty(tmp_path: Path) -> None:
    """A new file whose name is durable but whose data never was: empty."""
    fs = PowerLossFileSystem([tmp_path])
    write_new(fs, tmp_path / "a", b"never synced", sync=False)
    fs.fsync_directory(tmp_path)
    fs.power_cut()
    assert tree(tmp_path) == {"a": b""}


def test_new_file_disappears_without_directory_fsync(tmp_path: Path) -> None:
    """A new file fsynced in a directory that was not fsynced is gone."""
    (tmp_path / "sub").mkdir()
    fs = PowerLossFileSystem([tmp_path])
    write_new(fs, tmp_path / "sub" / "a", b"data")
    fs.power_cut()
    assert tree(tmp_path) == {"sub": None}


def test_new_directory_disappears_without_parent_fsync(tmp_path: Path) -> None:
    """A new directory (its own entries fsynced) vanishes if its parent was not."""
    fs = PowerLossFileSystem([tmp_path])
    fs.make_directory(tmp_path / "vm")
    write_new(fs, tmp_path / "vm" / "disk", b"data")
    fs.fsync_directory(tmp_path / "vm")
    fs.power_cut()
    assert tree(tmp_path) == {}


def test_rename_without_directory_fsync_is_reverted(tmp_path: Path) -> None:
    """The old name comes back, with the content its last fsync made durable."""
    (tmp_path / "a").write_bytes(b"baseline")
    fs = PowerLossFileSystem([tmp_path])
    write_synced(fs, tmp_path / "a", b"synced!!", 0)
    fs.rename(tmp_path / "a", tmp_path / "b")
    fs.power_cut()
    assert tree(tmp_path) == {"a": b"synced!!"}


def test_rename_over_a_file_without_directory_fsync_is_reverted(
    tmp_path: Path,
) -> None:
    """An atomic replace not made durable leaves the old file, not the new one."""
    (tmp_path / "store.json").write_bytes(b"old")
    fs = PowerLossFileSystem([tmp_path])
    write_new(fs, tmp_path / "store.json.tmp", b"new")
    fs.rename(tmp_path / "store.json.tmp", tmp_path / "store.json")
    fs.power_cut()
    assert tree(tmp_path) == {"store.json": b"old"}


def test_rename_with_directory_fsync_is_durable(tmp_path: Path) -> None:
    """The same replace followed by a directory fsync survives (the engine's way)."""
    (tmp_path / "store.json").write_bytes(b"old")
    fs = PowerLossFileSystem([tmp_path])
    with files.use(fs):
        durable_file.write_file_atomically(tmp_path / "store.json", b"new")
    fs.power_cut()
    assert tree(tmp_path) == {"store.json": b"new"}


def test_unlink_without_directory_fsync_is_reverted(tmp_path: Path) -> None:
    """An unlink is undone unless the directory is fsynced after it."""
    (tmp_path / "kept").write_bytes(b"one")
    (tmp_path / "gone").write_bytes(b"two")
    fs = PowerLossFileSystem([tmp_path])
    fs.unlink(tmp_path / "gone")
    fs.fsync_directory(tmp_path)
    fs.unlink(tmp_path / "kept")
    fs.power_cut()
    assert tree(tmp_path) == {"kept": b"one"}


def test_remove_tree_without_parent_fsync_is_reverted(tmp_path: Path) -> None:
    """A removed tree comes back whole when its parent was not fsynced."""
    (tmp_path / "cycle-1" / "deep").mkdir(parents=True)
    (tmp_path / "cycle-1" / "os.hrl").write_bytes(b"log")
    (tmp_path / "cycle-1" / "deep" / "x").write_bytes(b"x")
    before = tree(tmp_path)
    fs = PowerLossFileSystem([tmp_path])
    fs.remove_tree(tmp_path / "cycle-1")
    assert tree(tmp_path) == {}
    fs.power_cut()
    assert before == tree(tmp_path)


def test_inode_reuse_does_not_resurrect_the_wrong_content(tmp_path: Path) -> None:
    """A name undone after an unlink gets its own content, not the reuser's."""
    (tmp_path / "a").write_bytes(b"old")
    inode = (tmp_path / "a").stat().st_ino
    fs = PowerLossFileSystem([tmp_path])
    fs.unlink(tmp_path / "a")
    write_new(fs, tmp_path / "c", b"new")  # fsynced, its directory never
    assert inode == (tmp_path / "c").stat().st_ino, "ext4 reuses a freed inode"
    fs.power_cut()
    assert tree(tmp_path) == {"a": b"old"}


def test_keep_files_are_left_as_they_are_at_the_cut(tmp_path: Path) -> None:
    """SQLite's files stay exactly as they are, and the directory holding one."""
    (tmp_path / "control.sqlite3").write_bytes(b"db-1")
    fs = PowerLossFileSystem([tmp_path])
    (tmp_path / "control.sqlite3").write_bytes(b"db-2")  # SQLite's own write
    fs.make_directory(tmp_path / "site")  # the parent is never fsynced
    (tmp_path / "site" / "other.sqlite3-wal").write_bytes(b"wal")
    write_new(fs, tmp_path / "site" / "modelled", b"data")
    inode = (tmp_path / "control.sqlite3").stat().st_ino
    fs.power_cut()
    expected = {
        "control.sqlite3": b"db-2",
        "site": None,
        "site/other.sqlite3-wal": b"wal",
    }
    assert expected == tree(tmp_path)
    assert inode == (tmp_path / "control.sqlite3").stat().st_ino


def test_crash_at_raises_before_the_operation(tmp_path: Path) -> None:
    """PowerCut comes before operation N: nothing of it happens, nor after it."""
    fs = PowerLossFileSystem([tmp_path], crash_at=4)
    write_new(fs, tmp_path / "a", b"data")  # operations 1 to 3
    with pytest.raises(PowerCut, match="before operation 4"):
        fs.rename(tmp_path / "a", tmp_path / "b")
    assert os.listdir(tmp_path) == ["a"]
    with pytest.raises(PowerCut):
        fs.unlink(tmp_path / "a")
    assert (fs.operations, fs.powered, os.listdir(tmp_path)) == (3, False, ["a"])
    assert not issubclass(PowerCut, Exception)
    fs.power_cut()
    assert tree(tmp_path) == {}  # never fsynced in its directory
    fs.unlink(tmp_path / "a", missing_ok=True)  # the power is back
    assert (fs.operations, fs.powered) == (4, True)


def test_boot_id_changes_at_each_power_cut(tmp_path: Path) -> None:
    """The simulated boot id is new after a cut, and never the machine's own."""
    fs = PowerLossFileSystem([tmp_path])
    first = fs.boot_id()
    fs.power_cut()
    second = fs.boot_id()
    assert len({first, second, FileSystem().boot_id()}) == 3


def test_counting_traces_mutating_operations_only(tmp_path: Path) -> None:
    """Each mutating operation is traced with its index and path; reads are not."""
    fs = CountingFileSystem()
    write_new(fs, tmp_path / "a", b"data")
    os.close(fs.open(tmp_path / "a", os.O_RDONLY | os.O_CLOEXEC))
    fs.rename(tmp_path / "a", tmp_path / "b")
    fs.fsync_directory(tmp_path)
    expected = [
        (1, "open", str(tmp_path / "a")),
        (2, "pwrite", str(tmp_path / "a")),
        (3, "fsync", str(tmp_path / "a")),
        (4, "rename", f"{tmp_path / 'a'} -> {tmp_path / 'b'}"),
        (5, "fsync_directory", str(tmp_path)),
    ]
    assert expected == [(t.index, t.operation, t.path) for t in fs.trace]
    assert fs.operations == 5


KILLED_CHILD = """
import os, sys
from pathlib import Path
from engine.storage import files
from engine.testing import KillingFileSystem

path, when = Path(sys.argv[1]), sys.argv[2]
with files.use(KillingFileSystem(2, when=when)) as fs:
    descriptor = fs.open(path, os.O_CREAT | os.O_WRONLY)  # operation 1
    fs.pwrite(descriptor, b"data", 0)  # operation 2
print("not killed")
"""


@pytest.mark.parametrize(("when", "content"), [("before", b""), ("after", b"data")])
def test_killing_file_system_sigkills_at_the_operation(
    tmp_path: Path, when: str, content: bytes
) -> None:
    """The child dies by SIGKILL at operation 2: before it nothing, after it data."""
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(tmp_path / "f"), when],
        cwd=REPOSITORY, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (child.returncode, child.stdout, child.stderr) == (-9, "", "")
    assert content == (tmp_path / "f").read_bytes()


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    """Crash points count from 1, roots must exist, a kill is before or after."""
    with pytest.raises(InvalidConfiguration, match="crash_at=0"):
        PowerLossFileSystem([tmp_path], crash_at=0)
    with pytest.raises(InvalidConfiguration, match="existing directories"):
        PowerLossFileSystem([tmp_path / "missing"])
    (tmp_path / "sub").mkdir()
    with pytest.raises(InvalidConfiguration, match="overlap"):
        PowerLossFileSystem([tmp_path, tmp_path / "sub"])
    with pytest.raises(InvalidConfiguration, match="when='during'"):
        KillingFileSystem(1, when="during")  # type: ignore[arg-type]


def test_the_full_disk_refuses_one_space_operation_once(tmp_path: Path) -> None:
    """ENOSPC at the chosen operation only; the retry and the rest go through."""
    from engine.testing import FullDiskFileSystem

    target = tmp_path / "file"
    full = FullDiskFileSystem(2)
    with files.use(full):
        descriptor = files.current().open(target, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError, match="No space left") as refused:
                files.current().pwrite(descriptor, b"first", 0)
            assert refused.value.errno == errno.ENOSPC
            assert files.current().pwrite(descriptor, b"again", 0) == 5
        finally:
            os.close(descriptor)
    assert target.read_bytes() == b"again"
    assert full.refused is not None
    assert full.refused.operation == "pwrite"


def test_the_full_disk_never_refuses_what_needs_no_space(tmp_path: Path) -> None:
    """An fsync or a rename at the chosen index goes through: they need no space."""
    from engine.testing import FullDiskFileSystem

    source = tmp_path / "a"
    source.write_bytes(b"x")
    full = FullDiskFileSystem(1)
    with files.use(full):
        files.current().rename(source, tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"x"
    assert full.refused is None
