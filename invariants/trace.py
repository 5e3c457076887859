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

A step the model must refuse says so: ``"expect": "refused"`` on its line (the
only expectation there is). Replay fails a trace at a step the model refuses that
is not so marked (a misspelt action, a step in the wrong phase), and at a marked
step the model takes: a trace says what it means, and nothing passes by accident.

Why this shape: a line per step diffs well, a truncated file is still a valid
prefix, and any tool that reads JSON can produce one. The header comes first or
not at all; without one, and for every key it leaves out, the defaults of ``hvdr
check`` apply (``DEFAULT_CONFIG``), as for a ``--config`` file.

``replay`` runs a trace step by step on the model, checking every property of the
catalogue after each step, and reports refusals instead of stopping on them.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from invariants import catalogue
from invariants.configuration import (
    DEFAULT_CONFIG,
    ConfigurationError,
    config_from_json,
    config_to_json,
)
from invariants.kinds import Invariant
from model import Call, ModelConfig, SystemState, initial_state
from model import apply as model_apply
from model.errors import ModelError
from model.successor import RULES, Rules

#: The key of a step line that states what the model must do with the step, and its
#: one value: the model must refuse the step.
EXPECT_KEY = "expect"
EXPECT_REFUSED = "refused"

#: The keys a header may have.
HEADER_KEYS = ("config", "mutant")


class TraceFormatError(ValueError):
    """A trace file is malformed: the message starts with the file and the line.

    Raised by ``loads`` and ``read``. Fix the line named (docs/trace-format.md has
    the grammar).
    """


@dataclass(frozen=True)
class Trace:
    """A trace file's content: configuration, calls, the mutant if any, and the
    numbers (from 1) of the steps the model must refuse."""

    config: ModelConfig
    calls: tuple[Call, ...]
    mutant: str | None = None
    expected_refusals: frozenset[int] = frozenset()


def dumps(trace: Trace) -> str:
    """The JSON-lines text of ``trace``."""
    header: dict[str, object] = {"config": config_to_json(trace.config)}
    if trace.mutant is not None:
        header["mutant"] = trace.mutant
    lines = [json.dumps(header)]
    for number, call in enumerate(trace.calls, start=1):
        data = call.to_json()
        if number in trace.expected_refusals:
            data[EXPECT_KEY] = EXPECT_REFUSED
        lines.append(json.dumps(data))
    return "\n".join(lines) + "\n"


def loads(text: str, source: str = "<trace>") -> Trace:
    """Parse JSON-lines text; TraceFormatError names the line that is malformed.

    The header, if any, is the first line that is not blank; a header anywhere
    else is an error (two traces pasted together, or a header added by hand).
    """
    config, mutant = DEFAULT_CONFIG, None
    calls: list[Call] = []
    expected: set[int] = set()
    first = True
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                msg = "a line must be a JSON object"
                raise ValueError(msg)
            if "config" in data:
                if not first:
                    msg = (
                        'a header line ({"config": ...}) is allowed only as the '
                        "first line of a trace; this one follows "
                        f"{len(calls)} step(s)"
                    )
                    raise ValueError(msg)
                config, mutant = _header(data)
            else:
                expectation = data.pop(EXPECT_KEY, None)
                if expectation is not None:
                    if expectation != EXPECT_REFUSED:
                        msg = f"{EXPECT_KEY}={expectation!r}: the only expectation a "
                        msg += f"step may state is {EXPECT_KEY!r}: {EXPECT_REFUSED!r}"
                        raise ValueError(msg)
                    expected.add(len(calls) + 1)
                calls.append(Call.from_json(data))
        except ValueError as error:
            where = f"in {source}, line {number}: {line[:120]}"
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            if isinstance(error, json.JSONDecodeError):
                reason = f"not valid JSON: {error.msg} (column {error.colno})"
            failure = TraceFormatError(f"{source}, line {number}: {reason}")
            failure.add_note(where)
            raise failure from error
        first = False
    return Trace(config, tuple(calls), mutant, frozenset(expected))


def _header(data: dict[str, object]) -> tuple[ModelConfig, str | None]:
    unknown = sorted(set(data) - set(HEADER_KEYS))
    if unknown:
        msg = f"header keys {unknown} are unknown; a header has: {list(HEADER_KEYS)}"
        raise ValueError(msg)
    mutant = data.get("mutant")
    if mutant is not None and not isinstance(mutant, str):
        msg = f"mutant={mutant!r} must be the name of a mutant (a string)"
        raise ValueError(msg)
    try:
        return config_from_json(data["config"]), mutant
    except ConfigurationError as error:
        msg = f"config: {error}"
        raise ValueError(msg) from None


def write(path: Path, trace: Trace) -> None:
    """Write ``trace`` to ``path`` as JSON lines."""
    path.write_text(dumps(trace), encoding="utf-8")


#: A trace file larger than this is refused unread (real traces are a few KiB).
TRACE_BYTES_MAX = 64 << 20


def read(path: Path) -> Trace:
    """Read a trace file written by ``write`` (or by hand); ValueError names the file
    when it is too large or not UTF-8 text."""
    with path.open("rb") as stream:
        data = stream.read(TRACE_BYTES_MAX + 1)
    if len(data) > TRACE_BYTES_MAX:
        msg = f"{path}: more than {TRACE_BYTES_MAX >> 20} MiB: not a trace file"
        raise ValueError(msg)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        msg = f"{path}: not UTF-8 text (byte {error.start}): not a trace file"
        raise ValueError(msg) from None
    return loads(text, str(path))


@dataclass(frozen=True)
class Step:
    """One replayed step: the call, the state after it (or the refusal), failures,
    and whether the trace marks it as a step the model must refuse."""

    number: int
    call: Call
    state: SystemState
    refused: ModelError | None  # ActionRefused, or UnknownCall: no such call
    violated: tuple[Invariant, ...]
    expected_refusal: bool = False

    @property
    def unexpected(self) -> str | None:
        """Why the step contradicts the trace (None: it does as the trace says)."""
        if self.refused is not None and not self.expected_refusal:
            return (
                f"the model refused it ({self.refused}) and the trace does not mark "
                f'it as an expected refusal ("{EXPECT_KEY}": "{EXPECT_REFUSED}")'
            )
        if self.refused is None and self.expected_refusal:
            return (
                f'the trace expects a refusal ("{EXPECT_KEY}": "{EXPECT_REFUSED}") '
                "and the model took the step"
            )
        return None


def replay(
    config: ModelConfig,
    calls: Sequence[Call],
    rules: Rules = RULES,
    expected_refusals: Collection[int] = frozenset(),
) -> Iterator[Step]:
    """Run ``calls`` from the initial state; a refused call leaves the state as is.

    A call the model does not have (a misspelt action, a VM it has not) counts as
    refused, with the model's ``UnknownCall`` as the reason. ``expected_refusals``
    are the numbers (from 1) of the steps the trace marks as refusals.
    """
    state = initial_state(config)
    for number, call in enumerate(calls, start=1):
        expected = number in expected_refusals
        try:
            after = model_apply(config, state, call, rules)
        except ModelError as refusal:
            yield Step(number, call, state, refusal, (), expected)
            continue
        violated = catalogue.failing_step(config, state, call, after)
        violated += catalogue.failing(config, after)
        yield Step(number, call, after, None, tuple(violated), expected)
        state = after


def mark_refusals(trace: Trace, rules: Rules = RULES) -> Trace:
    """``trace`` with every step the model refuses marked as an expected refusal:
    for writers whose traces hold refusals on purpose (``hvdr fuzz --engine`` draws
    refused operations, to check that the engine refuses them too)."""
    refused = frozenset(
        step.number
        for step in replay(trace.config, trace.calls, rules)
        if step.refused is not None
    )
    return Trace(trace.config, trace.calls, trace.mutant, refused)
