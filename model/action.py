"""What an action is: an operation or event with finite choices, guards and an effect.

The system model (``model.actions``) declares one ``ActionSpec`` per operator operation,
replication-agent step and environment event. Nondeterminism is never random inside an
effect: it is a finite *choice* listed by ``choices`` (which recovery point, whether the
shutdown succeeds), so every successor is enumerable and a trace replays exactly.

A ``Call`` is one concrete action: the spec's name, what it acts on (a VM, a site or a
plan) and its chosen arguments. Calls are hashable and print as
``unplanned_failover(vm=0, point=latest, shutdown=skip)``; traces store them as JSON.

Guards are named, pure predicates over ``Context``; each carries a message builder so a
refusal says what failed in the operator's words. An action that fires a lifecycle
trigger never sets the phase itself: the successor function takes the phase change from
``LIFECYCLE`` after the effect has computed the data.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from model.state import FaultKind, ModelConfig, Site, SystemState, VmState

Arg = str | int | bool
Args = tuple[tuple[str, Arg], ...]


class Scope(enum.Enum):
    """What an action acts on."""

    VM = "vm"
    SITE = "site"
    SYSTEM = "system"
    PLAN = "plan"


class Actor(enum.Enum):
    """Who takes the action: the operator, the replication agent, or the world."""

    OPERATOR = "operator"
    AGENT = "agent"
    ENVIRONMENT = "environment"


@dataclass(frozen=True, slots=True)
class Call:
    """One concrete action with its target and arguments."""

    action: str
    vm: int | None = None
    site: Site | None = None
    plan: int | None = None
    args: Args = ()

    def arg(self, name: str) -> Arg:
        """The argument ``name`` (KeyError naming the arguments there are)."""
        for key, value in self.args:
            if key == name:
                return value
        msg = f"{self.action} has no argument {name!r}; it has {dict(self.args)}"
        raise KeyError(msg)

    def __str__(self) -> str:
        parts: list[str] = []
        if self.vm is not None:
            parts.append(f"vm={self.vm}")
        if self.site is not None:
            parts.append(f"site={self.site.value}")
        if self.plan is not None:
            parts.append(f"plan={self.plan}")
        parts += [f"{key}={value}" for key, value in self.args]
        return f"{self.action}({', '.join(parts)})"

    def to_json(self) -> dict[str, object]:
        """A plain mapping for trace files (``Call.from_json`` reads it back)."""
        data: dict[str, object] = {"action": self.action}
        if self.vm is not None:
            data["vm"] = self.vm
        if self.site is not None:
            data["site"] = self.site.value
        if self.plan is not None:
            data["plan"] = self.plan
        if self.args:
            data["args"] = dict(self.args)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Call:
        """Read a call written by ``to_json``; ValueError names what is malformed."""
        action = data.get("action")
        if not isinstance(action, str):
            msg = f"trace step {dict(data)!r} needs an 'action' string"
            raise ValueError(msg)
        unknown = sorted(set(data) - {"action", "vm", "plan", "site", "args"})
        if unknown:
            msg = f"trace step {action}: unknown keys {unknown}; a step has action, "
            msg += "vm, plan, site and args (arguments go inside args)"
            raise ValueError(msg)
        vm, plan, site = data.get("vm"), data.get("plan"), data.get("site")
        for name, value in (("vm", vm), ("plan", plan)):
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                msg = f"trace step {action}: {name}={value!r} must be an int >= 0"
                raise ValueError(msg)
        sites = {member.value: member for member in Site}
        if site is not None and site not in sites:
            msg = f"trace step {action}: site={site!r} must be one of {sorted(sites)}"
            raise ValueError(msg)
        raw_args = data.get("args", {})
        if not isinstance(raw_args, Mapping) or not all(
            isinstance(value, str | int | bool) for value in raw_args.values()
        ):
            msg = f"trace step {action}: args={raw_args!r} must map names to scalars"
            raise ValueError(msg)
        return cls(
            action=action,
            vm=vm if isinstance(vm, int) else None,
            site=sites[site] if isinstance(site, str) else None,
            plan=plan if isinstance(plan, int) else None,
            args=tuple((str(key), value) for key, value in raw_args.items()),
        )


@dataclass(frozen=True, slots=True)
class Context:
    """What a guard, a choice list or an effect may look at."""

    config: ModelConfig
    state: SystemState
    call: Call

    @property
    def vm(self) -> VmState:
        """The VM the call acts on."""
        assert self.call.vm is not None
        return self.state.vms[self.call.vm]

    @property
    def vm_name(self) -> str:
        """The VM's display name."""
        assert self.call.vm is not None
        return vm_name(self.config, self.call.vm)


def vm_name(config: ModelConfig, index: int) -> str:
    """The display name of VM ``index``: its configured name, else ``vm<index>``."""
    if index < len(config.vm_names):
        return config.vm_names[index]
    return f"vm{index}"


@dataclass(frozen=True, slots=True)
class Guard:
    """A named precondition; ``explain`` says why it failed, in the operator's words.

    ``bound`` marks a bound of the explored environment rather than a product rule
    (``model.guards.within_bound``): without it the state space is unbounded, so the
    generated mutants (``invariants.rule_mutants``) never drop one.
    """

    name: str
    check: Callable[[Context], bool]
    explain: Callable[[Context], str]
    bound: bool = False


ChoiceLister = Callable[[Context], Iterable[Args]]
VmEffect = Callable[[Context], VmState]
SystemEffect = Callable[[Context], SystemState]


def no_choices(ctx: Context) -> Iterable[Args]:
    """An action with no arguments has exactly one way to happen."""
    del ctx
    return ((),)


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One kind of action of the system model.

    ``trigger`` names the lifecycle trigger a VM action fires (None: the phase does not
    change). ``fault`` maps the chosen arguments to the fault they spend from the
    budget (None: no fault). Exactly one of ``vm_effect`` (VM actions: the VM's new
    data, phase excluded) and ``system_effect`` (everything else) is given.
    """

    name: str
    scope: Scope
    actor: Actor
    doc: str
    guards: tuple[Guard, ...] = ()
    choices: ChoiceLister = no_choices
    trigger: str | None = None
    fault: Callable[[Context], FaultKind | None] | None = None
    vm_effect: VmEffect | None = None
    system_effect: SystemEffect | None = None

    def __post_init__(self) -> None:
        assert (self.vm_effect is None) != (self.system_effect is None), self.name
        assert (self.vm_effect is not None) == (self.scope is Scope.VM), self.name
