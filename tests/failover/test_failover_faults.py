"""Failovers under faults: a final sync cut short, a disconnected VMM, a site down,
and bad arguments, each with a clear error and nothing changed when refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import (
    InvalidConfiguration,
    RecoveryPointNotFound,
    ReplicationError,
    TransitionNotAllowed,
)
from engine.orchestration.engine import ReplicationEngine
from engine.testing import LossyTransport

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 16 * BLOCK}


def protected(tmp_path: Path, **options: object) -> ReplicationEngine:
    engine = ReplicationEngine.open(tmp_path / "p", tmp_path / "s", **options)  # type: ignore[arg-type]
    engine.create_vm("web", DISKS)
    engine.enable_protection("web")
    return engine


def test_a_final_sync_cut_short_still_fails_over_with_an_exact_count(
    tmp_path: Path,
) -> None:
    """The link drops the final sync: the failover goes on from the newest point that
    reached the target; the stopped, reachable source says exactly what it kept."""
    lossy: list[LossyTransport] = []

    def wrap(inner: object) -> LossyTransport:
        found = LossyTransport(inner)  # type: ignore[arg-type]
        lossy.append(found)
        return found

    with protected(tmp_path, wrap_transport=wrap) as engine:
        engine.write("web", "os", 0, b"a" * BLOCK)
        engine.replicate("web")
        engine.write("web", "os", BLOCK, b"b" * BLOCK)
        engine.write("web", "data", 0, b"c" * BLOCK)
        towards_secondary = next(t for t in lossy if t.site_name == "secondary")
        towards_secondary.drops = 1
        report = engine.unplanned_failover("web", shut_down_first=True)
        assert report.shutdown == "sync_cut_short"
        assert report.phase == "failed_over"
        assert report.loss is not None
        assert report.loss.exact
        assert report.loss.writes_lost == 2
        assert report.loss.bytes_lost == 2 * BLOCK
        assert engine.read("web", "os", 0, BLOCK) == b"a" * BLOCK
        assert engine.read("web", "os", BLOCK, BLOCK) == bytes(BLOCK)


def test_a_disconnected_source_vmm_cannot_shut_the_vm_down(tmp_path: Path) -> None:
    """Decision 14: the shutdown is ordered through the source's VMM; disconnected, it
    fails, the failover goes on, and the loss is a bound (the copy still runs)."""
    with protected(tmp_path) as engine:
        engine.write("web", "os", 0, b"a" * BLOCK)
        engine.replicate("web")
        engine.disconnect_vault("primary")
        report = engine.unplanned_failover("web", shut_down_first=True)
        assert report.shutdown == "refused"
        assert report.loss is not None
        assert not report.loss.exact
        assert "still running" in report.loss.note
        assert engine.status("web").running_at == ("primary", "secondary")


def test_a_planned_failover_needs_both_sites(tmp_path: Path) -> None:
    """With the primary down the model refuses the planned failover; nothing moves."""
    with protected(tmp_path) as engine:
        engine.crash_site("primary")
        with pytest.raises(TransitionNotAllowed, match="primary"):
            engine.planned_failover("web")
        assert engine.status("web").phase == "protected"
        with pytest.raises(TransitionNotAllowed):
            engine.write("web", "os", 0, b"x" * BLOCK)  # its hosts are down
        engine.recover_site("primary")
        engine.write("web", "os", 0, b"x" * BLOCK)  # the VM restarted there
        assert engine.planned_failover("web").phase == "failed_over"


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda e: e.unplanned_failover("web", "new"), InvalidConfiguration, "latest"),
        (lambda e: e.unplanned_failover("web", True), InvalidConfiguration, "id"),
        (lambda e: e.unplanned_failover("web", 999), RecoveryPointNotFound, "999"),
        (lambda e: e.unplanned_failover("web", shut_down_first="yes"),
         InvalidConfiguration, "True or False"),
        (lambda e: e.start_test_failover("web", "1"), InvalidConfiguration, "id"),
        (lambda e: e.start_test_failover("web", 42), RecoveryPointNotFound, "42"),
        (lambda e: e.planned_failover("web", then_fail_over=1),
         InvalidConfiguration, "True or False"),
        (lambda e: e.crash_site("tertiary"), InvalidConfiguration, "sites"),
        (lambda e: e.write("web", "os", 0, b"x", site="../p"), InvalidConfiguration,
         "sites"),
        (lambda e: e.commit("web"), TransitionNotAllowed, "commit is allowed only"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_and_change_nothing(
    tmp_path: Path, call: object, error: type[Exception], words: str
) -> None:
    with protected(tmp_path) as engine:
        engine.write("web", "os", 0, b"a" * BLOCK)
        engine.replicate("web")
        before = engine.status("web")
        with pytest.raises(error, match=words):
            call(engine)  # type: ignore[operator]
        after = engine.status("web")
        assert (after.phase, after.recovery_points) == (
            before.phase, before.recovery_points,
        )  # fmt: skip


def test_a_site_recovering_twice_or_crashing_twice_is_refused(tmp_path: Path) -> None:
    with protected(tmp_path) as engine:
        with pytest.raises(InvalidConfiguration, match="already up"):
            engine.recover_site("secondary")
        engine.crash_site("secondary")
        with pytest.raises(InvalidConfiguration, match="already down"):
            engine.crash_site("secondary")
        engine.recover_site("secondary")
        assert engine.status("web").phase == "protected"


def test_with_the_link_down_the_loss_stays_a_bound_until_the_source_can_be_asked(
    tmp_path: Path,
) -> None:
    """The source is up but the link is down: at failover time, and at a reconcile,
    the target cannot ask it, so the figure stays a lower bound; once the link is
    back the exact figure comes from the source's logs."""
    with protected(tmp_path) as engine:
        engine.write("web", "os", 0, b"a" * BLOCK)
        engine.replicate("web")
        engine.write("web", "os", BLOCK, b"b" * BLOCK)
        engine.set_link(False)
        report = engine.unplanned_failover("web", shut_down_first=True)
        assert report.shutdown == "sync_cut_short"
        assert report.loss is not None
        assert not report.loss.exact
        assert "unreachable" in report.loss.note
        reconciled = engine.reconcile("web")
        assert reconciled is not None
        assert not reconciled.exact
        engine.set_link(True)
        exact = engine.reconcile("web")
        assert exact is not None
        assert exact.exact
        assert exact.writes_lost == 1


def test_a_write_through_a_stale_handle_after_close_says_the_disks_are_closed(
    tmp_path: Path,
) -> None:
    engine = protected(tmp_path)
    disks = engine.vm("web").disks
    engine.close()
    with pytest.raises(TransitionNotAllowed, match="closed"):
        disks.write("os", 0, b"x" * BLOCK)
    with pytest.raises(ReplicationError, match="closed"):
        engine.write("web", "os", 0, b"x" * BLOCK)
