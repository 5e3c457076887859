"""Unit tests for engine/log/tracked_disk.py: logging in the write path, ENOSPC."""

from __future__ import annotations

import os
import threading

import pytest

from engine.errors import CorruptRecord, DiskRangeError, StorageFull
from engine.log.format import RECORD_HEADER, RECORD_PAYLOAD_BYTES_MAX
from engine.log.tracked_disk import TrackedDisk, TrackedDiskStatistics
from engine.log.writer import ChangeLog, LogRecord, log_path_for, read_sealed_log
from engine.storage import files
from engine.storage.disk import VirtualDisk

MIB = 1024 * 1024
DISK_ID = "vm1.os"


@pytest.fixture
def tracked(tmp_path):
    disk = VirtualDisk.create(tmp_path / "d.img", MIB)
    with TrackedDisk.start(disk, disk_id=DISK_ID, epoch=1, first_sequence=1) as opened:
        yield opened


def sealed_records(tracked, path):
    sealed = tracked.seal_log(path)
    return list(read_sealed_log(sealed.path, disk_id=DISK_ID, epoch=1))


def test_write_lands_on_disk_and_in_log(tracked, tmp_path):
    """Each write is on the disk and recorded, with consecutive sequence numbers."""
    expected = 1
    assert expected == tracked.write(0, b"first")
    expected = 2
    assert expected == tracked.write(4096, bytearray(b"second"))
    expected = b"first"
    assert expected == tracked.read(0, 5)
    expected = [LogRecord(1, 0, b"first"), LogRecord(2, 4096, b"second")]
    assert expected == sealed_records(tracked, tmp_path / "s.hrl")


def test_log_lives_beside_the_disk(tracked, tmp_path):
    """Tracking starts a <disk>.hrl next to the image."""
    assert log_path_for(tmp_path / "d.img") == tracked.log.path
    assert tracked.log.path.exists()


def test_seal_splits_writes_into_before_and_after(tracked, tmp_path):
    """Writes before a seal are in the sealed log; later ones in the fresh log."""
    tracked.write(0, b"a")
    before = sealed_records(tracked, tmp_path / "one.hrl")
    tracked.write(1, b"b")
    after = sealed_records(tracked, tmp_path / "two.hrl")
    assert [LogRecord(1, 0, b"a")] == before
    assert [LogRecord(2, 1, b"b")] == after


def test_concurrent_writes_and_seals_lose_nothing(tracked, tmp_path):
    """Under concurrent writers and seals, every write is in exactly one sealed log."""
    writers = 4
    writes_each = 200

    def writer(number):
        for index in range(writes_each):
            tracked.write((number * writes_each + index) * 8, bytes([number]) * 8)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    records = []
    for cycle in range(5):
        records += sealed_records(tracked, tmp_path / f"c{cycle}.hrl")
    for thread in threads:
        thread.join()
    records += sealed_records(tracked, tmp_path / "last.hrl")
    assert list(range(1, writers * writes_each + 1)) == [r.sequence for r in records]
    assert writers * writes_each == len({record.offset for record in records})


def test_large_write_becomes_several_records(tmp_path):
    """A write past one record's limit is split into consecutive records."""
    size = 2 * RECORD_PAYLOAD_BYTES_MAX
    data = bytes(range(256)) * ((RECORD_PAYLOAD_BYTES_MAX + 4096) // 256)
    disk = VirtualDisk.create(tmp_path / "big.img", size)
    with TrackedDisk.start(disk, disk_id=DISK_ID, epoch=1) as tracked:
        expected = 1
        assert expected == tracked.write(4096, data)
        records = sealed_records(tracked, tmp_path / "s.hrl")
        assert data == tracked.read(4096, len(data))
    expected = [4096, 4096 + RECORD_PAYLOAD_BYTES_MAX]
    assert expected == [r.offset for r in records]
    assert data == b"".join(record.data for record in records)


def test_out_of_range_write_is_neither_logged_nor_written(tracked):
    """A write past the end is refused before the log sees it."""
    with pytest.raises(DiskRangeError):
        tracked.write(MIB - 1, b"xx")
    expected = 0
    assert expected == tracked.log.record_count


def test_log_full_refuses_the_write_and_leaves_the_disk(tracked, file_size_limit):
    """When the log cannot grow, the disk is not written either."""
    tracked.write(0, b"ok")
    log_size = tracked.log.size_bytes
    with file_size_limit(log_size + 10), pytest.raises(StorageFull):
        tracked.write(8, b"lost")
    assert bytes(4) == tracked.read(8, 4)
    assert (log_size, 1) == (tracked.log.size_bytes, tracked.log.record_count)


def test_disk_full_retracts_the_record(tracked, file_size_limit, tmp_path):
    """When nothing lands on the disk, the record describing it is removed."""
    with file_size_limit(256 * 1024), pytest.raises(StorageFull):
        tracked.write(512 * 1024, b"z" * 4096)
    assert bytes(4096) == tracked.read(512 * 1024, 4096)
    expected: list[LogRecord] = []
    assert expected == sealed_records(tracked, tmp_path / "s.hrl")
    assert not tracked.tracking_lost


def test_partial_disk_write_records_exactly_what_landed(
    tracked, file_size_limit, tmp_path
):
    """A write cut short is recorded as the bytes that reached the disk."""
    with file_size_limit(8192), pytest.raises(StorageFull, match="only 92"):
        tracked.write(8100, b"q" * 200)
    assert b"q" * 92 + bytes(108) == tracked.read(8100, 200)
    assert [LogRecord(1, 8100, b"q" * 92)] == sealed_records(
        tracked, tmp_path / "s.hrl"
    )
    assert not tracked.tracking_lost


def test_durable_mode_writes_and_flushes(tmp_path):
    """Durable tracking gives the same results, fsyncing log then disk."""
    disk = VirtualDisk.create(tmp_path / "d.img", MIB)
    with TrackedDisk.start(disk, disk_id=DISK_ID, epoch=1, durable=True) as tracked:
        assert tracked.durable
        tracked.write(0, b"durable")
        tracked.flush()
        expected = b"durable"
        assert expected == tracked.read(0, 7)


def test_resume_reopens_the_log(tmp_path):
    """After a restart, tracking resumes and continues the numbering."""
    disk = VirtualDisk.create(tmp_path / "d.img", MIB)
    with TrackedDisk.start(disk, disk_id=DISK_ID, epoch=1, first_sequence=5) as tracked:
        tracked.write(0, b"x")
        tracked.flush()
    disk = VirtualDisk.open(tmp_path / "d.img")
    with TrackedDisk.resume(disk, disk_id=DISK_ID, epoch=1) as tracked:
        assert tracked.log.tail_report is None
        expected = 6
        assert expected == tracked.write(1, b"y")


def over_limit(tracked: TrackedDisk) -> bool:
    """Whether the log is over its limit, read afresh (mypy keeps an assert's
    narrowing of the property across the writes that change it)."""
    return tracked.log_over_limit


def test_log_over_limit_and_statistics(tmp_path):
    """Past half the disk in *file size* (header and framing included) the log
    reports it is over its limit, even while its payload is still under it."""
    disk = VirtualDisk.create(tmp_path / "d.img", 8192)
    with TrackedDisk.start(disk, disk_id=DISK_ID, epoch=1) as tracked:
        header = tracked.log.size_bytes  # 38 bytes for "vm1.os"
        fits = 4096 - header - RECORD_HEADER.size  # one record up to the limit
        tracked.write(0, bytes(fits))
        assert not over_limit(tracked)
        tracked.write(0, b"x")  # 25 more bytes of file, payload still < 4096
        assert over_limit(tracked)
        expected = TrackedDiskStatistics(
            writes=2,
            bytes_written=fits + 1,
            log_records=2,
            log_payload_bytes=fits + 1,
            log_file_bytes=4096 + RECORD_HEADER.size + 1,
            log_limit_bytes=4096,
            next_sequence=2,
            tracking_lost=False,
        )
        assert expected == tracked.statistics()


def log_ahead_of_disk(tmp_path, writes, *, size=MIB):
    """A disk and a current log holding ``writes`` the disk never got (as after a kill
    between the records and the disk writes)."""
    path = tmp_path / "d.img"
    VirtualDisk.create(path, size).close()
    with ChangeLog.create(
        log_path_for(path), disk_id=DISK_ID, epoch=1, first_sequence=1
    ) as log:
        for offset, data in writes:
            log.append(offset, data)
    return path


def test_resume_replays_the_log_in_order(tmp_path):
    """Records the disk never got are written on resume, in order (a later record
    over an earlier one wins), and nothing is counted as a new write; the log is
    unchanged. Fails if resume does not replay."""
    path = log_ahead_of_disk(tmp_path, [(0, b"aaaa"), (2, b"bb"), (8192, b"c")])
    disk = VirtualDisk.open(path)
    with TrackedDisk.resume(disk, disk_id=DISK_ID, epoch=1) as tracked:
        assert tracked.read(0, 4) == b"aabb"
        assert tracked.read(8192, 1) == b"c"
        assert (tracked.statistics().writes, tracked.log.record_count) == (0, 3)
        expected = 4
        assert expected == tracked.write(100, b"d")
    with TrackedDisk.resume(VirtualDisk.open(path), disk_id=DISK_ID, epoch=1) as again:
        assert again.read(0, 4) == b"aabb"  # replaying twice changes nothing
        assert again.read(100, 1) == b"d"


class RecordingFileSystem(files.FileSystem):
    """Notes every write and data sync as (operation, file suffix), then does it."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def _note(self, operation, descriptor):
        name = os.readlink(f"/proc/self/fd/{descriptor}")
        self.calls.append((operation, os.path.splitext(name)[1]))

    def pwrite(self, descriptor, data, offset):
        self._note("pwrite", descriptor)
        return super().pwrite(descriptor, data, offset)

    def fdatasync(self, descriptor):
        self._note("fdatasync", descriptor)
        super().fdatasync(descriptor)


def test_durable_resume_syncs_the_log_then_replays_then_syncs_the_disk(tmp_path):
    """Durable mode: the log is made durable before the replay writes the disk (a
    disk change must never be durable without its record), and the disk is made
    durable before resume returns. Fails if resume does not replay and sync."""
    path = log_ahead_of_disk(tmp_path, [(0, b"x"), (4096, b"y")])
    recording = RecordingFileSystem()
    with files.use(recording):
        disk = VirtualDisk.open(path)
        TrackedDisk.resume(disk, disk_id=DISK_ID, epoch=1, durable=True).close()
    expected = [
        ("fdatasync", ".hrl"),
        ("pwrite", ".img"),
        ("pwrite", ".img"),
        ("fdatasync", ".img"),
    ]
    assert expected == recording.calls


def test_resume_refuses_a_record_past_the_end_of_the_disk(tmp_path):
    """A current log writing past the disk's end (the image was shrunk) cannot be
    replayed: CorruptRecord, the log is closed, the disk stays open for the caller."""
    path = log_ahead_of_disk(tmp_path, [(8192, b"zz")], size=8192)
    disk = VirtualDisk.open(path)
    with pytest.raises(CorruptRecord, match="record past disk end"):
        TrackedDisk.resume(disk, disk_id=DISK_ID, epoch=1)
    assert not disk.closed
    disk.close()
