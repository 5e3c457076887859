"""Model configurations as JSON: one schema, one set of defaults, errors with lines.

A configuration is a JSON object whose keys are ``ModelConfig``'s fields::

    {"vm_count": 2, "fault_budget": 1, "faults": ["site_crash", "link_loss"]}

It is what a ``--config FILE`` of ``hvdr check`` and ``hvdr fuzz`` holds and what a
trace file's header carries. Every key is optional and a key left out takes the
default of ``hvdr check`` (``DEFAULT_CONFIG``), the same value its flag's default
gives: a file that says only ``{"vm_count": 1}`` is ``hvdr check --vms 1``. (Until
this module, a file took ``ModelConfig``'s own, larger defaults: thirty times the
states of the flag, and with two VMs more memory than the machine had.)

Validation is pydantic's, strict: ``"2"`` is not 2, ``true`` is not 1, ``1.0`` is
not 1, and an unknown key is refused with the list of known ones, so a misspelt key
cannot fall back to a default unnoticed. Every error is a ``ConfigurationError``
whose message names the file and the line (JSON syntax errors: where the parser
stopped; wrong values: the line of the key), the key, the value, and what is
allowed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
)

from engine.configuration_files import (
    KeyPath,
    dotted,
    first_error,
    read_text,
    reason,
)
from model import FaultKind, ModelConfig
from model.plans import OPERATIONS as PLAN_OPERATIONS
from model.state import RecoveryPlan

#: The configuration ``hvdr check`` explores by default (every fault enabled): the
#: default of every flag and of every key a configuration leaves out.
DEFAULT_CONFIG = ModelConfig(
    vm_count=1,
    write_lag_max=1,
    recovery_points_max=2,
    fault_budget=1,
    app_consistent_points=True,
)


class ConfigurationError(ValueError):
    """A configuration is not valid JSON or not a valid model configuration.

    Raised by ``config_from_json`` (``path`` is where in the object, ``()`` for the
    object itself) and ``read_config`` (the message then starts with the file and
    line). Fix the key the message names; it says what is allowed.
    """

    def __init__(self, message: str, path: KeyPath = ()) -> None:
        super().__init__(message)
        self.path = path


class _Plan(BaseModel):
    """A recovery plan: ordered groups of VM indices."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: Annotated[str, Field(min_length=1)]
    groups: list[list[Annotated[int, Field(ge=0)]]]


class _Schema(BaseModel):
    """The keys of a configuration, each defaulting to ``DEFAULT_CONFIG``'s value."""

    model_config = ConfigDict(strict=True, extra="forbid")

    vm_count: Annotated[int, Field(ge=1)] = DEFAULT_CONFIG.vm_count
    disks_per_vm: Annotated[int, Field(ge=1)] = DEFAULT_CONFIG.disks_per_vm
    write_lag_max: Annotated[int, Field(ge=1)] = DEFAULT_CONFIG.write_lag_max
    recovery_points_max: Annotated[int, Field(ge=1)] = (
        DEFAULT_CONFIG.recovery_points_max
    )
    fault_budget: Annotated[int, Field(ge=0)] = DEFAULT_CONFIG.fault_budget
    # Not strict: JSON gives the fault kinds as their string values.
    faults: list[Annotated[FaultKind, Strict(strict=False)]] = sorted(
        DEFAULT_CONFIG.faults, key=lambda kind: kind.value
    )
    app_consistent_points: bool = DEFAULT_CONFIG.app_consistent_points
    plans: list[_Plan] = Field(default_factory=list)
    plan_operations: list[str] = Field(default_factory=list)

    @field_validator("faults")
    @classmethod
    def _faults_once(cls, kinds: list[FaultKind]) -> list[FaultKind]:
        twice = sorted({kind.value for kind in kinds if kinds.count(kind) > 1})
        if twice:
            msg = f"{twice} given twice; name each fault kind once"
            raise ValueError(msg)
        return kinds

    @field_validator("plan_operations")
    @classmethod
    def _known_operations(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in PLAN_OPERATIONS]
        if unknown:
            msg = f"{unknown} unknown"
            raise ValueError(msg)
        return names


KNOWN_KEYS = tuple(_Schema.model_fields)


def config_to_json(config: ModelConfig) -> dict[str, object]:
    """A plain mapping for a trace header or a ``--config`` file."""
    return {
        "vm_count": config.vm_count,
        "disks_per_vm": config.disks_per_vm,
        "write_lag_max": config.write_lag_max,
        "recovery_points_max": config.recovery_points_max,
        "fault_budget": config.fault_budget,
        "faults": sorted(fault.value for fault in config.faults),
        "app_consistent_points": config.app_consistent_points,
        "plans": [
            {"name": plan.name, "groups": [list(group) for group in plan.groups]}
            for plan in config.plans
        ],
        "plan_operations": list(config.plan_operations),
    }


def config_from_json(data: object) -> ModelConfig:
    """The configuration ``data`` describes; keys left out keep ``DEFAULT_CONFIG``'s.

    Raises ConfigurationError naming the key, its value and what is allowed.
    """
    if not isinstance(data, Mapping):
        msg = (
            f"a configuration must be a JSON object of keys {list(KNOWN_KEYS)} "
            f"(got {type(data).__name__})"
        )
        raise ConfigurationError(msg)
    try:
        schema = _Schema.model_validate(dict(data))
    except ValidationError as error:
        raise _explain(error, data) from None
    try:
        return ModelConfig(
            vm_count=schema.vm_count,
            disks_per_vm=schema.disks_per_vm,
            write_lag_max=schema.write_lag_max,
            recovery_points_max=schema.recovery_points_max,
            fault_budget=schema.fault_budget,
            faults=frozenset(schema.faults),
            app_consistent_points=schema.app_consistent_points,
            plans=tuple(
                RecoveryPlan(plan.name, tuple(tuple(group) for group in plan.groups))
                for plan in schema.plans
            ),
            plan_operations=tuple(schema.plan_operations),
        )
    except ValueError as error:  # what only the whole can tell: plans name VMs
        msg = f"plans: {error}"
        raise ConfigurationError(msg, ("plans",)) from None


def read_config(path: Path) -> ModelConfig:
    """Read a ``--config`` file; ConfigurationError names the file and the line."""
    text = read_text(
        path, kind="a configuration is a JSON file", error=ConfigurationError
    )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        msg = (
            f"{path}, line {error.lineno}, column {error.colno}: not valid JSON: "
            f"{error.msg}"
        )
        raise ConfigurationError(msg) from None
    try:
        return config_from_json(data)
    except ConfigurationError as error:
        line = key_lines(text).get(error.path, 1)
        msg = f"{path}, line {line}: {error}"
        raise ConfigurationError(msg, error.path) from None


def _explain(error: ValidationError, data: Mapping[str, Any]) -> ConfigurationError:
    """The first of pydantic's errors, in the project's words."""
    first = first_error(error)
    path: KeyPath = tuple(first["loc"])
    name = dotted(path)
    if first["type"] == "extra_forbidden":
        if len(path) == 1:
            msg = f"key {path[0]!r} is unknown; known keys: {', '.join(KNOWN_KEYS)}"
        else:
            msg = f"key {name!r} is unknown; a plan has the keys 'name' and 'groups'"
        return ConfigurationError(msg, path)
    if first["type"] == "missing":
        msg = f"{name} is missing: a plan needs a name and its groups"
        return ConfigurationError(msg, path)
    value = first.get("input")
    msg = f"{name}={json.dumps(value)}: {reason(first)}; "
    msg += f"{path[0]} takes {_EXPECTED[str(path[0])]}"
    return ConfigurationError(msg, path)


#: What each key takes, for messages.
_EXPECTED = {
    "vm_count": "an int >= 1",
    "disks_per_vm": "an int >= 1",
    "write_lag_max": "an int >= 1",
    "recovery_points_max": "an int >= 1",
    "fault_budget": "an int >= 0",
    "faults": "a list of: " + ", ".join(kind.value for kind in FaultKind),
    "app_consistent_points": "true or false",
    "plans": 'a list of {"name": str, "groups": [[VM index, ...], ...]}',
    "plan_operations": "a list of: " + ", ".join(sorted(PLAN_OPERATIONS)),
}


def key_lines(text: str) -> dict[KeyPath, int]:
    """The line (from 1) where each key or element of the JSON ``text`` starts.

    ``text`` must be valid JSON; the path of a member is its keys and indices from
    the top, as pydantic's error locations name them.
    """
    lines: dict[KeyPath, int] = {}
    decoder = json.JSONDecoder()

    def line_of(position: int) -> int:
        return text.count("\n", 0, position) + 1

    def skip(position: int) -> int:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        return position

    def value(position: int, path: KeyPath) -> int:
        position = skip(position)
        opening = text[position]
        if opening in "{[":
            closing = "}" if opening == "{" else "]"
            position = skip(position + 1)
            index = 0
            while text[position] != closing:
                if opening == "{":
                    start = position
                    key, position = decoder.raw_decode(text, position)
                    member: KeyPath = (*path, key)
                    lines.setdefault(member, line_of(start))
                    position = skip(position) + 1  # the colon
                else:
                    member = (*path, index)
                    lines.setdefault(member, line_of(skip(position)))
                    index += 1
                position = skip(value(position, member))
                if text[position] == ",":
                    position = skip(position + 1)
            return position + 1
        _, end = decoder.raw_decode(text, position)
        return int(end)

    value(0, ())
    return lines
