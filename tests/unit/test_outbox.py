"""Unit tests for engine.source.outbox: waiting cycles and their cut records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.control.site import SiteStorage
from engine.errors import CorruptRecord
from engine.source.outbox import CUT_RECORD, CutRecord, Outbox
from engine.testing import ManualClock


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    site = SiteStorage.open("primary", tmp_path / "site", ManualClock())
    yield Outbox(site, "web")
    site.close()


def record(cycle_id: int = 3) -> CutRecord:
    return CutRecord(cycle_id, 2, app_consistent=True, last_sequences={"os": 7})


def test_a_cut_record_round_trips(outbox: Outbox) -> None:
    """What record_cut writes, cut_record reads back equal."""
    outbox.open_cycle(3)
    outbox.record_cut(record())
    assert outbox.cut_record(3, ["os"]) == record()


def test_a_cycle_without_its_record_was_interrupted(outbox: Outbox) -> None:
    """No cut record: None (the cut was interrupted), not an error."""
    outbox.open_cycle(4)
    assert outbox.waiting() == [4]
    assert outbox.cut_record(4) is None


@pytest.mark.parametrize(
    "change",
    [
        {"epoch": True},
        {"epoch": -1},
        {"epoch": "2"},
        {"cycle_id": 4},
        {"app_consistent": 1},
        {"format_version": 2},
        {"last_sequences": {"os": True}},
        {"last_sequences": {"os": -2}},
        {"last_sequences": {"os": "7"}},
        {"last_sequences": []},
    ],
)
def test_a_damaged_cut_record_is_refused(
    outbox: Outbox, change: dict[str, object]
) -> None:
    """Each malformed field (bools are not ints) is CorruptRecord naming the file."""
    outbox.open_cycle(3)
    outbox.record_cut(record())
    path = outbox.path(3) / CUT_RECORD
    document = json.loads(path.read_text())
    document.update(change)
    path.write_text(json.dumps(document))
    with pytest.raises(CorruptRecord, match=CUT_RECORD):
        outbox.cut_record(3)


def test_a_record_naming_other_disks_is_damaged(outbox: Outbox) -> None:
    """Checked against the VM's disks, a record for other disks is refused."""
    outbox.open_cycle(3)
    outbox.record_cut(record())
    with pytest.raises(CorruptRecord, match="not the VM's"):
        outbox.cut_record(3, ["os", "data"])
    assert len(outbox.damaged_records(["os", "data"])) == 1
    assert outbox.damaged_records(["os"]) == []


@pytest.mark.parametrize(
    "name", ["cycle-007", "cycle-\u00b2", "cycle-x", "cycle-", "cycle-3.tmp", "other"]
)
def test_only_canonical_cycle_folders_wait(outbox: Outbox, name: str) -> None:
    """Stray entries are ignored: only cycle-<id> folders, id written canonically."""
    outbox.open_cycle(5)
    (outbox.path(5).parent / name).mkdir()
    (outbox.path(5).parent / "cycle-9").write_text("a file, not a folder")
    assert outbox.waiting() == [5]


def test_discard_removes_every_waiting_cycle(outbox: Outbox) -> None:
    """discard leaves no cycle folder behind."""
    for cycle_id in (1, 2):
        outbox.open_cycle(cycle_id)
    outbox.discard()
    assert outbox.waiting() == []
