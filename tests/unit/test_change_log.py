"""Unit tests for engine/log/writer.py: the writer, sealing and the strict readers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import (
    CorruptRecord,
    DiskRangeError,
    InvalidConfiguration,
    InvalidName,
    StorageFull,
)
from engine.log.format import (
    FORMAT_VERSION,
    RECORD_HEADER,
    RECORD_PAYLOAD_BYTES_MAX,
)
from engine.log.writer import (
    REASON_ENDS_EARLY,
    ChangeLog,
    ChangeLogStatistics,
    LogHeader,
    LogRecord,
    SealedLog,
    TailReport,
    encode_header,
    log_limit_bytes,
    log_path_for,
    read_sealed_log,
    verify_sealed_log,
)

DISK_ID = "vm1.os"
EPOCH = 3


def new_log(tmp_path, first_sequence=1):
    return ChangeLog.create(
        tmp_path / "d.img.hrl",
        disk_id=DISK_ID,
        epoch=EPOCH,
        first_sequence=first_sequence,
    )


def test_log_path_sits_beside_the_disk(tmp_path):
    """The log of d.img is d.img.hrl in the same directory."""
    assert tmp_path / "d.img.hrl" == log_path_for(tmp_path / "d.img")


def test_log_limit_is_half_the_disk():
    """A log may hold up to half the disk's size in payload."""
    expected = 512
    assert expected == log_limit_bytes(1024)
    with pytest.raises(InvalidConfiguration, match="must be positive"):
        log_limit_bytes(0)


def test_create_writes_a_header_only_log(tmp_path):
    """A new log is its header and nothing else, with the given identity."""
    with new_log(tmp_path, first_sequence=7) as log:
        header = LogHeader(FORMAT_VERSION, DISK_ID, EPOCH, 7)
        assert header == log.header
        assert len(encode_header(header)) == log.size_bytes
        expected = (7, 0, 0)
        assert expected == (log.next_sequence, log.record_count, log.payload_bytes)
    assert encode_header(header) == (tmp_path / "d.img.hrl").read_bytes()


def test_append_numbers_records_consecutively(tmp_path):
    """Each append returns the next sequence number; sizes grow by header+payload."""
    with new_log(tmp_path, first_sequence=10) as log:
        start = log.size_bytes
        expected = [10, 11, 12]
        assert expected == [log.append(i * 512, b"abc") for i in range(3)]
        expected = 13
        assert expected == log.next_sequence
        expected = 9
        assert expected == log.payload_bytes
        expected = ChangeLogStatistics(10, 13, 3, 9, log.size_bytes)
        assert expected == log.statistics()
        assert start + 3 * (RECORD_HEADER.size + 3) == log.size_bytes


def test_seal_hands_over_to_a_fresh_log(tmp_path):
    """Sealing renames the log aside and continues the sequence in a new one."""
    sealed_path = tmp_path / "cycle-1.hrl"
    with new_log(tmp_path) as log:
        log.append(0, b"one")
        log.append(4096, b"two")
        sealed = log.seal(sealed_path)
        expected = 3
        assert expected == log.append(8192, b"three")
        expected = 3
        assert expected == log.header.first_sequence
        assert tmp_path / "d.img.hrl" == log.path
    expected = SealedLog(
        path=sealed_path,
        header=LogHeader(FORMAT_VERSION, DISK_ID, EPOCH, 1),
        record_count=2,
        first_sequence=1,
        last_sequence=2,
        payload_bytes=6,
        file_bytes=os.stat(sealed_path).st_size,
    )
    assert expected == sealed
    records = list(read_sealed_log(sealed_path, disk_id=DISK_ID, epoch=EPOCH))
    assert [LogRecord(1, 0, b"one"), LogRecord(2, 4096, b"two")] == records
    assert not (tmp_path / "d.img.hrl.new").exists()


def test_sealing_an_empty_log_gives_last_before_first(tmp_path):
    """An empty sealed log has last_sequence == first_sequence - 1."""
    with new_log(tmp_path, first_sequence=5) as log:
        sealed = log.seal(tmp_path / "empty.hrl")
    expected = (0, 5, 4)
    assert expected == (
        sealed.record_count,
        sealed.first_sequence,
        sealed.last_sequence,
    )
    assert list(read_sealed_log(sealed.path, disk_id=DISK_ID, epoch=EPOCH)) == []


def test_seal_refuses_an_existing_target(tmp_path):
    """Sealing never overwrites a file; the current log is untouched."""
    (tmp_path / "taken.hrl").write_bytes(b"other")
    with new_log(tmp_path) as log:
        log.append(0, b"x")
        with pytest.raises(InvalidConfiguration, match="already exists"):
            log.seal(tmp_path / "taken.hrl")
        expected = 2
        assert expected == log.next_sequence
    expected = b"other"
    assert expected == (tmp_path / "taken.hrl").read_bytes()


def test_verify_describes_the_log_like_seal(tmp_path):
    """verify_sealed_log finds what seal reported."""
    with new_log(tmp_path) as log:
        for index in range(5):
            log.append(index * 4096, bytes([index]) * 100)
        sealed = log.seal(tmp_path / "s.hrl")
    verified = verify_sealed_log(
        sealed.path, disk_id=DISK_ID, epoch=EPOCH, disk_size_bytes=1 << 20
    )
    assert sealed == verified


def test_reopen_of_a_whole_log_continues_it(tmp_path):
    """Reopening a clean log reports nothing cut and continues the numbering."""
    with new_log(tmp_path) as log:
        log.append(0, b"a")
        log.append(1, b"b")
        log.sync()
    with ChangeLog.open(tmp_path / "d.img.hrl", disk_id=DISK_ID, epoch=EPOCH) as log:
        assert log.tail_report is None
        expected = (3, 2, 2)
        assert expected == (log.next_sequence, log.record_count, log.payload_bytes)
        expected = 3
        assert expected == log.append(2, b"c")
        sealed = log.seal(tmp_path / "s.hrl")
    expected = [b"a", b"b", b"c"]
    assert expected == [
        record.data
        for record in read_sealed_log(sealed.path, disk_id=DISK_ID, epoch=EPOCH)
    ]


def test_expected_last_sequence_catches_a_log_cut_at_a_boundary(tmp_path):
    """A log missing whole records at its end is refused when the sender said more."""
    with new_log(tmp_path) as log:
        log.append(0, b"a")
        sealed = log.seal(tmp_path / "s.hrl")
    with pytest.raises(CorruptRecord, match=REASON_ENDS_EARLY):
        verify_sealed_log(
            sealed.path, disk_id=DISK_ID, epoch=EPOCH, expected_last_sequence=2
        )
    with pytest.raises(CorruptRecord, match=REASON_ENDS_EARLY):
        list(
            read_sealed_log(
                sealed.path, disk_id=DISK_ID, epoch=EPOCH, expected_last_sequence=2
            )
        )


def test_create_refuses_an_existing_log(tmp_path):
    """create never overwrites a log."""
    with new_log(tmp_path):
        pass
    with pytest.raises(InvalidConfiguration, match="already exists"):
        new_log(tmp_path)


@pytest.mark.parametrize(
    ("disk_id", "epoch", "first_sequence", "error"),
    [
        ("../x", 0, 0, InvalidName),
        ("d", -1, 0, InvalidConfiguration),
        ("d", 2**64, 0, InvalidConfiguration),
        ("d", "1", 0, InvalidConfiguration),
        ("d", 0, -1, InvalidConfiguration),
        ("d", 0, 2**64, InvalidConfiguration),
    ],
)
def test_create_validates_identity(tmp_path, disk_id, epoch, first_sequence, error):
    """Bad disk ids, epochs and sequence numbers are refused before any file exists."""
    with pytest.raises(error):
        ChangeLog.create(
            tmp_path / "l.hrl",
            disk_id=disk_id,
            epoch=epoch,
            first_sequence=first_sequence,
        )
    assert not (tmp_path / "l.hrl").exists()


@pytest.mark.parametrize(
    ("offset", "data", "error"),
    [
        (0, b"", InvalidConfiguration),
        (0, bytes(RECORD_PAYLOAD_BYTES_MAX + 1), InvalidConfiguration),
        (-1, b"x", DiskRangeError),
        (2**64, b"x", DiskRangeError),
        ("0", b"x", InvalidConfiguration),
        (0, "x", InvalidConfiguration),
    ],
)
def test_append_validates_its_arguments(tmp_path, offset, data, error):
    """Bad appends are refused and leave the log as it was."""
    with new_log(tmp_path) as log:
        size = log.size_bytes
        with pytest.raises(error):
            log.append(offset, data)
        assert (size, 1) == (log.size_bytes, log.next_sequence)


def test_retract_removes_only_the_last_append(tmp_path):
    """The last record can be taken back once; others cannot."""
    with new_log(tmp_path) as log:
        log.append(0, b"keep")
        before = log.size_bytes
        sequence = log.append(10, b"drop")
        log.retract(sequence)
        assert (before, 2, 4) == (log.size_bytes, log.next_sequence, log.payload_bytes)
        with pytest.raises(InvalidConfiguration, match="cannot be retracted"):
            log.retract(1)
    assert before == os.stat(tmp_path / "d.img.hrl").st_size


def test_closed_log_refuses_appends(tmp_path):
    """Appending to a closed log raises a typed error."""
    log = new_log(tmp_path)
    log.close()
    log.close()
    assert log.closed
    with pytest.raises(InvalidConfiguration, match="is closed"):
        log.append(0, b"x")


def test_open_missing_log_is_refused(tmp_path):
    """Opening a log that does not exist says so."""
    with pytest.raises(InvalidConfiguration, match="does not exist"):
        ChangeLog.open(tmp_path / "none.hrl", disk_id=DISK_ID, epoch=EPOCH)


def test_append_when_storage_is_full_leaves_the_log_whole(tmp_path, file_size_limit):
    """A failed append truncates back: the file and counters are as before."""
    with new_log(tmp_path) as log:
        log.append(0, b"a" * 100)
        size = log.size_bytes
        with file_size_limit(size + 50), pytest.raises(StorageFull):
            log.append(0, b"b" * 100)
        assert (size, 2) == (log.size_bytes, log.next_sequence)
        assert size == os.stat(log.path).st_size
        expected = 2
        assert expected == log.append(0, b"c")
    with ChangeLog.open(tmp_path / "d.img.hrl", disk_id=DISK_ID, epoch=EPOCH) as log:
        expected = (None, 3)
        assert expected == (log.tail_report, log.next_sequence)


def test_seal_when_storage_is_full_changes_nothing(tmp_path, file_size_limit):
    """A seal that cannot write the fresh log leaves the current log in place."""
    with new_log(tmp_path) as log:
        log.append(0, b"a")
        with file_size_limit(10), pytest.raises(StorageFull):
            log.seal(tmp_path / "s.hrl")
        assert not (tmp_path / "s.hrl").exists()
        assert not (tmp_path / "d.img.hrl.new").exists()
        expected = 2
        assert expected == log.append(1, b"b")


def test_seal_across_filesystems_is_refused_and_keeps_the_log(tmp_path):
    """A seal target on another filesystem is refused; the log stays current."""
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than tmp_path's")
    sealed_path = other / f"hvdr-test-{os.getpid()}.hrl"
    with new_log(tmp_path) as log:
        log.append(0, b"x")
        with pytest.raises(InvalidConfiguration, match="same filesystem"):
            log.seal(sealed_path)
        expected = 2
        assert expected == log.append(1, b"y")
    assert not sealed_path.exists()
    assert not (tmp_path / "d.img.hrl.new").exists()
    with ChangeLog.open(tmp_path / "d.img.hrl", disk_id=DISK_ID, epoch=EPOCH) as log:
        expected = (None, 3)
        assert expected == (log.tail_report, log.next_sequence)


def test_reopen_finishes_a_seal_interrupted_between_renames(tmp_path):
    """Only the fresh log exists (crash mid-seal): reopen moves it into place."""
    path = tmp_path / "d.img.hrl"
    with new_log(tmp_path) as log:
        log.append(0, b"a")
    path.rename(tmp_path / "sealed.hrl")  # the seal's first rename happened
    fresh = tmp_path / "d.img.hrl.new"
    with ChangeLog.create(fresh, disk_id=DISK_ID, epoch=EPOCH, first_sequence=2):
        pass  # the fresh log was written, then the crash
    with ChangeLog.open(path, disk_id=DISK_ID, epoch=EPOCH) as log:
        expected = (2, 0)
        assert expected == (log.next_sequence, log.record_count)
    assert not fresh.exists()
    verified = verify_sealed_log(tmp_path / "sealed.hrl", disk_id=DISK_ID, epoch=EPOCH)
    expected = 1
    assert expected == verified.last_sequence


def test_reopen_removes_a_fresh_log_left_before_any_rename(tmp_path):
    """Both logs exist (crash before the renames): the fresh one is debris."""
    with new_log(tmp_path) as log:
        log.append(0, b"a")
    fresh = tmp_path / "d.img.hrl.new"
    fresh.write_bytes(b"half a header")
    with ChangeLog.open(tmp_path / "d.img.hrl", disk_id=DISK_ID, epoch=EPOCH) as log:
        expected = (None, 2)
        assert expected == (log.tail_report, log.next_sequence)
    assert not fresh.exists()


def test_reopen_reports_a_torn_tail_before_cutting_it(tmp_path):
    """``before_cut`` sees the report while the torn bytes are still in the file;
    if it raises, nothing is cut (the caller could not note the damage)."""
    path = tmp_path / "d.img.hrl"
    with new_log(tmp_path) as log:
        log.append(0, b"whole")
        log.append(8, b"torn record")
        whole = log.size_bytes - RECORD_HEADER.size - len(b"torn record")
    torn = path.stat().st_size - 3
    os.truncate(path, torn)
    seen: list[object] = []

    def refuse(report):
        seen.append((report, path.stat().st_size))
        raise InvalidConfiguration("cannot note the damage")

    with pytest.raises(InvalidConfiguration, match="cannot note"):
        ChangeLog.open(path, disk_id=DISK_ID, epoch=EPOCH, before_cut=refuse)
    expected_report = TailReport(torn - whole, "torn payload")
    assert seen == [(expected_report, torn)]
    assert path.stat().st_size == torn  # nothing cut
    with ChangeLog.open(
        path, disk_id=DISK_ID, epoch=EPOCH, before_cut=lambda r: seen.append(r)
    ) as log:
        assert log.tail_report == expected_report
        assert seen[-1] == expected_report
        assert [r.data for r in log.records()] == [b"whole"]
    assert path.stat().st_size == whole
