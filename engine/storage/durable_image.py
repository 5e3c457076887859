"""The durable image of a few trees: what a power cut would leave of them.

What it owns: the bookkeeping of :class:`~engine.storage.simulation.PowerLossFileSystem`
(whose essay states the model): per file identity, the content its last fsync saw;
per directory identity, the entries its last fsync saw; the generation of each inode
number; and :meth:`DurableImage.restore`, which rewrites a real tree to that state.

Identities are ``(device, inode, generation)``: the simulation calls
:meth:`DurableImage.renew` whenever an inode number is freed or taken by a new file,
so a reused number never names the content of the file that held it before.

Names matching a ``keep`` pattern are never recorded, written nor removed, and a
directory holding one survives a restore even where the model would drop it (its
other entries follow the model). It reads and writes with ``os`` directly: a restore
is the reboot, not an operation of the engine.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

Inode = tuple[int, int]
"""(device, inode number), as the kernel reports it."""

Identity = tuple[int, int, int]
"""(device, inode, generation): one file or directory across inode reuse."""

Entry = tuple[Identity, bool]
"""What a directory entry names: the identity, and whether it is a directory."""


class DurableImage:
    """What a power cut would leave: durable file contents and directory entries."""

    def __init__(self, keep: Sequence[str]) -> None:
        """Model nothing yet; names matching a ``keep`` pattern are never modelled."""
        self._keep = tuple(keep)
        self._generations: dict[Inode, int] = {}
        self._contents: dict[Identity, bytes] = {}
        self._entries: dict[Identity, dict[str, Entry]] = {}

    def kept(self, name: str) -> bool:
        """Whether ``name`` is left alone (a ``keep`` pattern matches it)."""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self._keep)

    def identity(self, status: os.stat_result) -> Identity:
        """The identity of the inode ``status`` describes, as of now."""
        inode = inode_of(status)
        return (*inode, self._generations.get(inode, 0))

    def renew(self, inodes: Sequence[Inode]) -> None:
        """These inode numbers were freed, or taken by a new file: new identities."""
        for inode in inodes:
            self._generations[inode] = self._generations.get(inode, 0) + 1

    def take_baseline(self, roots: Sequence[Path]) -> None:
        """Take everything under ``roots`` as durable (and nothing else)."""
        self._contents.clear()
        self._entries.clear()
        pending = list(roots)
        while pending:
            directory = pending.pop()
            for name, (identity, is_dir) in self.capture_directory(directory).items():
                if is_dir:
                    pending.append(directory / name)
                else:
                    self._contents[identity] = (directory / name).read_bytes()

    def capture_descriptor(self, descriptor: int) -> None:
        """An fsync of ``descriptor`` made its content (or its entries) durable."""
        status = os.fstat(descriptor)
        if stat.S_ISDIR(status.st_mode):
            self.capture_directory(Path(descriptor_path(descriptor)))
        elif stat.S_ISREG(status.st_mode) and status.st_nlink > 0:
            reader = os.open(f"/proc/self/fd/{descriptor}", os.O_RDONLY | os.O_CLOEXEC)
            with open(reader, "rb") as stream:
                self._contents[self.identity(status)] = stream.read()

    def content(self, identity: Identity) -> bytes:
        """The durable content of file ``identity`` (empty: never synced)."""
        return self._contents.get(identity, b"")

    def entries(self, identity: Identity) -> dict[str, Entry]:
        """The durable entries of directory ``identity`` (none: never synced)."""
        return dict(self._entries.get(identity, {}))

    def capture_directory(self, directory: Path) -> dict[str, Entry]:
        """An fsync of ``directory`` made its entries durable; return them."""
        entries = self.scan(directory)
        self._entries[self.identity(os.stat(directory))] = entries
        return entries

    def scan(self, directory: Path) -> dict[str, Entry]:
        """The entries of ``directory`` as they are now (kept names aside)."""
        entries: dict[str, Entry] = {}
        with os.scandir(directory) as scan:
            for item in scan:
                status = item.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(status.st_mode)
                if self.kept(item.name) or not (is_dir or stat.S_ISREG(status.st_mode)):
                    continue
                entries[item.name] = (self.identity(status), is_dir)
        return entries

    def restore(self, root: Path) -> None:
        """Rewrite the tree under ``root`` to its durable state (kept files aside)."""
        identity = self.identity(os.stat(root))
        self._restore_directory(root, self._entries.get(identity, {}), {identity})

    def _restore_directory(
        self, directory: Path, wanted: Mapping[str, Entry], ancestors: set[Identity]
    ) -> bool:
        """Make ``directory`` hold ``wanted``; return whether it holds a kept file."""
        with os.scandir(directory) as scan:
            present = {item.name: item.is_dir(follow_symlinks=False) for item in scan}
        holds_kept = False
        for name in sorted(present.keys() | wanted.keys()):
            path = directory / name
            if self.kept(name):
                holds_kept |= name in present
                continue
            want = wanted.get(name)
            if present.get(name) is True and (want is None or not want[1]):
                if want is None and self._restore_directory(path, {}, ancestors):
                    holds_kept = True  # emptied, but it holds a kept file
                    continue
                shutil.rmtree(path)
            elif present.get(name) is False and (want is None or want[1]):
                os.unlink(path)
            if want is None:
                continue
            identity, is_dir = want
            if not is_dir:
                _write_if_different(path, self._contents.get(identity, b""))
                continue
            if not path.is_dir():
                os.mkdir(path)
            # A directory that (durably) contains one of its ancestors is a cycle
            # of renames never synced: stop there, as an empty directory.
            inside = {} if identity in ancestors else self._entries.get(identity, {})
            holds_kept |= self._restore_directory(path, inside, ancestors | {identity})
        return holds_kept


def descriptor_path(descriptor: int) -> str:
    """The path the kernel gives for ``descriptor`` (``/proc/self/fd``)."""
    return os.readlink(f"/proc/self/fd/{descriptor}")


def inode_of(status: os.stat_result) -> Inode:
    """The inode ``status`` describes."""
    return status.st_dev, status.st_ino


def inodes_under(path: Path) -> list[Inode]:
    """The inodes deleting ``path`` would free (files whose last link it is)."""
    if not os.path.lexists(path):
        return []
    if path.is_symlink() or not path.is_dir():
        status = os.lstat(path)
        return [inode_of(status)] if status.st_nlink <= 1 else []
    found = []
    for directory, _, names in os.walk(path):
        found.append(inode_of(os.lstat(directory)))
        for name in names:
            status = os.lstat(Path(directory) / name)
            if status.st_nlink <= 1:
                found.append(inode_of(status))
    return found


def _write_if_different(path: Path, content: bytes) -> None:
    """Give ``path`` exactly ``content`` (a file already equal is not touched)."""
    if path.is_file() and path.read_bytes() == content:
        return
    with open(path, "wb") as stream:
        stream.write(content)
