"""`hvdr demo` walks the lifecycle and regenerates the diagrams."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HVDR = Path(sys.executable).parent / "hvdr"


def test_demo_prints_the_walkthrough_and_writes_diagrams(tmp_path: Path) -> None:
    """Each step's phase and status is printed; DOT and Mermaid are written."""
    result = subprocess.run(
        [str(HVDR), "demo", "--diagrams", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = result.stdout
    for text in ("initial_replication", "test_failover", "failover_prepared",
                 "reverse_replicating", "resynchronizing", "not protected",
                 "at least 0", "lost 1 write(s)"):  # fmt: skip
        assert text in out, text
    assert "replica equals source at the last cut: True" in out
    assert "refused by the model: cannot resume VM 'sample'" in out
    assert (tmp_path / "lifecycle.dot").exists()
    assert (tmp_path / "lifecycle.mmd").exists()


def test_cli_without_a_command_prints_help() -> None:
    """Bare `hvdr` shows the commands and exits 2."""
    result = subprocess.run([str(HVDR)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "diagram" in result.stdout
