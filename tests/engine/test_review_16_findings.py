"""Findings of the outside review of the conformance work, each pinned.

- an unknown or malformed pending operation in a control file is said to be damage,
  not a bare ``KeyError`` on open;
- a site whose disk is full when the engine opens is ``StorageFull`` (free space, open
  again), not ``DamagedState`` (whose advice is to set the site aside), and nothing
  of the VM is lost: a real, small tmpfs fills up (root only: mounting needs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import InvalidConfiguration, StorageFull
from engine.orchestration.engine import ReplicationEngine
from engine.testing import ManualClock

BLOCK = 4096


def _open(root: Path) -> ReplicationEngine:
    return ReplicationEngine.open(root / "p", root / "s", clock=ManualClock())


@pytest.mark.parametrize(
    ("name", "params", "said"),
    [
        ("frobnicate", "{}", "no operation the engine records"),
        ("pause", '{"phase": "sideways"}', "no valid phase"),
        ("pause", "[1, 2]", "no valid phase"),
    ],
)
def test_a_malformed_pending_operation_is_damage_said_on_open(
    tmp_path: Path, name: str, params: str, said: str
) -> None:
    with _open(tmp_path) as engine:
        engine.create_vm("vm", {"os": 16 * BLOCK})
        engine.enable_protection("vm")
        engine.write("vm", "os", 0, b"k" * BLOCK)
    with contextlib.closing(sqlite3.connect(tmp_path / "p" / "control.sqlite3")) as db:
        db.execute(
            "INSERT INTO operation(vm, name, params_json, state, started_at) "
            "VALUES ('vm', ?, ?, 'pending', 0)",
            (name, params),
        )
        db.commit()
    with _open(tmp_path) as engine:
        assert said in engine.recovered["vm"]
        assert "control file is damaged" in engine.recovered["vm"]
        assert engine.status("vm").phase == "protected"
        assert engine.read("vm", "os", 0, BLOCK) == b"k" * BLOCK


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:  # a container without the right to mount
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_at_open_is_storage_full_and_loses_nothing(tmp_path: Path) -> None:
    with _small_tmpfs(tmp_path / "mnt", "2m") as root:
        acknowledged: dict[int, bytes] = {}
        with _open(root) as engine:
            engine.create_vm("vm", {"os": 64 * BLOCK})
            engine.enable_protection("vm")

            def fill() -> None:
                for number in range(100_000):  # the log grows until the disk is full
                    block, data = number % 64, bytes([number % 251]) * BLOCK
                    engine.write("vm", "os", block * BLOCK, data)
                    acknowledged[block] = data

            with pytest.raises(StorageFull):
                fill()
            engine.flush("vm")
        filler = root / "filler"
        descriptor = os.open(filler, os.O_CREAT | os.O_WRONLY)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(descriptor, b"\0" * BLOCK)
        finally:
            os.close(descriptor)
        with pytest.raises(StorageFull, match="cannot be opened") as full:
            _open(root)
        assert "free space" in " ".join(getattr(full.value, "__notes__", []))
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,size=8m", str(root)], check=True)
        with _open(root) as engine:
            assert engine.damaged == {}
            for block, data in acknowledged.items():
                assert engine.read("vm", "os", block * BLOCK, BLOCK) == data, block
            # The write refused for room cost the log its tracking: the next cycle
            # asks for a resynchronisation, which makes the replica equal the disk.
            engine.replicate("vm")
            if engine.status("vm").phase == "resynchronizing":
                engine.resynchronize("vm")
            assert engine.status("vm").phase == "protected"
            replica = engine.transport_towards("secondary")
            newest = replica.status("vm").points[-1].recovery_point_id
            held = replica.point_reader("vm", newest)
            for block, data in acknowledged.items():
                assert held.read("os", block * BLOCK, BLOCK) == data, block


def test_a_direction_the_active_site_does_not_give_is_damage(tmp_path: Path) -> None:
    with _open(tmp_path) as engine:
        engine.create_vm("vm", {"os": 16 * BLOCK})
        engine.enable_protection("vm")
    for site in ("p", "s"):
        path = tmp_path / site / "control.sqlite3"
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("UPDATE vm SET direction = 'x->y'")
            db.commit()
    with _open(tmp_path) as engine:
        assert "direction='x->y'" in str(engine.damaged["vm"])
        assert "'primary->secondary'" in str(engine.damaged["vm"])


def test_a_site_inside_another_site_is_refused(tmp_path: Path) -> None:
    """A root inside another site's folder would put a second control state among
    that site's files (its VM folder, say): refused before anything is created."""
    with _open(tmp_path) as engine:
        engine.create_vm("vm", {"os": 16 * BLOCK})
    nested = tmp_path / "p" / "vms" / "vm"
    before = sorted(path.name for path in nested.iterdir())
    with pytest.raises(InvalidConfiguration, match="lies inside the site at"):
        ReplicationEngine.open(nested, tmp_path / "elsewhere", clock=ManualClock())
    assert sorted(path.name for path in nested.iterdir()) == before
    assert not (tmp_path / "elsewhere").exists()
