"""The states a power cut may leave between "all durable" and "all written".

What it owns: at a cut of :class:`~engine.storage.simulation.PowerLossFileSystem`,
the list of **pending changes** (what the page cache held that no fsync had made
durable yet) and a bounded list of **crash states**, each keeping some of them and
dropping the others, as the crash-consistency checkers ALICE and CrashMonkey explore;
and :meth:`PendingImage.write`, which writes one state into a fresh directory.

**The model.** The durable image (``durable_image``) says what a strict file system
keeps: each file's content as its last fsync saw it, each directory's entries as its
last directory fsync saw them. The tree as the process left it says what a kill
keeps. A pending change is one difference between the two, kept or dropped whole:

- *write*: one unsynced write, truncation, allocation or copy into a file, as the
  simulation saw it; kept or dropped independently of the file's other writes (page
  write-back follows no order), the kept ones applied in their order over the
  file's durable bytes (empty for a file never synced). A write that spans page
  boundaries (``PAGE_BYTES``) is one change per page it touches, since write-back
  goes page by page: a power cut may keep some of its pages and not the others (a
  torn write). Within one page nothing tears;
- *content*: a file's bytes differ from its durable content in a way its recorded
  writes do not explain (bytes written around the layer, through a Python file
  object): kept, the file holds every byte as it is; dropped, its durable bytes;
- *create*, *unlink*, *replace*: one directory entry is bound to another file, or to
  none, than its durable binding (a new file or folder, a removed one, a name rebound);
- *rename*: entries that share a file are one change, kept or dropped together: a
  rename is atomic on every journaling file system, so its source name never loses
  the file while its target name does not have it yet, and a rename over a file
  frees that file only if the rename is kept. Chains (a rename of a renamed file, a
  folder created and renamed into place) join the same change.

Any choice of changes is a state some POSIX file system may leave: POSIX orders
nothing that was not synced, and write-back may flush any dirty page or metadata
update first. A kept entry inside a dropped folder is unreachable and so dropped
too; a kept content of a file whose creation is dropped is lost with it. Keeping
everything gives the state a kill leaves; dropping everything, the strict model's.

**The bound.** ``n`` changes give ``2**n`` states. :meth:`PendingImage.states` lists
every one when there are few (``2**n <= budget``), else, in this order and
deduplicated: drop all, keep all, then by turns each change kept alone, each
dropped alone, each prefix in the order of the operations that made them (what an
ordered journal keeps) and seeded random subsets, until ``budget`` states. The same
cut and seed always give the same states.

Names matching the image's ``keep`` patterns (SQLite's files, locks) are copied as
they are, as :meth:`DurableImage.restore` leaves them.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Final

from engine.storage.durable_image import DurableImage, Entry, Identity

PAGE_BYTES: Final = 4096
"""The unit of write-back: a write tears only at these boundaries of its file."""

STATES_BUDGET_DEFAULT: Final = 8
"""Crash states per cut by default: the extremes and a few in between (a sweep
multiplies its crash points by it)."""


@dataclass(frozen=True, slots=True)
class PendingChange:
    """One change a power cut keeps or drops whole."""

    kind: str  # "write", "content", "create", "unlink", "replace" or "rename"
    paths: tuple[str, ...]  # what it touches, relative to its root ("dir/name")
    order: int  # the trace index of the last operation that touched it (0: none)

    def describe(self) -> str:
        """``"rename a -> b"``, ``"content x"``."""
        if self.kind == "rename":
            return "rename " + " -> ".join(self.paths)
        return f"{self.kind} {', '.join(self.paths)}"


@dataclass(frozen=True, slots=True)
class CrashState:
    """A choice of pending changes to keep: the others are dropped."""

    name: str  # "drop all", "keep all", "keep 2", "drop 0", "prefix 3", "random 1"
    kept: frozenset[int]  # indexes into ``PendingImage.changes``


@dataclass(frozen=True, slots=True)
class FileWrite:
    """One change of a file's content the simulation saw, not yet synced: bytes
    written at ``offset`` (``data``), or the size set to ``size`` (a truncation:
    ``grow=False``; an allocation, which only grows: ``grow=True``)."""

    index: int  # the trace index of the operation
    offset: int = 0
    data: bytes | None = None
    size: int = 0
    grow: bool = False

    def describe(self, path: str) -> str:
        if self.data is not None:
            return f"{path}[{self.offset}:{self.offset + len(self.data)}]"
        return f"{path} {'grown' if self.grow else 'cut'} to {self.size}"


def replay(content: bytes, writes: Sequence[FileWrite]) -> bytes:
    """``content`` with ``writes`` applied in order (zeros fill any hole)."""
    image = bytearray(content)
    for write in writes:
        if write.data is not None:
            end = write.offset + len(write.data)
            if end > len(image):
                image.extend(bytes(end - len(image)))
            image[write.offset : end] = write.data
        elif write.grow:
            image.extend(bytes(max(0, write.size - len(image))))
        else:
            del image[write.size :]
            image.extend(bytes(write.size - len(image)))
    return bytes(image)


@dataclass(frozen=True, slots=True)
class _EntryChange:
    directory: Identity
    name: str
    durable: Entry | None
    current: Entry | None


_Member = tuple[list[_EntryChange], Identity | None, int | None]
"""What a pending change is made of: entry changes, or a file's content (whole:
``None``; or one of its writes, by number)."""


class PendingImage:
    """The durable image and the tree as it is at a cut, and what differs."""

    def __init__(
        self,
        image: DurableImage,
        roots: Sequence[Path],
        orders: Mapping[str, int] | None = None,
        writes: Mapping[Identity, Sequence[FileWrite]] | None = None,
    ) -> None:
        """Compare ``image`` with the trees under ``roots`` as they are now.

        ``orders`` maps a path to the trace index of the last operation on it
        (for the order of prefixes; paths absent count as 0); ``writes`` lists,
        per file, the changes of its content since its last fsync, when the
        simulation saw them all (each is then a pending change of its own)."""
        self._image = image
        self._roots = tuple(roots)
        self._orders = dict(orders or {})
        self._content: dict[Identity, bytes] = {}
        self._entries: dict[Identity, dict[str, Entry]] = {}
        self._paths: dict[Identity, str] = {}
        for root in self._roots:
            self._scan(root, root)
        changed = self._entry_changes()
        groups = _groups(changed)
        changes: list[PendingChange] = []
        self._members: list[_Member] = []
        for group in groups:
            changes.append(self._describe(group))
            self._members.append((group, None, None))
        self._writes: dict[Identity, tuple[FileWrite, ...]] = {}
        for identity, content in sorted(self._content.items()):
            if content == image.content(identity):
                continue
            path = self._paths[identity]
            found = tuple((writes or {}).get(identity, ()))
            if found and replay(image.content(identity), found) == content:
                found = tuple(page for write in found for page in _by_page(write))
                self._writes[identity] = found
                for number, write in enumerate(found):
                    changes.append(PendingChange("write", (write.describe(path),),
                                                 write.index))  # fmt: skip
                    self._members.append(([], identity, number))
                continue
            changes.append(PendingChange("content", (path,), self._order(path)))
            self._members.append(([], identity, None))
        order = sorted(range(len(changes)), key=lambda n: (changes[n].order, n))
        self.changes: tuple[PendingChange, ...] = tuple(changes[n] for n in order)
        self._members = [self._members[n] for n in order]

    # -- what differs ----------------------------------------------------------------

    def _scan(self, root: Path, directory: Path) -> None:
        identity = self._image.identity(os.stat(directory))
        self._paths[identity] = _relative(root, directory)
        entries = self._image.scan(directory)
        self._entries[identity] = entries
        for name, (found, is_dir) in entries.items():
            path = directory / name
            if is_dir:
                self._scan(root, path)
            else:
                self._paths[found] = _relative(root, path)
                self._content[found] = path.read_bytes()

    def _entry_changes(self) -> list[_EntryChange]:
        changed = []
        for directory, current in self._entries.items():
            durable = self._image.entries(directory)
            for name in sorted(durable.keys() | current.keys()):
                if durable.get(name) != current.get(name):
                    changed.append(
                        _EntryChange(
                            directory, name, durable.get(name), current.get(name)
                        )
                    )
        return changed

    def _describe(self, group: list[_EntryChange]) -> PendingChange:
        def path(change: _EntryChange) -> str:
            parent = self._paths.get(change.directory, "?")
            return f"{parent}/{change.name}" if parent else change.name

        paths = tuple(path(change) for change in group)
        order = max(self._order(p) for p in paths)
        if len(group) > 1:
            sources = [path(c) for c in group if c.current is None]
            targets = [path(c) for c in group if c.current is not None]
            return PendingChange("rename", (*sources, *targets), order)
        (change,) = group
        if change.durable is None:
            return PendingChange("create", paths, order)
        if change.current is None:
            return PendingChange("unlink", paths, order)
        return PendingChange("replace", paths, order)

    def _order(self, path: str) -> int:
        return self._orders.get(path, 0)

    # -- the states ------------------------------------------------------------------

    def states(
        self, budget: int = STATES_BUDGET_DEFAULT, *, seed: int = 0
    ) -> list[CrashState]:
        """Up to ``budget`` states (at least drop all and keep all), deterministic."""
        count = len(self.changes)
        every = frozenset(range(count))
        found: dict[frozenset[int], str] = {frozenset(): "drop all"}
        if count == 0:
            return [CrashState("drop all", frozenset())]
        found.setdefault(every, "keep all")
        if 2**count <= budget:
            for mask in range(1, 2**count - 1):
                kept = frozenset(n for n in range(count) if mask >> n & 1)
                found.setdefault(kept, "keep " + ",".join(map(str, sorted(kept))))
        else:
            for kept, name in _interleaved(count, seed):
                if len(found) >= budget:
                    break
                found.setdefault(kept, name)
        return [CrashState(name, kept) for kept, name in found.items()]

    def describe(self, state: CrashState) -> str:
        """The state's name and what it keeps, in words."""
        if state.name in ("drop all", "keep all"):
            return state.name
        dropped = set(range(len(self.changes))) - state.kept
        if len(dropped) < len(state.kept):
            listed = "; ".join(self.changes[n].describe() for n in sorted(dropped))
            return f"{state.name}: drops {listed}"
        kept = "; ".join(self.changes[n].describe() for n in sorted(state.kept))
        return f"{state.name}: keeps {kept}"

    # -- writing one -----------------------------------------------------------------

    def write(self, state: CrashState, targets: Sequence[Path]) -> None:
        """Write ``state`` of each root into the matching (new) ``targets``."""
        entries: dict[Identity, dict[str, Entry]] = {}
        content: dict[Identity, bytes] = {}
        kept_writes: dict[Identity, set[int]] = {}
        for index in state.kept:
            group, identity, number = self._members[index]
            if identity is not None and number is None:
                content[identity] = self._content[identity]
            elif identity is not None and number is not None:
                kept_writes.setdefault(identity, set()).add(number)
            for change in group:
                view = entries.setdefault(
                    change.directory, dict(self._image.entries(change.directory))
                )
                if change.current is None:
                    view.pop(change.name, None)
                else:
                    view[change.name] = change.current
        for identity, numbers in kept_writes.items():
            found = self._writes[identity]
            chosen = [write for n, write in enumerate(found) if n in numbers]
            content[identity] = replay(self._image.content(identity), chosen)
        for root, target in zip(self._roots, targets, strict=True):
            identity = self._image.identity(os.stat(root))
            target.mkdir(parents=True)
            self._write_directory(target, identity, entries, content, {identity})
            _copy_kept(self._image, root, target)

    def _write_directory(
        self,
        target: Path,
        identity: Identity,
        entries: Mapping[Identity, Mapping[str, Entry]],
        content: Mapping[Identity, bytes],
        ancestors: set[Identity],
    ) -> None:
        inside = entries.get(identity)
        if inside is None:
            inside = self._image.entries(identity)
        for name, (found, is_dir) in sorted(inside.items()):
            path = target / name
            if not is_dir:
                data = content.get(found)
                path.write_bytes(self._image.content(found) if data is None else data)
                continue
            path.mkdir()
            if found not in ancestors:  # else a cycle of renames: an empty folder
                self._write_directory(
                    path, found, entries, content, ancestors | {found}
                )


def _by_page(write: FileWrite) -> Iterator[FileWrite]:
    """``write`` cut at the page boundaries of its file (a size change is whole)."""
    if write.data is None:
        yield write
        return
    start, data = write.offset, write.data
    while True:
        length = min(len(data), PAGE_BYTES - start % PAGE_BYTES)
        yield FileWrite(write.index, offset=start, data=data[:length])
        start, data = start + length, data[length:]
        if not data:
            return


def _relative(root: Path, path: Path) -> str:
    return "" if path == root else str(path.relative_to(root))


def _groups(changed: Sequence[_EntryChange]) -> list[list[_EntryChange]]:
    """The entry changes, joined when they share a file (a rename, a chain)."""
    parent = list(range(len(changed)))

    def find(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    holder: dict[Identity, int] = {}
    for n, change in enumerate(changed):
        for entry in (change.durable, change.current):
            if entry is None:
                continue
            other = holder.setdefault(entry[0], n)
            parent[find(n)] = find(other)
    groups: dict[int, list[_EntryChange]] = {}
    for n, change in enumerate(changed):
        groups.setdefault(find(n), []).append(change)
    return list(groups.values())


def _interleaved(count: int, seed: int) -> Iterator[tuple[frozenset[int], str]]:
    """Each kept alone, each dropped alone, each prefix, random: by turns."""
    every = frozenset(range(count))
    generator = random.Random(seed)

    def alone() -> Iterator[tuple[frozenset[int], str]]:
        for n in range(count):
            yield frozenset({n}), f"keep {n}"

    def without() -> Iterator[tuple[frozenset[int], str]]:
        for n in range(count):
            yield every - {n}, f"drop {n}"

    def prefixes() -> Iterator[tuple[frozenset[int], str]]:
        for n in range(1, count):
            yield frozenset(range(n)), f"prefix {n}"

    def randoms() -> Iterator[tuple[frozenset[int], str]]:
        for n in range(2 * count):
            kept = frozenset(k for k in range(count) if generator.random() < 0.5)
            yield kept, f"random {n}"

    sources = [alone(), without(), prefixes(), randoms()]
    for source in cycle(list(sources)):
        if not sources:
            return
        if source not in sources:
            continue
        item = next(source, None)
        if item is None:
            sources.remove(source)
            continue
        yield item


def _copy_kept(image: DurableImage, root: Path, target: Path) -> None:
    """The kept names (SQLite's files, locks) as they are at the cut."""
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if image.kept(name) and stat.S_ISREG(os.lstat(path).st_mode):
                copy = target / path.relative_to(root)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copy)
