"""Round-trip laws of the change log: what is written is what is read, and replaying
the records on a copy reproduces the disk; a cut anywhere reopens to a prefix."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from engine.log.tracked_disk import TrackedDisk
from engine.log.writer import ChangeLog, LogRecord, read_sealed_log, verify_sealed_log
from engine.storage.disk import VirtualDisk

DISK_BYTES = 64 * 1024
DISK_ID = "vm.p"
EPOCH = 9


@st.composite
def disk_writes(draw):
    """A write inside a 64 KiB disk: an offset and 1..4096 bytes."""
    length = draw(st.integers(min_value=1, max_value=4096))
    offset = draw(st.integers(min_value=0, max_value=DISK_BYTES - length))
    return offset, draw(st.binary(min_size=length, max_size=length))


@given(
    writes=st.lists(disk_writes(), max_size=30),
    first_sequence=st.integers(min_value=0, max_value=2**40),
)
def test_sealed_log_reads_back_writes_and_replays_the_disk(writes, first_sequence):
    """Tracked writes -> sealed log -> read equals writes; replay equals the disk."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        disk = VirtualDisk.create(root / "source.img", DISK_BYTES)
        with TrackedDisk.start(
            disk, disk_id=DISK_ID, epoch=EPOCH, first_sequence=first_sequence
        ) as tracked:
            for offset, data in writes:
                tracked.write(offset, data)
            sealed = tracked.seal_log(root / "cycle.hrl")
            source_bytes = tracked.read(0, DISK_BYTES)
        records = list(read_sealed_log(sealed.path, disk_id=DISK_ID, epoch=EPOCH))
        expected = [
            LogRecord(first_sequence + index, offset, data)
            for index, (offset, data) in enumerate(writes)
        ]
        assert expected == records
        verified = verify_sealed_log(
            sealed.path, disk_id=DISK_ID, epoch=EPOCH, disk_size_bytes=DISK_BYTES
        )
        assert sealed == verified
        with VirtualDisk.create(root / "replica.img", DISK_BYTES) as replica:
            for record in records:
                replica.write(record.offset, record.data)
            assert source_bytes == replica.read(0, DISK_BYTES)


@given(
    payloads=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=10),
    cut=st.integers(min_value=0, max_value=4000),
)
def test_reopen_after_any_cut_keeps_a_prefix(payloads, cut):
    """Truncating a log anywhere after its header reopens to a prefix of its records."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "d.hrl"
        with ChangeLog.create(
            path, disk_id=DISK_ID, epoch=EPOCH, first_sequence=1
        ) as log:
            header_bytes = log.size_bytes
            for index, payload in enumerate(payloads):
                log.append(index, payload)
            full_bytes = log.size_bytes
        keep = header_bytes + cut % (full_bytes - header_bytes + 1)
        with path.open("r+b") as stream:
            stream.truncate(keep)
        with ChangeLog.open(path, disk_id=DISK_ID, epoch=EPOCH) as log:
            dropped = 0 if log.tail_report is None else log.tail_report.bytes_dropped
            assert keep - dropped == log.size_bytes
            sealed = log.seal(Path(directory) / "s.hrl")
        records = list(read_sealed_log(sealed.path, disk_id=DISK_ID, epoch=EPOCH))
        assert payloads[: len(records)] == [record.data for record in records]
        assert (keep == full_bytes) == (len(records) == len(payloads))
