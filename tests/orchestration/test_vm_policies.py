"""Per-VM replication policies (``[replication.vm.NAME]`` in ``hvdr.toml``): each VM
replicates and is judged at its own frequency; a key left out is ``[replication]``'s;
a mistake names the file, the line and what is allowed. Real files, a real engine on
an injected clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.errors import InvalidConfiguration
from engine.orchestration.health import Health
from engine.orchestration.orchestrator import Orchestrator
from engine.orchestration.site_config import load_orchestrator_config
from engine.testing import ManualClock

BASE = """\
[orchestrator]
state = "state"

[replication]
frequency_seconds = 300
additional_recovery_points = 4
app_consistent_hours = 4

[sites.primary]
storage = "primary"

[sites.secondary]
storage = "secondary"
"""


def write_config(folder: Path, extra: str = "") -> Path:
    path = folder / "hvdr.toml"
    path.write_text(BASE + extra, encoding="utf-8")
    return path


def test_a_key_left_out_is_the_default_policy(tmp_path: Path) -> None:
    config = load_orchestrator_config(
        write_config(
            tmp_path,
            "\n[replication.vm.web]\nfrequency_seconds = 30\n"
            "app_consistent_hours = 0\n",
        )
    )
    web, db = config.policy_of("web"), config.policy_of("db")
    assert (web.frequency_seconds, web.additional_recovery_points) == (30, 4)
    assert web.app_consistent_hours is None  # 0: none for this VM
    assert (db.frequency_seconds, db.app_consistent_hours) == (300, 4)
    assert config.retention_count == max(
        config.recovery_points, web.retention_count, db.retention_count
    )
    assert web.retention_count > db.retention_count  # 4 hours at 30 s: more points


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (
            "\n[replication.vm.web]\nfrequency_seconds = 31\n",
            (
                "hvdr.toml, line 16: [replication.vm.web]: frequency_seconds=31 must "
                "be one of [30, 300, 900]"
            ),
        ),
        (
            "\n[replication.vm.web]\nfrequncy = 30\n",
            (
                "hvdr.toml, line 16: key 'replication.vm.web.frequncy' is unknown; "
                "[replication.vm.web] has the keys: frequency_seconds, "
                "additional_recovery_points, app_consistent_hours"
            ),
        ),
        (
            '\n[replication.vm."a/b"]\nfrequency_seconds = 30\n',
            "hvdr.toml, line 15: [replication.vm.a/b]: vm_name='a/b' is not a valid",
        ),
        (
            "\n[replication.vm]\nfrequency_seconds = 30\n",
            (
                "hvdr.toml, line 16: replication.vm.frequency_seconds=30: must be a "
                "table; it takes one table per VM, [replication.vm.NAME]"
            ),
        ),
        (
            "\n[replication.vm.web]\nadditional_recovery_points = 25\n",
            "hvdr.toml, line 16: [replication.vm.web]: additional_recovery_points=25",
        ),
    ],
    ids=["frequency", "misspelt-key", "bad-name", "not-a-table", "hours"],
)
def test_a_mistake_in_a_vm_policy_names_its_line(
    tmp_path: Path, extra: str, said: str
) -> None:
    with pytest.raises(InvalidConfiguration) as refused:
        load_orchestrator_config(write_config(tmp_path, extra))
    assert str(refused.value).startswith(str(tmp_path / said.split(",")[0]))
    assert said in str(refused.value)


def test_each_vm_replicates_and_is_judged_at_its_own_frequency(tmp_path: Path) -> None:
    """'web' at 30 s, 'db' at the default 300 s: after 60 s without a cycle 'web'
    is Warning and 'db' Normal; a round of the scheduler replicates 'web' only."""
    config = load_orchestrator_config(
        write_config(tmp_path, "\n[replication.vm.web]\nfrequency_seconds = 30\n")
    )
    clock = ManualClock(time.time())
    with Orchestrator.open(config, clock=clock) as orchestrator:
        for vm in ("db", "web"):
            orchestrator.engine.create_vm(vm, {"os": 1024 * 1024})
            orchestrator.engine.enable_protection(vm)
        assert orchestrator.schedule_all() == ("db", "web")
        clock.advance(60)
        health = {vm.name: vm for vm in orchestrator.health()}
        assert (health["web"].health, health["db"].health) == (
            Health.WARNING, Health.NORMAL,
        )  # fmt: skip
        assert "30 s" in health["web"].reason
        assert "300 s" in health["db"].reason
        cycles = orchestrator.scheduler.tick().cycles
        assert [cycle.vm for cycle in cycles] == ["web"]


def test_a_policy_for_no_vm_is_refused_by_what_schedules_or_judges(
    tmp_path: Path,
) -> None:
    """A misspelt VM name would leave its VM on the default policy unseen."""
    config = load_orchestrator_config(
        write_config(tmp_path, "\n[replication.vm.wbe]\nfrequency_seconds = 30\n")
    )
    with Orchestrator.open(config) as orchestrator:
        orchestrator.engine.create_vm("web", {"os": 1024 * 1024})
        for reading in (orchestrator.schedule_all, orchestrator.health):
            with pytest.raises(InvalidConfiguration) as refused:
                reading()
            assert "[replication.vm.wbe] names no VM (the VMs: web)" in str(
                refused.value
            )
