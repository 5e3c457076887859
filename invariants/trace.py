"""Replayable traces: JSON lines of calls, with the configuration they run on.

A trace file is plain text, one JSON object per line. The first line may be a
header, ``{"config": {...}}`` (the ``ModelConfig``: sizes, bounds, faults, plans),
optionally with ``"mutant": "<name>"`` when the trace is a counterexample found on a
deliberately broken variant of the model (``invariants.mutants``). Every other line
is one ``Call.to_json()``::

    {"config": {"vm_count": 1, "fault_budget": 1, "write_lag_max": 1}}
    {"action": "enable_protection", "vm": 0}
    {"action": "crash_site", "site": "primary"}
    {"action": "unplanned_failover", "vm": 0, "args": {"point": "latest", ...}}

Why this shape: a line per step diffs well, a truncated file is still a valid
prefix, and any tool that reads JSON can produce one. Without a header, and for
every key it leaves out, the defaults of ``hvdr check`` apply (``DEFAULT_CONFIG``),
as for a ``--config`` file.

``replay`` runs a trace step by step on the model, checking every property of the
catalogue after each step, and reports refusals instead of stopping on them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from invariants import catalogue
from invariants.configuration import DEFAULT_CONFIG, config_from_json, config_to_json
from invariants.kinds import Invariant
from model import ActionRefused, Call, ModelConfig, SystemState, initial_state
from model import apply as model_apply
from model.successor import RULES, Rules


@dataclass(frozen=True)
class Trace:
    """A trace file's content: configuration, calls, and the mutant if any."""

    config: ModelConfig
    calls: tuple[Call, ...]
    mutant: str | None = None


def dumps(trace: Trace) -> str:
    """The JSON-lines text of ``trace``."""
    header: dict[str, object] = {"config": config_to_json(trace.config)}
    if trace.mutant is not None:
        header["mutant"] = trace.mutant
    lines = [json.dumps(header)]
    lines += [json.dumps(call.to_json()) for call in trace.calls]
    return "\n".join(lines) + "\n"


def loads(text: str, source: str = "<trace>") -> Trace:
    """Parse JSON-lines text; ValueError names the line that is malformed."""
    config, mutant = DEFAULT_CONFIG, None
    calls = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                msg = "a line must be a JSON object"
                raise ValueError(msg)
            if "config" in data:
                config = config_from_json(data["config"])
                mutant = data.get("mutant")
            else:
                calls.append(Call.from_json(data))
        except ValueError as error:
            error.add_note(f"in {source}, line {number}: {line[:120]}")
            raise
    return Trace(config, tuple(calls), mutant)


def write(path: Path, trace: Trace) -> None:
    """Write ``trace`` to ``path`` as JSON lines."""
    path.write_text(dumps(trace), encoding="utf-8")


def read(path: Path) -> Trace:
    """Read a trace file written by ``write`` (or by hand)."""
    return loads(path.read_text(encoding="utf-8"), str(path))


@dataclass(frozen=True)
class Step:
    """One replayed step: the call, the state after it (or the refusal), failures."""

    number: int
    call: Call
    state: SystemState
    refused: ActionRefused | None
    violated: tuple[Invariant, ...]


def replay(
    config: ModelConfig, calls: Sequence[Call], rules: Rules = RULES
) -> Iterator[Step]:
    """Run ``calls`` from the initial state; a refused call leaves the state as is."""
    state = initial_state(config)
    for number, call in enumerate(calls, start=1):
        try:
            after = model_apply(config, state, call, rules)
        except ActionRefused as refusal:
            yield Step(number, call, state, refusal, ())
            continue
        violated = catalogue.failing_step(config, state, call, after)
        violated += catalogue.failing(config, after)
        yield Step(number, call, after, None, tuple(violated))
        state = after
