"""What the demo verified: named checks, each computed, printed as it is made.

A check is a name, whether it held, and the figures it compared. The demo's exit
status is non-zero when any failed; the table at the end lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True)
class Check:
    """One verified claim: its name, the outcome, the figures compared."""

    name: str
    passed: bool
    detail: str


@dataclass
class Verification:
    """The checks of one run, in the order they were made."""

    console: Console
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str) -> bool:  # noqa: FBT001
        """Record a check and print it; return whether it held."""
        found = Check(name, bool(passed), detail)
        self.checks.append(found)
        mark = "[green]✓[/green]" if found.passed else "[red]✗ FAILED[/red]"
        self.console.print(f"  {mark} {escape(name)}")
        return found.passed

    @property
    def failed(self) -> list[Check]:
        """The checks that did not hold."""
        return [found for found in self.checks if not found.passed]

    def table(self) -> Table:
        """Every check, with its outcome and figures."""
        table = Table("#", "verified", "result", "figures", title="what was verified")
        for number, found in enumerate(self.checks, start=1):
            result = "[green]pass[/green]" if found.passed else "[red]FAIL[/red]"
            table.add_row(str(number), escape(found.name), result, escape(found.detail))
        return table
