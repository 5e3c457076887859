"""The checkers' speed: explorer states/s, fuzzing steps/s against Hypothesis' floor.

Explorer: ``invariants.explorer.explore`` on the acceptance configuration (two VMs,
every fault enabled, budget 1), recoverability included. Goal: at least 20,000
states/s on one core.

Fuzzing: ``invariants.fuzz.fuzz`` (200 examples of 50 steps, default seed, no
failure expected; building its pool of starting states included), counted in every
step the machine takes (the rules' and those replaying starting paths), against the
floor Hypothesis itself sets: an *empty* state machine with as many rules (each a
no-op drawing nothing), run with the same settings in the same process. Goal: at
least 0.5x the floor. The rules' steps alone are shown against the floor too.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, seed, settings
from hypothesis.stateful import RuleBasedStateMachine, get_state_machine_test, rule
from rich.console import Console
from rich.table import Table

from invariants.configuration import DEFAULT_CONFIG
from invariants.explorer import explore
from invariants.fuzz import fuzz
from model.successor import RULES

EXPLORER_GOAL = 20_000  # states/s, the goal on one core
FLOOR_GOAL = 0.5  # fuzzing steps/s (every step) as a share of the empty machine's
EXAMPLES, STEPS = 200, 50


def floor_steps_per_second(rule_count: int) -> float:
    """Steps/s of an empty machine with ``rule_count`` no-op rules."""
    steps: Counter[str] = Counter()

    def make(index: int) -> Any:
        def no_op(machine: Any) -> None:
            del machine
            steps["rule"] += 1

        no_op.__name__ = f"rule_{index}"
        return rule()(no_op)

    namespace = {f"rule_{index}": make(index) for index in range(rule_count)}
    machine = type("EmptyMachine", (RuleBasedStateMachine,), namespace)
    options = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        phases=(Phase.generate,),
    )
    started = time.perf_counter()
    seed(0)(get_state_machine_test(machine, settings=options))()
    return steps["rule"] / (time.perf_counter() - started)


def main() -> None:
    """Measure and print both figures with their goals."""
    console = Console()
    config = replace(DEFAULT_CONFIG, vm_count=2)
    report = explore(config)
    figures = report.statistics
    run = fuzz(DEFAULT_CONFIG, examples=EXAMPLES, steps=STEPS)
    rule_rate = run.steps / run.seconds
    every_rate = (run.steps + run.prefix_steps) / run.seconds
    floor = floor_steps_per_second(len(RULES.actions) + 2)
    table = Table(title="checkers")
    for column in ("measure", "value", "goal"):
        table.add_column(column)
    table.add_row(
        "explorer, 2 VMs, every fault",
        f"{figures.states:,} states in {figures.seconds:.1f} s: "
        f"{figures.states_per_second:,.0f} states/s",
        f">= {EXPLORER_GOAL:,} states/s",
    )
    table.add_row(
        "fuzz, 200 x 50",
        f"{run.steps:,} rule steps + {run.prefix_steps:,} replaying starts in "
        f"{run.seconds:.1f} s: {every_rate:,.0f} steps/s ({rule_rate:,.0f} the "
        "rules')",
        "",
    )
    table.add_row("empty machine (Hypothesis' floor)", f"{floor:,.0f} steps/s", "")
    table.add_row(
        "fuzz, every step / floor", f"{every_rate / floor:.2f}x", f">= {FLOOR_GOAL}x"
    )
    table.add_row("fuzz, the rules' steps / floor", f"{rule_rate / floor:.2f}x", "")
    console.print(table)


if __name__ == "__main__":
    main()
