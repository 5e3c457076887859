"""What a VM's control row says beyond its phase: where it runs, failovers, drills.

The phase, the active site and the epoch are columns of the control row; everything
else the binding must know to map the engine onto the model (and to finish an operation
after a restart) is one JSON object beside them, decoded here into a frozen value and
checked field by field: a row damaged on disk is :class:`DamagedState`, never a
``KeyError`` later.

- ``running``: the sites where a copy of the VM runs and takes writes. Normally the
  active site; empty while a failover has shut the source down; both after a failover
  whose shutdown failed (the old copy is divergent: its writes are lost, never merged).
- ``failover_kind``, ``chosen_point_id``, ``shutdown``: the failover in progress or not
  yet followed by reverse replication (planned or unplanned, the recovery point the
  replica VM starts from, what the shutdown tried before it did).
- ``other_trusted``: the other copy is known to be the new source's starting point
  (after a planned failover), so reverse replication ships deltas only.
- ``old_site``, ``old_epoch``: the site holding the old source's copy after a failover,
  until reverse replication takes it as the new replica (or disable gives it up), and
  the epoch its change logs were started at.
- ``drill_point_id``: the recovery point an open drill's test VM started from.
- ``loss``: the loss report of the last failover (``loss_report.py``), kept until the
  next failover replaces it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Self

from engine.errors import DamagedState

KINDS = ("planned", "unplanned")


@dataclass(frozen=True)
class VmDetails:
    """The decoded details of one VM's control row."""

    running: frozenset[str] = frozenset()
    failover_kind: str | None = None
    chosen_point_id: int | None = None
    shutdown: str | None = None
    other_trusted: bool = True
    old_site: str | None = None
    old_epoch: int | None = None
    drill_point_id: int | None = None
    loss: dict[str, Any] | None = field(default=None, compare=False)

    def to_json(self) -> str:
        """The JSON object stored in the control row."""
        return json.dumps(
            {
                "running": sorted(self.running),
                "failover_kind": self.failover_kind,
                "chosen_point_id": self.chosen_point_id,
                "shutdown": self.shutdown,
                "other_trusted": self.other_trusted,
                "old_site": self.old_site,
                "old_epoch": self.old_epoch,
                "drill_point_id": self.drill_point_id,
                "loss": self.loss,
            },
            sort_keys=True,
        )

    def check(self, phase: str, active_site: str) -> VmDetails:
        """Refuse details that contradict the phase (a damaged row), naming both."""
        problems = []
        failing = ("failover_prepared", "failing_over", "failed_over")
        if phase in failing and self.failover_kind is None:
            problems.append("no failover kind")
        if phase in ("failing_over", "failed_over") and self.chosen_point_id is None:
            problems.append("no chosen recovery point")
        after = phase in ("failed_over", "committed") and self.failover_kind is not None
        if after and self.old_site is None:
            problems.append("no old source site")
        if self.old_site is not None and self.old_site == active_site:
            problems.append(f"the old source site is the active one ({active_site})")
        if problems:
            msg = f"the control row says {phase} but its details have "
            msg += f"{'; '.join(problems)}: the control file is damaged; restore it "
            msg += "from a backup"
            raise DamagedState(msg)
        return self

    @classmethod
    def from_row(cls, details: dict[str, object], *, active_site: str) -> Self:
        """Decode a row's details; a row written before details existed runs at its
        active site. Damage is :class:`DamagedState` naming the field."""
        if not details:
            return cls(running=frozenset({active_site}))
        running = details.get("running", [active_site])
        if not isinstance(running, list) or not all(
            site in ("primary", "secondary") for site in running
        ):
            _damaged("running", running)
        kind = details.get("failover_kind")
        if kind is not None and kind not in KINDS:
            _damaged("failover_kind", kind)
        loss = details.get("loss")
        if loss is not None and not isinstance(loss, dict):
            _damaged("loss", loss)
        old_site = details.get("old_site")
        if old_site is not None and old_site not in ("primary", "secondary"):
            _damaged("old_site", old_site)
        shutdown = details.get("shutdown")
        if shutdown is not None and not isinstance(shutdown, str):
            _damaged("shutdown", shutdown)
        trusted = details.get("other_trusted", True)
        if not isinstance(trusted, bool):
            _damaged("other_trusted", trusted)
        assert isinstance(running, list)
        assert shutdown is None or isinstance(shutdown, str)
        assert isinstance(trusted, bool)
        return cls(
            running=frozenset(running),
            failover_kind=kind,  # type: ignore[arg-type]
            chosen_point_id=_point_id(details, "chosen_point_id"),
            shutdown=shutdown,
            other_trusted=trusted,
            old_site=old_site,  # type: ignore[arg-type]
            old_epoch=_count(details, "old_epoch"),
            drill_point_id=_point_id(details, "drill_point_id"),
            loss=loss,  # type: ignore[arg-type]
        )

    def with_(self, **changes: Any) -> VmDetails:
        """A copy with ``changes``."""
        return replace(self, **changes)


def _count(details: dict[str, object], name: str) -> int | None:
    value = details.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        _damaged(name, value)
    return value  # type: ignore[return-value]


def _point_id(details: dict[str, object], name: str) -> int | None:
    value = details.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 1:
        _damaged(name, value)
    return value  # type: ignore[return-value]


def _damaged(name: str, value: object) -> None:
    msg = f"the control row's details field {name!r} holds {value!r}, which the engine "
    msg += "never writes: the control file is damaged; restore it from a backup"
    raise DamagedState(msg)
