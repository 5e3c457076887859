"""The outbox: sealed cycles of one VM waiting at its source site until applied.

A cycle is one sealed change log per disk, all cut at one point
(``SourceDisks.seal``). It waits here until the target has applied it, so a cycle cut
short by the link or a full target is neither lost nor reordered: the next cycle ships
the waiting ones first, in cycle order. Layout under the source site's root::

    <root>/outbox/<vm>/cycle-<id>/<disk>.hrl   each disk's sealed log
    <root>/outbox/<vm>/cycle-<id>/cycle.json   the cut record, written last

**The cut record** (``cycle.json``) is written durably once every disk is sealed. It
holds the cycle id, the epoch, whether the cut was taken at a quiesce point, and each
disk's last sequence number as the source sealed it. Two things follow:

- a cycle directory without a cut record is a cut that was interrupted (a crash
  between two disks' seals): only right after a restart, before any write, can it be
  completed consistently;
- the target is told the sequence each log must end at, so a log cut exactly at a
  record boundary (which passes every CRC) is refused rather than applied as a point
  that holds part of a cut.

It never imports ``model`` and never touches the replica.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.control.site import SiteStorage
from engine.errors import CorruptRecord
from engine.names import safe_child
from engine.storage import durable_file
from engine.storage import files as filesystem

CUT_RECORD: Final = "cycle.json"
CUT_RECORD_VERSION: Final = 1
LOG_SUFFIX: Final = ".hrl"


@dataclass(frozen=True, slots=True)
class CutRecord:
    """What ``cycle.json`` says of a waiting cycle."""

    cycle_id: int
    epoch: int
    app_consistent: bool
    last_sequences: Mapping[str, int]
    # A resynchronisation's cycle: its records are the blocks that differed, not the
    # writes that made them (a failover rolling it back cannot count writes).
    resync: bool = False

    def to_bytes(self) -> bytes:
        """The JSON bytes written to ``cycle.json``."""
        document = {
            "format_version": CUT_RECORD_VERSION,
            "cycle_id": self.cycle_id,
            "epoch": self.epoch,
            "app_consistent": self.app_consistent,
            "last_sequences": dict(sorted(self.last_sequences.items())),
            "resync": self.resync,
        }
        return json.dumps(document, indent=1).encode()

    @classmethod
    def load(cls, path: Path, cycle_id: int) -> CutRecord:
        """Read and validate ``path``; a damaged record is a damaged cycle."""
        try:
            document = json.loads(path.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            msg = f"cut record {str(path)!r} cannot be read ({error})"
            raise CorruptRecord(msg) from error
        sequences = document.get("last_sequences") if isinstance(document, dict) else 0
        if (
            not isinstance(document, dict)
            or document.get("format_version") != CUT_RECORD_VERSION
            or document.get("cycle_id") != cycle_id
            or not _is_count(document.get("epoch"))
            or not isinstance(document.get("app_consistent"), bool)
            or not isinstance(document.get("resync", False), bool)
            or not isinstance(sequences, dict)
            or not all(_is_sequence(value) for value in sequences.values())
        ):
            msg = f"cut record {str(path)!r} is malformed for cycle {cycle_id}"
            raise CorruptRecord(msg)
        return cls(
            cycle_id,
            document["epoch"],
            document["app_consistent"],
            sequences,
            resync=document.get("resync", False),
        )


def _is_count(value: object) -> bool:
    """An int >= 0 that is not a bool (JSON ``true`` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sequence(value: object) -> bool:
    """A last sequence number: an int >= -1 (-1: the log has no record)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= -1


class Outbox:
    """The sealed cycles of one VM waiting at its source site."""

    def __init__(self, site: SiteStorage, vm_name: str) -> None:
        self.site = site
        self.vm_name = vm_name

    def path(self, cycle_id: int) -> Path:
        """The directory of cycle ``cycle_id``."""
        return self.site.outbox(self.vm_name, cycle_id)

    def logs(self, cycle_id: int, disks: Iterable[str]) -> dict[str, Path]:
        """Where each disk's sealed log of the cycle is (or is to be)."""
        directory = self.path(cycle_id)
        return {
            disk: safe_child(directory, disk + LOG_SUFFIX) for disk in sorted(disks)
        }

    def waiting(self) -> list[int]:
        """The cycles waiting, oldest first (stray entries are ignored)."""
        directory = self.site.root / "outbox" / self.vm_name
        if not directory.exists():
            return []
        found = []
        for entry in directory.iterdir():
            number = entry.name.removeprefix("cycle-")
            if (
                entry.name.startswith("cycle-")
                and number.isascii()
                and number.isdigit()
                and str(int(number)) == number  # cycle-007 is not cycle 7
                and entry.is_dir()
            ):
                found.append(int(number))
        return sorted(found)

    def open_cycle(self, cycle_id: int) -> Path:
        """Create the directory of a cycle about to be sealed, durably."""
        directory = self.path(cycle_id)
        filesystem.make_directory_durably(directory)
        return directory

    def record_cut(self, record: CutRecord) -> None:
        """Write the cut record of a cycle whose every disk is sealed, durably."""
        path = safe_child(self.path(record.cycle_id), CUT_RECORD)
        durable_file.write_file_atomically(path, record.to_bytes())

    def cut_record(
        self, cycle_id: int, disks: Iterable[str] | None = None
    ) -> CutRecord | None:
        """The cut record of ``cycle_id``, or None when its cut was interrupted.

        With ``disks``, a record naming other disks is damaged (:class:`CorruptRecord`).
        """
        path = safe_child(self.path(cycle_id), CUT_RECORD)
        if not path.exists():
            return None
        record = CutRecord.load(path, cycle_id)
        if disks is not None and set(record.last_sequences) != set(disks):
            msg = f"cut record {str(path)!r} names disks "
            msg += f"{sorted(record.last_sequences)}, not the VM's {sorted(disks)}"
            raise CorruptRecord(msg)
        return record

    def damaged_records(self, disks: Iterable[str]) -> list[str]:
        """Why each waiting cycle whose cut record cannot be trusted is damaged
        (unreadable, malformed, or naming other disks than ``disks``)."""
        expected = sorted(disks)
        problems = []
        for cycle_id in self.waiting():
            try:
                self.cut_record(cycle_id, expected)
            except CorruptRecord as damage:
                problems.append(str(damage))
        return problems

    def waiting_log_bytes(self, disks: Iterable[str]) -> int:
        """The file bytes of every waiting cycle's sealed logs: what shipping them
        sends (``CycleReport.bytes_shipped`` counts the same files). A cycle removed
        while this reads (applied meanwhile) counts for nothing."""
        total = 0
        for cycle_id in self.waiting():
            for path in self.logs(cycle_id, disks).values():
                try:
                    total += path.stat().st_size
                except FileNotFoundError:
                    continue
        return total

    def remove(self, cycle_id: int) -> None:
        """Delete one cycle (applied, or never complete), durably."""
        filesystem.remove_tree_durably(self.path(cycle_id))

    def discard(self) -> None:
        """Drop every waiting cycle (superseded by a resynchronisation or a disable)."""
        for cycle_id in self.waiting():
            self.remove(cycle_id)
