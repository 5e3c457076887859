"""The orchestrator's VM jobs when their record cannot be written: the operator is
told what the engine did, never "nothing changed" about an operation that ran."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from small_filesystem import mounted

from engine.errors import ReplicationError, StorageFull
from engine.orchestration.health import Health
from engine.orchestration.job_records import JobState
from engine.orchestration.jobs import CTRL_C_REASON, INTERRUPTED_REASON, JobStore
from engine.orchestration.orchestrator import STOPPED_COPY, Orchestrator
from engine.orchestration.site_config import load_orchestrator_config


def write_config(
    folder: Path, *, state: Path | str = "state", secondary: Path | str = "secondary"
) -> Path:
    """An orchestrator configuration in ``folder``: its state folder and the
    secondary site's storage as given, the primary's in ``primary``."""
    path = folder / "hvdr.toml"
    path.write_text(
        f'[orchestrator]\nstate = "{state}"\n\n'
        '[sites.primary]\nstorage = "primary"\n\n'
        f'[sites.secondary]\nstorage = "{secondary}"\n',
        encoding="utf-8",
    )
    return path


def test_an_operation_done_whose_job_cannot_record_it_says_it_was_done(
    tmp_path: Path,
) -> None:
    """Found by the outside review: the job store's disk full after the engine's
    step made the operator read "nothing changed: free space and retry" although
    the VM had been committed. The error now says the operation itself was done
    and only its record is missing; after space is freed the job reads interrupted,
    and the next open says why without blaming a stopped process alone."""
    with mounted(tmp_path / "small") as small:
        config = load_orchestrator_config(
            write_config(tmp_path, state=small.root / "state")
        )
        with Orchestrator.open(config) as orchestrator:
            engine = orchestrator.engine
            engine.create_vm("web", {"os": 65536})
            orchestrator.run("enable", "web")
            orchestrator.run("unplanned_failover", "web", point="latest")
            real_commit = engine.commit

            def commit_then_fill(vm: str) -> object:
                report = real_commit(vm)
                small.fill()  # the job store's disk fills once the commit is done
                return report

            engine.commit = commit_then_fill  # type: ignore[method-assign,assignment]
            with pytest.raises(StorageFull) as full:
                orchestrator.run("commit", "web")
            said = " ".join([str(full.value), *full.value.__notes__])
            assert "nothing changed" not in said
            assert "commit of 'web' itself was done" in said
            assert engine.status("web").phase == "committed"
        small.free()
        with Orchestrator.open(config) as reopened:
            job = reopened.jobs.jobs()[-1]
            assert (job.kind, job.state) == ("commit", JobState.INTERRUPTED)
            assert job.error is not None
            assert job.error.startswith(INTERRUPTED_REASON)
            assert "could not write the job store" in job.error


def test_an_enable_stopped_by_a_full_target_resumes_as_its_initial_copy(
    tmp_path: Path,
) -> None:
    """Found by the outside review: `jobs resume` of an enable that failed half-way
    was refused ('enable_protection is allowed only from: unprotected'), the job
    failed for good. Resuming it now goes on with the initial copy."""
    data = os.urandom(2 * 1024 * 1024)
    with mounted(tmp_path / "small") as small:
        config = load_orchestrator_config(
            write_config(tmp_path, secondary=small.root / "secondary")
        )
        with Orchestrator.open(config) as orchestrator:
            engine = orchestrator.engine
            engine.create_vm("web", {"os": len(data)})
            engine.write("web", "os", 0, data)
            small.fill()
            small.free_some(768 * 1024)  # room for its state, not for the copy
            with pytest.raises(ReplicationError):
                orchestrator.run("enable", "web")
            (failed,) = orchestrator.jobs.jobs()
            assert failed.state is JobState.FAILED
            assert engine.status("web").phase == "initial_replication"
            (stopped,) = orchestrator.health()  # no job copies: not "in progress"
            assert (stopped.health, stopped.reason) == (Health.WARNING, STOPPED_COPY)
            small.free()
            resumed = orchestrator.resume(failed.job_id)
            assert resumed.state is JobState.SUCCEEDED
            assert engine.status("web").phase == "protected"
            orchestrator.run("planned_failover", "web")
            assert engine.read("web", "os", 0, len(data)) == data


def test_a_prepared_planned_failover_goes_on_when_asked_again(tmp_path: Path) -> None:
    """Found by the outside review: after `--prepare-only`, a second planned
    failover was refused ('allowed now: failover'), and no command ran the
    second half; it now does, Start-VMFailover after Start-VMFailover -Prepare."""
    with Orchestrator.open(
        load_orchestrator_config(write_config(tmp_path))
    ) as orchestrator:
        orchestrator.engine.create_vm("web", {"os": 65536})
        orchestrator.run("enable", "web")
        orchestrator.run("planned_failover", "web", prepare_only=True)
        assert orchestrator.engine.status("web").phase == "failover_prepared"
        with pytest.raises(ReplicationError) as again:
            orchestrator.run("planned_failover", "web", prepare_only=True)
        assert "in phase failover_prepared" in str(again.value)
        job, _ = orchestrator.run("planned_failover", "web")
        assert job.state is JobState.SUCCEEDED
        assert orchestrator.engine.status("web").phase == "failed_over"


def test_ctrl_c_under_a_job_is_recorded_as_ctrl_c(tmp_path: Path) -> None:
    """Found by the outside review: a job Ctrl-C stopped read 'the job store was
    closed while this job was running'. A real SIGINT arrives during the cycle."""
    config = load_orchestrator_config(write_config(tmp_path))
    orchestrator = Orchestrator.open(config)
    engine = orchestrator.engine
    engine.create_vm("web", {"os": 65536})
    orchestrator.run("enable", "web")

    def replicate_under_ctrl_c(vm: str, **_: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)  # the interrupt ends this wait

    engine.replicate = replicate_under_ctrl_c  # type: ignore[method-assign]

    def replicate_then_close() -> None:
        with orchestrator:  # the interrupt leaves through its exit, as in hvdr vm
            orchestrator.run("replicate", "web")

    with pytest.raises(KeyboardInterrupt):
        replicate_then_close()
    with JobStore.read(config.state / "jobs.sqlite") as store:
        job = store.jobs()[-1]
    assert (job.kind, job.state) == ("replicate", JobState.INTERRUPTED)
    assert job.error is not None
    assert job.error.startswith(CTRL_C_REASON)
