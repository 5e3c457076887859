"""Unit tests for engine/storage/sparse_copy.py: sparse streaming copy, and copying
while the source is written (replaying the change log makes the target identical)."""

from __future__ import annotations

import os
import random
import threading

import pytest

from engine.errors import InvalidConfiguration, StorageFull
from engine.log.tracked_disk import TrackedDisk
from engine.log.writer import read_sealed_log
from engine.storage.disk import VirtualDisk
from engine.storage.sparse_copy import CopyStatistics, copy_disk_image, data_extents

MIB = 1024 * 1024
SIZE = 8 * MIB
EXTENTS = [(0, 64 * 1024), (MIB, 4096), (5 * MIB, 100 * 1024), (SIZE - 4096, 4096)]
DISK_ID = "vm1.os"


def extents_of(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return list(data_extents(descriptor, os.fstat(descriptor).st_size))
    finally:
        os.close(descriptor)


@pytest.fixture
def source(tmp_path):
    """An 8 MiB sparse image with four data extents of random bytes."""
    path = tmp_path / "source.img"
    generator = random.Random(7)
    with VirtualDisk.create(path, SIZE) as disk:
        for start, length in EXTENTS:
            disk.write(start, generator.randbytes(length))
        disk.flush()
    return path


def apply_log(sealed_path, target):
    with VirtualDisk.open(target) as disk:
        for record in read_sealed_log(sealed_path, disk_id=DISK_ID, epoch=1):
            disk.write(record.offset, record.data)


@pytest.mark.parametrize("use_copy_file_range", [True, False])
def test_copy_is_identical_and_keeps_holes(source, tmp_path, use_copy_file_range):
    """The target has the same bytes and the same allocated extents as the source."""
    target = tmp_path / "target.img"
    statistics = copy_disk_image(
        source, target, chunk_bytes=32 * 1024, use_copy_file_range=use_copy_file_range
    )
    assert source.read_bytes() == target.read_bytes()
    assert extents_of(source) == extents_of(target)
    copied = sum(end - start for start, end in extents_of(source))
    assert copied == statistics.bytes_copied
    assert SIZE - copied == statistics.bytes_skipped_as_holes
    assert use_copy_file_range == statistics.used_copy_file_range
    assert isinstance(statistics, CopyStatistics)


def test_progress_is_monotonic_and_ends_at_total(source, tmp_path):
    """Progress never goes back and ends at (size, size)."""
    seen = []
    copy_disk_image(
        source,
        tmp_path / "t.img",
        chunk_bytes=16 * 1024,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == sorted(seen)
    expected = (SIZE, SIZE)
    assert expected == seen[-1]
    assert {SIZE} == {total for _, total in seen}


def test_all_hole_disk_copies_nothing(tmp_path):
    """An empty disk is all hole: nothing is read or written, the size is kept."""
    with VirtualDisk.create(tmp_path / "empty.img", SIZE):
        pass
    statistics = copy_disk_image(tmp_path / "empty.img", tmp_path / "t.img")
    expected = (0, SIZE)
    assert expected == (statistics.bytes_copied, statistics.bytes_skipped_as_holes)
    expected = SIZE
    assert expected == os.stat(tmp_path / "t.img").st_size
    assert extents_of(tmp_path / "t.img") == []


def test_existing_target_is_replaced_and_no_partial_remains(source, tmp_path):
    """A previous target is replaced whole; the .partial file is gone."""
    target = tmp_path / "t.img"
    target.write_bytes(b"old" * 1000)
    copy_disk_image(source, target)
    assert source.read_bytes() == target.read_bytes()
    assert not (tmp_path / "t.img.partial").exists()


def test_failed_copy_leaves_old_target(source, tmp_path):
    """When the copy fails half-way, the old target is untouched, no partial left."""
    target = tmp_path / "t.img"
    target.write_bytes(b"old")

    def fail(done, total):
        if done > MIB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_disk_image(source, target, chunk_bytes=16 * 1024, progress=fail)
    expected = b"old"
    assert expected == target.read_bytes()
    assert not (tmp_path / "t.img.partial").exists()


def test_storage_full_is_reported_and_cleaned_up(source, tmp_path, file_size_limit):
    """No room for the copy raises StorageFull and removes the partial file."""
    with file_size_limit(MIB), pytest.raises(StorageFull):
        copy_disk_image(source, tmp_path / "t.img")
    assert not (tmp_path / "t.img").exists()
    assert not (tmp_path / "t.img.partial").exists()


@pytest.mark.parametrize("chunk_bytes", [0, 1024, 512 * MIB, "8M"])
def test_chunk_size_is_validated(source, tmp_path, chunk_bytes):
    """Chunk sizes outside 4 KiB..256 MiB are refused."""
    with pytest.raises(InvalidConfiguration, match="chunk_bytes="):
        copy_disk_image(source, tmp_path / "t.img", chunk_bytes=chunk_bytes)


def test_missing_source_and_self_copy_are_refused(source, tmp_path):
    """A missing source, or a target that is the source, is refused."""
    with pytest.raises(InvalidConfiguration, match="not an existing"):
        copy_disk_image(tmp_path / "nope.img", tmp_path / "t.img")
    with pytest.raises(InvalidConfiguration, match="is the source itself"):
        copy_disk_image(source, source)


def test_writes_during_copy_are_recovered_by_the_log(source, tmp_path):
    """Writes between chunks (behind, ahead, in holes) + log replay = identical."""
    target = tmp_path / "t.img"
    generator = random.Random(11)
    disk = VirtualDisk.open(source)
    writes = []  # every write made, each one record (far below a record's limit)
    with TrackedDisk.start(disk, disk_id=DISK_ID, epoch=1) as tracked:

        def write_between_chunks(done, total):
            for _ in range(3):
                length = generator.randrange(1, 20_000)
                offset = generator.randrange(0, SIZE - length)
                writes.append((offset, generator.randbytes(length)))
            writes.append((min(done, SIZE - 1), b"!"))  # right at the copy's edge
            for offset, data in writes[-4:]:
                tracked.write(offset, data)

        copy_disk_image(
            source, target, chunk_bytes=16 * 1024, progress=write_between_chunks
        )
        sealed = tracked.seal_log(tmp_path / "cycle.hrl")
    assert sealed.record_count == len(writes)  # none dropped, none logged twice
    assert source.read_bytes() != target.read_bytes()
    apply_log(sealed.path, target)
    assert source.read_bytes() == target.read_bytes()


def test_concurrent_writer_thread_then_replay_is_identical(source, tmp_path):
    """A writer thread racing the copy: after replaying the log, target == source."""
    target = tmp_path / "t.img"
    disk = VirtualDisk.open(source)
    with TrackedDisk.start(disk, disk_id=DISK_ID, epoch=1) as tracked:

        def writer():
            generator = random.Random(13)
            for _ in range(400):
                offset = generator.randrange(0, SIZE // 4096) * 4096
                tracked.write(offset, generator.randbytes(4096))

        thread = threading.Thread(target=writer)
        thread.start()
        copy_disk_image(source, target, chunk_bytes=64 * 1024)
        thread.join()
        sealed = tracked.seal_log(tmp_path / "cycle.hrl")
    expected = 400
    assert expected == sealed.record_count
    apply_log(sealed.path, target)
    assert source.read_bytes() == target.read_bytes()


def test_missing_target_directory_is_refused(source, tmp_path):
    """A target in a directory that does not exist is refused before any I/O."""
    with pytest.raises(InvalidConfiguration, match="directory does not exist"):
        copy_disk_image(source, tmp_path / "no-such-dir" / "t.img")
