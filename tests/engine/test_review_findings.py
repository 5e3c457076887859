"""Regression tests for what an outside review of the engine groundwork found."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.errors import (
    DamagedState,
    InvalidConfiguration,
    InvalidName,
    ReplicationError,
    SiteLocked,
    StorageFull,
    TransitionNotAllowed,
    TransportError,
)
from engine.orchestration.engine import ReplicationEngine
from engine.storage import files
from engine.testing import LossyTransport, ManualClock

BLOCK = 4096
DISKS = {"os": 4 * BLOCK, "data": 4 * BLOCK}


def open_engine(primary: Path, secondary: Path, **options: Any) -> ReplicationEngine:
    """The engine on two roots."""
    return ReplicationEngine.open(primary, secondary, clock=ManualClock(), **options)


def protected(tmp_path: Path, **options: Any) -> ReplicationEngine:
    """VM ``web`` protected, on the roots under ``tmp_path``."""
    engine = open_engine(tmp_path / "p", tmp_path / "s", **options)
    engine.create_vm("web", DISKS)
    engine.enable_protection("web")
    return engine


@pytest.mark.parametrize("inside", ["inbox/web", "replicas/web", "vms"])
def test_a_root_inside_the_other_is_refused(tmp_path: Path, inside: str) -> None:
    """One site's root inside the other's (either way) is refused before anything."""
    secondary = tmp_path / "site"
    primary = secondary / inside
    for first, second in ((primary, secondary), (secondary, primary)):
        with pytest.raises(InvalidConfiguration, match="inside the other"):
            open_engine(first, second)
    assert not secondary.exists()


def test_a_hostile_intent_cannot_delete_a_site_file(tmp_path: Path) -> None:
    """An intent naming control.sqlite3 as a log: recovery deletes nothing of it."""
    with protected(tmp_path) as engine:
        engine.write("web", "os", 0, b"z" * 100)
    child = f"""
import os, signal
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine
def crash(step):
    if step == "after_commit":
        os.kill(os.getpid(), signal.SIGKILL)
ReplicationEngine.open(Path({str(tmp_path / "p")!r}), Path({str(tmp_path / "s")!r}),
                       crash_point=crash).replicate("web")
"""
    result = subprocess.run([sys.executable, "-c", child], check=False)
    assert result.returncode == -signal.SIGKILL
    intent = tmp_path / "s" / "replicas" / "web" / "intent.json"
    document = json.loads(intent.read_text())
    victim = tmp_path / "s" / "control.sqlite3"
    document["logs"] = dict.fromkeys(document["logs"], str(victim))
    intent.write_text(json.dumps(document))
    with (
        open_engine(tmp_path / "p", tmp_path / "s") as engine,
        pytest.raises(DamagedState, match=r"intent\.json"),
    ):
        engine.status("web")
    assert victim.exists()


def leave_a_cycle_waiting(engine: ReplicationEngine) -> Path:
    """A cycle sealed into the outbox whose shipment the link loses."""
    engine.write("web", "data", 0, b"c" * 100)
    engine.transport.drops = 1  # type: ignore[attr-defined]
    with pytest.raises(TransportError):
        engine.replicate("web")
    (cycle,) = (engine.primary.root / "outbox" / "web").iterdir()
    return cycle / "cycle.json"


@pytest.mark.parametrize("damage", ["epoch-true", "missing-disk"])
def test_a_damaged_cut_record_sends_the_vm_to_resynchronisation(
    tmp_path: Path, damage: str
) -> None:
    """A cut record with a bool epoch or a disk missing is damage: status says so,
    the next cycle sends the VM to resynchronisation, which repairs the replica."""
    with protected(tmp_path, wrap_transport=LossyTransport) as engine:
        record = leave_a_cycle_waiting(engine)
        document = json.loads(record.read_text())
        if damage == "epoch-true":
            document["epoch"] = True
        else:
            del document["last_sequences"]["data"]
        record.write_text(json.dumps(document))
        problem = engine.status("web").log_problem
        assert problem is not None
        assert "cycle.json" in problem
        assert engine.replicate("web") is None
        assert engine.status("web").phase == "resynchronizing"
        engine.resynchronize("web")
        store = engine.transport.inner.store("web")  # type: ignore[attr-defined]
        for disk, size in DISKS.items():
            assert store.read(disk, 0, size) == engine.read("web", disk, 0, size)


def test_stray_entries_in_the_inbox_and_outbox_are_ignored(tmp_path: Path) -> None:
    """A stray file in inbox/ and a 'cycle-²' folder in the outbox stop nothing."""
    with protected(tmp_path):
        pass
    (tmp_path / "s" / "inbox").mkdir(exist_ok=True)
    (tmp_path / "s" / "inbox" / "README").write_text("note")
    (tmp_path / "p" / "outbox" / "web").mkdir(parents=True, exist_ok=True)
    (tmp_path / "p" / "outbox" / "web" / "cycle-\u00b2").mkdir()
    (tmp_path / "p" / "outbox" / "web" / "cycle-\u0663").mkdir()
    with open_engine(tmp_path / "p", tmp_path / "s") as engine:
        engine.write("web", "os", 0, b"x" * BLOCK)
        engine.replicate("web")
        assert engine.status("web").health == "normal"


@pytest.mark.parametrize("name", ["data.img.hrl", "logs-untrusted.txt"])
def test_a_file_replaced_by_a_folder_quarantines_only_its_vm(
    tmp_path: Path, name: str
) -> None:
    """An engine file that became a folder: that VM is damaged, the others open."""
    with protected(tmp_path) as engine:
        engine.create_vm("db", DISKS)
    target = tmp_path / "p" / "vms" / "web" / name
    target.unlink(missing_ok=True)
    target.mkdir()
    with open_engine(tmp_path / "p", tmp_path / "s") as engine:
        assert sorted(engine.damaged) == ["web"]
        with pytest.raises(DamagedState, match="web"):
            engine.status("web")
        engine.enable_protection("db")


def test_bad_argument_types_are_refused_clearly(tmp_path: Path) -> None:
    """Wrong types give InvalidConfiguration naming the argument, not a TypeError."""
    with pytest.raises(InvalidConfiguration, match="primary_root"):
        ReplicationEngine.open(None, tmp_path / "s")  # type: ignore[arg-type]
    with open_engine(tmp_path / "p", tmp_path / "s") as engine:
        with pytest.raises(InvalidConfiguration, match="must be a mapping"):
            engine.create_vm("v", [("os", BLOCK)])  # type: ignore[arg-type]
        with pytest.raises(InvalidConfiguration, match="must be a mapping"):
            engine.create_vm("v", None)  # type: ignore[arg-type]
        engine.create_vm("v", DISKS)
        with pytest.raises(InvalidConfiguration, match="progress"):
            engine.enable_protection("v", progress=5)  # type: ignore[arg-type]
        assert engine.primary.control.pending_operation("v") is None


def test_a_progress_callback_that_raises_leaves_nothing_pending(
    tmp_path: Path,
) -> None:
    """The callback's own error surfaces; the VM is not wedged; enable works again."""
    with open_engine(tmp_path / "p", tmp_path / "s") as engine:
        engine.create_vm("web", DISKS)

        def broken(disk: str, done: int, total: int) -> None:
            raise RuntimeError("the caller's bug")

        with pytest.raises(RuntimeError, match="the caller's bug"):
            engine.enable_protection("web", progress=broken)
        assert engine.primary.control.pending_operation("web") is None
        engine.continue_initial_replication("web")
        assert engine.status("web").phase == "protected"


@pytest.mark.parametrize("name", ["CON", "nul.disk", "com1", "web."])
def test_names_that_are_not_portable_are_refused(tmp_path: Path, name: str) -> None:
    """Windows device names and a trailing dot are refused."""
    with open_engine(tmp_path / "p", tmp_path / "s") as engine:
        with pytest.raises(InvalidName):
            engine.create_vm(name, DISKS)
        with pytest.raises(InvalidName):
            engine.create_vm("ok", {name: BLOCK})


def test_names_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    """Web beside web, or disks OS and os: one file on NTFS, so refused."""
    with open_engine(tmp_path / "p", tmp_path / "s") as engine:
        engine.create_vm("web", DISKS)
        with pytest.raises(InvalidConfiguration, match="only in case"):
            engine.create_vm("Web", DISKS)
        with pytest.raises(InvalidConfiguration, match="only in case"):
            engine.create_vm("db", {"os": BLOCK, "OS": BLOCK})


def test_status_lists_only_what_this_engine_runs(tmp_path: Path) -> None:
    """allowed names engine operations the model allows now, each one callable."""
    with protected(tmp_path) as engine:
        allowed = set(engine.status("web").allowed)
    assert allowed == {
        "replicate", "pause", "resynchronize", "disable", "start_test_failover",
        "planned_failover", "unplanned_failover",
    }  # fmt: skip
    assert all(callable(getattr(engine, name)) for name in allowed)


class FailingApply(files.FileSystem):
    """ENOSPC on every write into the replica's images (the apply and its rollback)."""

    def pwrite(self, descriptor: int, data: Any, offset: int) -> int:
        target = os.readlink(f"/proc/self/fd/{descriptor}")
        if "/replicas/" in target and target.endswith(".img"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        return super().pwrite(descriptor, data, offset)


def test_an_apply_whose_rollback_failed_is_finished_by_the_next_cycle(
    tmp_path: Path,
) -> None:
    """Apply and rollback both hit ENOSPC: StorageFull; once there is room, the next
    cycle finishes the interrupted apply itself instead of refusing forever."""
    with protected(tmp_path) as engine:
        engine.write("web", "os", 0, b"1" * BLOCK)
        with files.use(FailingApply()), pytest.raises(StorageFull):
            engine.replicate("web")
        engine.write("web", "data", 0, b"2" * BLOCK)
        engine.replicate("web")
        store = engine.transport.store("web")  # type: ignore[attr-defined]
        for disk, size in DISKS.items():
            assert store.read(disk, 0, size) == engine.read("web", disk, 0, size)
        assert engine.status("web").health == "normal"


def test_reopening_a_site_on_a_full_disk_says_full_not_damaged(
    small_filesystem: Any,
) -> None:
    """A full disk at open is StorageFull (the files are fine), and after freeing
    space the site opens healthy."""
    root = small_filesystem.root
    with protected(root):
        pass
    small_filesystem.fill()
    with pytest.raises(StorageFull):
        open_engine(root / "p", root / "s")
    small_filesystem.free()
    with open_engine(root / "p", root / "s") as engine:
        assert engine.status("web").health == "normal"


def test_creating_a_vm_without_inodes_left_is_storage_full(tmp_path: Path) -> None:
    """No inode left for the VM's folder: StorageFull, nothing left behind."""
    mount = tmp_path / "few-inodes"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=48", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with open_engine(mount / "p", mount / "s") as engine:
            created = 0
            with pytest.raises(StorageFull):  # noqa: PT012 - until inodes run out
                for index in range(48):
                    engine.create_vm(f"vm{index}", {"os": BLOCK})
                    created += 1
            assert engine.vm_names() == tuple(sorted(f"vm{i}" for i in range(created)))
            folders = sorted(p.name for p in (mount / "p" / "vms").iterdir())
            assert folders == sorted(engine.vm_names())
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_refused_open_creates_nothing_in_the_other_site(tmp_path: Path) -> None:
    """The secondary is held elsewhere: the new primary gets no control file or data
    folders (at most its lock file), and is free again."""
    with open_engine(tmp_path / "other", tmp_path / "s"):
        with pytest.raises(SiteLocked):
            open_engine(tmp_path / "new", tmp_path / "s")
        left = sorted(p.name for p in (tmp_path / "new").iterdir())
        assert left in ([], ["site.lock"])
    with open_engine(tmp_path / "new", tmp_path / "s") as engine:
        assert engine.vm_names() == ()


class StatusAtEveryStep(files.FileSystem):
    """After each file operation of the thread running an operation, read the VM's
    status from another thread: a read at every step of disable and enable, where a
    poller racing them hit only the steps the scheduler happened to give it."""

    def __init__(self, engine: ReplicationEngine) -> None:
        super().__init__()
        self.engine = engine
        self.operator = threading.get_ident()
        self.readers: list[threading.Thread] = []
        self.seen: list[str] = []  # the phase each read returned, or its error

    def _read(self) -> None:
        try:
            self.seen.append(self.engine.status("web").phase)
        except ReplicationError as error:  # others end the thread: pytest reports it
            self.seen.append(f"{type(error).__name__}: {error}")

    def _step(self) -> None:
        if threading.get_ident() != self.operator:
            return
        reader = threading.Thread(target=self._read)
        reader.start()
        self.readers.append(reader)
        # A read that found the VM mid-change waits for the operation to end (it is
        # then answered after it); one that did not is done within this time.
        reader.join(timeout=0.05)

    def rename(self, source: Path, target: Path) -> None:
        super().rename(source, target)
        self._step()

    def unlink(self, path: Path, *, missing_ok: bool = False) -> None:
        super().unlink(path, missing_ok=missing_ok)
        self._step()

    def make_directory(
        self, path: Path, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        super().make_directory(path, parents=parents, exist_ok=exist_ok)
        self._step()

    def remove_tree(self, path: Path) -> None:
        super().remove_tree(path)
        self._step()


def test_status_never_races_an_operation_into_a_false_damage(tmp_path: Path) -> None:
    """status() read from another thread after every file operation of disable and
    enable never reports damage: only a phase the VM passes through."""
    with protected(tmp_path) as engine:
        steps = StatusAtEveryStep(engine)
        with files.use(steps):
            engine.disable("web")
            engine.enable_protection("web")
        for reader in steps.readers:
            reader.join()
        assert len(steps.seen) == len(steps.readers)
        phases = {"protected", "unprotected", "initial_replication"}
        assert [seen for seen in steps.seen if seen not in phases] == []
        assert {"protected", "unprotected"} <= set(steps.seen)


def test_a_zero_padded_stray_in_the_outbox_is_ignored(tmp_path: Path) -> None:
    """cycle-00099 is not cycle 99: ignored, cycles go on, nothing distrusted."""
    with protected(tmp_path) as engine:
        (tmp_path / "p" / "outbox" / "web").mkdir(parents=True, exist_ok=True)
        (tmp_path / "p" / "outbox" / "web" / "cycle-00099").mkdir()
        (tmp_path / "p" / "outbox" / "web" / "cycle-01").mkdir()
        for step in range(3):
            engine.write("web", "os", 0, bytes([step + 1]) * BLOCK)
            engine.replicate("web")
        assert engine.status("web").log_problem is None
        assert engine.statistics().vms["web"].cycles_dropped == 0


def test_a_resynchronisation_the_link_cannot_carry_changes_nothing(
    tmp_path: Path,
) -> None:
    """Link down: resynchronize is not offered, and a call is refused with the VM
    still protected (not left in resynchronizing)."""
    with protected(tmp_path) as engine:
        engine.transport.link_up = False  # type: ignore[attr-defined]
        assert "resynchronize" not in engine.status("web").allowed
        with pytest.raises(TransitionNotAllowed, match="nothing was changed"):
            engine.resynchronize("web")
        status = engine.status("web")
        assert (status.phase, status.protected) == ("protected", True)
        engine.transport.link_up = True  # type: ignore[attr-defined]
        assert "resynchronize" in engine.status("web").allowed


def test_a_damaged_cut_record_shows_in_status_before_the_next_cycle(
    tmp_path: Path,
) -> None:
    """Damage in a waiting cycle's cut record is not hidden behind 'normal'."""
    with protected(tmp_path, wrap_transport=LossyTransport) as engine:
        record = leave_a_cycle_waiting(engine)
        record.write_text("{ not json")
        status = engine.status("web")
        assert status.health != "normal"
        assert status.log_problem is not None
        assert "cycle.json" in status.log_problem


@pytest.mark.parametrize(
    ("option", "value"), [("durable_writes", "no"), ("link_up", "no")]
)
def test_flags_must_be_booleans(tmp_path: Path, option: str, value: object) -> None:
    """A truthy string is not silently taken for True."""
    with pytest.raises(InvalidConfiguration, match=option):
        open_engine(tmp_path / "p", tmp_path / "s", **{option: value})


def test_operation_arguments_of_the_wrong_type_are_refused(tmp_path: Path) -> None:
    """A list as a VM name, a string as a flag: InvalidConfiguration."""
    with protected(tmp_path) as engine:
        with pytest.raises(InvalidConfiguration, match="VM name"):
            engine.write(["web"], "os", 0, b"a")  # type: ignore[arg-type]
        with pytest.raises(InvalidConfiguration, match="app_consistent"):
            engine.replicate("web", app_consistent="yes")  # type: ignore[arg-type]


def test_a_resynchronisation_reports_its_progress(tmp_path: Path) -> None:
    """progress(disk, done, total) reaches the whole of every disk, in order."""
    with protected(tmp_path) as engine:
        seen: list[tuple[str, int, int]] = []
        engine.resynchronize("web", progress=lambda *step: seen.append(step))
        finals = [step for step in seen if step[1] == step[2]]
        assert finals == [(disk, size, size) for disk, size in sorted(DISKS.items())]
        with pytest.raises(InvalidConfiguration, match="progress"):
            engine.resynchronize("web", progress="loud")  # type: ignore[arg-type]
