"""What an outside review of the failover half found, each pinned by a test that
failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import DamagedState, TransitionNotAllowed, TransportError
from engine.orchestration.engine import ReplicationEngine
from engine.testing import LossyTransport
from engine.transport.in_process import InProcessReplica

BLOCK = 4096
DISKS = {"os": 32 * BLOCK, "data": 32 * BLOCK}


def pattern(version: int) -> bytes:
    return version.to_bytes(4, "little") * (BLOCK // 4)


def contents(engine: ReplicationEngine) -> dict[str, bytes]:
    return {disk: engine.read("web", disk, 0, size) for disk, size in DISKS.items()}


def protected(tmp_path: Path, **options: object) -> ReplicationEngine:
    engine = ReplicationEngine.open(tmp_path / "p", tmp_path / "s", **options)  # type: ignore[arg-type]
    engine.create_vm("web", DISKS)
    engine.enable_protection("web")
    return engine


@pytest.mark.parametrize("kind", ["planned", "unplanned"])
def test_a_target_that_crashed_and_recovered_gets_the_cycles_and_the_commit(
    tmp_path: Path, kind: str
) -> None:
    """Cycles after the target's recovery used the transport from before the crash:
    the catalogue the failover read was stale and commit lost the last writes."""
    with protected(tmp_path) as engine:
        engine.write("web", "os", BLOCK, pattern(1))
        engine.replicate("web")
        engine.crash_site("secondary")
        engine.recover_site("secondary")
        engine.write("web", "os", 2 * BLOCK, pattern(2))
        engine.replicate("web")
        engine.write("web", "os", 3 * BLOCK, pattern(3))
        before = contents(engine)
        if kind == "planned":
            report = engine.planned_failover("web")
        else:
            report = engine.unplanned_failover("web", shut_down_first=True)
        assert report.loss is not None
        assert report.loss.writes_lost == 0
        engine.commit("web")
        assert contents(engine) == before


def test_a_targeted_resync_retried_after_a_failed_attempt_converges(
    tmp_path: Path,
) -> None:
    """The first attempt restarted the logs, then its transfer was lost: the retry
    must not trust a candidate set that misses the writes made before the restart."""
    lossy: list[LossyTransport] = []

    def wrap(inner: object) -> LossyTransport:
        found = LossyTransport(inner)  # type: ignore[arg-type]
        lossy.append(found)
        return found

    with protected(tmp_path, wrap_transport=wrap) as engine:
        for version in (1, 2, 3):
            engine.write("web", "os", version * BLOCK, pattern(version))
        engine.replicate("web")
        engine.write("web", "os", 4 * BLOCK, pattern(4))
        engine.unplanned_failover("web")
        engine.commit("web")
        engine.write("web", "data", 7 * BLOCK, pattern(7))
        engine.write("web", "data", 8 * BLOCK, pattern(8))
        next(t for t in lossy if t.site_name == "primary").drops = 1
        with pytest.raises(TransportError):
            engine.reverse_replication("web")
        assert engine.status("web").phase == "resynchronizing"
        retry = engine.resynchronize("web")
        assert retry.full_comparison
        inner = lossy[0].inner if lossy[0].site_name == "primary" else lossy[1].inner
        assert isinstance(inner, InProcessReplica)
        replica = inner.store("web")
        assert {d: replica.read(d, 0, s) for d, s in DISKS.items()} == contents(engine)


def test_a_vm_restarts_when_both_sites_crashed_and_recovered(tmp_path: Path) -> None:
    """Primary then secondary down, then both back: the VM runs at its active site."""
    with protected(tmp_path) as engine:
        engine.write("web", "os", 0, pattern(1))
        engine.replicate("web")
        engine.crash_site("primary")
        engine.crash_site("secondary")
        engine.recover_site("primary")
        engine.recover_site("secondary")
        assert engine.status("web").running_at == ("primary",)
        engine.write("web", "os", 0, pattern(2))


def test_no_exact_figure_from_logs_the_engine_distrusts(tmp_path: Path) -> None:
    """A change log went missing (the logs are untrusted on reopen): the failover
    with a shutdown reports a bound, not an exact figure counted from those logs."""
    engine = protected(tmp_path)
    engine.write("web", "os", BLOCK, pattern(1))
    engine.replicate("web")
    engine.write("web", "os", 2 * BLOCK, pattern(2))
    engine.write("web", "data", 2 * BLOCK, pattern(3))
    engine.flush()
    engine.close()
    (tmp_path / "p" / "vms" / "web" / "os.img.hrl").unlink()
    with ReplicationEngine.open(tmp_path / "p", tmp_path / "s") as engine:
        report = engine.unplanned_failover("web", shut_down_first=True)
        assert report.loss is not None
        assert not report.loss.exact
        assert report.loss.writes_lost is None
        reconciled = engine.reconcile("web")
        assert reconciled is not None
        assert not reconciled.exact


def test_while_the_old_copy_runs_a_reconciled_figure_is_a_lower_bound(
    tmp_path: Path,
) -> None:
    """A copy left running can write more: counted, but not called exact; reverse
    replication stops it first, then the exact figure equals its writes."""
    with protected(tmp_path, guest_shutdown=lambda vm, site: False) as engine:
        engine.write("web", "os", BLOCK, pattern(1))
        engine.replicate("web")
        engine.unplanned_failover("web", shut_down_first=True)
        engine.write("web", "os", 2 * BLOCK, pattern(2), site="primary")
        running = engine.reconcile("web")
        assert running is not None
        assert not running.exact
        assert running.writes_lost_at_least == 1
        engine.write("web", "os", 3 * BLOCK, pattern(3), site="primary")
        engine.commit("web")
        final = engine.reverse_replication("web").loss
        assert final is not None
        assert final.exact
        assert final.writes_lost == 2


def test_rolling_back_over_a_resynchronisation_point_is_a_bound(tmp_path: Path) -> None:
    """A resynchronisation's point records blocks, not writes: rolling back past it
    gives a lower bound that never exceeds the writes really lost."""
    with protected(tmp_path) as engine:
        engine.write("web", "os", BLOCK, pattern(1))
        engine.replicate("web")
        older = engine.status("web").recovery_points[-1].recovery_point_id
        engine.write("web", "os", 2 * BLOCK, pattern(2))
        engine.write("web", "os", 3 * BLOCK, pattern(3))
        engine.write("web", "os", 3 * BLOCK, pattern(4))  # 3 writes, 2 blocks
        engine.resynchronize("web")
        report = engine.unplanned_failover("web", older, shut_down_first=True)
        assert report.loss is not None
        assert not report.loss.exact
        assert report.loss.writes_lost_at_least <= 3


def test_a_failover_refused_by_its_site_gives_the_models_refusal(
    tmp_path: Path,
) -> None:
    """Target down or its VMM disconnected: the model's refusal, not a KeyError."""
    with protected(tmp_path) as engine:
        engine.write("web", "os", 0, pattern(1))
        engine.replicate("web")
        engine.disconnect_vault("secondary")
        with pytest.raises(TransitionNotAllowed, match="disconnected from the vault"):
            engine.unplanned_failover("web", shut_down_first=True)
        engine.reconnect_vault("secondary")
        engine.crash_site("secondary")
        with pytest.raises(TransitionNotAllowed, match=r"secondary.*down"):
            engine.unplanned_failover("web")


def test_a_missing_replica_stops_neither_the_workload_nor_disable(
    tmp_path: Path,
) -> None:
    """The damage names disable as the way out: it works, and the VM keeps writing."""
    import shutil

    engine = protected(tmp_path)
    engine.write("web", "os", 0, pattern(1))
    engine.replicate("web")
    engine.close()
    shutil.rmtree(tmp_path / "s" / "replicas" / "web")
    with ReplicationEngine.open(tmp_path / "p", tmp_path / "s") as engine:
        with pytest.raises(DamagedState, match="missing"):
            engine.status("web")
        engine.write("web", "os", 0, pattern(2))
        engine.disable("web")
        engine.enable_protection("web")
        assert engine.status("web").phase == "protected"


def test_one_vms_damaged_details_do_not_stop_the_others(tmp_path: Path) -> None:
    import sqlite3

    engine = protected(tmp_path)
    engine.create_vm("db", DISKS)
    engine.enable_protection("db")
    engine.close()
    for site in ("p", "s"):
        with sqlite3.connect(tmp_path / site / "control.sqlite3") as connection:
            connection.execute(
                "UPDATE vm SET details_json = '{not json' WHERE name = 'web'"
            )
        connection.close()
    with ReplicationEngine.open(tmp_path / "p", tmp_path / "s") as engine:
        assert list(engine.damaged) == ["web"]
        assert engine.status("db").phase == "protected"
        assert engine.planned_failover("db").phase == "failed_over"


def test_a_cancel_while_the_source_is_down_leaves_no_logs_there(tmp_path: Path) -> None:
    with protected(tmp_path) as engine:
        engine.write("web", "os", 0, pattern(1))
        engine.replicate("web")
        engine.write("web", "os", BLOCK, pattern(2))
        engine.planned_failover("web", then_fail_over=False)
        engine.crash_site("primary")
        engine.cancel_failover("web")
        engine.recover_site("primary")
        assert engine.status("web").phase == "replication_stopped"
        assert not list((tmp_path / "p" / "vms" / "web").glob("*.hrl"))
        engine.write("web", "os", 2 * BLOCK, pattern(3))
