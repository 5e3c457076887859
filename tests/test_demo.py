"""`hvdr demo` walks the lifecycle, runs the engine drill and regenerates the diagrams.

The demo runs as a subprocess of this checkout (``python -m hvdr`` from the repository
root, so it imports this tree's code, whatever the installed ``hvdr`` points at).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The drill's checks that must be among those it made and passed.
ESSENTIAL_CHECKS = (
    "test failover: the test VM reads exactly its recovery point",
    "test failover: the test VM's writes never reach the replica",
    "planned failover: zero loss, byte for byte",
    "reverse replication secondary → primary: 0 blocks resynchronised",
    "failback: the primary's disks are byte-identical to what the VM last",
    "the loss is reported as a lower bound",
    "after reconciliation the loss is exact and equals the writes the versions",
    "the resynchronisation compared only the blocks that may differ",
    "after the resynchronisation the primary's replica equals the source",
)


def hvdr(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hvdr`` from this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "hvdr", *arguments],
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_demo_runs_the_drill_and_every_check_passes(tmp_path: Path) -> None:
    """Exit 0; every check the drill printed passed, the table says so, and the
    essential ones were made; the walk-through and the diagrams are there too."""
    sites = tmp_path / "sites"
    result = hvdr("demo", "--diagrams", str(tmp_path), "--workdir", str(sites))
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    walkthrough = (
        "initial_replication",
        "test_failover",
        "failover_prepared",
        "reverse_replicating",
        "resynchronizing",
        "lost 1 write(s)",
    )
    for text in walkthrough:
        assert text in out, text
    made = re.findall(r"^  (✓|✗ FAILED) (.+)$", out, flags=re.MULTILINE)
    assert made, out[-3000:]
    assert [mark for mark, _ in made if mark != "✓"] == []
    assert f"{len(made)} of {len(made)} checks passed" in out
    assert "│ FAIL" not in out
    names = " ".join(name for _, name in made)
    for check in ESSENTIAL_CHECKS:
        assert check in names, check
    assert re.search(r"^elapsed: \d+\.\d s$", out, flags=re.MULTILINE)
    assert (sites / "primary" / "control.sqlite3").exists()  # --workdir is kept
    assert (tmp_path / "lifecycle.dot").exists()
    assert (tmp_path / "lifecycle.mmd").exists()


def test_demo_refuses_a_workdir_that_already_holds_sites(tmp_path: Path) -> None:
    """A second run in the same folder is refused with exit 2 and a reason."""
    (tmp_path / "primary").mkdir()
    result = hvdr("demo", "--no-diagrams", "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert "already holds" in result.stdout


def test_model_only_skips_the_drill() -> None:
    """--model-only prints the walk-through and no engine check."""
    result = hvdr("demo", "--model-only", "--no-diagrams")
    assert result.returncode == 0
    assert "complete_resynchronization" in result.stdout
    assert "engine drill" not in result.stdout
    assert "checks passed" not in result.stdout


def test_cli_without_a_command_prints_help() -> None:
    """Bare `hvdr` shows the commands and exits 2."""
    result = hvdr()
    assert result.returncode == 2
    assert "diagram" in result.stdout


@pytest.mark.slow
def test_demo_network_runs_the_drill_over_two_replica_server_processes(
    tmp_path: Path,
) -> None:
    """hvdr demo --network: one hvdr serve per site (mutual TLS, generated
    certificates), the same drill and checks; the primary's server is SIGKILLed with
    its site and started again; both servers answered and stopped cleanly."""
    sites = tmp_path / "sites"
    result = hvdr("demo", "--network", "--no-diagrams", "--workdir", str(sites))
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    made = re.findall(r"^  (✓|✗ FAILED) (.+)$", out, flags=re.MULTILINE)
    assert made
    assert [mark for mark, _ in made if mark != "✓"] == []
    assert f"{len(made)} of {len(made)} checks passed" in out
    names = " ".join(name for _, name in made)
    for check in ESSENTIAL_CHECKS:
        assert check in names, check
    assert "the primary site's replica server was killed (SIGKILL)" in out
    assert "the primary site's replica server started again" in out
    answered = re.search(
        r"requests the replica servers answered: primary ([\d,]+), secondary ([\d,]+)",
        out,
    )
    assert answered, out[-2000:]
    assert all(int(count.replace(",", "")) > 50 for count in answered.groups())
    assert (sites / "certs" / "ca.pem").exists()
    assert (sites / "secondary" / "replica.lock").exists()


def test_demo_network_with_model_only_is_refused() -> None:
    result = hvdr("demo", "--network", "--model-only", "--no-diagrams")
    assert result.returncode == 2
    assert "--network runs the engine drill" in result.stderr
    assert "Traceback" not in result.stderr
