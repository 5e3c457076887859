"""File systems for crash tests: they lose power, kill, fill the disk, or only count.

Every step the engine takes on its own files goes through ``engine.storage.files``
(:func:`~engine.storage.files.use` installs another implementation). The four here
count the **mutating operations** that pass through them (an ``open`` that may write,
``pwrite``, ``pwritev``, ``ftruncate``, ``fallocate``, ``copy_file_range``, ``fsync``,
``fdatasync``, ``fsync_directory``, ``rename``, ``unlink``, ``make_directory``,
``remove_tree``) and keep a trace of ``(index, operation, path)``, indexes from 1:

- :class:`CountingFileSystem` only counts: run a scenario once to learn how many crash
  points it has, and what each one is;
- :class:`KillingFileSystem` SIGKILLs its own process just before or just after the
  N-th operation. A kill keeps the page cache: everything written stays, durable or
  not, so it tests the *order* of the steps and the recovery code;
- :class:`FullDiskFileSystem` answers ``ENOSPC`` at the N-th operation that needs
  space, once: a disk that filled up at exactly that step;
- :class:`PowerLossFileSystem` raises :class:`PowerCut` before the N-th operation (or
  where :meth:`PowerLossFileSystem.cut_now` is called: at a named step of the engine)
  and, when :meth:`PowerLossFileSystem.power_cut` is called, rewrites the real trees
  under its roots to what was *durable*, as a reboot after a power loss finds them.
  Before that, :meth:`PowerLossFileSystem.pending` lists what was not durable and the
  states in between that a real file system may leave (``crash_states``).

**The durability model** is the strict one of the crash-consistency checkers (ALICE,
CrashMonkey): nothing is durable unless an fsync made it so.

- At construction everything under the roots is durable (the baseline).
- A file's content is what its last ``fsync``/``fdatasync`` saw (whole-file: the
  model has no torn pages), else its baseline, else empty (created, never synced).
- A directory's entries (name -> identity) are what its last ``fsync_directory`` saw,
  else its baseline, else none. So a new file whose directory was not fsynced after
  its creation disappears, even if the file itself was fsynced; a rename or unlink not
  followed by an fsync of the directory is undone (the old name comes back, with its
  own durable content); a removed tree whose parent was not fsynced comes back.
- Identity is the inode number plus a generation the simulator bumps whenever it sees
  an inode freed (``unlink``, ``remove_tree``, a ``rename`` over a file) or born
  (``open`` with ``O_CREAT``, ``make_directory``): an inode number reused by a new file
  never brings back the content of the one deleted before it.
- Files whose name matches ``keep`` (by default SQLite's own files and lock files) are
  not modelled: SQLite makes each commit durable itself (``synchronous=FULL``) through
  calls this layer does not see, so they are left exactly as they are at the cut, and
  so are the directories holding them (their other entries follow the model).

**The states in between** (``crash_states``, as ALICE and CrashMonkey explore them):
"drop everything not durable" is the strictest state, "keep everything" the one a
kill leaves; in between, each pending change is kept or dropped on its own: each
unsynced write, truncation, allocation or copy into a file (the layer records them,
and forgets a file's at its fsync), each create, unlink or rebinding of a directory
entry, and each rename as one change (its two names together: renames are atomic).
A bounded, deterministic choice of those states is offered per cut.

**What it cannot see, and other limits.** Writes made through Python file objects or
straight through ``os`` are not counted, but their content is captured at the next
fsync that goes through the layer (unflushed buffers are, rightly, lost). ``mmap`` is
not supported. Only regular files and directories are modelled (no symlinks, no
hard-link counts beyond "last link"). Anything the process writes to the kept files
while unwinding from :class:`PowerCut` is kept too: catch it at the top of the test and
cut at once. Memory grows with the tree and with every synced version of every file;
the trees of tests are small. The model reads whole files at each fsync: slow for big
files, exact for small ones.

:meth:`PowerLossFileSystem.boot_id` is simulated and changes at each power cut, so
code that compares boot ids to tell a kill from a power loss sees a reboot (it never
equals the real machine's id either, so reopening with the real file system after a
cut also looks like a reboot).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NoReturn

from engine.errors import InvalidConfiguration
from engine.storage.crash_states import FileWrite, PendingImage
from engine.storage.disk import require_int
from engine.storage.durable_image import (
    DurableImage,
    Identity,
    descriptor_path,
    inode_of,
    inodes_under,
)
from engine.storage.files import Buffer, FileSystem

KEEP_DEFAULT: Final = ("*.sqlite3", "*.sqlite3-wal", "*.sqlite3-shm", "*.lock")
"""Files SQLite (and the OS, for locks) makes durable by calls this layer cannot see."""

_MAY_WRITE: Final = os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_RDWR
"""An ``open`` with any of these flags counts as a mutating operation."""


class PowerCut(BaseException):
    """The simulated power went off: raised before the operation at ``crash_at``.

    Derives from ``BaseException`` so that the engine's ``except Exception`` and
    ``except OSError`` handlers do not swallow it. Every operation after it raises it
    again until :meth:`PowerLossFileSystem.power_cut` is called.
    """


@dataclass(frozen=True, slots=True)
class TracedOperation:
    """One mutating operation as it went through the layer."""

    index: int  # 1 for the first operation counted
    operation: str  # the FileSystem method's name
    path: str  # what it acted on ("source -> target" for a rename)


class CountingFileSystem(FileSystem):
    """The operating system's file operations, each mutating one counted and traced.

    The other simulations extend it through two hooks, :meth:`_before` (may refuse or
    kill) and :meth:`_after` (called whether the operation succeeded or failed).
    """

    def __init__(self) -> None:
        super().__init__()
        self._trace: list[TracedOperation] = []
        self._lock = threading.RLock()

    @property
    def operations(self) -> int:
        """How many mutating operations went through so far."""
        return len(self._trace)

    @property
    def trace(self) -> tuple[TracedOperation, ...]:
        """Every mutating operation so far, in order."""
        return tuple(self._trace)

    def _before(self, entry: TracedOperation) -> None:
        """Called before the operation ``entry`` runs (nothing here)."""

    def _after(self, entry: TracedOperation) -> None:
        """Called after the operation ``entry`` ran or failed (nothing here)."""

    @contextmanager
    def _counted(self, operation: str, path: object) -> Iterator[None]:
        with self._lock:
            entry = TracedOperation(len(self._trace) + 1, operation, str(path))
            self._before(entry)
            self._trace.append(entry)
            try:
                yield
            finally:
                self._after(entry)

    def open(self, path: Path, flags: int, mode: int = 0o600) -> int:
        if not flags & _MAY_WRITE:
            return super().open(path, flags, mode)
        with self._counted("open", path):
            return super().open(path, flags, mode)

    def pwrite(self, descriptor: int, data: Buffer, offset: int) -> int:
        with self._counted("pwrite", descriptor_path(descriptor)):
            return super().pwrite(descriptor, data, offset)

    def pwritev(self, descriptor: int, buffers: Sequence[Buffer], offset: int) -> int:
        with self._counted("pwritev", descriptor_path(descriptor)):
            return super().pwritev(descriptor, buffers, offset)

    def ftruncate(self, descriptor: int, length: int) -> None:
        with self._counted("ftruncate", descriptor_path(descriptor)):
            super().ftruncate(descriptor, length)

    def fallocate(self, descriptor: int, offset: int, length: int) -> None:
        with self._counted("fallocate", descriptor_path(descriptor)):
            super().fallocate(descriptor, offset, length)

    def copy_file_range(
        self,
        source: int,
        target: int,
        count: int,
        offset_source: int,
        offset_target: int,
    ) -> int:
        with self._counted("copy_file_range", descriptor_path(target)):
            return super().copy_file_range(
                source, target, count, offset_source, offset_target
            )

    def fsync(self, descriptor: int) -> None:
        with self._counted("fsync", descriptor_path(descriptor)):
            super().fsync(descriptor)

    def fdatasync(self, descriptor: int) -> None:
        with self._counted("fdatasync", descriptor_path(descriptor)):
            super().fdatasync(descriptor)

    def fsync_directory(self, path: Path) -> None:
        with self._counted("fsync_directory", path):
            super().fsync_directory(path)

    def rename(self, source: Path, target: Path) -> None:
        with self._counted("rename", f"{source} -> {target}"):
            super().rename(source, target)

    def unlink(self, path: Path, *, missing_ok: bool = False) -> None:
        with self._counted("unlink", path):
            super().unlink(path, missing_ok=missing_ok)

    def make_directory(
        self, path: Path, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        with self._counted("make_directory", path):
            super().make_directory(path, parents=parents, exist_ok=exist_ok)

    def remove_tree(self, path: Path) -> None:
        with self._counted("remove_tree", path):
            super().remove_tree(path)


class KillingFileSystem(CountingFileSystem):
    """Counts like :class:`CountingFileSystem`; SIGKILLs this process at one operation.

    ``when="before"``: the ``kill_at``-th operation never happens; ``"after"``: it
    happened (or failed) and nothing after it does. SIGKILL runs no handler, no
    ``finally`` and no flush, but the kernel keeps what was written.
    """

    def __init__(self, kill_at: int, *, when: Literal["before", "after"]) -> None:
        super().__init__()
        self._kill_at = _operation_index("kill_at", kill_at)
        if when not in ("before", "after"):
            msg = f"when={when!r} must be 'before' or 'after'"
            raise InvalidConfiguration(msg)
        self._when = when

    def _before(self, entry: TracedOperation) -> None:
        if self._when == "before" and entry.index == self._kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def _after(self, entry: TracedOperation) -> None:
        if self._when == "after" and entry.index == self._kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


SPACE_OPERATIONS: Final = frozenset(
    {"open", "pwrite", "pwritev", "fallocate", "copy_file_range", "make_directory"}
)
"""The operations a full disk can refuse: they need new space (a new inode, data or
a directory entry). A truncation, an fsync, a rename or an unlink does not."""


class FullDiskFileSystem(CountingFileSystem):
    """Counts like :class:`CountingFileSystem`; the storage is full at one operation.

    The ``full_at``-th operation, if it needs space (:data:`SPACE_OPERATIONS`), fails
    with ``ENOSPC`` before it happens, as on a disk that filled up just then; every
    other operation goes through (the space came back at once: the worst case for
    code that must not half-apply anything and must resume afterwards).
    """

    def __init__(self, full_at: int) -> None:
        super().__init__()
        self._full_at = _operation_index("full_at", full_at)
        self.refused: TracedOperation | None = None  # the operation refused, once

    def _before(self, entry: TracedOperation) -> None:
        if (
            self.refused is None
            and entry.index == self._full_at
            and entry.operation in SPACE_OPERATIONS
        ):
            # A refused operation is not traced (it did not happen): the next one
            # takes its index, so remember that the disk was full once already.
            self.refused = entry
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), entry.path)


class PowerLossFileSystem(CountingFileSystem):
    """Counts like :class:`CountingFileSystem` and remembers what each fsync made
    durable under ``roots``; :meth:`power_cut` loses everything else."""

    def __init__(
        self,
        roots: Sequence[Path],
        *,
        crash_at: int | None = None,
        keep: Sequence[str] = KEEP_DEFAULT,
    ) -> None:
        super().__init__()
        self._roots = _validate_roots(roots)
        self._crash_at = (
            None if crash_at is None else _operation_index("crash_at", crash_at)
        )
        self._image = DurableImage(keep)
        self._image.take_baseline(self._roots)
        self._writes: dict[Identity, list[FileWrite]] = {}  # unsynced, per file
        self._cut_before: int | None = None  # set while the power is off
        self._boot_id = _simulated_boot_id()

    @property
    def powered(self) -> bool:
        """False between a :class:`PowerCut` and :meth:`power_cut`."""
        return self._cut_before is None

    def boot_id(self) -> str:
        """The simulated boot's id: a new one after each :meth:`power_cut`."""
        return self._boot_id

    def cut_now(self, reason: str) -> NoReturn:
        """Cut the power here, between operations (a named step of the engine):
        raise :class:`PowerCut`; every operation after it raises it again."""
        with self._lock:
            if self._cut_before is None:
                self._cut_before = self.operations + 1
            msg = f"power cut at {reason} (before operation {self._cut_before})"
            raise PowerCut(msg)

    def pending(self) -> PendingImage:
        """While the power is off: what was not durable, and the crash states
        between dropping all of it and keeping all of it (``crash_states``)."""
        with self._lock:
            if self._cut_before is None:
                msg = "pending() is for a cut: the power is on"
                raise InvalidConfiguration(msg)
            orders: dict[str, int] = {}
            for entry in self._trace:
                for path in entry.path.split(" -> "):
                    for root in self._roots:
                        if Path(path).is_relative_to(root):
                            orders[_relative_path(root, Path(path))] = entry.index
            return PendingImage(self._image, self._roots, orders, self._writes)

    def power_cut(self) -> None:
        """Rewrite the trees under the roots to what was durable; boot again.

        Afterwards that state is the new baseline, operations run again and
        ``crash_at`` is spent (a crash point fires once).
        """
        with self._lock:
            self._crash_at = None
            for root in self._roots:
                self._image.restore(root)
            self._image.take_baseline(self._roots)
            self._writes.clear()
            self._cut_before = None
            self._boot_id = _simulated_boot_id()

    def _before(self, entry: TracedOperation) -> None:
        if self._cut_before is None and entry.index == self._crash_at:
            self._cut_before = entry.index
        if self._cut_before is not None:
            msg = f"power cut before operation {self._cut_before} "
            msg += f"(refused: {entry.operation} {entry.path})"
            raise PowerCut(msg)

    # Each override holds the lock from what it reads before the operation to the
    # model's update after it, so two threads cannot interleave inside one.

    def open(self, path: Path, flags: int, mode: int = 0o600) -> int:
        with self._lock:
            born = bool(flags & os.O_CREAT) and not os.path.lexists(path)
            descriptor = super().open(path, flags, mode)
            if born:
                self._image.renew([inode_of(os.fstat(descriptor))])
            elif flags & os.O_TRUNC and flags & (os.O_WRONLY | os.O_RDWR):
                self._wrote(descriptor, FileWrite(self.operations, size=0))
            return descriptor

    def pwrite(self, descriptor: int, data: Buffer, offset: int) -> int:
        with self._lock:
            written = super().pwrite(descriptor, data, offset)
            chunk = bytes(memoryview(data).cast("B")[:written])
            self._wrote(descriptor, FileWrite(self.operations, offset, chunk))
            return written

    def pwritev(self, descriptor: int, buffers: Sequence[Buffer], offset: int) -> int:
        with self._lock:
            written = super().pwritev(descriptor, buffers, offset)
            joined = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
            chunk = joined[:written]
            self._wrote(descriptor, FileWrite(self.operations, offset, chunk))
            return written

    def ftruncate(self, descriptor: int, length: int) -> None:
        with self._lock:
            super().ftruncate(descriptor, length)
            self._wrote(descriptor, FileWrite(self.operations, size=length))

    def fallocate(self, descriptor: int, offset: int, length: int) -> None:
        with self._lock:
            super().fallocate(descriptor, offset, length)
            grown = FileWrite(self.operations, size=offset + length, grow=True)
            self._wrote(descriptor, grown)

    def copy_file_range(
        self,
        source: int,
        target: int,
        count: int,
        offset_source: int,
        offset_target: int,
    ) -> int:
        with self._lock:
            copied = super().copy_file_range(
                source, target, count, offset_source, offset_target
            )
            chunk = os.pread(source, copied, offset_source) if copied else b""
            self._wrote(target, FileWrite(self.operations, offset_target, chunk))
            return copied

    def _wrote(self, descriptor: int, write: FileWrite) -> None:
        """Remember an unsynced change of the file's content (``crash_states``)."""
        identity = self._image.identity(os.fstat(descriptor))
        self._writes.setdefault(identity, []).append(write)

    def fsync(self, descriptor: int) -> None:
        with self._lock:
            super().fsync(descriptor)
            self._image.capture_descriptor(descriptor)
            self._writes.pop(self._image.identity(os.fstat(descriptor)), None)

    def fdatasync(self, descriptor: int) -> None:
        with self._lock:
            super().fdatasync(descriptor)
            self._image.capture_descriptor(descriptor)
            self._writes.pop(self._image.identity(os.fstat(descriptor)), None)

    def fsync_directory(self, path: Path) -> None:
        with self._lock:
            super().fsync_directory(path)
            self._image.capture_directory(Path(path))

    def rename(self, source: Path, target: Path) -> None:
        with self._lock:
            same = _same_file(source, target)
            replaced = [] if same else inodes_under(Path(target))
            super().rename(source, target)
            self._image.renew(replaced)

    def unlink(self, path: Path, *, missing_ok: bool = False) -> None:
        with self._lock:
            freed = inodes_under(Path(path))
            super().unlink(path, missing_ok=missing_ok)
            self._image.renew(freed)

    def make_directory(
        self, path: Path, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        path = Path(path)
        with self._lock:
            missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
            super().make_directory(path, parents=parents, exist_ok=exist_ok)
            self._image.renew([inode_of(os.lstat(p)) for p in missing])

    def remove_tree(self, path: Path) -> None:
        with self._lock:
            freed = inodes_under(Path(path))
            super().remove_tree(path)
            self._image.renew(freed)


def _relative_path(root: Path, path: Path) -> str:
    return "" if path == root else str(path.relative_to(root))


def _same_file(source: Path, target: Path) -> bool:
    try:
        return os.path.samefile(source, target)
    except OSError:
        return False


def _validate_roots(roots: Sequence[Path]) -> tuple[Path, ...]:
    resolved = tuple(Path(root).resolve() for root in roots)
    if not resolved or not all(root.is_dir() for root in resolved):
        msg = f"roots={[str(root) for root in roots]!r} must name existing directories"
        msg += " (at least one)"
        raise InvalidConfiguration(msg)
    for root in resolved:
        for other in resolved:
            if root != other and root.is_relative_to(other):
                msg = f"roots {str(root)!r} and {str(other)!r} overlap; give disjoint"
                msg += " trees"
                raise InvalidConfiguration(msg)
    return resolved


def _operation_index(argument: str, value: object) -> int:
    index = require_int(value, argument=argument)
    if index < 1:
        msg = f"{argument}={index!r} must be >= 1 (operations count from 1)"
        raise InvalidConfiguration(msg)
    return index


def _simulated_boot_id() -> str:
    """A fresh boot id; the prefix keeps it apart from any real machine's."""
    return f"simulated-{uuid.uuid4()}"
