"""Run every ``benchmarks/bench_*.py`` module's ``main()``, in name order.

``python -m benchmarks`` runs them all; ``python -m benchmarks tracked_writes`` runs
only the modules whose name contains one of the arguments.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from rich.console import Console


def main(argv: list[str]) -> None:
    """Import each bench module and call its ``main()``."""
    console = Console()
    package = Path(__file__).parent
    names = sorted(
        module.name
        for module in pkgutil.iter_modules([str(package)])
        if module.name.startswith("bench_")
    )
    selected = [name for name in names if not argv or any(a in name for a in argv)]
    for name in selected:
        console.rule(f"[bold]{name}")
        module = importlib.import_module(f"benchmarks.{name}")
        module.main()


if __name__ == "__main__":
    main(sys.argv[1:])
