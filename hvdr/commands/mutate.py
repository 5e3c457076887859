"""``hvdr check --mutate``: run the generated mutants, print kill rates and survivors.

Every mutant ``invariants.rule_mutants`` generates is explored at the default
bounds (``invariants.mutation.run``); the table gives, per operator, how many were
generated, killed, shown equivalent, and survived, and the kill rate over the
non-equivalent ones; every survivor is then listed with what it changes, and the
last line is the figure: killed of non-equivalent. ``--operator OP`` (repeatable)
runs one operator's mutants; ``--only NAME`` reruns one mutant as ``hvdr check
--mutant NAME`` does, writing its counterexample (the trace's header names the
mutant, so ``hvdr replay`` replays it on that mutant).

Exit status: 0 when every non-equivalent mutant run was killed, 1 otherwise.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hvdr.status import ExitStatus, UsageError
from invariants import mutation
from invariants.mutation import Outcome, Verdict
from invariants.rule_mutants import OPERATORS, generate


def run(console: Console, args: argparse.Namespace) -> int:
    """Run the mutants chosen by ``--operator``; print the table and survivors."""
    try:
        mutants = mutation.select(args.operator)
    except KeyError as error:
        raise UsageError(str(error.args[0])) from None
    console.print(f"running {len(mutants)} generated mutants at the default bounds")
    outcomes = mutation.run_all(mutants)
    console.print(operator_table(outcomes))
    left = [o for o in outcomes if o.verdict in (Verdict.SURVIVED, Verdict.INCOMPLETE)]
    for outcome in left:
        console.print(
            f"[yellow]{outcome.verdict.value}: {escape(outcome.mutant.name)}[/yellow]"
            f" ({escape(outcome.mutant.summary)})"
        )
    console.print(figure(outcomes))
    return ExitStatus.FAILED if left else ExitStatus.OK


def operator_table(outcomes: Iterable[Outcome]) -> Table:
    """Per operator: generated, skipped (would change nothing), killed, equivalent,
    survived, and the kill rate over the non-equivalent."""
    listed = list(outcomes)
    skipped = generate().skipped
    table = Table(title="hvdr check --mutate (default bounds)")
    for column in ("operator", "generated", "skipped", "killed", "equivalent",
                   "survived", "rate"):  # fmt: skip
        table.add_column(column, justify="left" if column == "operator" else "right")
    for operator in OPERATORS:
        mine = [o for o in listed if o.mutant.operator == operator]
        if not mine:
            continue
        killed, counted = mutation.kill_rate(mine)
        table.add_row(
            operator, str(len(mine)), str(skipped[operator]), str(killed),
            str(sum(o.verdict is Verdict.EQUIVALENT for o in mine)),
            str(counted - killed), _percent(killed, counted),
        )  # fmt: skip
    return table


def figure(outcomes: Iterable[Outcome]) -> str:
    """The one line ``make bench`` prints too: killed of the non-equivalent."""
    listed = list(outcomes)
    killed, counted = mutation.kill_rate(listed)
    equivalent = len(listed) - counted
    return (
        f"generated mutants killed by hvdr check: {killed} of {counted} "
        f"non-equivalent ({_percent(killed, counted)}); {equivalent} equivalent"
    )


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"
