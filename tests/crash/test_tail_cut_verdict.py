"""A torn log tail is distrusted durably *before* reopen cuts it.

Reopening a change log cuts a torn tail and the logs are then untrusted (only a
resynchronisation can vouch for the replica). If the cut is made first and the verdict
(``logs-untrusted.txt``) written afterwards, a crash between the two leaves a whole
log and no verdict: the next reopen trusts logs that lost a record. The child here is
killed right after the cut (a ``FileSystem`` subclass sends SIGKILL once ``ftruncate``
of the log has run); the parent's reopen must still find the logs untrusted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.log.writer import log_path_for
from engine.source.disks import UNTRUSTED_MARKER, LogState, SourceDisks
from engine.storage.disk import VirtualDisk

REPOSITORY = Path(__file__).resolve().parents[2]
BLOCK = 4096

CHILD = """
import os, signal, sys
from pathlib import Path
from engine.source.disks import SourceDisks
from engine.storage import files

class KillAfterLogCut(files.FileSystem):
    def ftruncate(self, descriptor, length):
        super().ftruncate(descriptor, length)
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith(".hrl"):
            os.kill(os.getpid(), signal.SIGKILL)

with files.use(KillAfterLogCut()):
    disks = SourceDisks({"os": Path(sys.argv[1])}, block_bytes=4096, durable=False)
    disks.resume_tracking(1)
print("not killed")
"""


def test_a_kill_right_after_the_cut_keeps_the_logs_untrusted(tmp_path: Path) -> None:
    """Torn tail; the reopening process is killed just after cutting it; the next
    reopen sees a whole log, yet the logs stay untrusted because the verdict was
    written before the cut. Fails when the verdict is written after the cut."""
    path = tmp_path / "vm" / "os.img"
    path.parent.mkdir()
    VirtualDisk.create(path, 16 * BLOCK).close()
    disks = SourceDisks({"os": path}, block_bytes=BLOCK, durable=False)
    disks.start_tracking(1, {"os": 0})
    disks.write("os", 0, b"a" * BLOCK)
    disks.write("os", BLOCK, b"b" * BLOCK)
    disks.close()
    log = log_path_for(path)
    with log.open("r+b") as handle:  # tear the last record in half
        handle.truncate(log.stat().st_size - BLOCK // 2)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=REPOSITORY, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stdout + child.stderr
    again = SourceDisks({"os": path}, block_bytes=BLOCK, durable=False)
    try:
        again.resume_tracking(1)
        assert again.log_state is LogState.UNTRUSTED
        assert again.problem is not None
        assert "change log tail cut on reopen" in again.problem
        assert (path.parent / UNTRUSTED_MARKER).exists()
    finally:
        again.close()
