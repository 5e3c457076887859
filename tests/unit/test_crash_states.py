"""The crash states between "drop all not durable" and "keep all": the model's rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import InvalidConfiguration
from engine.storage.crash_states import PAGE_BYTES, PendingImage
from engine.storage.files import FileSystem
from engine.testing import PowerCut, PowerLossFileSystem

CREATE = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC


def write_new(fs: FileSystem, path: Path, data: bytes, *, sync: bool) -> None:
    """Create ``path`` with ``data`` through ``fs``; fsync it when ``sync``."""
    descriptor = fs.open(path, CREATE | os.O_TRUNC)
    try:
        fs.pwrite(descriptor, data, 0)
        if sync:
            fs.fsync(descriptor)
    finally:
        os.close(descriptor)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (relative) -> content, None for a directory."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def cut_with_pending(root: Path) -> tuple[PowerLossFileSystem, PendingImage]:
    """A durable ``a`` (b"old") in a durable ``d``; then, unsynced: ``a`` rewritten,
    renamed to ``c``, a new ``b``, a new folder ``e`` holding a synced ``f``, and a
    SQLite-like kept file; then the cut."""
    fs = PowerLossFileSystem([root])
    fs.make_directory(root / "d")
    write_new(fs, root / "d" / "a", b"old", sync=True)
    fs.fsync_directory(root / "d")
    fs.fsync_directory(root)
    write_new(fs, root / "d" / "a", b"new!", sync=False)
    fs.rename(root / "d" / "a", root / "d" / "c")
    write_new(fs, root / "d" / "b", b"bee", sync=False)
    fs.make_directory(root / "e")
    write_new(fs, root / "e" / "f", b"eff", sync=True)
    fs.fsync_directory(root / "e")
    (root / "d" / "x.sqlite3").write_bytes(b"db")
    with pytest.raises(PowerCut):
        fs.cut_now("the test's step")
    return fs, fs.pending()


def test_pending_changes_are_named_and_ordered(tmp_path: Path) -> None:
    """Each unsynced change once, a rename as one change, in operation order."""
    _, pending = cut_with_pending(tmp_path)
    described = [change.describe() for change in pending.changes]
    assert described == [
        "write d/c cut to 0",  # the O_TRUNC of the rewrite
        "write d/c[0:4]",
        "rename d/a -> d/c",
        "create d/b",
        "write d/b[0:3]",
        "create e",
    ]


def test_drop_all_is_the_strict_power_cut(tmp_path: Path) -> None:
    """The first state keeps nothing: the tree ``power_cut()`` leaves."""
    root = tmp_path / "root"
    root.mkdir()
    fs, pending = cut_with_pending(root)
    states = pending.states(8)
    assert states[0].name == "drop all"
    pending.write(states[0], [tmp_path / "state"])
    fs.power_cut()
    assert tree(tmp_path / "state") == tree(root)


def test_keep_all_is_the_tree_a_kill_leaves(tmp_path: Path) -> None:
    """The second state keeps everything: the tree as the process left it."""
    root = tmp_path / "root"
    root.mkdir()
    _, pending = cut_with_pending(root)
    states = pending.states(8)
    assert states[1].name == "keep all"
    before = tree(root)
    pending.write(states[1], [tmp_path / "state"])
    assert tree(tmp_path / "state") == before


def test_every_state_is_one_a_file_system_may_leave(tmp_path: Path) -> None:
    """In all 64 states: the renamed file under exactly one name, with its old
    bytes, its new ones, none (truncated, not rewritten yet) or the new over the
    old (rewritten, the truncation not kept); the new file empty or whole; the kept
    file as it was."""
    root = tmp_path / "root"
    root.mkdir()
    _, pending = cut_with_pending(root)
    states = pending.states(128)
    assert len(states) == 2 ** len(pending.changes)
    for number, state in enumerate(states):
        target = tmp_path / str(number)
        pending.write(state, [target])
        found = tree(target)
        names = {name for name in ("d/a", "d/c") if name in found}
        assert len(names) == 1, pending.describe(state)
        assert found[names.pop()] in (b"old", b"new!", b"")
        assert found.get("d/b", b"") in (b"", b"bee")
        assert found["d/x.sqlite3"] == b"db"
        assert found.get("e/f", b"eff") == b"eff"


def test_many_changes_give_a_bounded_deterministic_sample(tmp_path: Path) -> None:
    """Twelve unsynced entries: 10 states, the same each time, all distinct."""
    fs = PowerLossFileSystem([tmp_path])
    for number in range(12):
        write_new(fs, tmp_path / f"n{number}", b"x", sync=True)
    with pytest.raises(PowerCut):
        fs.cut_now("here")
    pending = fs.pending()
    states = pending.states(10, seed=3)
    # "prefix 1" keeps change 0 alone, as "keep 0" did: each state comes once
    assert [s.name for s in states[:6]] == [
        "drop all", "keep all", "keep 0", "drop 0", "random 0", "keep 1",
    ]  # fmt: skip
    assert len({state.kept for state in states}) == 10
    assert [s.kept for s in states] == [s.kept for s in pending.states(10, seed=3)]


def test_pending_needs_the_power_off(tmp_path: Path) -> None:
    """Asking for the crash states with the power on is a caller's mistake."""
    fs = PowerLossFileSystem([tmp_path])
    with pytest.raises(InvalidConfiguration, match="power is on"):
        fs.pending()


def test_each_write_is_a_change_and_unseen_bytes_one_content(tmp_path: Path) -> None:
    """A write, an allocation and a copy the layer saw are changes of their own,
    each kept alone as it was; bytes written around the layer make one change."""
    root = tmp_path / "root"
    root.mkdir()
    fs = PowerLossFileSystem([root])
    write_new(fs, root / "seen", b"a" * 8, sync=True)
    write_new(fs, root / "unseen", b"u" * 8, sync=True)
    fs.fsync_directory(root)
    descriptor = fs.open(root / "seen", os.O_RDWR | os.O_CLOEXEC)
    source = os.open(root / "unseen", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fs.pwrite(descriptor, b"bb", 2)
        fs.fallocate(descriptor, 0, 12)
        fs.copy_file_range(source, descriptor, 2, 0, 10)
    finally:
        os.close(descriptor)
        os.close(source)
    with (root / "unseen").open("r+b") as stream:
        stream.write(b"U")
    with pytest.raises(PowerCut):
        fs.cut_now("here")
    pending = fs.pending()
    described = [change.describe() for change in pending.changes]
    assert described == [
        "content unseen",
        "write seen[2:4]",
        "write seen grown to 12",
        "write seen[10:12]",
    ]
    grown, copied = b"a" * 8 + bytes(4), b"a" * 8 + bytes(2) + b"uu"
    expected = [b"U" + b"u" * 7, b"aabbaaaa", grown, copied]
    for number, content in enumerate(expected):
        state = next(s for s in pending.states(32) if s.kept == {number})
        pending.write(state, [tmp_path / f"state-{number}"])
        name = "unseen" if number == 0 else "seen"
        assert (tmp_path / f"state-{number}" / name).read_bytes() == content


def test_a_write_across_pages_may_tear_at_a_page_boundary(tmp_path: Path) -> None:
    """A write of two and a half pages from an unaligned offset over a synced file
    is one change per page it touches; keeping only some tears it there, and no
    state holds a page partly old and partly new."""
    page = PAGE_BYTES
    fs = PowerLossFileSystem([tmp_path])
    write_new(fs, tmp_path / "img", b"o" * (4 * page), sync=True)
    fs.fsync_directory(tmp_path)
    descriptor = fs.open(tmp_path / "img", os.O_WRONLY | os.O_CLOEXEC)
    try:
        fs.pwrite(descriptor, b"n" * (2 * page + page // 2), page // 2)
    finally:
        os.close(descriptor)
    with pytest.raises(PowerCut):
        fs.cut_now("mid-write")
    pending = fs.pending()
    described = [change.describe() for change in pending.changes]
    assert described == [
        f"write img[{page // 2}:{page}]",
        f"write img[{page}:{2 * page}]",
        f"write img[{2 * page}:{3 * page}]",
    ]
    seen = set()
    for number, state in enumerate(pending.states(64)):
        target = tmp_path / f"s{number}"
        pending.write(state, [target])
        data = (target / "img").read_bytes()
        pages = [data[n * page : (n + 1) * page] for n in range(4)]
        halves = (pages[0][: page // 2], pages[0][page // 2 :])
        assert halves[0] == b"o" * (page // 2)
        assert all(len(set(p)) == 1 for p in (halves[1], *pages[1:]))
        assert pages[3] == b"o" * page
        seen.add(tuple(p[-1:] for p in pages[:3]))
    assert len(seen) == 8  # every torn combination of the three pieces
