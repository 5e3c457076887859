"""A process killed between a write's log record and its disk write: the log wins.

The change log is the write-ahead record of its disk: a record is appended (and, in
durable mode, made durable) before the disk is written. A SIGKILL between the two
leaves a record for a write the disk never got; the next cycle would ship it, giving
the replica a state the source never had. Reopening tracking replays the current log
onto the disk, so both agree again.

The child kills itself at exactly that point: a ``FileSystem`` subclass (the seam of
``engine.storage.files``) sends SIGKILL when the N-th ``pwrite`` to the disk image is
about to happen, after the record of that write was appended to the log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.log.tracked_disk import TrackedDisk
from engine.log.writer import read_sealed_log
from engine.source.disks import LogState, SourceDisks
from engine.storage.disk import VirtualDisk

REPOSITORY = Path(__file__).resolve().parents[2]
BLOCK = 4096
DISK_BYTES = 16 * BLOCK
FIRST = b"first write" * 100
SECOND = b"second write" * 100

KILL_ON_DISK_WRITE = """
import os, signal, sys
from pathlib import Path
from engine.storage import files

class KillOnDiskWrite(files.FileSystem):
    '''SIGKILL this process just before its disk-image write number ``after``.'''

    def __init__(self, after):
        super().__init__()
        self.left = after

    def pwrite(self, descriptor, data, offset):
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith(".img"):
            if self.left == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            self.left -= 1
        return super().pwrite(descriptor, data, offset)
"""

CHILD_TRACKED = (
    KILL_ON_DISK_WRITE
    + """
from engine.log.tracked_disk import TrackedDisk
from engine.storage.disk import VirtualDisk

path, durable = Path(sys.argv[1]), sys.argv[2] == "durable"
first, second = bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
with files.use(KillOnDiskWrite(1)):
    disk = VirtualDisk.create(path, int(sys.argv[5]))
    tracked = TrackedDisk.start(disk, disk_id="os", epoch=1, durable=durable)
    tracked.write(0, first)
    tracked.write(4096, second)  # logged, then killed before the disk write
print("not killed")
"""
)

CHILD_SOURCE = (
    KILL_ON_DISK_WRITE
    + """
from engine.source.disks import SourceDisks

path, durable = Path(sys.argv[1]), sys.argv[2] == "durable"
first, second = bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
with files.use(KillOnDiskWrite(1)):
    disks = SourceDisks({"os": path}, block_bytes=4096, durable=durable)
    disks.start_tracking(1, {"os": 0})
    disks.write("os", 0, first)
    disks.write("os", 4096, second)  # logged, then killed before the disk write
print("not killed")
"""
)


def run_child(script: str, *arguments: str) -> None:
    """Run ``script`` in a fresh interpreter; it must die of SIGKILL."""
    child = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        cwd=REPOSITORY, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stdout + child.stderr


def assert_disk_holds_every_record(tracked: TrackedDisk, sealed_path: Path) -> int:
    """Seal the current log; every record's bytes must be on the disk. Count them."""
    sealed = tracked.seal_log(sealed_path)
    records = list(read_sealed_log(sealed.path, disk_id="os", epoch=1))
    for record in records:
        assert tracked.read(record.offset, len(record.data)) == record.data
    return len(records)


@pytest.mark.parametrize("mode", ["durable", "cached"])
def test_resume_replays_a_record_whose_disk_write_was_killed(
    mode: str, tmp_path: Path
) -> None:
    """Killed after the second write's record, before its disk write: on resume the
    disk holds the second write (it was logged) and every record of the log is on the
    disk. Fails if resume does not replay the current log onto the disk."""
    path = tmp_path / "os.img"
    run_child(
        CHILD_TRACKED, str(path), mode, FIRST.hex(), SECOND.hex(), str(DISK_BYTES)
    )
    disk = VirtualDisk.open(path)
    assert disk.read(BLOCK, len(SECOND)) == bytes(len(SECOND))  # the kill's effect
    with TrackedDisk.resume(
        disk, disk_id="os", epoch=1, durable=mode == "durable"
    ) as tracked:
        assert tracked.log.tail_report is None
        assert tracked.read(0, len(FIRST)) == FIRST
        assert tracked.read(BLOCK, len(SECOND)) == SECOND
        assert assert_disk_holds_every_record(tracked, tmp_path / "sealed.hrl") == 2


@pytest.mark.parametrize("mode", ["durable", "cached"])
def test_resume_tracking_makes_the_source_disks_agree_with_their_logs(
    mode: str, tmp_path: Path
) -> None:
    """The same kill under ``SourceDisks``: ``resume_tracking`` replays the logs, the
    logs stay trusted (same boot: nothing was lost), and the next cycle's sealed log
    describes exactly what the disk holds. Fails without the replay."""
    path = tmp_path / "vm" / "os.img"
    path.parent.mkdir()
    VirtualDisk.create(path, DISK_BYTES).close()
    run_child(CHILD_SOURCE, str(path), mode, FIRST.hex(), SECOND.hex())
    disks = SourceDisks({"os": path}, block_bytes=BLOCK, durable=mode == "durable")
    try:
        disks.resume_tracking(1)
        assert disks.log_state is LogState.USABLE
        assert disks.read("os", BLOCK, len(SECOND)) == SECOND
        sealed = disks.seal(tmp_path / "outbox")["os"]
        records = list(read_sealed_log(sealed.path, disk_id="os", epoch=1))
        assert [record.offset for record in records] == [0, BLOCK]
        for record in records:
            assert disks.read("os", record.offset, len(record.data)) == record.data
    finally:
        disks.close()
