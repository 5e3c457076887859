"""The generated mutants' kill rate: how many ``hvdr check`` kills at default bounds.

Runs every mutant of ``invariants.rule_mutants`` (``hvdr check --mutate``) and
prints its one-line figure, killed of the non-equivalent, with the time taken
(about 100 s on one core). Goal: 100%.
"""

from __future__ import annotations

import time

from rich.console import Console

from hvdr.commands.mutate import figure
from invariants import mutation


def main() -> None:
    """Run every generated mutant; print the figure and the time."""
    console = Console()
    started = time.perf_counter()
    outcomes = mutation.run_all(mutation.select())
    seconds = time.perf_counter() - started
    console.print(f"{figure(outcomes)} (goal 100%; {seconds:.0f} s)")


if __name__ == "__main__":
    main()
