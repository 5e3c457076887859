"""Unclean shutdowns: a host restart without durable writes distrusts the logs.

With ``durable=False`` a disk write and its log record are both only in the page
cache until flushed; a power loss may keep the first and drop the second, and that
write would never reach the replica. While a VM's disks are tracked, ``SourceDisks``
keeps a marker in the VM's folder (``tracking-open.json``: boot id, pid, time) that
only a clean ``close()`` removes. Finding it on resume means the last run ended
without closing: a different (or unknown) boot id without durable writes distrusts the
logs; the same boot id is a process kill (the page cache survived) and the replay of
the logs is enough; with durable writes the replay is always enough.

The previous run is a real child process killed with SIGKILL; the host restart is a
``FileSystem`` subclass whose ``boot_id()`` answers another boot, in force while the
parent reopens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore
from engine.source.disks import (
    TRACKING_MARKER,
    UNCLEAN_SHUTDOWN,
    UNTRUSTED_MARKER,
    LogState,
    SourceDisks,
)
from engine.storage import files
from engine.storage.disk import VirtualDisk
from engine.testing import ManualClock

REPOSITORY = Path(__file__).resolve().parents[2]
BLOCK = 4096
WRITTEN = b"written before the kill"

CHILD_DISKS = """
import os, signal, sys
from pathlib import Path
from engine.source.disks import SourceDisks

path, durable = Path(sys.argv[1]), sys.argv[2] == "durable"
disks = SourceDisks({"os": path}, block_bytes=4096, durable=durable)
disks.start_tracking(1, {"os": 0})
disks.write("os", 0, bytes.fromhex(sys.argv[3]))
os.kill(os.getpid(), signal.SIGKILL)
"""

CHILD_ENGINE = """
import os, signal, sys
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine

engine = ReplicationEngine.open(Path(sys.argv[1]), Path(sys.argv[2]))
engine.write("web", "os", 4096, b"after the reopen")
os.kill(os.getpid(), signal.SIGKILL)
"""


class OtherBoot(files.FileSystem):
    """The operating system's file operations, on a machine that restarted since."""

    def boot_id(self) -> str:
        return "a-boot-after-the-power-loss"


class UnknownBoot(files.FileSystem):
    """The operating system's file operations, on a system without a boot id."""

    def boot_id(self) -> str:
        return ""


def run_child(*arguments: str) -> None:
    """Run a child interpreter that must end killed by SIGKILL."""
    child = subprocess.run(
        [sys.executable, "-c", *arguments],
        cwd=REPOSITORY, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stdout + child.stderr


def killed_while_tracked(tmp_path: Path, *, durable: bool) -> Path:
    """A VM folder whose tracking child was SIGKILLed after one write; its image."""
    path = tmp_path / "vm" / "os.img"
    path.parent.mkdir()
    VirtualDisk.create(path, 16 * BLOCK).close()
    mode = "durable" if durable else "cached"
    run_child(CHILD_DISKS, str(path), mode, WRITTEN.hex())
    assert (path.parent / TRACKING_MARKER).exists()
    return path


def reopen(
    path: Path, *, durable: bool, file_system: files.FileSystem | None = None
) -> SourceDisks:
    """Open the VM's disks and resume tracking, under ``file_system`` if given."""
    with files.use(file_system or files.FileSystem()):
        disks = SourceDisks({"os": path}, block_bytes=BLOCK, durable=durable)
        disks.resume_tracking(1)
    return disks


def test_tracking_keeps_a_marker_that_a_clean_close_removes(tmp_path: Path) -> None:
    """While tracked, the VM's folder holds the marker (this boot's id, this pid); a
    clean close removes it, and a reopen after a host restart then trusts the logs
    (everything was flushed). Fails without the marker."""
    path = tmp_path / "vm" / "os.img"
    path.parent.mkdir()
    VirtualDisk.create(path, 16 * BLOCK).close()
    marker = path.parent / TRACKING_MARKER
    disks = SourceDisks({"os": path}, block_bytes=BLOCK, durable=False)
    disks.start_tracking(1, {"os": 0})
    content = json.loads(marker.read_text(encoding="utf-8"))
    assert content["boot_id"] == files.current().boot_id() != ""
    assert content["pid"] == os.getpid()
    assert content["durable"] is False
    disks.write("os", 0, WRITTEN)
    disks.close()
    assert not marker.exists()
    again = reopen(path, durable=False, file_system=OtherBoot())
    try:
        assert (again.log_state, again.problem) == (LogState.USABLE, None)
        assert marker.exists()  # tracked again
    finally:
        again.close()


def test_stop_tracking_removes_the_marker_and_the_logs(tmp_path: Path) -> None:
    """Untracked disks cannot lose records: stopping tracking removes the marker."""
    path = tmp_path / "vm" / "os.img"
    path.parent.mkdir()
    VirtualDisk.create(path, 16 * BLOCK).close()
    disks = SourceDisks({"os": path}, block_bytes=BLOCK, durable=False)
    try:
        disks.start_tracking(1, {"os": 0})
        disks.stop_tracking()
        assert sorted(p.name for p in path.parent.iterdir()) == ["os.img"]
    finally:
        disks.close()


def test_a_process_kill_on_the_same_boot_does_not_distrust(tmp_path: Path) -> None:
    """SIGKILL, same boot, writes not durable: the page cache kept every record, so
    the replay is enough and the logs stay trusted."""
    path = killed_while_tracked(tmp_path, durable=False)
    disks = reopen(path, durable=False)
    try:
        assert (disks.log_state, disks.problem) == (LogState.USABLE, None)
        assert disks.read("os", 0, len(WRITTEN)) == WRITTEN
        assert not (path.parent / UNTRUSTED_MARKER).exists()
    finally:
        disks.close()


def test_a_host_restart_without_durable_writes_distrusts_the_logs(
    tmp_path: Path,
) -> None:
    """Killed while tracked, reopened on another boot, writes not durable: the logs
    are distrusted (resynchronisation needed), durably: a later reopen, even on the
    same boot, still distrusts them. Fails without the unclean-shutdown check."""
    path = killed_while_tracked(tmp_path, durable=False)
    disks = reopen(path, durable=False, file_system=OtherBoot())
    try:
        assert disks.log_state is LogState.UNTRUSTED
        assert disks.problem == UNCLEAN_SHUTDOWN
        assert "the host restarted while the VM was tracked" in UNCLEAN_SHUTDOWN
        untrusted = path.parent / UNTRUSTED_MARKER
        assert untrusted.read_text(encoding="utf-8") == UNCLEAN_SHUTDOWN
    finally:
        disks.close()
    again = reopen(path, durable=False)
    try:
        assert again.log_state is LogState.UNTRUSTED
        assert again.problem == UNCLEAN_SHUTDOWN
    finally:
        again.close()


def test_an_unknown_boot_without_durable_writes_distrusts_the_logs(
    tmp_path: Path,
) -> None:
    """A system without a boot id cannot tell a kill from a power loss: distrust."""
    path = killed_while_tracked(tmp_path, durable=False)
    disks = reopen(path, durable=False, file_system=UnknownBoot())
    try:
        assert disks.log_state is LogState.UNTRUSTED
        assert disks.problem is not None
        assert disks.problem.startswith("unclean shutdown")
    finally:
        disks.close()


@pytest.mark.parametrize("file_system", [OtherBoot, UnknownBoot])
def test_durable_writes_never_distrust_after_a_restart(
    file_system: type[files.FileSystem], tmp_path: Path
) -> None:
    """Durable mode: every disk write followed a durable record, so after any
    shutdown the replay makes log and disk agree; nothing is distrusted."""
    path = killed_while_tracked(tmp_path, durable=True)
    disks = reopen(path, durable=True, file_system=file_system())
    try:
        assert (disks.log_state, disks.problem) == (LogState.USABLE, None)
        assert disks.read("os", 0, len(WRITTEN)) == WRITTEN
    finally:
        disks.close()


def test_it_is_how_the_killed_run_wrote_that_counts(tmp_path: Path) -> None:
    """A run without durable writes, killed, then reopened on another boot *with*
    durable writes: the first run's records may still be lost, so distrust."""
    path = killed_while_tracked(tmp_path, durable=False)
    disks = reopen(path, durable=True, file_system=OtherBoot())
    try:
        assert (disks.log_state, disks.problem) == (
            LogState.UNTRUSTED,
            UNCLEAN_SHUTDOWN,
        )
    finally:
        disks.close()


def test_the_engine_resynchronises_after_a_host_restart(tmp_path: Path) -> None:
    """End to end: a protected VM's engine is SIGKILLed after a write; reopened on
    another boot, the VM reports the unclean shutdown, both markers in its folder are
    not taken for disks, the next cycle marks it for resynchronization, which then
    makes the replica equal to the source."""
    roots = (tmp_path / "primary", tmp_path / "secondary")
    disks = {"os": 16 * BLOCK}
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        engine.create_vm("web", disks)
        engine.enable_protection("web")
        engine.write("web", "os", 0, WRITTEN)
        engine.replicate("web")
        folder = engine.primary.vm_directory("web")
    assert not (folder / TRACKING_MARKER).exists()  # closed cleanly
    run_child(CHILD_ENGINE, *map(str, roots))
    with (
        files.use(OtherBoot()),
        ReplicationEngine.open(*roots, clock=ManualClock()) as engine,
    ):
        assert (folder / TRACKING_MARKER).exists()
        assert (folder / UNTRUSTED_MARKER).exists()
        assert engine.vm("web").disk_sizes == disks
        status = engine.status("web")
        assert status.log_problem == UNCLEAN_SHUTDOWN
        assert (status.phase, status.health) == ("protected", "critical")
        assert engine.replicate("web") is None
        assert engine.status("web").phase == "resynchronizing"
        engine.resynchronize("web")
        assert engine.status("web").log_problem is None
        assert not (folder / UNTRUSTED_MARKER).exists()
        store = ReplicaStore.open(engine.secondary.replicas, "web", ManualClock())
        size = disks["os"]
        assert store.read("os", 0, size) == engine.read("web", "os", 0, size)
        assert engine.read("web", "os", BLOCK, 16) == b"after the reopen"
