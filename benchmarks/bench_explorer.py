"""The checkers' speed and size: explorer states/s and bytes/state, fuzzing steps/s.

Explorer, three runs of ``invariants.explorer.explore``, recoverability included:

* the acceptance configuration (two VMs, every fault enabled, budget 1): goal at
  least 20,000 states/s on one core;
* three VMs with every fault (``hvdr check --vms 3``), stopped at the memory goal
  (1.5 GiB of peak resident size; ``HVDR_BENCH_CHECK_MIB`` lowers it for a quick
  run): goals 60 s and 1.5 GiB for the whole space. A run the memory limit stops
  meets neither; it prints how far it got, its states/s, its bytes per state and
  its reduction factors (symmetry; partial-order reduction: none, see
  docs/verification.md);
* a recovery-plan configuration (``PLAN_TIERS_CONFIG``: two VMs, a plan of two
  groups running drills): goal at least 50,000 states/s.

Bytes per state: the growth of the resident size during the search (peak minus the
size before it) over the states kept. Each rate is also given per CPU second (the
process's CPU time): on a machine shared with other work the clock rate is what the
process got of a core; the goals are judged on the clock.

Fuzzing: ``invariants.fuzz.fuzz`` (200 examples of 50 steps, default seed, no
failure expected; building its pool of starting states included), counted in every
step the machine takes (the rules' and those replaying starting paths), against the
floor Hypothesis itself sets: an *empty* state machine with as many rules (each a
no-op drawing nothing), run with the same settings in the same process. Goal: at
least 0.5x the floor. The rules' steps alone are shown against the floor too.
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, seed, settings
from hypothesis.stateful import RuleBasedStateMachine, get_state_machine_test, rule
from rich.console import Console
from rich.table import Table

from invariants.configuration import DEFAULT_CONFIG
from invariants.explorer import Report, explore
from invariants.fuzz import fuzz
from invariants.mutants import PLAN_TIERS_CONFIG
from model import ModelConfig
from model.successor import RULES

EXPLORER_GOAL = 20_000  # states/s, the goal on one core
THREE_VM_SECONDS_GOAL = 60.0  # hvdr check --vms 3, every fault, whole space
THREE_VM_MEMORY_GOAL = 1536 * 2**20  # bytes of peak resident size (1.5 GiB)
PLAN_GOAL = 50_000  # states/s on a recovery-plan configuration
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


def _resident_bytes() -> int:
    """The process's resident size now (Linux: /proc/self/statm, in pages)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class Measured:
    """One exploration, with the memory it took."""

    report: Report
    bytes_per_state: float  # resident growth during the search over the states
    cpu_seconds: float  # the process's CPU time for the whole exploration

    @property
    def summary(self) -> str:
        figures = self.report.statistics
        done = "whole space" if self.report.complete else "stopped by the memory limit"
        factor = figures.symmetry_factor
        return (
            f"{figures.states:,} states ({done}) in {figures.seconds:.1f} s: "
            f"{figures.states_per_second:,.0f} states/s "
            f"({figures.states / max(self.cpu_seconds, 1e-9):,.0f} per CPU second), "
            f"{self.bytes_per_state:,.0f} bytes/state, "
            f"peak {figures.peak_memory_bytes / 2**20:,.0f} MiB; reduction: "
            f"symmetry {factor:.2f}x, partial-order none (1x)"
        )


def measure(config: ModelConfig, memory: int | None = None) -> Measured:
    """Explore ``config`` (every property, stopping at ``memory`` bytes of peak)."""
    before, cpu = _resident_bytes(), time.process_time()
    report = explore(config, max_memory_bytes=memory)
    cpu = time.process_time() - cpu
    grown = max(_peak_bytes() - before, 0)
    return Measured(report, grown / max(report.statistics.states, 1), cpu)


def verdict(met: bool) -> str:
    return "met" if met else "[bold]missed[/bold]"


Row = tuple[str, str, str]  # what was measured, the figures, each goal's verdict


def plan_row() -> Row:
    """The recovery-plan configuration against its rate goal."""
    plan = measure(PLAN_TIERS_CONFIG)
    rate = plan.report.statistics.states_per_second
    goal = f">= {PLAN_GOAL:,} states/s: {verdict(rate >= PLAN_GOAL)}"
    return "explorer, plan configuration (PLAN_TIERS_CONFIG)", plan.summary, goal


def two_vm_row() -> Row:
    """The acceptance configuration against its rate goal."""
    two = measure(replace(DEFAULT_CONFIG, vm_count=2))
    rate = two.report.statistics.states_per_second
    goal = f">= {EXPLORER_GOAL:,} states/s: {verdict(rate >= EXPLORER_GOAL)}"
    return "explorer, 2 VMs, every fault", two.summary, goal


def three_vm_row(memory: int = THREE_VM_MEMORY_GOAL) -> Row:
    """Three VMs with every fault, stopped at ``memory`` bytes of peak: the time
    and memory goals are met only by a whole space within both."""
    three = measure(replace(DEFAULT_CONFIG, vm_count=3), memory)
    figures, whole = three.report.statistics, three.report.complete
    in_time = whole and figures.seconds <= THREE_VM_SECONDS_GOAL
    in_memory = whole and figures.peak_memory_bytes <= THREE_VM_MEMORY_GOAL
    goals = (
        f"<= {THREE_VM_SECONDS_GOAL:.0f} s: {verdict(in_time)}; "
        f"<= {THREE_VM_MEMORY_GOAL / 2**30:.1f} GiB: {verdict(in_memory)}"
    )
    return "explorer, 3 VMs, every fault (hvdr check --vms 3)", three.summary, goals


def explorer_rows() -> list[Row]:
    """The explorer's rows, smallest run first (peak memory only grows)."""
    memory = int(os.environ.get("HVDR_BENCH_CHECK_MIB", "0")) * 2**20
    return [plan_row(), two_vm_row(), three_vm_row(memory or THREE_VM_MEMORY_GOAL)]


def main() -> None:
    """Measure and print every figure with its goal."""
    console = Console()
    rows = explorer_rows()
    run = fuzz(DEFAULT_CONFIG, examples=EXAMPLES, steps=STEPS)
    rule_rate = run.steps / run.seconds
    every_rate = (run.steps + run.prefix_steps) / run.seconds
    floor = floor_steps_per_second(len(RULES.actions) + 2)
    table = Table(title="checkers")
    for column in ("measure", "value", "goal"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    table.add_row(
        "fuzz, 200 x 50",
        f"{run.steps:,} rule steps + {run.prefix_steps:,} replaying starts in "
        f"{run.seconds:.1f} s: {every_rate:,.0f} steps/s ({rule_rate:,.0f} the "
        "rules')",
        "",
    )
    table.add_row("empty machine (Hypothesis' floor)", f"{floor:,.0f} steps/s", "")
    table.add_row(
        "fuzz, every step / floor",
        f"{every_rate / floor:.2f}x",
        f">= {FLOOR_GOAL}x: {verdict(every_rate / floor >= FLOOR_GOAL)}",
    )
    table.add_row("fuzz, the rules' steps / floor", f"{rule_rate / floor:.2f}x", "")
    console.print(table)


if __name__ == "__main__":
    main()
