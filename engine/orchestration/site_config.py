"""The orchestrator's configuration: the two sites, where its own state lives, defaults.

One TOML file names everything an operator command needs (``hvdr vm``, ``hvdr plan``,
``hvdr jobs``), so that each command is one line::

    [orchestrator]
    state = "state"              # its jobs and recovery plans (a folder)
    recovery_points = 8          # optional: kept per VM (1 to 4,096); 8
    plan_workers = 4             # optional: VMs of one plan group run at once; 4

    [replication]                # optional: every VM's policy (scheduler.py)
    frequency_seconds = 300      # 30, 300 or 900; 300
    additional_recovery_points = 0   # hours of points kept, 0 to 24; 0
    app_consistent_hours = 4     # optional: an app-consistent point every N hours

    [replication.vm.sql-01]      # optional: one VM's own policy; a key left out
    frequency_seconds = 30       # is [replication]'s (app_consistent_hours = 0:
                                 # none for this VM)

    [sites.primary]
    storage = "primary"          # the site's storage root

    [sites.secondary]
    storage = "secondary"

    [sites.secondary.replica_server]     # optional: the site's replica server
    url = "https://replica.example:8443"
    certificate = "certs/primary.example.pem"
    private_key = "certs/primary.example.key"
    ca_certificate = "certs/ca.pem"

Relative paths are relative to the file. A site with a ``replica_server`` has its
replicas at that server (certificate mode, ``docs/network.md``), whose storage root is
the site's ``storage``; without one, the engine keeps them itself (in process). A
mistake is refused naming the file, the line, the key and what is allowed
(``engine.configuration_files``); nothing is created by reading the file.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.configuration_files import (
    KeyPath,
    dotted,
    first_error,
    line_of,
    read_text,
    reason,
    toml_key_lines,
    toml_syntax_error,
    where,
)
from engine.errors import InvalidConfiguration, InvalidName, InvalidPolicy
from engine.names import validate_vm_name
from engine.orchestration.scheduler import ReplicationPolicy
from engine.replica.recovery_point import RETENTION_COUNT_MAX as RETENTION_MAX

CONFIG_FILE_DEFAULT: Final = Path("hvdr.toml")
"""Where the operator commands look for their configuration unless told."""
RECOVERY_POINTS_DEFAULT: Final = 8
PLAN_WORKERS_DEFAULT: Final = 4
PLAN_WORKERS_MAX: Final = 64
_KIND: Final = "an orchestrator configuration is a TOML file (docs/operations.md)"


@dataclass(frozen=True)
class ReplicaServerConfig:
    """A site's replica server, reached over HTTPS with this primary's certificate."""

    url: str
    certificate: Path
    private_key: Path
    ca_certificate: Path


@dataclass(frozen=True)
class OrchestratorConfig:
    """What the configuration file says, paths resolved."""

    source: Path
    state: Path
    storage: Mapping[str, Path]  # site -> storage root
    replica_servers: Mapping[str, ReplicaServerConfig]
    recovery_points: int = RECOVERY_POINTS_DEFAULT
    plan_workers: int = PLAN_WORKERS_DEFAULT
    policy: ReplicationPolicy = field(default_factory=ReplicationPolicy)
    vm_policies: Mapping[str, ReplicationPolicy] = field(default_factory=dict)

    @property
    def retention_count(self) -> int:
        """The points the engine keeps per VM: ``recovery_points``, or more when
        a policy's additional hours need more."""
        policies = [self.policy, *self.vm_policies.values()]
        return max(self.recovery_points, *(p.retention_count for p in policies))

    def policy_of(self, vm: str) -> ReplicationPolicy:
        """``vm``'s policy: its ``[replication.vm.NAME]``, else ``[replication]``."""
        return self.vm_policies.get(vm, self.policy)

    def check_vm_names(self, names: tuple[str, ...]) -> None:
        """Refuse a ``[replication.vm.NAME]`` that names none of the VMs ``names``
        (a misspelt name would leave its VM on the default policy unseen)."""
        unknown = sorted(set(self.vm_policies) - set(names))
        if unknown:
            have = ", ".join(names) or "none yet"
            msg = f"{self.source}: [replication.vm.{unknown[0]}] names no VM "
            msg += f"(the VMs: {have}); remove the table or create the VM first"
            raise InvalidConfiguration(msg)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _Server(_Strict):
    url: str
    certificate: str
    private_key: str
    ca_certificate: str


class _Site(_Strict):
    storage: str
    replica_server: _Server | None = None


class _Sites(_Strict):
    primary: _Site
    secondary: _Site


class _Orchestrator(_Strict):
    state: str
    recovery_points: Annotated[int, Field(ge=1, le=RETENTION_MAX)] = (
        RECOVERY_POINTS_DEFAULT
    )
    plan_workers: Annotated[int, Field(ge=1, le=PLAN_WORKERS_MAX)] = (
        PLAN_WORKERS_DEFAULT
    )


class _VmReplication(_Strict):
    frequency_seconds: int | None = None
    additional_recovery_points: int | None = None
    app_consistent_hours: int | None = None


class _Replication(_Strict):
    frequency_seconds: int = 300
    additional_recovery_points: int = 0
    app_consistent_hours: int | None = None
    vm: dict[str, _VmReplication] = Field(default_factory=dict)


class _Schema(_Strict):
    orchestrator: _Orchestrator
    sites: _Sites
    replication: _Replication = _Replication()


_TABLES: Final[Mapping[tuple[str, ...], type[BaseModel]]] = {
    (): _Schema,
    ("orchestrator",): _Orchestrator,
    ("replication",): _Replication,
    ("replication", "vm", "*"): _VmReplication,
    ("sites",): _Sites,
    ("sites", "primary"): _Site,
    ("sites", "secondary"): _Site,
    ("sites", "primary", "replica_server"): _Server,
    ("sites", "secondary", "replica_server"): _Server,
}

#: A key holding tables of its own, as the keys list of its table says it.
_NESTED: Final[Mapping[tuple[str, ...], str]] = {
    ("replication", "vm"): "[replication.vm.NAME] tables",
}

_EXPECTED: Final[Mapping[tuple[str, ...], str]] = {
    ("orchestrator",): "a table: state, and optionally recovery_points, plan_workers",
    ("orchestrator", "state"): "a folder for the jobs and plans (a string)",
    ("orchestrator", "recovery_points"): f"an integer from 1 to {RETENTION_MAX}",
    ("orchestrator", "plan_workers"): f"an integer from 1 to {PLAN_WORKERS_MAX}",
    ("sites",): "a table with [sites.primary] and [sites.secondary]",
    ("replication",): "a table: frequency_seconds, additional_recovery_points, "
    "app_consistent_hours (each optional), and [replication.vm.NAME] tables",
    ("replication", "vm"): "tables [replication.vm.NAME], one per VM",
    ("replication", "vm", "*"): "one table per VM, [replication.vm.NAME], of "
    "frequency_seconds, additional_recovery_points, app_consistent_hours (each "
    "optional)",
    ("replication", "vm", "*", "frequency_seconds"): "30, 300 or 900",
    ("replication", "vm", "*", "additional_recovery_points"): "an integer from 0 to 24",
    ("replication", "vm", "*", "app_consistent_hours"): (
        "an integer from 1 to 12, or 0 for none"
    ),
    ("replication", "frequency_seconds"): "30, 300 or 900",
    ("replication", "additional_recovery_points"): "an integer from 0 to 24",
    ("replication", "app_consistent_hours"): "an integer from 1 to 12",
    ("sites", "*"): "a table: storage, and optionally [replica_server]",
    ("sites", "*", "storage"): "the site's storage root (a folder, a string)",
    ("sites", "*", "replica_server"): (
        "a table: url, certificate, private_key, ca_certificate"
    ),
    ("sites", "*", "replica_server", "url"): "https://HOST:PORT (a string)",
    ("sites", "*", "replica_server", "certificate"): "a PEM file (a string)",
    ("sites", "*", "replica_server", "private_key"): "a PEM file (a string)",
    ("sites", "*", "replica_server", "ca_certificate"): "a PEM file (a string)",
}


def load_orchestrator_config(path: Path) -> OrchestratorConfig:
    """Read and check the orchestrator configuration in TOML file ``path``.

    Raises InvalidConfiguration naming the file, the line, the key and what is
    allowed; nothing is created or changed.
    """
    path = Path(path)
    text = read_text(path, kind=_KIND)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidConfiguration(toml_syntax_error(path, error)) from None
    lines = toml_key_lines(text)
    try:
        schema = _Schema.model_validate(data)
    except ValidationError as error:
        key, message = _explain(error)
        msg = f"{where(path, line_of(lines, key))}: {message}"
        raise InvalidConfiguration(msg) from None
    folder = path.resolve().parent
    _check_paths(path, lines, schema)
    storage = {
        "primary": folder / schema.sites.primary.storage,
        "secondary": folder / schema.sites.secondary.storage,
    }
    _check_apart(
        path,
        lines,
        {
            ("orchestrator", "state"): folder / schema.orchestrator.state,
            ("sites", "primary", "storage"): storage["primary"],
            ("sites", "secondary", "storage"): storage["secondary"],
        },
    )
    servers = {}
    for name, site in (
        ("primary", schema.sites.primary),
        ("secondary", schema.sites.secondary),
    ):
        if site.replica_server is not None:
            server = site.replica_server
            if not re.fullmatch(r"https://[^/\s]+", server.url.rstrip("/")):
                key = ("sites", name, "replica_server", "url")
                msg = f"{where(path, line_of(lines, key))}: {dotted(key)}="
                msg += f"{json.dumps(server.url)}: it takes https://HOST:PORT"
                raise InvalidConfiguration(msg)
            servers[name] = ReplicaServerConfig(
                url=server.url.rstrip("/"),
                certificate=folder / server.certificate,
                private_key=folder / server.private_key,
                ca_certificate=folder / server.ca_certificate,
            )
    replication = schema.replication
    policy = _policy(
        path, lines, ("replication",),
        frequency_seconds=replication.frequency_seconds,
        additional_recovery_points=replication.additional_recovery_points,
        app_consistent_hours=replication.app_consistent_hours,
    )  # fmt: skip
    vm_policies = {}
    for vm, own in replication.vm.items():
        table = ("replication", "vm", vm)
        try:
            validate_vm_name(vm)
        except InvalidName as error:
            msg = f"{where(path, line_of(lines, table))}: [{dotted(table)}]: {error}"
            raise InvalidConfiguration(msg) from None
        hours = own.app_consistent_hours
        vm_policies[vm] = _policy(
            path, lines, table,
            frequency_seconds=_or(own.frequency_seconds, policy.frequency_seconds),
            additional_recovery_points=_or(
                own.additional_recovery_points, policy.additional_recovery_points
            ),
            app_consistent_hours=(
                policy.app_consistent_hours if hours is None else (hours or None)
            ),
        )  # fmt: skip
    return OrchestratorConfig(
        source=path,
        policy=policy,
        vm_policies=vm_policies,
        state=folder / schema.orchestrator.state,
        storage=storage,
        replica_servers=servers,
        recovery_points=schema.orchestrator.recovery_points,
        plan_workers=schema.orchestrator.plan_workers,
    )


def _or(own: int | None, default: int) -> int:
    return default if own is None else own


def _policy(
    path: Path,
    lines: Mapping[KeyPath, int],
    table: KeyPath,
    *,
    frequency_seconds: int,
    additional_recovery_points: int,
    app_consistent_hours: int | None,
) -> ReplicationPolicy:
    """The policy a ``[replication]`` table says; its first problem at its key's
    line (the table's if none)."""
    try:
        return ReplicationPolicy(
            frequency_seconds=frequency_seconds,
            additional_recovery_points=additional_recovery_points,
            app_consistent_hours=app_consistent_hours,
        )
    except InvalidPolicy as error:
        said = str(error).partition("is refused: ")[2]
        found = [k for k in _VmReplication.model_fields if said.startswith(k + "=")]
        key = (*table, found[0]) if found else table
        if key not in lines:
            key = table  # a value it took from [replication]
        msg = f"{where(path, line_of(lines, key))}: [{dotted(table)}]: {said or error}"
        raise InvalidConfiguration(msg) from None


def _check_paths(path: Path, lines: Mapping[KeyPath, int], schema: _Schema) -> None:
    """Every path of the file non-empty and without NUL (no file system takes one)."""
    keys: list[tuple[KeyPath, str]] = [
        (("orchestrator", "state"), schema.orchestrator.state)
    ]
    for name, site in (
        ("primary", schema.sites.primary),
        ("secondary", schema.sites.secondary),
    ):
        keys.append((("sites", name, "storage"), site.storage))
        if site.replica_server is not None:
            server = site.replica_server
            for column in ("certificate", "private_key", "ca_certificate"):
                value = getattr(server, column)
                keys.append((("sites", name, "replica_server", column), value))
    for key, value in keys:
        if not value.strip() or "\0" in value:
            problem = "is empty" if not value.strip() else "holds a NUL character"
            msg = f"{where(path, line_of(lines, key))}: {dotted(key)}="
            msg += f"{json.dumps(value)} {problem}; it takes "
            msg += f"{_EXPECTED.get(_generic(key), 'a path')}"
            raise InvalidConfiguration(msg)


def _check_apart(
    path: Path, lines: Mapping[KeyPath, int], folders: Mapping[KeyPath, Path]
) -> None:
    """The orchestrator's state and each site's storage: three folders, none inside
    another (a site's crash recovery or a disable would meet the other's files)."""
    resolved = {key: folder.resolve() for key, folder in folders.items()}
    for key, folder in resolved.items():
        for other, other_folder in resolved.items():
            if key == other or not folder.is_relative_to(other_folder):
                continue
            relation = "is" if folder == other_folder else "is inside"
            msg = f"{where(path, line_of(lines, key))}: {dotted(key)} "
            msg += f"({str(folder)!r}) {relation} {dotted(other)} "
            msg += f"({str(other_folder)!r}): the orchestrator's state and each "
            msg += "site's storage are separate folders, none inside another"
            raise InvalidConfiguration(msg)


def _generic(path: KeyPath) -> tuple[str, ...]:
    """A key path with the site's name as ``*`` (both sites take the same keys), and
    a VM's name in ``[replication.vm.NAME]`` too."""
    parts = [str(part) for part in path]
    if len(parts) >= 2 and parts[0] == "sites" and parts[1] in ("primary", "secondary"):
        parts[1] = "*"
    if len(parts) >= 3 and parts[:2] == ["replication", "vm"]:
        parts[2] = "*"
    return tuple(parts)


def _explain(error: ValidationError) -> tuple[KeyPath, str]:
    """The first of pydantic's errors, in the project's words, and where it is."""
    details = first_error(error)
    path: KeyPath = tuple(details["loc"])
    if details["type"] == "extra_forbidden":
        table = _generic(path[:-1])
        fields = _TABLES[table].model_fields if table in _TABLES else {}
        known = ", ".join(_NESTED.get((*table, name), name) for name in fields)
        where_in = f"[{dotted(path[:-1])}]" if path[:-1] else "the file"
        msg = f"key {dotted(path)!r} is unknown; {where_in} has the keys: {known}"
        return path, msg
    expected = _EXPECTED.get(_generic(path), "another value")
    if details["type"] == "missing":
        return path, f"{dotted(path)} is missing; it takes {expected}"
    cause = "must be a table" if details["type"] == "model_type" else reason(details)
    value = json.dumps(details.get("input"), default=str)
    return path, f"{dotted(path)}={value}: {cause}; it takes {expected}"
