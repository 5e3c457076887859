"""The orchestrator: the vault's role over one engine, every operation a durable job.

:class:`Orchestrator` opens what a configuration file names
(``site_config.OrchestratorConfig``): the two sites' storage through a
:class:`~engine.orchestration.engine.ReplicationEngine` (a site's replica server when
the file names one), the job store (``<state>/jobs.sqlite``) and the recovery plans
(``<state>/plans.json``). Every VM operation it runs (:data:`VM_OPERATIONS`) is a job
of one step: recorded ``running`` before the engine is called, then ``succeeded`` or
``failed`` with the engine's error, which is raised to the caller unchanged (with a
note naming the job). The engine asks the model; a refusal is the model's message,
recorded as the job's error. A plan runs through the plan runner
(``plan_runner.py``), as one job of many steps.

**Resume** takes a failed or interrupted job up again, the same job: a plan job skips
every step it finished; a VM job runs its operation again with the arguments it
recorded (each engine operation is idempotent or finished by the engine's own crash
recovery at open, so running it again is how it completes).

**One process at a time** owns a configuration's sites and job store: a second is
refused naming the first (the sites' and the job store's locks).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType, TracebackType
from typing import Final, NoReturn, Self

from engine.clock import SystemClock, WaitingClock
from engine.errors import (
    InvalidConfiguration,
    InvalidPlan,
    ReplicationError,
    StorageFull,
)
from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.health import Health, VmHealth, health_of_all
from engine.orchestration.job_records import PLAN_KIND_PREFIX, Job, JobKind, JobState
from engine.orchestration.jobs import CLOSED_REASON, CTRL_C_REASON, JobStore
from engine.orchestration.plan_runner import PlanRunner
from engine.orchestration.recovery_plans import RecoveryPlan
from engine.orchestration.scheduler import Scheduler
from engine.orchestration.site_config import OrchestratorConfig
from engine.storage import durable_file
from engine.storage import files as filesystem
from engine.storage.disk import storage_error
from engine.transport.interface import ReplicaTarget

JOBS_FILE: Final = "jobs.sqlite"
PLANS_FILE: Final = "plans.json"
PROGRESS_STEP: Final = 0.01
"""A job's progress is recorded each time it moves on by this fraction (or ends)."""

Arguments = Mapping[str, object]


@dataclass(frozen=True)
class VmOperation:
    """An operation on one VM: its job kind and how the engine runs it."""

    kind: JobKind
    run: Callable[[ReplicationEngine, str, Arguments, Callable[..., None]], object]


STOPPED_COPY: Final = (
    "the initial copy stopped before it ended (a failure, a kill, a restart) and no "
    "job is copying: resume its job, or run initial replication, to go on"
)
"""The health reason of a VM in initial replication that no running job copies."""


def _point(arguments: Arguments, default: object = None) -> object:
    return arguments.get("point", default)


def _planned_failover(
    engine: ReplicationEngine, vm: str, arguments: Arguments, _: Callable[..., None]
) -> object:
    """Start-VMFailover after Start-VMFailover -Prepare: a VM prepared already (by
    ``--prepare-only``, or a plan or a job stopped there) goes on with the second
    half; the model decides whether it may, as for the first."""
    prepare_only = bool(arguments.get("prepare_only", False))
    if not prepare_only and engine.status(vm).phase == "failover_prepared":
        return engine.failover(vm)
    return engine.planned_failover(vm, then_fail_over=not prepare_only)


VM_OPERATIONS: Final[Mapping[str, VmOperation]] = MappingProxyType(
    {
        "enable": VmOperation(
            JobKind.ENABLE, lambda e, vm, a, p: e.enable_protection(vm, p)
        ),
        "initial_replication": VmOperation(
            JobKind.INITIAL_REPLICATION,
            lambda e, vm, a, p: e.continue_initial_replication(vm, p),
        ),
        "replicate": VmOperation(
            JobKind.REPLICATE,
            lambda e, vm, a, p: e.replicate(
                vm, app_consistent=bool(a.get("app_consistent", False))
            ),
        ),
        "suspend": VmOperation(JobKind.SUSPEND, lambda e, vm, a, p: e.pause(vm)),
        "resume": VmOperation(JobKind.RESUME, lambda e, vm, a, p: e.resume(vm)),
        "resynchronize": VmOperation(
            JobKind.RESYNCHRONIZE, lambda e, vm, a, p: e.resynchronize(vm, p)
        ),
        "test_failover": VmOperation(
            JobKind.TEST_FAILOVER,
            lambda e, vm, a, p: e.start_test_failover(vm, _point(a)),  # type: ignore[arg-type]
        ),
        "cleanup_test_failover": VmOperation(
            JobKind.CLEANUP_TEST_FAILOVER,
            lambda e, vm, a, p: e.cleanup_test_failover(vm),
        ),
        "planned_failover": VmOperation(JobKind.PLANNED_FAILOVER, _planned_failover),
        "unplanned_failover": VmOperation(
            JobKind.UNPLANNED_FAILOVER,
            lambda e, vm, a, p: e.unplanned_failover(
                vm,
                _point(a, "latest"),  # type: ignore[arg-type]
                shut_down_first=bool(a.get("shut_down_first", False)),
            ),
        ),
        "complete_failover": VmOperation(
            JobKind.COMPLETE_FAILOVER, lambda e, vm, a, p: e.complete_failover(vm)
        ),
        "change_recovery_point": VmOperation(
            JobKind.CHANGE_RECOVERY_POINT,
            lambda e, vm, a, p: e.change_recovery_point(vm, _point(a)),  # type: ignore[arg-type]
        ),
        "commit": VmOperation(JobKind.COMMIT, lambda e, vm, a, p: e.commit(vm)),
        "cancel": VmOperation(
            JobKind.CANCEL, lambda e, vm, a, p: e.cancel_failover(vm)
        ),
        "reverse_replication": VmOperation(
            JobKind.REVERSE_REPLICATION,
            lambda e, vm, a, p: e.reverse_replication(vm),
        ),
        "disable": VmOperation(JobKind.DISABLE, lambda e, vm, a, p: e.disable(vm)),
    }
)
"""Every VM operation the orchestrator runs as a job, by name."""


class Orchestrator:
    """Both sites, the job store and the recovery plans of one configuration."""

    def __init__(
        self,
        config: OrchestratorConfig,
        engine: ReplicationEngine,
        jobs: JobStore,
        clock: WaitingClock,
    ) -> None:
        """Use :meth:`open`."""
        self.config = config
        self.engine = engine
        self.jobs = jobs
        self.clock = clock
        self._plans_path = config.state / PLANS_FILE
        self.scheduler = Scheduler(engine, clock)

    # -- replication on a timer, and health ------------------------------------------

    def schedule_all(self) -> tuple[str, ...]:
        """Give every VM its policy (``[replication.vm.NAME]``, else
        ``[replication]``); the VMs. A policy naming no VM is refused."""
        names = self.engine.vm_names()
        self.config.check_vm_names(names)
        for vm in names:
            self.scheduler.set_policy(vm, self.config.policy_of(vm))
        return names

    def health(self) -> tuple[VmHealth, ...]:
        """Every VM's health under the configuration's policy, now."""
        names = self.engine.vm_names()
        self.config.check_vm_names(names)
        policies = {vm: self.config.policy_of(vm) for vm in names}
        found = health_of_all(
            self.engine, policies, self.clock, records=self.scheduler.records()
        )
        running = {job.target for job in self.jobs.jobs(JobState.RUNNING)}
        return tuple(
            replace(vm, health=Health.WARNING, reason=STOPPED_COPY)
            if vm.phase == "initial_replication" and vm.name not in running
            else vm
            for vm in found
        )

    @classmethod
    def open(
        cls,
        config: OrchestratorConfig,
        *,
        clock: WaitingClock | None = None,
        replica_servers: Mapping[str, ReplicaTarget] | None = None,
    ) -> Self:
        """Own the configuration's sites and job store (created when missing).
        ``replica_servers`` overrides the file's (tests); by default each site with
        a ``replica_server`` in the file is reached over HTTPS."""
        clock = clock or SystemClock()
        _make_state_folder(config)
        jobs = JobStore.open(config.state / JOBS_FILE, clock=clock)
        try:
            servers = (
                dict(replica_servers)
                if replica_servers is not None
                else _servers(config)
            )
            engine = ReplicationEngine.open(
                config.storage["primary"],
                config.storage["secondary"],
                clock=clock,
                retention_count=config.retention_count,
                replica_servers=servers or None,
            )
        except BaseException:
            jobs.close()
            raise
        return cls(config, engine, jobs, clock)

    def close(self, reason: str = CLOSED_REASON) -> None:
        """Close the engine and the job store (a job still running is marked
        interrupted by the store, with ``reason``)."""
        try:
            self.engine.close()
        finally:
            self.jobs.close(reason)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Ctrl-C under a job: its record says so, not that the store was closed.
        interrupted = isinstance(exc, KeyboardInterrupt)
        self.close(CTRL_C_REASON if interrupted else CLOSED_REASON)

    # -- VM operations -----------------------------------------------------------------

    def run(self, operation: str, vm: str, **arguments: object) -> tuple[Job, object]:
        """Run ``operation`` (a name of :data:`VM_OPERATIONS`) on ``vm`` as a job;
        return the finished job and what the engine returned. An engine error is
        raised as it is, after the job recorded it (a note names the job)."""
        found = _operation(operation)
        self.engine.vm(vm)  # an unknown VM: refused before any job is recorded
        record = {"operation": operation, "arguments": dict(arguments)}
        job = self.jobs.start(found.kind, vm, record)
        return self._execute(job.job_id, found, vm, arguments)

    def _execute(
        self, job_id: int, found: VmOperation, vm: str, arguments: Arguments
    ) -> tuple[Job, object]:
        index = self.jobs.begin_step(job_id, found.kind.value, vm=vm)
        progress = _Progress(self.jobs, job_id, self.engine.disk_sizes(vm))
        what = f"{found.kind.value} of {vm!r}"
        try:
            result = found.run(self.engine, vm, arguments, progress)
        except ReplicationError as error:
            try:
                self.jobs.fail_step(job_id, index, str(error))
                self.jobs.fail(job_id, str(error))
            except ReplicationError as unrecorded:
                error.add_note(
                    f"job {job_id} ({what}) could not record this failure "
                    f"({unrecorded}); it reads interrupted once the orchestrator "
                    "opens again"
                )
            else:
                error.add_note(f"job {job_id} ({what}) failed")
            raise
        try:
            self.jobs.succeed_step(job_id, index)
            return self.jobs.succeed(job_id), result
        except ReplicationError as unrecorded:
            # The engine's step is done and durable; only its record is missing.
            unrecorded.add_note(
                f"{what} itself was done (the VM's status shows where it stands); "
                f"only job {job_id} could not record its end: it reads interrupted "
                "once the orchestrator opens again, then abandon it"
            )
            raise

    def resume(self, job_id: int) -> Job:
        """Take failed or interrupted job ``job_id`` up again (see the module)."""
        job = self.jobs.job(job_id)
        if job.kind.startswith(PLAN_KIND_PREFIX):
            return self._runner().resume(job_id)
        operation, arguments = job.params.get("operation"), job.params.get("arguments")
        if not isinstance(operation, str) or not isinstance(arguments, Mapping):
            msg = f"job {job_id} records no operation to run again (parameters "
            msg += f"{job.params_json[:200]})"
            raise InvalidConfiguration(msg)
        if operation == "enable" and (
            self.engine.status(job.target).phase == "initial_replication"
        ):
            # Enabled already, its copy stopped (a failure, a kill): resuming the
            # job goes on with the copy, as Start-VMInitialReplication would.
            operation = "initial_replication"
        found = _operation(operation)
        self.jobs.resume(job_id)
        return self._execute(job_id, found, job.target, arguments)[0]

    def abandon(self, job_id: int, reason: str) -> Job:
        """Give up failed or interrupted job ``job_id``, saying why."""
        return self.jobs.abandon(job_id, reason)

    # -- recovery plans ----------------------------------------------------------------

    def create_plan(
        self, name: str, groups: list[list[str]], *, replace: bool = False
    ) -> RecoveryPlan:
        """Define plan ``name`` (groups of VM names, run in order) and keep it.
        Refused when a VM is unknown, or the plan exists and ``replace`` is false."""
        plan = RecoveryPlan.define(name, groups)
        known = set(self.engine.vm_names())
        unknown = [vm for vm in plan.vm_names if vm not in known]
        if unknown:
            msg = f"plan {name!r}: unknown VM(s) {unknown}; the VMs of these sites: "
            msg += f"{sorted(known)}"
            raise InvalidPlan(msg)
        plans = self._read_plans()
        if name in plans and not replace:
            msg = f"plan {name!r} exists already (its groups: "
            msg += f"{[list(group) for group in plans[name].groups]}); replace it "
            msg += "explicitly (replace=True; hvdr plan create --replace), or choose "
            msg += "another name"
            raise InvalidPlan(msg)
        plans[name] = plan
        self._write_plans(plans)
        return plan

    def plan(self, name: str) -> RecoveryPlan:
        """The plan named ``name``."""
        plans = self._read_plans()
        if name not in plans:
            msg = f"no recovery plan {name!r}; the plans: {sorted(plans) or 'none yet'}"
            raise InvalidPlan(msg)
        return plans[name]

    def plans(self) -> tuple[RecoveryPlan, ...]:
        """Every plan, by name."""
        found = self._read_plans()
        return tuple(found[name] for name in sorted(found))

    def run_plan(self, name: str, operation: str) -> Job:
        """Run ``operation`` over plan ``name`` as one job (``plan_runner.py``)."""
        return self._runner().run(self.plan(name), operation)

    def _runner(self) -> PlanRunner:
        return PlanRunner(self.engine, self.jobs, max_workers=self.config.plan_workers)

    def _read_plans(self) -> dict[str, RecoveryPlan]:
        """The plans file's plans by name; a file that is not what
        :meth:`_write_plans` writes is refused, left as it is."""
        try:
            data = self._plans_path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            self._damaged_plans(f"it cannot be read: {error.strerror or error}")
        try:
            found = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            self._damaged_plans("it is not UTF-8 text")
        except ValueError as error:
            self._damaged_plans(f"it is not JSON: {error}")
        rows = found.get("plans") if isinstance(found, dict) else None
        if not isinstance(rows, list):
            self._damaged_plans('it must be one JSON object {"plans": [...]}')
        plans: dict[str, RecoveryPlan] = {}
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                self._damaged_plans(f"its plan {number} is not a JSON object")
            try:
                plan = RecoveryPlan.from_json(row)
            except (InvalidConfiguration, TypeError, ValueError) as error:
                self._damaged_plans(f"its plan {number}: {error}")
            if plan.name in plans:
                self._damaged_plans(f"plan {plan.name!r} is in it twice")
            plans[plan.name] = plan
        return plans

    def _damaged_plans(self, what: str) -> NoReturn:
        msg = f"{str(self._plans_path)!r}: the recovery plans file is damaged "
        msg += f"({what}); it was left as it is: restore it from a backup, or move "
        msg += "it away to start with no plans"
        raise InvalidConfiguration(msg) from None

    def _write_plans(self, plans: Mapping[str, RecoveryPlan]) -> None:
        rows = [plans[name].to_json() for name in sorted(plans)]
        text = json.dumps({"plans": rows}, indent=2) + "\n"
        durable_file.write_file_atomically(self._plans_path, text.encode())


class _Progress:
    """A job's progress from the engine's (disk, done, total) reports, recorded each
    time it moves on by :data:`PROGRESS_STEP` of the VM's bytes (or ends)."""

    def __init__(self, jobs: JobStore, job_id: int, disks: Mapping[str, int]) -> None:
        self._jobs = jobs
        self._job_id = job_id
        self._done = dict.fromkeys(disks, 0)
        self._total = sum(disks.values())
        self._recorded = -1.0

    def __call__(self, disk: str, done: int, total: int) -> None:
        self._done[disk] = min(done, total)
        done_all = sum(self._done.values())
        fraction = done_all / self._total if self._total else 1.0
        if fraction - self._recorded >= PROGRESS_STEP or done_all == self._total:
            self._recorded = fraction
            self._jobs.set_progress(self._job_id, done_all, self._total)


def _operation(name: str) -> VmOperation:
    found = VM_OPERATIONS.get(name)
    if found is None:
        msg = f"operation={name!r} is not one the orchestrator runs; it runs: "
        msg += ", ".join(VM_OPERATIONS)
        raise InvalidConfiguration(msg)
    return found


def _make_state_folder(config: OrchestratorConfig) -> None:
    """The state folder, created when missing; a clear error when it cannot be."""
    try:
        filesystem.make_directory_durably(config.state)
    except OSError as error:
        action = f"creating the orchestrator's state folder {str(config.state)!r} "
        action += f"(orchestrator.state in {str(config.source)!r})"
        found = storage_error(error, action)
        if isinstance(found, StorageFull):
            raise found from None
        msg = f"{action} failed: {error.strerror or error}; give a folder this "
        msg += "user can create and write"
        raise InvalidConfiguration(msg) from None
    if not config.state.is_dir():
        msg = f"orchestrator.state in {str(config.source)!r} names "
        msg += f"{str(config.state)!r}, which is not a folder; give a folder"
        raise InvalidConfiguration(msg)


def _servers(config: OrchestratorConfig) -> dict[str, ReplicaTarget]:
    """An HTTPS replica interface for each site whose replica server is named."""
    from engine.transport.http.client import HttpReplica  # noqa: PLC0415
    from engine.transport.http.tls import client_context  # noqa: PLC0415

    servers: dict[str, ReplicaTarget] = {}
    for site, server in config.replica_servers.items():
        context = client_context(
            server.certificate, server.private_key, server.ca_certificate
        )
        servers[site] = HttpReplica(server.url, site_name=site, ssl_context=context)
    return servers
