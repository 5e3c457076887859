"""Unit tests for engine.log.extents: the blocks a change log touched; its counts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.errors import CorruptRecord, LogMismatch
from engine.log.extents import (
    blocks_touched_by_log,
    read_log_extents,
    summarize_log,
)
from engine.log.format import RECORD_HEADER
from engine.log.writer import (
    REASON_RECORD_CHECKSUM,
    REASON_TORN_PAYLOAD,
    REASON_TORN_RECORD_HEADER,
    REASON_ZERO_LENGTH,
    ChangeLog,
    TailReport,
)
from engine.storage.block_set import BlockSet

BLOCK = 4096
DISK = 256 * BLOCK


def write_log(path: Path, writes: list[tuple[int, bytes]], first: int = 10) -> None:
    """A current log of disk 'os' at epoch 3 holding ``writes``, left open-ended."""
    with ChangeLog.create(path, disk_id="os", epoch=3, first_sequence=first) as log:
        for offset, data in writes:
            log.append(offset, data)
        log.sync()


def random_writes(seed: int, count: int) -> list[tuple[int, bytes]]:
    generator = random.Random(seed)
    writes = []
    for _ in range(count):
        length = generator.choice([1, 512, BLOCK, 3 * BLOCK + 7, 20_000])
        offset = generator.randrange(0, DISK - length + 1)
        writes.append((offset, generator.randbytes(length)))
    return writes


def expected_blocks(writes: list[tuple[int, bytes]]) -> BlockSet:
    blocks = BlockSet(DISK, BLOCK)
    for offset, data in writes:
        first, last = offset // BLOCK, (offset + len(data) - 1) // BLOCK
        for block in range(first, last + 1):
            blocks.add(block)
    return blocks


def test_the_blocks_are_those_the_records_wrote(tmp_path: Path) -> None:
    """Every block any record touched, partial blocks included, and no other."""
    writes = random_writes(seed=5, count=60)
    path = tmp_path / "os.img.hrl"
    write_log(path, writes)
    blocks = blocks_touched_by_log(path, BLOCK, DISK)
    assert expected_blocks(writes) == blocks
    assert 0 < len(blocks) < DISK // BLOCK


def test_the_summary_counts_records_payload_and_sequences(tmp_path: Path) -> None:
    """Records, payload bytes, first and last sequence, as the writer counted them."""
    writes = random_writes(seed=6, count=9)
    path = tmp_path / "os.img.hrl"
    write_log(path, writes, first=40)
    blocks, summary = read_log_extents(path, BLOCK, DISK, disk_id="os", epoch=3)
    expected = (9, sum(len(d) for _, d in writes), 40, 48, None, "os", 3)
    actual = (
        summary.record_count,
        summary.payload_bytes,
        summary.first_sequence,
        summary.last_sequence,
        summary.torn_tail,
        summary.header.disk_id,
        summary.header.epoch,
    )
    assert expected == actual
    assert summary == summarize_log(path, disk_size=DISK)
    assert expected_blocks(writes) == blocks


def test_an_empty_log_touches_nothing(tmp_path: Path) -> None:
    """A header only: no block, no record, last sequence one before the first."""
    path = tmp_path / "os.img.hrl"
    write_log(path, [], first=7)
    summary = summarize_log(path)
    assert (
        summary.record_count,
        summary.payload_bytes,
        summary.first_sequence,
        summary.last_sequence,
    ) == (0, 0, 7, 6)
    assert len(blocks_touched_by_log(path, BLOCK, DISK)) == 0


def tear(path: Path, how: str) -> None:
    """Damage the last of the log's records the way a crash does."""
    data = bytearray(path.read_bytes())
    last = len(data) - (RECORD_HEADER.size + BLOCK)  # the last record is one block
    if how == "mid-payload":
        del data[last + RECORD_HEADER.size + 100 :]
    elif how == "mid-header":
        del data[last + 10 :]
    elif how == "zero-filled":
        data[last:] = bytes(len(data) - last)
    elif how == "payload-not-landed":
        data[-100:] = bytes(100)  # the size grew, the last bytes never came
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("how", "reason", "dropped"),
    [
        ("mid-payload", REASON_TORN_PAYLOAD, RECORD_HEADER.size + 100),
        ("mid-header", REASON_TORN_RECORD_HEADER, 10),
        ("zero-filled", REASON_ZERO_LENGTH, RECORD_HEADER.size + BLOCK),
        ("payload-not-landed", REASON_RECORD_CHECKSUM, RECORD_HEADER.size + BLOCK),
    ],
)
def test_a_torn_tail_is_reported_and_the_records_before_it_count(
    tmp_path: Path, how: str, reason: str, dropped: int
) -> None:
    """The current log after a crash: the whole records count, the torn one does not,
    and the tail is reported (bytes and reason), not raised."""
    writes = [*random_writes(seed=7, count=12), (200 * BLOCK, b"t" * BLOCK)]
    path = tmp_path / "os.img.hrl"
    write_log(path, writes)
    tear(path, how)
    blocks, summary = read_log_extents(path, BLOCK, DISK)
    assert expected_blocks(writes[:-1]) == blocks
    assert (12, TailReport(dropped, reason)) == (
        summary.record_count,
        summary.torn_tail,
    )


def test_a_torn_tail_of_a_sealed_log_is_damage(tmp_path: Path) -> None:
    """A sealed log was fsynced whole: a tear there is CorruptRecord naming it."""
    path = tmp_path / "os.hrl"
    write_log(path, [(0, b"a" * BLOCK), (BLOCK, b"b" * BLOCK)])
    tear(path, "mid-payload")
    with pytest.raises(CorruptRecord, match=r"'.*os\.hrl' is damaged at byte .*torn"):
        blocks_touched_by_log(path, BLOCK, DISK, sealed=True)


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def test_damage_before_the_tail_is_corrupt_record_naming_the_file(
    tmp_path: Path,
) -> None:
    """A bad checksum with whole records after it is not a tail: CorruptRecord."""
    writes = [(0, b"a" * BLOCK), (BLOCK, b"b" * BLOCK), (2 * BLOCK, b"c" * BLOCK)]
    path = tmp_path / "os.img.hrl"
    write_log(path, writes)
    second_payload = path.stat().st_size - 2 * (RECORD_HEADER.size + BLOCK) - 50
    flip_byte(path, second_payload)
    with pytest.raises(CorruptRecord, match=r"'.*os\.img\.hrl' is damaged at byte"):
        blocks_touched_by_log(path, BLOCK, DISK)
    with pytest.raises(CorruptRecord, match=REASON_RECORD_CHECKSUM):
        summarize_log(path)


def test_zeros_followed_by_data_are_not_a_zero_filled_tail(tmp_path: Path) -> None:
    """A zero-length record with non-zero bytes after it is damage, not a tail."""
    path = tmp_path / "os.img.hrl"
    write_log(path, [(0, b"a" * BLOCK), (BLOCK, b"b" * BLOCK)])
    data = bytearray(path.read_bytes())
    start = len(data) - 2 * (RECORD_HEADER.size + BLOCK)
    data[start : start + RECORD_HEADER.size] = bytes(RECORD_HEADER.size)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecord, match=REASON_ZERO_LENGTH):
        blocks_touched_by_log(path, BLOCK, DISK)


def test_a_record_past_the_disk_end_is_damage(tmp_path: Path) -> None:
    """A log that writes past the disk it is read for is not that disk's."""
    path = tmp_path / "os.img.hrl"
    write_log(path, [(DISK - 10, b"x" * 20)])
    with pytest.raises(CorruptRecord, match="record past disk end"):
        blocks_touched_by_log(path, BLOCK, DISK)
    assert summarize_log(path).record_count == 1  # without a disk size: counted


def test_a_damaged_header_is_damage_not_a_tail(tmp_path: Path) -> None:
    """The header is not a tail: CorruptRecord naming the file."""
    path = tmp_path / "os.img.hrl"
    write_log(path, [(0, b"x")])
    flip_byte(path, 20)
    with pytest.raises(CorruptRecord, match="header checksum mismatch"):
        blocks_touched_by_log(path, BLOCK, DISK)


@pytest.mark.parametrize(
    ("expected", "match"),
    [({"disk_id": "data"}, "wrong disk id"), ({"epoch": 4}, "wrong epoch")],
)
def test_a_log_of_another_disk_or_epoch_is_a_mismatch(
    tmp_path: Path, expected: dict[str, object], match: str
) -> None:
    """Named expectations are checked against the header: LogMismatch."""
    path = tmp_path / "os.img.hrl"
    write_log(path, [(0, b"x")])
    with pytest.raises(LogMismatch, match=match):
        read_log_extents(path, BLOCK, DISK, **expected)  # type: ignore[arg-type]
