"""A target whose catalogue claims a huge last cycle id neither hangs nor overflows
the source: the next id is taken above it in one step, and a claim past any real
count is damage, refused with a typed error naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import DamagedState, ReplicationError
from engine.orchestration.engine import ReplicationEngine
from engine.testing import ManualClock

BLOCK = 4096


def _open(root: Path) -> ReplicationEngine:
    return ReplicationEngine.open(root / "p", root / "s", clock=ManualClock())


def _protected(tmp_path: Path) -> None:
    with _open(tmp_path) as e:
        e.create_vm("vm", {"os": 8 * BLOCK})
        e.enable_protection("vm")


def _claim(tmp_path: Path, last_cycle_id: int) -> None:
    path = tmp_path / "s" / "replicas" / "vm" / "store.json"
    document = json.loads(path.read_text())
    catalogue = document.get("catalogue", document)
    assert "last_cycle_id" in catalogue, sorted(catalogue)
    catalogue["last_cycle_id"] = last_cycle_id
    path.write_text(json.dumps(document))


def test_a_large_last_cycle_id_is_skipped_in_one_step(tmp_path: Path) -> None:
    _protected(tmp_path)
    _claim(tmp_path, 10**15)
    with _open(tmp_path) as e:
        e.write("vm", "os", 0, b"x" * BLOCK)
        report = e.replicate("vm")
        assert report is not None
        assert report.cycle_id == 10**15 + 1


def test_a_last_cycle_id_past_any_count_is_damage(tmp_path: Path) -> None:
    _protected(tmp_path)
    _claim(tmp_path, 10**30)
    with _open(tmp_path) as e:
        e.write("vm", "os", 0, b"x" * BLOCK)
        with pytest.raises(ReplicationError, match="last_cycle_id") as raised:
            e.replicate("vm")
        assert isinstance(raised.value, DamagedState) or "damaged" in str(raised.value)
