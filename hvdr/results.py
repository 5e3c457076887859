"""Machine-readable results: the ``--json FILE`` document of check, fuzz and replay.

One document per run, written when the run ends (also when it fails, stops at a
limit or is interrupted; not for bad usage, exit status 2, which writes nothing).
Its schema is ``docs/json-results.md`` (JSON Schema, draft 2020-12), and a test
validates real output against the schema printed there, so the page cannot drift.

Every document has the same envelope: ``schema`` (``hvdr-result/1``; a change that
breaks a reader bumps it), ``command``, ``hvdr_version``, ``exit_status`` and
``outcome`` (its meaning in a word), the model's ``config`` (as a trace header
has it) and ``mutant``; then the command's own figures (``check``, ``fuzz`` or
``replay``) and, when a property failed, the ``counterexample``: the property with
the fields it reads, and every step with the whole state after it
(``hvdr.counterexample.steps_json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hvdr import counterexample
from hvdr.status import ExitStatus
from hvdr.version import hvdr_version
from invariants.configuration import config_to_json
from invariants.explorer import Report
from invariants.fields import JsonValue
from invariants.fuzz import FuzzReport
from invariants.kinds import Invariant
from model import Call, ModelConfig
from model.successor import RULES, Rules

SCHEMA = "hvdr-result/1"

#: The word for each exit status.
OUTCOMES = {
    ExitStatus.OK: "ok",
    ExitStatus.FAILED: "failed",
    ExitStatus.INCOMPLETE: "incomplete",
    ExitStatus.INTERRUPTED: "interrupted",
}


def document(
    command: str,
    status: int,
    config: ModelConfig,
    mutant: str | None,
    body: dict[str, JsonValue],
    failure: dict[str, JsonValue] | None = None,
) -> dict[str, JsonValue]:
    """The envelope around one command's figures (see the module essay)."""
    configuration: dict[str, JsonValue] = json.loads(json.dumps(config_to_json(config)))
    return {
        "schema": SCHEMA,
        "command": command,
        "hvdr_version": hvdr_version(),
        "exit_status": int(status),
        "outcome": OUTCOMES[ExitStatus(status)],
        "config": configuration,
        "mutant": mutant,
        command: body,
        "counterexample": failure,
    }


def write(path: Path, result: dict[str, JsonValue]) -> None:
    """Write ``result`` to ``path`` as indented JSON."""
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def invariant_json(invariant: Invariant) -> dict[str, JsonValue]:
    """A property: name, kind, message and the fields it reads."""
    reads: list[JsonValue] = []
    reads.extend(sorted(invariant.reads))
    return {
        "name": invariant.name,
        "kind": invariant.kind.value,
        "message": invariant.message,
        "reads": reads,
    }


def counterexample_json(
    config: ModelConfig,
    calls: Sequence[Call],
    invariant: Invariant | None,
    rules: Rules = RULES,
) -> dict[str, JsonValue]:
    """A failing trace: the property (None: a deadlock) and every step."""
    steps: list[JsonValue] = []
    steps.extend(counterexample.steps_json(counterexample.walk(config, calls, rules)))
    return {
        "property": None if invariant is None else invariant_json(invariant),
        "steps": steps,
    }


def counterexample_steps(rows: Sequence[counterexample.Shown]) -> list[JsonValue]:
    """The steps of a counterexample already replayed."""
    steps: list[JsonValue] = []
    steps.extend(counterexample.steps_json(rows))
    return steps


def _traces(calls: Sequence[Sequence[Call]]) -> list[JsonValue]:
    found: list[JsonValue] = []
    for trace in calls:
        steps: list[JsonValue] = []
        steps.extend(str(call) for call in trace)
        found.append(steps)
    return found


def check_body(report: Report) -> dict[str, JsonValue]:
    """The figures of one exploration."""
    statistics = report.statistics
    violations: list[JsonValue] = []
    for violation in report.violations:
        trace: list[JsonValue] = []
        trace.extend(str(call) for call in violation.trace)
        violations.append({"property": violation.invariant.name, "trace": trace})
    coverage: dict[str, JsonValue] = dict(report.action_counts)
    never: list[JsonValue] = []
    never.extend(report.never_fired)
    unwitnessed: list[JsonValue] = []
    unwitnessed.extend(report.unwitnessed)
    return {
        "states": statistics.states,
        "transitions": statistics.transitions,
        "depth": statistics.depth,
        "diameter": report.diameter,
        "seconds": round(statistics.seconds, 3),
        "peak_memory_bytes": statistics.peak_memory_bytes,
        "unreduced_states": statistics.unreduced_states,
        "queued": statistics.queued,
        "complete": report.complete,
        "stopped_by": None if report.stopped_by is None else report.stopped_by.value,
        "violations": violations,
        "deadlocks": report.deadlocks,
        "deadlock_traces": _traces(report.deadlock_traces),
        "unrecoverable": report.unrecoverable,
        "unwitnessed": unwitnessed,
        "action_coverage": coverage,
        "never_fired": never,
    }


def fuzz_body(report: FuzzReport, asked: int, seed: int) -> dict[str, JsonValue]:
    """The figures of one fuzzing run of the model (run with ``beyond``)."""
    beyond = report.beyond
    assert beyond is not None, "hvdr fuzz runs with beyond=True"
    untaken: list[JsonValue] = [
        {"trigger": trigger, "source": source.value, "dest": dest.value}
        for trigger, source, dest in report.untaken
    ]
    return {
        "examples": report.examples,
        "examples_asked": asked,
        "seed": seed,
        "steps": report.steps,
        "prefix_steps": report.prefix_steps,
        "seconds": round(report.seconds, 3),
        "edges_total": len(report.edges),
        "edges_taken": len(report.edges) - len(report.untaken),
        "untaken": untaken,
        "interrupted": report.interrupted,
        "beyond": {
            "states": beyond.states,
            "views": beyond.views,
            "outside": beyond.outside,
            "max_lag": beyond.max_lag,
            "max_faults_spent": beyond.max_faults_spent,
            "vms": beyond.vms,
        },
    }


def replay_body(
    path: Path,
    rows: Sequence[counterexample.Shown],
    violated: int,
    contradicted: int,
) -> dict[str, JsonValue]:
    """The figures of one replay, with every step and the state after it."""
    steps: list[JsonValue] = []
    steps.extend(counterexample.steps_json(rows))
    return {
        "file": str(path),
        "step_count": len(rows) - 1,
        "violations": violated,
        "steps_not_as_marked": contradicted,
        "steps": steps,
    }
