"""The failover and network benchmarks run end to end on small disks (figures not
checked)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs a benchmark in a subprocess: seconds

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(name: str, tmp_path: Path, path: str, **settings: str) -> str:
    environment = {**os.environ, "HVDR_BENCH_DISK_MIB": "16",
                   "HVDR_BENCH_DIR": str(tmp_path), "PATH": path}  # fmt: skip
    environment.update(settings)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", name],
        capture_output=True, text=True, check=True, cwd=ROOT, env=environment,
    )  # fmt: skip
    return result.stdout


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_the_resync_benchmark_compares_both_runs_with_rsync(tmp_path: Path) -> None:
    """Targeted and fallback each get a verdict against rsync."""
    out = run_benchmark("failover_resync", tmp_path, os.environ["PATH"])
    assert "targeted: " in out
    assert "digest fallback: " in out
    assert "rsync's bytes sent" in out


def test_the_resync_benchmark_without_rsync_says_so_and_skips_it(
    tmp_path: Path,
) -> None:
    """No rsync on PATH: the engine runs are printed, the comparison is skipped."""
    empty = tmp_path / "bin"
    empty.mkdir()
    out = run_benchmark("failover_resync", tmp_path, str(empty))
    assert "rsync was not found on PATH" in " ".join(out.split())
    assert "digest fallback" in out


def test_the_failover_times_benchmark_runs(tmp_path: Path) -> None:
    """Every step of the round trip and the rolled-back commit is printed."""
    out = run_benchmark("failover_times", tmp_path, os.environ["PATH"])
    for step in ("planned failover", "commit", "failback, in total", "rolled back"):
        assert step in out, step


def test_the_network_benchmark_prints_its_ratios(tmp_path: Path) -> None:
    """A replica server in its own process: both initial replications get a verdict
    against cp, the delta cycle one against in process, and the CPU table prints."""
    out = run_benchmark(
        "network", tmp_path, os.environ["PATH"], HVDR_BENCH_DISK_BYTES=str(8 << 20),
        HVDR_BENCH_ROUNDS="1", HVDR_BENCH_CYCLES="1",
    )  # fmt: skip
    text = " ".join(out.split())
    assert "dense (random): " in text
    assert "half holes: " in text
    assert text.count("x cp's throughput, goal >= 0.7x") == 2
    assert "x the floor's throughput" in text  # the dense disk against the TLS floor
    assert "initial, dense: TLS floor" in text
    assert "s in process: " in text
    assert "x, goal <= 1.3x" in text
    assert "CPU seconds per GiB of data sent" in text
    assert "did not start" not in text


def test_the_network_benchmark_says_why_its_server_did_not_start(
    tmp_path: Path,
) -> None:
    """The server's own reason (here: no configuration file) and its exit status."""
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from benchmarks.bench_network import ReplicaServer, ServerFailed\n"
        "try:\n    ReplicaServer(Path(sys.argv[1])).start()\n"
        "except ServerFailed as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "missing.toml")],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert "the replica server did not start (exit 2): it exited" in result.stdout
    assert "cannot read the configuration file" in result.stdout


def test_the_explorer_benchmark_prints_every_figure_and_goal() -> None:
    """A run on the plan configuration gets its rate, bytes per state and reduction
    factors beside its goal; a three-VM run the memory limit stops meets neither of
    its goals, whatever its speed."""
    from benchmarks import bench_explorer

    _, figures, goal = bench_explorer.plan_row()
    assert "90,828 states (whole space)" in figures
    parts = ("states/s", "per CPU second", "bytes/state", "symmetry 1.00x")
    for part in (*parts, "partial-order none"):
        assert part in figures, part
    assert ">= 50,000 states/s" in goal
    _, figures, goal = bench_explorer.three_vm_row(memory=1)
    assert "stopped by the memory limit" in figures
    assert goal.count("missed") == 2
