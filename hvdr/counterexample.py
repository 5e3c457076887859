"""A trace as a person follows it: the whole abstract state after every step.

``hvdr replay`` and the counterexamples of ``hvdr check`` and ``hvdr fuzz`` print
the same thing: a block per step (step 0 is the initial state), and in it every
field of the state (``invariants.fields.flatten``), grouped as an operator thinks
of them: where each VM is in its lifecycle and where it runs; its copies and their
lags; its recovery points; its failover and loss record; the sites, the link and
the faults left. The fields a step changed are highlighted (and marked ``*``, so a
log without colours shows them too); a step the model refused shows the refusal
and leaves the state as it was. Under the table, each property that failed is
named with the fields it declares it reads (``Invariant.reads``) and their values.

``walk`` replays the calls once (``invariants.trace.replay``); ``render``,
``failure_lines`` and ``steps_json`` only present what it found, so the printout
and the ``--json`` results describe the same steps.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from invariants import trace as traces
from invariants.fields import JsonValue, changed, flatten, shown_keys
from invariants.kinds import Invariant, Kind
from model import Call, ModelConfig, initial_state
from model.successor import RULES, Rules

#: The style of a field the step changed.
CHANGED_STYLE = "bold black on yellow"

#: The VM's fields, grouped into one line each (label, fields).
VM_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lifecycle", ("phase", "active", "running")),
    (
        "copies",
        ("other", "disks_copied", "test_copy", "frozen_other", "other_trusted", "log"),
    ),
    ("points", ("points", "chosen_point")),
    ("failover", ("failover_kind", "last_failover", "closed_report")),
)


@dataclass(frozen=True)
class Shown:
    """One row: the step (None for the initial state), the state after it, the
    shown fields it changed, the refusal if refused, the properties it broke."""

    number: int
    call: Call | None
    fields: dict[str, JsonValue]
    changed: frozenset[str]
    refused: str | None = None
    violated: tuple[Invariant, ...] = ()
    unexpected: str | None = None  # why the step is not what the trace says


def steps(
    config: ModelConfig,
    calls: Sequence[Call],
    rules: Rules = RULES,
    expected_refusals: Collection[int] = frozenset(),
) -> Iterator[Shown]:
    """The initial state, then every step of ``calls`` replayed on ``rules``."""
    before = initial_state(config)
    yield Shown(0, None, flatten(before), frozenset())
    for step in traces.replay(config, calls, rules, expected_refusals):
        refused = None if step.refused is None else str(step.refused)
        yield Shown(
            step.number, step.call, flatten(step.state), changed(before, step.state),
            refused, step.violated, step.unexpected,
        )  # fmt: skip
        before = step.state


def walk(
    config: ModelConfig,
    calls: Sequence[Call],
    rules: Rules = RULES,
    expected_refusals: Collection[int] = frozenset(),
) -> list[Shown]:
    """``steps``, as a list."""
    return list(steps(config, calls, rules, expected_refusals))


def copy_text(value: JsonValue) -> str:
    """A copy as its lag: 'up to date', 'behind 2', 'behind 1, +3 divergent (test)'."""
    if not isinstance(value, dict):
        return "—"
    behind, divergent = value.get("behind", 0), value.get("divergent", 0)
    parts = [f"behind {behind}"] if behind else []
    if divergent:
        parts.append(f"+{divergent} divergent")
    text = ", ".join(parts) or "up to date"
    return f"{text} (test)" if value.get("from_test") else text


def record_text(value: JsonValue) -> str:
    """A loss record: its kind, the truth, the report, the reconciled figure."""
    if not isinstance(value, dict):
        return "—"
    bound = "exactly" if value.get("reported_exact") else "at least"
    text = (
        f"{value.get('kind')}: lost {value.get('lost_writes')}, reported {bound} "
        f"{value.get('reported_writes')}"
    )
    if value.get("reconciled_writes") is not None:
        text += f", reconciled {value.get('reconciled_writes')}"
    if value.get("abandoned"):
        text += ", abandoned"
    if not value.get("logs_tell", True):
        text += ", logs cannot tell"
    return text


def points_text(value: JsonValue) -> str:
    """A catalogue of recovery points, newest first."""
    if not isinstance(value, list) or not value:
        return "none"
    return "[" + "; ".join(point_text(point) for point in value) + "]"


def running_text(value: JsonValue) -> str:
    """The sites a VM runs at."""
    if not isinstance(value, list) or not value:
        return "nowhere"
    return "+".join(str(site) for site in value)


def plans_text(value: JsonValue) -> str:
    """The recovery plans' runs."""
    runs = value if isinstance(value, list) else []
    return ", ".join("idle" if run is None else str(run) for run in runs) or "none"


#: How the fields that are not plain values read, by field name.
FORMATS = {
    "other": copy_text,
    "test_copy": copy_text,
    "frozen_other": copy_text,
    "last_failover": record_text,
    "closed_report": record_text,
    "points": points_text,
    "running": running_text,
    "plan_runs": plans_text,
}


def value_text(name: str, value: JsonValue) -> str:
    """One field's value in words (``name`` is the field, without its VM or site)."""
    format_value = FORMATS.get(name)
    if format_value is not None:
        return format_value(value)
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def point_text(point: JsonValue) -> str:
    """A recovery point: its copy's lag, and 'app' when app-consistent."""
    if not isinstance(point, dict):
        return str(point)
    text = copy_text(point.get("copy"))
    return f"{text}, app" if point.get("app_consistent") else text


#: How the sites' flags read: (field, word when true, word when false).
SITE_WORDS = (
    ("up", "up", "DOWN"),
    ("connected", "connected", "DISCONNECTED"),
    ("storage_full", "FULL", "room"),
)


def _segment(line: Text, key: str, label: str, words: str, row: Shown) -> None:
    """Append one field to ``line``: highlighted and marked when the step changed
    it."""
    if line.plain:
        line.append("  ")
    if key in row.changed:
        line.append(f"{label} {words} *", style=CHANGED_STYLE)
    else:
        line.append(f"{label} ", style="dim")
        line.append(words)


def _vm_line(row: Shown, index: int, names: tuple[str, ...]) -> Text:
    line = Text()
    for name in names:
        key = f"vm{index}.{name}"
        _segment(line, key, name, value_text(name, row.fields[key]), row)
    return line


def _world_line(row: Shown) -> Text:
    line = Text()
    for site in ("primary", "secondary"):
        line.append(f"  {site}" if line.plain else site, style="dim")
        for name, true, false in SITE_WORDS:
            key = f"{site}.{name}"
            line.append(" ")
            words = true if row.fields[key] else false
            if key in row.changed:
                line.append(f"{words} *", style=CHANGED_STYLE)
            else:
                line.append(words)
    for key in ("link_up", "faults_left", "plan_runs"):
        _segment(line, key, key, value_text(key, row.fields[key]), row)
    return line


def render(config: ModelConfig, rows: Sequence[Shown]) -> Group:
    """Every step with the whole state after it, the changed fields highlighted."""
    parts: list[Table | Text] = []
    for row in rows:
        heading = Text(f"{row.number:>3} ", style="bold")
        heading.append(
            "initial state" if row.call is None else str(row.call),
            style="bold red" if row.violated else "bold",
        )
        if row.unexpected is not None:
            heading.append(f"  not as the trace says: {row.unexpected}", style="red")
        elif row.refused is not None:
            heading.append(f"  refused, as expected: {row.refused}", style="yellow")
        for invariant in row.violated:
            heading.append(f"  fails: {invariant.name}", style="bold red")
        parts.append(heading)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="cyan", no_wrap=True)
        grid.add_column()
        for index in range(config.vm_count):
            for group, names in VM_COLUMNS:
                grid.add_row(f"    vm{index} {group}", _vm_line(row, index, names))
        grid.add_row("    world", _world_line(row))
        parts.append(grid)
    caption = f"highlighted and marked *: changed by the step ({CHANGED_STYLE})"
    parts.append(Text(caption, style="dim"))
    return Group(*parts)


def read_values(
    invariant: Invariant, fields: dict[str, JsonValue], vm_count: int
) -> dict[str, JsonValue]:
    """The values, in one state, of the shown fields ``invariant`` reads."""
    return {
        key: fields[key]
        for field in sorted(invariant.reads)
        for key in shown_keys(field, vm_count)
        if key in fields
    }


def failure_lines(
    config: ModelConfig,
    rows: Sequence[Shown],
    invariant: Invariant,
    at: int | None = None,
) -> list[str]:
    """Which property failed, at which step, the fields it reads and their values
    there (``at``: the step number; by default the first step that broke it, else
    the last step)."""
    if at is None:
        broke = [row.number for row in rows if invariant in row.violated]
        at = broke[0] if broke else rows[-1].number
    row = rows[at]
    values = read_values(invariant, row.fields, config.vm_count)
    if invariant.kind is Kind.STEP and at > 0:
        before = read_values(invariant, rows[at - 1].fields, config.vm_count)
        shown = ", ".join(
            f"{key}={_text(key, before.get(key))} → {_text(key, value)}"
            for key, value in values.items()
        )
        where = f"before → after step {at}"
    else:
        shown = ", ".join(f"{key}={_text(key, value)}" for key, value in values.items())
        where = f"after step {at}"
    return [
        (
            f"property {invariant.name!r} ({invariant.kind.value}) failed at step "
            f"{at}: {invariant.message}"
        ),
        f"  it reads: {', '.join(sorted(invariant.reads))}",
        f"  their values {where}: {shown}",
    ]


def _text(key: str, value: JsonValue) -> str:
    return value_text(key.rpartition(".")[2], value)


def steps_json(rows: Sequence[Shown]) -> list[dict[str, JsonValue]]:
    """The rows as the ``--json`` results give them (docs/json-results.md)."""
    found: list[dict[str, JsonValue]] = []
    for row in rows:
        violated: list[JsonValue] = [invariant.name for invariant in row.violated]
        changed_fields: list[JsonValue] = []
        changed_fields.extend(sorted(row.changed))
        found.append(
            {
                "number": row.number,
                "call": None if row.call is None else str(row.call),
                "refused": row.refused,
                "unexpected": row.unexpected,
                "violated": violated,
                "changed": changed_fields,
                "state": row.fields,
            }
        )
    return found


def show(
    console: Console,
    config: ModelConfig,
    calls: Sequence[Call],
    invariant: Invariant | None,
    rules: Rules = RULES,
) -> list[Shown]:
    """Print the table of a counterexample and what its property read; the rows."""
    rows = walk(config, calls, rules)
    console.print("the counterexample, step by step:", style="bold")
    console.print(render(config, rows))
    if invariant is not None:
        for line in failure_lines(config, rows, invariant):
            console.print(line, style="red", highlight=False, markup=False)
    return rows
