"""Unit tests for engine/source/disks.py: the VM's disks, their logs and their trust."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InvalidConfiguration
from engine.log.extents import summarize_log
from engine.log.format import RECORD_HEADER
from engine.source.disks import LogState, RetiredLogs, SourceDisks
from engine.storage.disk import VirtualDisk

BLOCK = 4096
KIB = 1024


def source_disks(
    tmp_path: Path, sizes: dict[str, int], *, durable: bool = False
) -> SourceDisks:
    """Fresh sparse disks in ``tmp_path/vm``, opened (untracked)."""
    directory = tmp_path / "vm"
    directory.mkdir(exist_ok=True)
    paths = {disk: directory / f"{disk}.img" for disk in sizes}
    for disk, path in paths.items():
        if not path.exists():
            VirtualDisk.create(path, sizes[disk]).close()
    return SourceDisks(paths, block_bytes=BLOCK, durable=durable)


def log_state(disks: SourceDisks) -> LogState:
    """The logs' state, read afresh (mypy keeps an assert's narrowing of the
    property across the writes that change it)."""
    return disks.log_state


def test_many_small_writes_put_the_log_over_its_limit(tmp_path: Path) -> None:
    """2,800 one-byte writes to a 64 KiB disk make a log of about 70 KB, more than
    half the disk: OVER_LIMIT, although their payload (2,800 bytes) is far below it.
    Fails while the limit is compared with the payload instead of the log's size."""
    disks = source_disks(tmp_path, {"os": 64 * KIB})
    try:
        disks.start_tracking(1, {"os": 0})
        for offset in range(2800):
            disks.write("os", offset * 16, b"x")
        assert disks.pending().payload_bytes == 2800
        assert disks.log_state is LogState.OVER_LIMIT
    finally:
        disks.close()


def test_the_limit_counts_the_framing_of_each_record(tmp_path: Path) -> None:
    """The log turns OVER_LIMIT with the record whose framing takes the file past
    half the disk, not when the payload alone would."""
    disks = source_disks(tmp_path, {"os": 64 * KIB})
    try:
        disks.start_tracking(1, {"os": 0})
        tracked_log = disks.seal(tmp_path / "empty")["os"]  # header size of the log
        header_bytes = tracked_log.file_bytes
        frame = RECORD_HEADER.size + 1
        fits = (32 * KIB - header_bytes) // frame
        for offset in range(fits):
            disks.write("os", offset, b"y")
        assert log_state(disks) is LogState.USABLE
        disks.write("os", fits, b"y")
        assert log_state(disks) is LogState.OVER_LIMIT
    finally:
        disks.close()


def test_a_few_large_writes_under_half_the_disk_stay_usable(tmp_path: Path) -> None:
    """Three 8 KiB writes to a 64 KiB disk (24 KiB plus a little framing) are a
    normal cycle: USABLE."""
    disks = source_disks(tmp_path, {"os": 64 * KIB})
    try:
        disks.start_tracking(1, {"os": 0})
        for index in range(3):
            disks.write("os", index * 8 * KIB, bytes([index + 1]) * 8 * KIB)
        assert disks.log_state is LogState.USABLE
    finally:
        disks.close()


def test_a_vm_without_disks_is_refused(tmp_path: Path) -> None:
    """No disks: InvalidConfiguration naming the problem, not a bare StopIteration."""
    with pytest.raises(InvalidConfiguration, match="at least one disk"):
        SourceDisks({}, block_bytes=BLOCK, durable=False)


def test_a_restart_of_tracking_hands_over_the_logs_it_replaces(tmp_path: Path) -> None:
    """on_retired sees every replaced log (whole, trusted) before it is deleted."""
    disks = source_disks(tmp_path, {"os": 64 * KIB, "data": 64 * KIB})
    handed: list[RetiredLogs] = []
    try:
        disks.start_tracking(1, {"os": 0, "data": 0}, on_retired=handed.append)
        disks.write("os", BLOCK, b"a" * 10)
        disks.write("data", 0, b"b" * 10)
        seen: dict[str, int] = {}

        def read(retired: RetiredLogs) -> None:
            handed.append(retired)
            for disk, path in retired.paths.items():
                seen[disk] = summarize_log(path).record_count

        disks.start_tracking(2, {"os": 0, "data": 0}, on_retired=read)
    finally:
        disks.close()
    first, second = handed
    assert (first.paths, first.trusted) == ({}, False)  # nothing was tracked
    assert second.trusted
    assert seen == {"os": 1, "data": 1}
    assert not any(path.exists() for path in second.paths.values())


def test_untrusted_logs_are_handed_over_as_untrusted(tmp_path: Path) -> None:
    """A distrusted VM's replaced logs do not hold every write: trusted is False."""
    disks = source_disks(tmp_path, {"os": 64 * KIB})
    handed: list[RetiredLogs] = []
    try:
        disks.start_tracking(1, {"os": 0})
        disks.distrust("test: a write was lost")
        disks.start_tracking(2, {"os": 0}, on_retired=handed.append)
    finally:
        disks.close()
    assert [retired.trusted for retired in handed] == [False]
    assert list(handed[0].paths) == ["os"]
