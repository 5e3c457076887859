"""What the explorer's page shows, computed from a trace by the model itself.

The page holds the trace the person is building, as trace-format text
(``invariants.trace``); every request sends it, and ``show`` replays it with
``invariants.trace.replay`` (the replay of ``hvdr replay``: the same refusals, the
same properties checked after each step) to the step asked for. From that state it
lists

* the enabled calls, from the model's successor function (``model.enabled``), each
  with its arguments, actor and documentation;
* every other action and target with the model's reason for refusing it: the
  ``ActionRefused`` that ``model.apply`` raises (the lifecycle first, then faults,
  then guards, the order of ``model.successor``), or, for an action whose
  arguments have no possible value here, that fact;
* the full abstract state as rows of ``path = value`` (plus the derived status and
  health of each VM), the rows the last step changed marked;
* the lifecycle diagram of ``hvdr diagram`` (``hvdr.diagrams``) with the phase of
  every VM highlighted (``lifecycle_svg``).

``take`` appends a call the model allows after the step shown, and ``back`` goes
one step back from it; both drop the steps after it, as a browser's history does,
and return the new trace text. ``load`` refuses a configuration over
``BOUNDS_MAX`` (4 VMs; 8 disks, lag, points, faults, plans and groups) and a trace
of more than ``STEPS_MAX`` steps: every request replays its trace, and these keep
one under a second. Bad input raises ``RequestError`` with a message in the
style of the command line's (what was wrong, what is allowed); nothing here does
I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hvdr import diagrams, drawing
from invariants import mutation
from invariants import trace as traces
from invariants.configuration import config_to_json
from model import (
    ActionRefused,
    Call,
    ModelConfig,
    ModelError,
    Phase,
    SystemState,
    health,
    initial_state,
    is_protected,
)
from model import apply as model_apply
from model import enabled as model_enabled
from model.action import Context, vm_name
from model.successor import Refusal, Rules, lifecycle_edge

#: The class the highlighted phase's node carries in the SVG (the page and its
#: browser test find the current phase by it).
CURRENT_CLASS = "current"
CURRENT_COLOR = "red"

#: The most a configuration given to the explorer may ask for, field by field. Every
#: request replays its trace and lists every action of every target, so its cost
#: grows with these (and a plan multiplies the targets): at these caps a request of
#: a trace of ``STEPS_MAX`` steps took about 0.35 s (measured 2026-12-01), while
#: ``vm_count`` 3000 held a core for minutes. ``hvdr check`` has no such caps.
BOUNDS_MAX = {
    "vm_count": 4,
    "disks_per_vm": 8,
    "write_lag_max": 8,
    "recovery_points_max": 8,
    "fault_budget": 8,
    "plans": 8,  # recovery plans, and groups in each
}

#: The most steps a trace given to the explorer may have (a walk by hand or a
#: counterexample has tens; each step of a replay costs about 0.15 ms at the caps).
STEPS_MAX = 2000


class RequestError(ValueError):
    """The page sent something the explorer cannot use: a malformed trace, a call
    the model does not have or refuses, a step number out of range.

    The message says what was wrong and what is allowed; the server answers it
    with status 400 and the page shows it.
    """


@dataclass(frozen=True)
class Loaded:
    """A parsed trace with the rules it runs on (the model's, or its mutant's)."""

    trace: traces.Trace
    rules: Rules


def over_caps(config: ModelConfig) -> str | None:
    """What in ``config`` is over ``BOUNDS_MAX`` (field, value and cap), or None."""
    asked = [
        (name, getattr(config, name), BOUNDS_MAX[name])
        for name in BOUNDS_MAX
        if name != "plans"
    ]
    asked.append(("len(plans)", len(config.plans), BOUNDS_MAX["plans"]))
    asked.extend(
        (f"len(plans[{index}].groups)", len(plan.groups), BOUNDS_MAX["plans"])
        for index, plan in enumerate(config.plans)
    )
    for name, value, cap in asked:
        if value > cap:
            caps = ", ".join(f"{key} {most}" for key, most in BOUNDS_MAX.items())
            caps += f" (of {BOUNDS_MAX['plans']} groups each)"
            msg = f"{name}={value} is over hvdr explore's cap of {cap} (caps: {caps}; "
            msg += "hvdr check takes larger configurations)"
            return msg
    return None


def load(text: str, source: str = "the trace") -> Loaded:
    """Parse trace-format ``text``; RequestError names the line that is wrong, or
    the bound over the explorer's caps (``BOUNDS_MAX``, ``STEPS_MAX``)."""
    lines = sum(1 for line in text.splitlines() if line.strip())
    if lines > STEPS_MAX + 1:  # checked before parsing: parsing costs time too
        msg = f"{source}: {lines} lines is over hvdr explore's cap of {STEPS_MAX} "
        msg += "steps (plus a header)"
        raise RequestError(msg)
    try:
        trace = traces.loads(text, source)
    except traces.TraceFormatError as error:
        raise RequestError(str(error)) from None
    over = over_caps(trace.config)
    if over is not None:
        msg = f"{source}: the header's config: {over}"
        raise RequestError(msg)
    try:
        rules = mutation.header_rules(trace.mutant, source)
    except mutation.UnknownMutant as error:
        raise RequestError(str(error)) from None
    return Loaded(trace, rules)


def start(config: ModelConfig, mutant: str | None = None) -> str:
    """The trace text of the initial state: the header alone."""
    return traces.dumps(traces.Trace(config, (), mutant))


def take(loaded: Loaded, at: object, data: object) -> str:
    """The trace cut after step ``at`` (all of it when None) with the call ``data``
    (a trace step's JSON object) appended; RequestError when the model refuses it."""
    trace = loaded.trace
    at = _position(trace, at)
    if not isinstance(data, Mapping):
        msg = f"call={data!r} must be a trace step, a JSON object such as "
        msg += '{"action": "enable_protection", "vm": 0}'
        raise RequestError(msg)
    try:
        call = Call.from_json(data)
    except ValueError as error:
        raise RequestError(str(error)) from None
    state = state_at(loaded, at)
    try:
        model_apply(trace.config, state, call, loaded.rules)
    except ModelError as error:  # ActionRefused, or UnknownCall: no such action
        msg = f"step {at + 1}, {call}: {error}"
        raise RequestError(msg) from None
    kept = frozenset(number for number in trace.expected_refusals if number <= at)
    calls = (*trace.calls[:at], call)
    return traces.dumps(traces.Trace(trace.config, calls, trace.mutant, kept))


def back(loaded: Loaded, at: object = None) -> str:
    """The trace cut before step ``at`` (its last step when None): one step back
    from the step shown, dropping the steps after it; RequestError at step 0."""
    trace = loaded.trace
    at = _position(trace, at)
    if at == 0:
        msg = "nothing to go back to: this is the initial state"
        raise RequestError(msg)
    count = at - 1
    kept = frozenset(number for number in trace.expected_refusals if number <= count)
    calls = trace.calls[:count]
    return traces.dumps(traces.Trace(trace.config, calls, trace.mutant, kept))


def _position(trace: traces.Trace, at: object) -> int:
    count = len(trace.calls)
    if at is None:
        return count
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= count:
        msg = f"step at={at!r} is out of range: this trace has {count} step(s), "
        msg += f"so give a whole number 0..{count} (0 is the initial state)"
        raise RequestError(msg)
    return at


def _replayed(loaded: Loaded) -> list[traces.Step]:
    trace = loaded.trace
    return list(
        traces.replay(trace.config, trace.calls, loaded.rules, trace.expected_refusals)
    )


def state_at(loaded: Loaded, at: int) -> SystemState:
    """The state after step ``at`` (0: the initial state)."""
    if at == 0:
        return initial_state(loaded.trace.config)
    return _replayed(loaded)[at - 1].state


def show(loaded: Loaded, at: object = None) -> dict[str, Any]:
    """Everything the page shows at step ``at`` (the last when None), as JSON."""
    trace, rules = loaded.trace, loaded.rules
    at = _position(trace, at)
    config = trace.config
    steps = _replayed(loaded)
    start_state = initial_state(config)
    state = steps[at - 1].state if at else start_state
    before = steps[at - 2].state if at > 1 else start_state
    calls = model_enabled(config, state, rules)
    return {
        "trace": traces.dumps(trace),
        "at": at,
        "config": config_to_json(config),
        "mutant": trace.mutant,
        "steps": [_step_json(step) for step in steps],
        "enabled": [_call_json(call, rules) for call in calls],
        "refused": list(refusals(config, state, calls, rules)),
        "state": state_rows(config, before if at else state, state),
        "phases": {
            vm_name(config, i): vm.phase.value for i, vm in enumerate(state.vms)
        },
        "diagram": lifecycle_svg(_phase_marks(config, state)),
    }


def _step_json(step: traces.Step) -> dict[str, Any]:
    return {
        "number": step.number,
        "call": str(step.call),
        "refused": None if step.refused is None else str(step.refused),
        "unexpected": step.unexpected,
        "violated": [
            {"name": invariant.name, "message": invariant.message}
            for invariant in step.violated
        ],
    }


def _call_json(call: Call, rules: Rules) -> dict[str, Any]:
    spec = rules.actions[call.action]
    return {
        "label": str(call),
        "call": call.to_json(),
        "actor": spec.actor.value,
        "doc": spec.doc.strip().splitlines()[0] if spec.doc.strip() else "",
    }


def refusals(
    config: ModelConfig, state: SystemState, allowed: list[Call], rules: Rules
) -> Iterator[dict[str, Any]]:
    """Each action and target with no enabled call, with the model's reason."""
    taken = {(call.action, call.vm, call.site, call.plan) for call in allowed}
    for spec, bares in rules.targets(config):
        for bare in bares:
            if (bare.action, bare.vm, bare.site, bare.plan) in taken:
                continue
            refusal, message = _why_refused(config, state, bare, rules)
            yield {
                "label": str(bare),
                "actor": spec.actor.value,
                "guard": refusal.guard,
                "reason": refusal.reason,
                "message": message,
            }


def _why_refused(
    config: ModelConfig, state: SystemState, bare: Call, rules: Rules
) -> tuple[Refusal, str]:
    """The model's reason for refusing every call of ``bare``'s action and target:
    the lifecycle's when it has no edge, else the first choice's refusal."""
    spec = rules.actions[bare.action]
    if spec.trigger is not None:
        assert bare.vm is not None
        edge = lifecycle_edge(config, state, bare.vm, spec.trigger, rules)
        if isinstance(edge, Refusal):
            return edge, _message(config, state, bare, rules)
    choices = tuple(spec.choices(Context(config, state, bare)))
    if not choices:
        reason = f"{spec.name} has no possible arguments in this state"
        return Refusal("choice", reason), reason
    first: ActionRefused | None = None
    for args in choices:
        call = dataclasses.replace(bare, args=args)
        try:
            model_apply(config, state, call, rules)
        except ActionRefused as refused:
            first = refused if first is None else first
            if refused.guard != "choice":
                return Refusal(refused.guard, refused.reason), str(refused)
    assert first is not None, f"{bare} has an enabled call, yet was listed refused"
    return Refusal(first.guard, first.reason), str(first)


def _message(config: ModelConfig, state: SystemState, call: Call, rules: Rules) -> str:
    try:
        model_apply(config, state, call, rules)
    except ActionRefused as refused:
        return str(refused)
    msg = f"{call} was expected to be refused"
    raise AssertionError(msg)


def plain(value: object) -> object:
    """``value`` (a state, or part of one) as JSON-ready data."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, frozenset):
        return sorted((plain(item) for item in value), key=str)
    if isinstance(value, tuple):
        return [plain(item) for item in value]
    return value


def _flatten(prefix: str, value: object) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else key, item)
    elif (
        isinstance(value, list)
        and value
        and not all(isinstance(item, str) for item in value)
    ):
        for index, item in enumerate(value):
            yield from _flatten(f"{prefix}[{index}]", item)
    elif isinstance(value, list):
        yield prefix, "[" + ", ".join(value) + "]"
    else:
        yield prefix, "none" if value is None else str(value).lower()


def _rows(config: ModelConfig, state: SystemState) -> dict[str, str]:
    """The rows of ``state`` in its fields' order, each VM's derived status first."""
    whole = plain(state)
    assert isinstance(whole, dict)
    vms = whole.pop("vms")
    rows = dict(_flatten("", whole))
    for index, vm in enumerate(state.vms):
        prefix = f"vms[{index}]"
        rows[f"{prefix}.name (derived)"] = vm_name(config, index)
        rows[f"{prefix}.status (derived)"] = (
            "protected" if is_protected(vm) else "not protected"
        )
        rows[f"{prefix}.health (derived)"] = health(state, vm).value
        rows.update(_flatten(prefix, vms[index]))
    return rows


def state_rows(
    config: ModelConfig, before: SystemState, after: SystemState
) -> list[dict[str, Any]]:
    """The rows of ``after``, each marked ``changed`` when ``before`` differs."""
    old, new = _rows(config, before), _rows(config, after)
    return [
        {"path": path, "value": value, "changed": old.get(path) != value}
        for path, value in new.items()
    ]


def _phase_marks(
    config: ModelConfig, state: SystemState
) -> tuple[tuple[Phase, str], ...]:
    marks: dict[Phase, list[str]] = {}
    for index, vm in enumerate(state.vms):
        marks.setdefault(vm.phase, []).append(vm_name(config, index))
    return tuple((phase, ", ".join(marks[phase])) for phase in Phase if phase in marks)


@functools.lru_cache(maxsize=256)
def lifecycle_svg(marks: tuple[tuple[Phase, str], ...]) -> str | None:
    """The lifecycle diagram of ``hvdr diagram`` as SVG with each marked phase
    (``(phase, the VMs in it)``) outlined in red and naming its VMs; None when
    Graphviz's ``dot`` is not installed."""
    if not diagrams.dot_available():
        return None
    names = dict(marks)

    def phase(shown: Phase) -> drawing.Look:
        look = diagrams.status_phase(shown)
        if shown not in names:
            return look
        attrs = {**look.attrs, "class": CURRENT_CLASS, "color": CURRENT_COLOR,
                 "penwidth": "4"}  # fmt: skip
        return drawing.Look(attrs, {shown: f"▶ {names[shown]}"}, CURRENT_COLOR)

    current = (drawing.swatch("white", CURRENT_COLOR), "where the VMs are now")
    legend = [current, *diagrams.status_legend()]
    looks = drawing.Looks(drawing.plain_arrow, phase, legend)
    graph = drawing.draw(diagrams.TITLE, looks)
    svg: bytes = graph.pipe(format="svg")
    return svg.decode("utf-8")
