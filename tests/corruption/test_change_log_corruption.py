"""One test per change-log reader error path: the reason, the bytes dropped on reopen,
and that damaged data is never returned."""

from __future__ import annotations

import struct

import google_crc32c
import pytest

from engine.errors import CorruptRecord, LogMismatch
from engine.log.format import (
    FORMAT_VERSION,
    HEADER_CRC,
    HEADER_FIXED,
    MAGIC,
    RECORD_HEADER,
)
from engine.log.writer import (
    REASON_BAD_DISK_ID,
    REASON_BAD_MAGIC,
    REASON_HEADER_CHECKSUM,
    REASON_LENGTH_TOO_LARGE,
    REASON_PAST_DISK_END,
    REASON_RECORD_CHECKSUM,
    REASON_SEQUENCE_GAP,
    REASON_TORN_PAYLOAD,
    REASON_TORN_RECORD_HEADER,
    REASON_TRUNCATED_HEADER,
    REASON_UNSUPPORTED_VERSION,
    REASON_WRONG_DISK,
    REASON_WRONG_EPOCH,
    REASON_ZERO_LENGTH,
    ChangeLog,
    LogHeader,
    LogRecord,
    TailReport,
    encode_header,
    encode_record,
    read_sealed_log,
    verify_sealed_log,
)

DISK_ID = "vm1.data"
EPOCH = 4
GOOD = [
    LogRecord(1, 0, b"A" * 100),
    LogRecord(2, 4096, b"B" * 100),
    LogRecord(3, 8192, b"C" * 100),
]
HEADER_BYTES = len(encode_header(LogHeader(FORMAT_VERSION, DISK_ID, EPOCH, 1)))
FRAME_BYTES = RECORD_HEADER.size + 100


def record_start(index):
    """Byte where GOOD[index] begins in the log."""
    return HEADER_BYTES + index * FRAME_BYTES


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "d.img.hrl"
    with ChangeLog.create(path, disk_id=DISK_ID, epoch=EPOCH, first_sequence=1) as log:
        for record in GOOD:
            log.append(record.offset, record.data)
    return path


def damage(path, position, new_bytes):
    raw = bytearray(path.read_bytes())
    raw[position : position + len(new_bytes)] = new_bytes
    path.write_bytes(bytes(raw))


def flip_bit(path, position):
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x01
    path.write_bytes(bytes(raw))


def strict_read(path):
    """Read a log strictly; return (records read before the error, the error)."""
    records: list[LogRecord] = []
    reader = read_sealed_log(path, disk_id=DISK_ID, epoch=EPOCH)
    with pytest.raises(CorruptRecord) as caught:
        records.extend(reader)
    return records, caught.value


def reopen_and_collect(path, tmp_path):
    """Reopen (cutting the tail), then seal and read what survived."""
    with ChangeLog.open(path, disk_id=DISK_ID, epoch=EPOCH) as log:
        report = log.tail_report
        next_sequence = log.next_sequence
        sealed = log.seal(tmp_path / "sealed.hrl")
    records = list(read_sealed_log(sealed.path, disk_id=DISK_ID, epoch=EPOCH))
    return report, next_sequence, records


def assert_tail_cut(log_path, tmp_path, reason, bytes_dropped, kept):
    """Strict read refuses at the damage; reopen cuts exactly there and reports it."""
    records, error = strict_read(log_path)
    assert GOOD[:kept] == records
    assert reason in str(error)
    report, next_sequence, survivors = reopen_and_collect(log_path, tmp_path)
    assert TailReport(bytes_dropped=bytes_dropped, reason=reason) == report
    assert GOOD[:kept] == survivors
    assert kept + 1 == next_sequence


def assert_header_refused(path, reason):
    """Every reader refuses a damaged header; reopen leaves the file untouched."""
    before = path.read_bytes()
    with pytest.raises(CorruptRecord, match=reason):
        ChangeLog.open(path, disk_id=DISK_ID, epoch=EPOCH)
    records, error = strict_read(path)
    assert records == []
    assert reason in str(error)
    with pytest.raises(CorruptRecord, match=reason):
        verify_sealed_log(path, disk_id=DISK_ID, epoch=EPOCH)
    assert before == path.read_bytes()


def test_truncated_fixed_header(log_path):
    """A file shorter than the fixed header is refused as a truncated header."""
    log_path.write_bytes(log_path.read_bytes()[:20])
    assert_header_refused(log_path, REASON_TRUNCATED_HEADER)


def test_truncated_disk_id_and_crc(log_path):
    """A header cut inside its disk id is refused as a truncated header."""
    log_path.write_bytes(log_path.read_bytes()[: HEADER_FIXED.size + 3])
    assert_header_refused(log_path, REASON_TRUNCATED_HEADER)


def test_bad_magic(log_path):
    """A file that does not start with the magic is not a change log."""
    damage(log_path, 0, b"NOTALOG!")
    assert_header_refused(log_path, REASON_BAD_MAGIC)


def test_unsupported_format_version(log_path):
    """A version this reader does not know is refused, not guessed at."""
    damage(log_path, 8, struct.pack("<H", FORMAT_VERSION + 1))
    assert_header_refused(log_path, REASON_UNSUPPORTED_VERSION)


def test_bad_header_crc(log_path):
    """A flipped bit in the header's epoch fails the header CRC."""
    flip_bit(log_path, 12)
    assert_header_refused(log_path, REASON_HEADER_CHECKSUM)


def test_disk_id_length_out_of_range(log_path):
    """A damaged disk-id length is refused before anything is read with it."""
    damage(log_path, 10, struct.pack("<H", 0xFFFF))
    assert_header_refused(log_path, REASON_BAD_DISK_ID)


def test_hostile_disk_id_with_valid_crc(tmp_path):
    """A header whose disk id is not a valid name is refused even with a valid CRC."""
    raw_id = b"../etc"
    fixed = HEADER_FIXED.pack(MAGIC, FORMAT_VERSION, len(raw_id), EPOCH, 1)
    covered = fixed + raw_id
    path = tmp_path / "hostile.hrl"
    path.write_bytes(covered + HEADER_CRC.pack(google_crc32c.value(covered)))
    assert_header_refused(path, REASON_BAD_DISK_ID)


def test_torn_record_header(log_path, tmp_path):
    """A record header cut short is a torn tail: strict refuses, reopen cuts it."""
    with log_path.open("ab") as stream:
        stream.write(encode_record(4, 0, b"D" * 100)[:10])
    assert_tail_cut(log_path, tmp_path, REASON_TORN_RECORD_HEADER, 10, kept=3)


def test_torn_payload(log_path, tmp_path):
    """A payload cut short is a torn tail; the partial record is never returned."""
    log_path.write_bytes(log_path.read_bytes()[:-50])
    assert_tail_cut(log_path, tmp_path, REASON_TORN_PAYLOAD, FRAME_BYTES - 50, kept=2)


def test_flipped_payload_bit(log_path, tmp_path):
    """A flipped payload bit fails the record CRC; that record and later are dropped."""
    flip_bit(log_path, record_start(1) + RECORD_HEADER.size + 42)
    assert_tail_cut(log_path, tmp_path, REASON_RECORD_CHECKSUM, 2 * FRAME_BYTES, kept=1)


def test_flipped_offset_bit(log_path, tmp_path):
    """A flipped bit in a record's offset fails its CRC (the CRC covers the header)."""
    flip_bit(log_path, record_start(2) + 8)
    assert_tail_cut(log_path, tmp_path, REASON_RECORD_CHECKSUM, FRAME_BYTES, kept=2)


def test_flipped_length_making_it_huge(log_path, tmp_path):
    """A length past the limit is refused before any allocation."""
    damage(log_path, record_start(1) + 16, struct.pack("<I", 0xFFFF_FFFF))
    assert_tail_cut(
        log_path, tmp_path, REASON_LENGTH_TOO_LARGE, 2 * FRAME_BYTES, kept=1
    )


def test_length_past_end_of_file(log_path, tmp_path):
    """A length within the limit but past the file's end is a torn payload."""
    damage(log_path, record_start(2) + 16, struct.pack("<I", 1000))
    assert_tail_cut(log_path, tmp_path, REASON_TORN_PAYLOAD, FRAME_BYTES, kept=2)


def test_zero_filled_tail(log_path, tmp_path):
    """Zeros after the last record (a crash after a size change) are cut."""
    with log_path.open("ab") as stream:
        stream.write(bytes(4096))
    assert_tail_cut(log_path, tmp_path, REASON_ZERO_LENGTH, 4096, kept=3)


def test_sequence_gap(log_path, tmp_path):
    """A whole, valid record with the wrong sequence number is a gap."""
    with log_path.open("ab") as stream:
        stream.write(encode_record(5, 0, b"E" * 100))
    assert_tail_cut(log_path, tmp_path, REASON_SEQUENCE_GAP, FRAME_BYTES, kept=3)


def test_wrong_disk_id(log_path):
    """A log for another disk is refused by every reader and never cut."""
    before = log_path.read_bytes()
    for read in (
        lambda: ChangeLog.open(log_path, disk_id="other", epoch=EPOCH),
        lambda: list(read_sealed_log(log_path, disk_id="other", epoch=EPOCH)),
        lambda: verify_sealed_log(log_path, disk_id="other", epoch=EPOCH),
    ):
        with pytest.raises(LogMismatch, match=REASON_WRONG_DISK):
            read()
    assert before == log_path.read_bytes()


def test_wrong_epoch(log_path):
    """A log from another replication epoch is refused by every reader."""
    before = log_path.read_bytes()
    for read in (
        lambda: ChangeLog.open(log_path, disk_id=DISK_ID, epoch=EPOCH + 1),
        lambda: list(read_sealed_log(log_path, disk_id=DISK_ID, epoch=EPOCH + 1)),
        lambda: verify_sealed_log(log_path, disk_id=DISK_ID, epoch=EPOCH + 1),
    ):
        with pytest.raises(LogMismatch, match=REASON_WRONG_EPOCH):
            read()
    assert before == log_path.read_bytes()


def test_record_past_disk_end(log_path):
    """verify refuses a record that would write past the end of the disk."""
    with pytest.raises(CorruptRecord, match=REASON_PAST_DISK_END) as caught:
        verify_sealed_log(
            log_path, disk_id=DISK_ID, epoch=EPOCH, disk_size_bytes=8192 + 99
        )
    assert f"damaged at byte {record_start(2)}" in str(caught.value)
    expected = 8192 + 100
    verified = verify_sealed_log(
        log_path, disk_id=DISK_ID, epoch=EPOCH, disk_size_bytes=expected
    )
    expected = 3
    assert expected == verified.record_count
